/**
 * A real MediaWiki for tests: Debian's `mediawiki` package (read-only, in /usr/share/mediawiki)
 * installed into a fresh temp dir with SQLite, served by PHP's built-in server (`php -S`) on
 * 127.0.0.1 and a free port. Owns the one process it starts (by PID).
 *
 * Nothing under /usr/share/mediawiki, /etc/mediawiki or /var/lib/mediawiki is written: the temp
 * dir holds a tree of symlinks to the package's code (its own `images/` and `cache/`, and
 * `extensions/` pointing at the package's bundled `extensions-core/`, none loaded), the SQLite
 * files, and the LocalSettings.php written by MediaWiki's own installer
 * (`maintenance/install.php`). `MW_INSTALL_PATH` and `MW_CONFIG_FILE` point MediaWiki there
 * (the package's own LocalSettings.php symlink is never followed).
 *
 * Start order (the gateway needs MediaWiki's port, MediaWiki needs the gateway's):
 * `startMediaWiki()` installs and starts `php -S` (no PHP request runs yet: readiness is probed
 * with a static file), then the test starts the gateway, then `configure()` writes the settings
 * naming the gateway before the first PHP request. PHP reads LocalSettings on every request.
 *
 * Missing php / MediaWiki / SQLite is an error naming the Debian packages, never a skip
 * (.ci/run installs them).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, appendFileSync, constants, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trackChild, waitForExit } from './redis-server.js';
import { freePort } from './free-port.js';
import { phpLog, type PhpServed } from './php-log.js';

export const MEDIAWIKI_DIR = '/usr/share/mediawiki';
const PACKAGES = 'mediawiki php-sqlite3 php-curl';
const READY_DEADLINE_MS = 10_000;

export interface MediaWikiSettings {
  /** `$wgServer`: the public URL readers use (the gateway), e.g. http://127.0.0.1:8080. */
  server: string;
  /** `$wgCdnServers`: host:port of each CDN node that gets HTTP PURGE. */
  cdnServers: string[];
  /** `$wgCdnMaxAge` (s-maxage sent to anonymous readers). */
  cdnMaxAge: number;
}


export interface MediaWiki extends PhpServed {
  readonly port: number;
  /**
   * The full URLs MediaWiki has sent to its CDN purge (CdnCacheUpdate::purge, from its `squid`
   * debug log), in order, one entry per URL.
   */
  purgedUrls(): string[];
  /** Write the CDN settings (atomically; read by the next PHP request). */
  configure(settings: MediaWikiSettings): void;
  /** SIGTERM (SIGKILL if needed) the php process by PID; remove the temp dir. Idempotent. */
  stop(): Promise<void>;
}

function requireTools(): string {
  const php = (process.env.PATH ?? '')
    .split(path.delimiter)
    .filter(Boolean)
    .map((d) => path.join(d, 'php'))
    .find((f) => {
      try {
        accessSync(f, constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  const hint = `The MediaWiki test needs a real MediaWiki: install it (Debian/Ubuntu: \`apt-get install -y ${PACKAGES}\`; .ci/run does).`;
  if (!php) throw new Error(`php not found on PATH. ${hint}`);
  if (!existsSync(path.join(MEDIAWIKI_DIR, 'index.php'))) throw new Error(`${MEDIAWIKI_DIR}/index.php not found. ${hint}`);
  const modules = (spawnSync(php, ['-m'], { encoding: 'utf8' }).stdout ?? '').toLowerCase().split('\n').map((l) => l.trim());
  for (const m of ['pdo_sqlite', 'curl', 'mbstring', 'intl', 'xml'])
    if (!modules.includes(m)) throw new Error(`php module ${m} missing (php -m). ${hint}`);
  return php;
}

/** A PHP single-quoted string literal. */
function phpString(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

export async function startMediaWiki(): Promise<MediaWiki> {
  const php = requireTools();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'crowdgate-mediawiki-'));
  const wiki = path.join(dir, 'wiki'); // the document root and MW_INSTALL_PATH
  const data = path.join(dir, 'data');
  for (const d of [wiki, data, path.join(dir, 'images'), path.join(dir, 'cache')]) mkdirSync(d);
  // The package's tree, minus what points at /etc/mediawiki or /var/lib/mediawiki.
  const skip = new Set(['LocalSettings.php', 'config', 'extensions', 'extensions-core', 'images', 'mw-config', 'cache']);
  for (const name of readdirSync(MEDIAWIKI_DIR)) if (!skip.has(name)) symlinkSync(path.join(MEDIAWIKI_DIR, name), path.join(wiki, name));
  symlinkSync(path.join(MEDIAWIKI_DIR, 'extensions-core'), path.join(wiki, 'extensions'));
  symlinkSync(path.join(dir, 'images'), path.join(wiki, 'images'));
  writeFileSync(path.join(wiki, 'crowdgate-ready.txt'), 'ready\n');

  const localSettings = path.join(dir, 'LocalSettings.php');
  const cdnSettings = path.join(dir, 'CrowdgateSettings.php');
  const env = { ...process.env, MW_INSTALL_PATH: wiki, MW_CONFIG_FILE: localSettings };
  const admin = { name: 'Admin', password: 'crowdgate-test-password-1' };

  const install = spawnSync(
    php,
    [
      path.join(wiki, 'maintenance', 'install.php'),
      '--dbtype', 'sqlite', '--dbpath', data, '--dbname', 'wiki',
      '--confpath', dir,
      '--server', 'http://127.0.0.1', // replaced by configure()
      '--scriptpath', '',
      '--lang', 'en',
      '--pass', admin.password,
      'CrowdgateWiki', admin.name,
    ],
    { env, cwd: dir, encoding: 'utf8', timeout: 60_000 },
  );
  if (install.status !== 0 || !existsSync(localSettings)) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`MediaWiki install.php failed (exit ${install.status}):\n${install.stdout}\n${install.stderr}`);
  }
  // The installer's settings, then ours: a test wiki, everything in the temp dir, no
  // uploads or mail, and the CDN settings file configure() writes.
  appendFileSync(
    localSettings,
    `
# --- crowdgate test settings ---
$wgMainCacheType = CACHE_DB;        # sessions live here: CACHE_NONE would lose the login
$wgSessionCacheType = CACHE_DB;
$wgParserCacheType = CACHE_DB;
$wgCacheDirectory = ${phpString(path.join(dir, 'cache'))};
$wgUploadDirectory = ${phpString(path.join(dir, 'images'))};
$wgEnableUploads = false;
$wgEnableEmail = false;
$wgPingback = false;
# $wgArticlePath is then /index.php?title=$1, the form the test's readers ask for: MediaWiki
# sends s-maxage only when the request URL is one of the page's CDN URLs, and purges exactly those.
$wgUsePathInfo = false;
# CDN purges are PRESEND deferred updates of the edit/delete request itself; no job is needed,
# so jobs do not run at the end of web requests (php -S serves one request at a time).
$wgJobRunRate = 0;
$wgDebugLogGroups['squid'] = ${phpString(path.join(dir, 'squid.log'))};
if ( is_file( ${phpString(cdnSettings)} ) ) {
	require ${phpString(cdnSettings)};
}
`,
  );

  let child: ChildProcess | undefined;
  let port = 0;
  const log = phpLog();

  const kill = async (): Promise<void> => {
    const proc = child;
    if (!proc || proc.pid === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    process.kill(proc.pid, 'SIGTERM');
    if (!(await waitForExit(proc, 2_000))) {
      process.kill(proc.pid, 'SIGKILL');
      await waitForExit(proc, 2_000);
    }
  };

  const launch = async (): Promise<void> => {
    const proc = spawn(
      php,
      [
        // opcache on for the CLI server (MediaWiki is slow without it), and every include's
        // timestamp checked on every request, so the settings configure() writes apply at once.
        '-d', 'opcache.enable_cli=1',
        '-d', 'opcache.validate_timestamps=1',
        '-d', 'opcache.revalidate_freq=0',
        '-d', 'display_errors=stderr',
        '-S', `127.0.0.1:${port}`,
        '-t', wiki,
      ],
      { env, cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    proc.stderr?.on('data', log.onStderr);
    trackChild(proc);
    child = proc;
    const deadline = Date.now() + READY_DEADLINE_MS;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`php -S exited (${proc.exitCode}) on port ${port}: ${log.output()}`);
      try {
        // A static file: php -S answers it without running PHP, so no request reads the
        // settings before configure().
        const res = await fetch(`http://127.0.0.1:${port}/crowdgate-ready.txt`, { signal: AbortSignal.timeout(500) });
        await res.arrayBuffer();
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`php -S on port ${port} did not answer within ${READY_DEADLINE_MS} ms: ${log.output()}`);
  };

  // A free port can be taken between probing and binding (php -S cannot listen on port 0): try a few.
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    port = await freePort();
    try {
      await launch();
      lastError = undefined;
      break;
    } catch (err) {
      lastError = err;
      await kill();
    }
  }
  if (lastError) {
    rmSync(dir, { recursive: true, force: true });
    throw lastError;
  }

  let stopped = false;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    dir,
    admin,
    requests: log.requests,
    count: log.count,
    sync: () => log.sync(`http://127.0.0.1:${port}`, '/crowdgate-ready.txt'),
    output: log.output,
    purgedUrls() {
      const log = path.join(dir, 'squid.log');
      if (!existsSync(log)) return [];
      const urls: string[] = [];
      // "... CdnCacheUpdate::purge: http://h/a http://h/b"
      for (const line of readFileSync(log, 'utf8').split('\n')) {
        const m = /CdnCacheUpdate::purge: (.*)$/.exec(line);
        if (m) urls.push(...m[1]!.trim().split(/\s+/));
      }
      return urls;
    },
    configure(s) {
      const text = `<?php
$wgServer = ${phpString(s.server)};
$wgCanonicalServer = ${phpString(s.server)};
$wgUseCdn = true;
$wgCdnServers = [ ${s.cdnServers.map(phpString).join(', ')} ];
$wgCdnMaxAge = ${Math.trunc(s.cdnMaxAge)};
`;
      const tmp = `${cdnSettings}.tmp`;
      writeFileSync(tmp, text);
      renameSync(tmp, cdnSettings);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
