/**
 * A real WordPress for tests: Debian's `wordpress` package (read-only, in /usr/share/wordpress)
 * on a MariaDB server of its own (Debian's `mariadb-server`: `mariadbd` on a Unix socket in a
 * fresh temp dir, no TCP), served by PHP's built-in server (`php -S`) on 127.0.0.1 and a free
 * port. Owns the two processes it starts (by PID).
 *
 * Nothing under /usr/share/wordpress, /etc/wordpress or /var/lib/wordpress is written, and the
 * package's wp-config.php (which reads /etc/wordpress/config-<host>.php) is never loaded: PHP
 * prepends a file to every script that defines `ABSPATH` as a temp dir holding our wp-config.php
 * beside links to the package's wp-settings.php, wp-includes and wp-admin, so the package's own
 * entry points (index.php, wp-login.php, wp-comments-post.php, wp-admin/...) load ours. The
 * prepended file also replaces `wp_mail` (no MTA here). WordPress is installed by its own
 * `wp_install()`, from PHP's command line, before the server starts.
 *
 * Start order (the gateway needs WordPress's port, WordPress needs the gateway's URL for its
 * links and redirects): `startWordPress()` installs and starts everything, then the test starts
 * the gateway, then `configure()` names it as WordPress's home; PHP reads it on every request.
 *
 * Missing php / mysqli / WordPress / MariaDB is an error naming the Debian packages, never a
 * skip (.ci/run installs them).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackChild, waitForExit } from './redis-server.js';
import { freePort } from './free-port.js';
import { phpLog, type PhpServed } from './php-log.js';

export const WORDPRESS_DIR = '/usr/share/wordpress';
const PACKAGES = 'wordpress wordpress-theme-twentytwentythree mariadb-server php-mysql';
/** WordPress 6.1's default theme: Debian's wordpress only recommends its package. */
const THEME_DIR = path.join(WORDPRESS_DIR, 'wp-content', 'themes', 'twentytwentythree');
const READY_DEADLINE_MS = 15_000;

export interface WordPress extends PhpServed {
  /** WordPress's home and site URL (`WP_HOME`, `WP_SITEURL`): the public URL readers use (the gateway). */
  configure(home: string): void;
  /** Runs PHP with WordPress loaded (as the command line, no request) and returns what it printed. */
  php(code: string): string;
  /** SIGTERM (SIGKILL if needed) php and mariadbd by PID; remove the temp dir. Idempotent. */
  stop(): Promise<void>;
}

function which(name: string, dirs: string[]): string | undefined {
  for (const d of dirs) {
    const f = path.join(d, name);
    if (existsSync(f)) return f;
  }
  return undefined;
}

function requireTools(): { php: string; mariadbd: string; installDb: string } {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), '/usr/sbin', '/usr/bin'];
  const hint = `The WordPress test needs a real WordPress and MariaDB: install them (Debian/Ubuntu: \`apt-get install -y ${PACKAGES}\`; .ci/run does).`;
  const php = which('php', dirs);
  const mariadbd = which('mariadbd', dirs) ?? which('mysqld', dirs);
  const installDb = which('mariadb-install-db', dirs) ?? which('mysql_install_db', dirs);
  if (!php) throw new Error(`php not found on PATH. ${hint}`);
  if (!mariadbd || !installDb) throw new Error(`mariadbd or mariadb-install-db not found. ${hint}`);
  if (!existsSync(path.join(WORDPRESS_DIR, 'wp-settings.php'))) throw new Error(`${WORDPRESS_DIR}/wp-settings.php not found. ${hint}`);
  if (!existsSync(THEME_DIR)) throw new Error(`${THEME_DIR} not found (the default theme). ${hint}`);
  const modules = (spawnSync(php, ['-m'], { encoding: 'utf8' }).stdout ?? '').toLowerCase().split('\n').map((l) => l.trim());
  if (!modules.includes('mysqli')) throw new Error(`php module mysqli missing (php -m). ${hint}`);
  return { php, mariadbd, installDb };
}

/** A PHP single-quoted string literal. */
function phpString(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

async function until(what: string, deadlineMs: number, ready: () => Promise<boolean> | boolean, failed: () => string | undefined): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (Date.now() < deadline) {
    const why = failed();
    if (why !== undefined) throw new Error(why);
    if (await ready()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${what} not ready within ${deadlineMs} ms`);
}

export async function startWordPress(): Promise<WordPress> {
  const tools = requireTools();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'crowdgate-wordpress-'));
  const children: ChildProcess[] = [];
  const kill = async (proc: ChildProcess | undefined): Promise<void> => {
    if (!proc || proc.pid === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    process.kill(proc.pid, 'SIGTERM');
    if (!(await waitForExit(proc, 5_000))) {
      process.kill(proc.pid, 'SIGKILL');
      await waitForExit(proc, 2_000);
    }
  };
  const stopAll = async (): Promise<void> => {
    for (const c of children.reverse()) await kill(c);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    return await start(tools, dir, children, stopAll);
  } catch (err) {
    await stopAll();
    throw err;
  }
}

async function start(
  tools: ReturnType<typeof requireTools>,
  dir: string,
  children: ChildProcess[],
  stopAll: () => Promise<void>,
): Promise<WordPress> {
  const { php } = tools;
  // MariaDB: a fresh data dir, root by password (empty), a socket in the temp dir, no TCP.
  // No --user for the installer: given one, it also chowns the package's PAM plugin files
  // (/usr/lib/mysql/plugin/auth_pam_tool_dir) to that user (review). mariadbd refuses to run
  // as root unless told to.
  const data = path.join(dir, 'db');
  const socket = path.join(dir, 'db.sock');
  const init = spawnSync(
    tools.installDb,
    ['--no-defaults', `--datadir=${data}`, '--auth-root-authentication-method=normal', '--skip-test-db'],
    { encoding: 'utf8', timeout: 60_000 },
  );
  if (init.status !== 0) throw new Error(`mariadb-install-db failed (exit ${init.status}):\n${init.stdout}\n${init.stderr}`);
  let dbErr = '';
  const db = spawn(
    tools.mariadbd,
    [
      '--no-defaults', `--datadir=${data}`, `--socket=${socket}`, '--skip-networking',
      ...(process.getuid?.() === 0 ? ['--user=root'] : []),
      `--pid-file=${path.join(dir, 'db.pid')}`, '--innodb-buffer-pool-size=16M',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  db.stderr?.on('data', (c: Buffer) => (dbErr += c.toString('utf8')));
  trackChild(db);
  children.push(db);
  await until('mariadbd', 2 * READY_DEADLINE_MS, () => existsSync(socket), () => (db.exitCode !== null ? `mariadbd exited (${db.exitCode}): ${dbErr}` : undefined));

  // WordPress: ABSPATH is our dir (see the module comment).
  const abspath = path.join(dir, 'wp');
  mkdirSync(abspath);
  for (const name of ['wp-settings.php', 'wp-load.php', 'wp-includes', 'wp-admin']) symlinkSync(path.join(WORDPRESS_DIR, name), path.join(abspath, name));
  const prepend = path.join(dir, 'prepend.php');
  writeFileSync(
    prepend,
    `<?php
if (!defined('ABSPATH')) define('ABSPATH', ${phpString(`${abspath}/`)});
// No MTA: WordPress mails the administrator on install and on every comment held for moderation.
if (!function_exists('wp_mail')) { function wp_mail() { return true; } }
`,
  );
  const site = path.join(dir, 'site.php');
  const salts = ['AUTH_KEY', 'SECURE_AUTH_KEY', 'LOGGED_IN_KEY', 'NONCE_KEY', 'AUTH_SALT', 'SECURE_AUTH_SALT', 'LOGGED_IN_SALT', 'NONCE_SALT'];
  writeFileSync(
    path.join(abspath, 'wp-config.php'),
    `<?php
define('DB_NAME', 'wordpress');
define('DB_USER', 'root');
define('DB_PASSWORD', '');
define('DB_HOST', ${phpString(`localhost:${socket}`)});
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
define('WP_CONTENT_DIR', ${phpString(path.join(WORDPRESS_DIR, 'wp-content'))});
define('DISABLE_WP_CRON', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_HTTP_BLOCK_EXTERNAL', true);
${salts.map((k) => `define('${k}', 'crowdgate-test-${k.toLowerCase()}');`).join('\n')}
$table_prefix = 'wp_';
// The README's line for WordPress behind the gateway: the client is the first X-Forwarded-For
// entry (else every visitor is the gateway's address, and comment flood checks refuse a second
// commenter within 15 s).
$_SERVER['REMOTE_ADDR'] = trim(explode(',', $_SERVER['HTTP_X_FORWARDED_FOR'] ?? $_SERVER['REMOTE_ADDR'])[0]);
if (is_file(${phpString(site)})) require ${phpString(site)};
require_once ABSPATH . 'wp-settings.php';
`,
  );
  const configure = (home: string): void => {
    const tmp = `${site}.tmp`;
    writeFileSync(tmp, `<?php\ndefine('WP_HOME', ${phpString(home)});\ndefine('WP_SITEURL', ${phpString(home)});\n`);
    renameSync(tmp, site);
  };
  const runPhp = (code: string): string => {
    const script = path.join(dir, `cli-${process.hrtime.bigint()}.php`);
    writeFileSync(script, `<?php\n$_SERVER['HTTP_HOST'] = '127.0.0.1';\n$_SERVER['REQUEST_URI'] = '/';\n${code}\n`);
    const r = spawnSync(php, ['-d', `auto_prepend_file=${prepend}`, '-d', 'display_errors=stderr', script], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
    rmSync(script, { force: true });
    if (r.status !== 0) throw new Error(`php failed (exit ${r.status}):\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  };
  const admin = { name: 'admin', password: 'crowdgate-test-password-1' };
  mariadbQuery(dir, socket, 'CREATE DATABASE wordpress CHARACTER SET utf8mb4');
  const installed = runPhp(`define('WP_INSTALLING', true);
require_once ABSPATH . 'wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
$r = wp_install('Crowdgate Blog', ${phpString(admin.name)}, 'admin@example.com', true, '', ${phpString(admin.password)});
echo 'installed user ', $r['user_id'], "\\n";`);
  if (!/installed user 1/.test(installed)) throw new Error(`wp_install() did not report user 1: ${installed}`);

  // php -S on the package's tree (its entry points and static files), one worker: it answers a
  // request at a time and logs each in order, which sync() relies on.
  const log = phpLog();
  let port = 0;
  let server: ChildProcess | undefined;
  let lastError: unknown;
  // A free port can be taken between probing and binding (php -S cannot listen on port 0): try a few.
  for (let attempt = 0; attempt < 3; attempt++) {
    port = await freePort();
    const proc = spawn(
      php,
      ['-d', `auto_prepend_file=${prepend}`, '-d', 'display_errors=stderr', '-d', 'opcache.enable_cli=1', '-S', `127.0.0.1:${port}`, '-t', WORDPRESS_DIR],
      { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    proc.stderr?.on('data', log.onStderr);
    trackChild(proc);
    children.push(proc);
    try {
      // A static file of the package's: php -S answers it without running PHP.
      await until(
        'php -S',
        READY_DEADLINE_MS,
        async () => {
          try {
            const res = await fetch(`http://127.0.0.1:${port}/wp-includes/images/blank.gif`, { signal: AbortSignal.timeout(500) });
            await res.arrayBuffer();
            return res.status === 200;
          } catch {
            return false;
          }
        },
        () => (proc.exitCode !== null ? `php -S exited (${proc.exitCode}) on port ${port}: ${log.output()}` : undefined),
      );
      server = proc;
      lastError = undefined;
      break;
    } catch (err) {
      lastError = err;
      if (proc.pid !== undefined && proc.exitCode === null) {
        process.kill(proc.pid, 'SIGKILL');
        await waitForExit(proc, 2_000);
      }
    }
  }
  if (!server) throw lastError;
  configure(`http://127.0.0.1:${port}`);

  let stopped = false;
  return {
    url: `http://127.0.0.1:${port}`,
    dir,
    admin,
    requests: log.requests,
    count: log.count,
    sync: () => log.sync(`http://127.0.0.1:${port}`, '/wp-includes/images/blank.gif'),
    output: log.output,
    configure,
    php: (code) => runPhp(`require_once ABSPATH . 'wp-load.php';\n${code}`),
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopAll();
    },
  };
}

function mariadbQuery(dir: string, socket: string, sql: string): void {
  const r = spawnSync('mariadb', ['--no-defaults', '-S', socket, '-uroot', '-e', sql], { cwd: dir, encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`mariadb ${sql}: exit ${r.status}: ${r.stderr}`);
}
