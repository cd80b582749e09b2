import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { request } from 'undici';
import { stringify } from 'yaml';
import { siteFor, withTestDefaults } from '../helpers/gateway.js';
import { useFixtures } from '../helpers/fixtures.js';
import { freePort } from '../helpers/free-port.js';

const { cleanups, origin, gateway } = useFixtures();

const CLI = ['dist/main.js'];

describe('live reload', () => {
  it('applies a valid edit to new requests and loses no request under traffic', async () => {
    const a = await origin('a');
    const b = await origin('b');
    const cfg = { sites: [siteFor([a.url], { routes: [{ name: 'all', cache: { enabled: false } }] })] };
    const g = await gateway(cfg);
    let stop = false;
    const statuses: number[] = [];
    const traffic = (async () => {
      for (let i = 0; i < 2000 && !stop; i++) {
        const res = await request(`${g.url}/t${i}`);
        statuses.push(res.statusCode);
        await res.body.text();
      }
    })();
    // Requests must be flowing around every reload: wait for a few more answers each time
    // (by count, not by time, so a loaded machine only makes the test slower).
    const answered = async (n: number) => {
      const until = statuses.length + n;
      while (statuses.length < until) await new Promise((r) => setTimeout(r, 5));
    };
    await answered(10);
    for (const target of [b.url, a.url, b.url]) {
      writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, sites: [siteFor([target], { routes: [{ name: 'all', cache: { enabled: false } }] })] })));
      const outcome = await g.gw.reload('manual');
      expect(outcome?.ok).toBe(true);
      await answered(5);
    }
    stop = true;
    await traffic;
    expect(statuses.length).toBeGreaterThan(20);
    expect(statuses.every((s) => s === 200)).toBe(true);
    expect(b.count()).toBeGreaterThan(0);
    const last = await request(`${g.url}/final`);
    expect(last.headers['x-origin-name']).toBe('b');
    await last.body.text();
    const metrics = await (await request(`${g.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(/crowdgate_config_reloads_total\{result="success"\} 3/);
    expect(metrics).toMatch(/crowdgate_config_generation 4/);
  });

  it('a site renamed or removed by a reload lets its requests in flight finish: a streaming answer and a POST (config-edit trial)', async () => {
    const o = await origin();
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const chunk = Buffer.alloc(64 * 1024, 'x');
    o.route('/stream', async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'no-store', 'content-length': String(4 * chunk.length) });
      res.write(chunk);
      await released;
      for (let i = 0; i < 3; i++) res.write(chunk);
      res.end();
    });
    o.route('/submit', async (req, res) => {
      for await (const _ of req);
      await released;
      res.writeHead(201, { 'content-type': 'text/plain' });
      res.end('saved');
    });
    const site = (name: string) => siteFor([o.url], { name, hosts: ['*'] });
    const g = await gateway({ sites: [site('blog')] });
    const stream = await request(`${g.url}/stream`, { headers: { cookie: 'PHPSESSID=reader' } }); // a pass: streamed as it comes
    const reader = stream.body[Symbol.asyncIterator]();
    let got = ((await reader.next()).value as Buffer).length;
    const post = request(`${g.url}/submit`, { method: 'POST', body: 'comment', headers: { 'content-type': 'text/plain' } });
    while (o.count('/submit') === 0) await new Promise((r) => setTimeout(r, 5));
    writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, sites: [site('blog2')] })));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    release();
    for (let next = await reader.next(); !next.done; next = await reader.next()) got += (next.value as Buffer).length;
    expect(got).toBe(4 * chunk.length);
    const saved = await post;
    expect(saved.statusCode).toBe(201);
    expect(await saved.body.text()).toBe('saved');
    // New requests go to the renamed site's own pool.
    const after = await request(`${g.url}/other`);
    expect(after.statusCode).toBe(200);
    await after.body.text();
  });

  it('a removed site or member leaves no gauge series and no status row behind', async () => {
    const a = await origin('a');
    const b = await origin('b');
    const ghost = await origin('ghost');
    const sites = (withGhost: boolean, members: string[]) => [
      siteFor(members, { name: 'main', hosts: ['main.test'] }),
      ...(withGhost ? [siteFor([ghost.url], { name: 'ghost', hosts: ['ghost.test'] })] : []),
    ];
    const g = await gateway({ sites: sites(true, [a.url, b.url]) });
    for (const host of ['main.test', 'ghost.test']) {
      const res = await request(`${g.url}/p`, { headers: { host } });
      await res.body.text();
    }
    const series = async () => {
      const text = await (await request(`${g.adminUrl}/metrics`)).body.text();
      return text.split('\n').filter((l) => /^crowdgate_(origin_healthy|origin_limit|origin_inflight|queue_length|circuit_state)\{/.test(l));
    };
    const before = await series();
    expect(before.some((l) => l.includes('site="ghost"'))).toBe(true);
    expect(before.filter((l) => l.startsWith('crowdgate_origin_limit{') && l.includes('site="main"'))).toHaveLength(2);
    writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, sites: sites(false, [a.url]) })));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    const after = await series();
    expect(after.filter((l) => l.includes('site="ghost"'))).toEqual([]);
    const bName = after.filter((l) => l.includes('site="main"')).map((l) => /origin="([^"]+)"/.exec(l)?.[1]);
    expect(new Set(bName).size).toBe(1);
    for (const name of ['crowdgate_origin_healthy', 'crowdgate_origin_limit', 'crowdgate_circuit_state']) {
      expect(after.filter((l) => l.startsWith(`${name}{`))).toHaveLength(1);
    }
    // The status page reads the gauges at its next sample (once a second).
    let sitesShown: string[] = [];
    for (const until = Date.now() + 5_000; Date.now() < until; await new Promise((r) => setTimeout(r, 100))) {
      const status = (await (await request(`${g.adminUrl}/status.json`)).body.json()) as { origins: Array<{ site: string }> };
      sitesShown = status.origins.map((o) => o.site);
      if (sitesShown.length === 1) break;
    }
    expect(sitesShown).toEqual(['main']);
  });

  it('says what a reload changed, which config runs (hash), and keeps a pending restart in view after a refused edit', async () => {
    const a = await origin('a');
    const sites = (names: string[]) => names.map((n) => siteFor([a.url], { name: n, hosts: [`${n}.test`] }));
    const g = await gateway({ sites: sites(['wiki', 'docs']) });
    const status = async () => (await (await request(`${g.adminUrl}/status.json`)).body.json()) as { configHash: string; lastReload?: { ok: boolean; restartRequired: string[] } };
    const metrics = async () => (await request(`${g.adminUrl}/metrics`)).body.text();
    const firstHash = (await status()).configHash;
    expect(firstHash).toMatch(/^[0-9a-f]{12}$/);
    expect(await metrics()).toContain(`crowdgate_config_info{hash="${firstHash}"} 1`);

    // A file cut after its first site (a half-written save that parses): the log says so.
    writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, sites: sites(['wiki']) })));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    expect(g.logs.some((l) => /config reloaded: generation 2 \(sites removed: docs\)/.test(String(l.msg)))).toBe(true);
    const secondHash = (await status()).configHash;
    expect(secondHash).not.toBe(firstHash);
    const text = await metrics();
    expect(text).toContain(`crowdgate_config_info{hash="${secondHash}"} 1`);
    expect(text).not.toContain(firstHash);

    // A key only a restart applies, then a broken edit: the restart is still pending.
    const port = new URL(g.url).port;
    writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, listen: { host: '127.0.0.1', port: Number(port) + 1 }, sites: sites(['wiki']) })));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    expect((await status()).lastReload?.restartRequired).toContain('listen');
    writeFileSync(g.configPath, 'sites: [');
    expect((await g.gw.reload('manual'))?.ok).toBe(false);
    const after = await status();
    expect(after.lastReload?.ok).toBe(false);
    expect(after.lastReload?.restartRequired).toContain('listen');
    expect(await metrics()).toMatch(/crowdgate_config_restart_pending 1/);
  });

  it('a site renamed and renamed back revalidates the copies it had before: purges made in between never reached them (new-operator trial)', async () => {
    const a = await origin('a');
    let version = 'REV-1';
    a.route('/wiki/Page', { headers: { 'cache-control': 'public, s-maxage=18000, max-age=0' }, body: () => version });
    const site = (name: string) => [siteFor([a.url], { name, hosts: ['wiki.test'] })];
    const g = await gateway({ sites: site('wiki') });
    const read = async () => {
      const r = await request(`${g.url}/wiki/Page`, { headers: { host: 'wiki.test' } });
      return { body: await r.body.text(), cacheStatus: String(r.headers['cache-status']) };
    };
    expect((await read()).body).toBe('REV-1');
    expect((await read()).cacheStatus).toMatch(/; hit/);
    writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, sites: site('wiki2') })));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    version = 'REV-2'; // edited while the site had the other name (its PURGE went to wiki2's keys)
    writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, sites: site('wiki') })));
    expect((await g.gw.reload('manual'))?.ok).toBe(true);
    for (let i = 0; i < 100 && !g.logs.some((l) => String(l.msg).startsWith('site name back')); i++) await new Promise((r) => setTimeout(r, 10));
    expect(g.logs.find((l) => String(l.msg).startsWith('site name back'))).toMatchObject({ site: 'wiki', purged: 1 });
    const back = await read();
    expect(back.body).toBe('REV-2');
    expect(back.cacheStatus).not.toMatch(/; hit/);
    expect(a.count('/wiki/Page')).toBe(2);
  });

  it('a route whose cache key is changed and changed back revalidates the copies it had before; a change to a new key purges nothing', async () => {
    const a = await origin('a');
    let version = 'REV-1';
    a.route('/wiki/Page', { headers: { 'cache-control': 'public, s-maxage=18000, max-age=0' }, body: () => version });
    const site = (headers: string[]) => [siteFor([a.url], { name: 'wiki', hosts: ['wiki.test'], routes: [{ name: 'all', cache: { key: { headers } } }] })];
    const g = await gateway({ sites: site([]) });
    const read = async () => {
      const r = await request(`${g.url}/wiki/Page`, { headers: { host: 'wiki.test' } });
      return { body: await r.body.text(), cacheStatus: String(r.headers['cache-status']) };
    };
    const reload = async (headers: string[]) => {
      writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, sites: site(headers) })));
      expect((await g.gw.reload('manual'))?.ok).toBe(true);
    };
    expect((await read()).body).toBe('REV-1');
    expect((await read()).cacheStatus).toMatch(/; hit/);
    await reload(['X-Device']); // a new key: a miss, then its own copy
    expect((await read()).body).toBe('REV-1');
    expect(a.count('/wiki/Page')).toBe(2);
    version = 'REV-2'; // edited under the other key: its POST invalidation reached that key's copy only
    await reload([]);
    for (let i = 0; i < 100 && !g.logs.some((l) => String(l.msg).startsWith('route cache key back')); i++) await new Promise((r) => setTimeout(r, 10));
    expect(g.logs.find((l) => String(l.msg).startsWith('route cache key back'))).toMatchObject({ site: 'wiki', routes: ['all'] });
    const back = await read();
    expect(back.body).toBe('REV-2');
    expect(back.cacheStatus).not.toMatch(/; hit/);
    expect(a.count('/wiki/Page')).toBe(3);
    // Only a template the route had before purges: the first change logged nothing of the kind.
    expect(g.logs.filter((l) => String(l.msg).startsWith('route cache key back'))).toHaveLength(1);
  });

  it('a route taken out and put back, its key template the one every route left has, revalidates nothing (ops trial: a half-written file soft-purged the whole site mid-crowd)', async () => {
    const a = await origin('a');
    a.route('/wiki/Page', { headers: { 'cache-control': 'public, s-maxage=18000, max-age=0' }, body: 'REV-1' });
    const site = (withRoute: boolean) => [siteFor([a.url], { name: 'wiki', hosts: ['wiki.test'], routes: withRoute ? [{ name: 'pages', match: { pathPrefix: '/wiki/' }, cache: { graceSeconds: 600 } }] : [] })];
    const g = await gateway({ sites: site(true) });
    const read = async () => String((await request(`${g.url}/wiki/Page`, { headers: { host: 'wiki.test' } })).headers['cache-status']);
    const reload = async (withRoute: boolean) => {
      writeFileSync(g.configPath, stringify(withTestDefaults({ reload: { watch: false }, sites: site(withRoute) })));
      expect((await g.gw.reload('manual'))?.ok).toBe(true);
    };
    await read();
    expect(await read()).toMatch(/; hit/);
    await reload(false);
    expect(await read()).toMatch(/; hit/); // the same key under the catch-all route
    await reload(true);
    await new Promise((r) => setTimeout(r, 100)); // a purge it started would have run by now (the test above waits for one)
    expect(await read()).toMatch(/; hit/);
    expect(a.count('/wiki/Page')).toBe(1);
    expect(g.logs.filter((l) => String(l.msg).startsWith('route cache key back'))).toHaveLength(0);
  });

  it('refuses a broken YAML edit with file:line:col, counts it, and keeps serving the old config', async () => {
    const a = await origin('a');
    const g = await gateway({ sites: [siteFor([a.url])] }, { watch: true });
    const good = readFileSync(g.configPath, 'utf8');
    const broken = good.replace('hosts:', 'hosts:\n      - "*"\n    orgins: []\n    hosts_:');
    // Atomic rename-save, like editors do: the watcher watches the directory.
    writeFileSync(`${g.configPath}.tmp`, broken);
    renameSync(`${g.configPath}.tmp`, g.configPath);
    const deadline = Date.now() + 5000;
    let failed = false;
    while (Date.now() < deadline && !failed) {
      await new Promise((r) => setTimeout(r, 50));
      failed = g.logs.some((l) => String(l.msg ?? '').includes(`${g.configPath}:`));
    }
    expect(failed).toBe(true);
    const line = g.logs.find((l) => String(l.msg ?? '').includes('orgins'));
    expect(String(line?.msg)).toMatch(new RegExp(`${g.configPath.replace(/[.]/g, '\\.')}:\\d+:\\d+ sites\\[0\\]`));
    const res = await request(`${g.url}/still`);
    expect(res.statusCode).toBe(200);
    await res.body.text();
    const metrics = await (await request(`${g.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(/crowdgate_config_reloads_total\{result="failure"\} [1-9]/);
    expect(metrics).toMatch(/crowdgate_config_last_reload_success 0/);
    expect(metrics).toMatch(/crowdgate_config_generation 1/);
    // /status.json says so too, with the error as the log has it.
    const status = (await (await request(`${g.adminUrl}/status.json`)).body.json()) as { generation: number; lastReload: Record<string, unknown> };
    expect(status.generation).toBe(1);
    expect(status.lastReload).toMatchObject({ ok: false, reason: 'watch', generation: 1, restartRequired: [] });
    expect(status.lastReload.errorCount).toBeGreaterThanOrEqual(1);
    expect((status.lastReload.errors as string[])[0]).toMatch(new RegExp(`^${g.configPath.replace(/[.]/g, '\\.')}:\\d+:\\d+ sites\\[0\\]`));
    expect(Date.parse(status.lastReload.at as string)).toBeGreaterThan(Date.now() - 60_000);
  });
});

describe('readiness and admin', () => {
  it('reports the origin down on /readyz and 502s until it starts', async () => {
    const port = await freePort();
    const g = await gateway({
      sites: [siteFor([`http://127.0.0.1:${port}`], { healthCheck: { enabled: true, intervalMs: 200, timeoutMs: 200 } })],
    });
    // Down after unhealthyThreshold (3) failed probes, 200 ms apart: one failure never decides.
    type Ready = { sites: Array<{ state: string; origins: Array<{ url: string }> }> };
    let status = 0;
    let body: Ready | undefined;
    for (let i = 0; i < 100 && body?.sites[0]?.state !== 'down'; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 50));
      const ready = await request(`${g.adminUrl}/readyz`);
      status = ready.statusCode;
      body = (await ready.body.json()) as Ready;
    }
    // Ready all the same: the origin's state is in the body; the instance can still serve
    // what it has, and a load balancer must not pull every instance of a shared origin.
    expect(status).toBe(200);
    expect(body!.sites[0]!.state).toBe('down');
    expect(body!.sites[0]!.origins[0]!.url).toBe(`http://127.0.0.1:${port}`);
    const page = await request(`${g.url}/`);
    expect([502, 503]).toContain(page.statusCode);
    expect(await page.body.text()).toContain('sites[].origins[].url');
    const healthz = await request(`${g.adminUrl}/healthz`);
    expect(healthz.statusCode).toBe(200);
    await healthz.body.text();
  });
});

/** The launcher `npm start` and the `crowdgate` command run; it execs node, so the PID is the gateway's. */
const LAUNCHER = 'scripts/crowdgate';

function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}, prefix: string[] = []): ChildProcess & { output: () => string } {
  const [cmd, ...pre] = [...prefix, LAUNCHER];
  const child = spawn(cmd!, [...pre, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  child.stdout!.on('data', (d) => (out += String(d)));
  child.stderr!.on('data', (d) => (out += String(d)));
  cleanups.push(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  return Object.assign(child, { output: () => out });
}

async function waitFor(pred: () => boolean | Promise<boolean>, ms = 8000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('timed out waiting');
}

/**
 * A config file on fresh loopback ports for a signalled reload (no file watch): write() rewrites
 * it with one site on `target`, uncached, and any other top-level keys in `extra`.
 */
async function signalledConfig(prefix: string) {
  const [port, adminPort] = [await freePort(), await freePort()];
  const file = join(mkdtempSync(join(tmpdir(), prefix)), 'gateway.yaml');
  const write = (target: string, extra: Record<string, unknown> = {}) =>
    writeFileSync(
      file,
      stringify({
        listen: { host: '127.0.0.1', port },
        admin: { host: '127.0.0.1', port: adminPort },
        reload: { watch: false },
        ...extra,
        sites: [siteFor([target], { routes: [{ name: 'all', cache: { enabled: false } }] })],
      }),
    );
  return { port, adminPort, file, write };
}

const hasTaskset = spawnSync('taskset', ['-c', '0', 'true']).status === 0;

describe('command line', () => {
  it.skipIf(!hasTaskset)('the launcher runs single-threaded GC when it may use one CPU, concurrent GC otherwise', async () => {
    const o = await origin('gc');
    const dir = mkdtempSync(join(tmpdir(), 'cg-gc-'));
    const startWith = async (prefix: string[], env: NodeJS.ProcessEnv = {}) => {
      const file = join(dir, `g${Math.random().toString(36).slice(2)}.yaml`);
      const [port, adminPort] = [await freePort(), await freePort()];
      writeFileSync(file, stringify(withTestDefaults({ listen: { host: '127.0.0.1', port }, admin: { host: '127.0.0.1', port: adminPort }, reload: { watch: false }, sites: [siteFor([o.url])] })));
      const child = spawnCli(['--config', file], env, prefix);
      // A gateway pinned to one CPU starts slowly while the rest of the suite runs there too
      // (30 s was not always enough in a full run).
      await waitFor(() => child.output().includes('crowdgate listening'), 60_000);
      const line = child.output().split('\n').find((l) => l.includes('crowdgate listening'))!;
      child.kill('SIGTERM');
      return JSON.parse(line) as { cpus: number; gc: string };
    };
    const [pinned, forced, free] = await Promise.all([
      startWith(['taskset', '-c', '0']),
      startWith(['taskset', '-c', '0'], { CROWDGATE_GC: 'concurrent' }),
      startWith([]),
    ]);
    expect(pinned).toMatchObject({ cpus: 1, gc: 'single-threaded' });
    expect(forced).toMatchObject({ cpus: 1, gc: 'concurrent' });
    expect(free.gc).toBe(free.cpus > 1 ? 'concurrent' : 'single-threaded');
  }, 90_000);

  it('--check-config prints the line and column of a typo\'d key and exits 1', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cg-cli-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'listen: { host: 0.0.0.0, port: 8080 }\nsites:\n  - name: blog\n    hosts: ["*"]\n    orgins:\n      - url: http://127.0.0.1:3000\n');
    const r = spawnSync(process.execPath, [...CLI, '--check-config', file], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`${file}:5:5 sites[0]`);
    expect(r.stderr).toMatch(/orgins/);
  });

  it('--check-config accepts the shipped config; --help and --version work', () => {
    const ok = spawnSync(process.execPath, [...CLI, '--check-config', 'config/gateway.yaml'], { encoding: 'utf8' });
    expect(ok.status).toBe(0);
    expect(ok.stdout).toContain('valid');
    const version = spawnSync(process.execPath, [...CLI, '--version'], { encoding: 'utf8' });
    expect(version.stdout.trim()).toMatch(/^crowdgate \d+\.\d+\.\d+/);
    const help = spawnSync(process.execPath, [...CLI, '--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('--check-config');
  });

  it('starts with the shipped config and no origin: /readyz says the origin is down and names it, pages get a 502 naming the config key', async () => {
    // The shipped file with only its ports changed (free ones; the origin's has nothing listening).
    const [port, adminPort, originPort] = [await freePort(), await freePort(), await freePort()];
    const dir = mkdtempSync(join(tmpdir(), 'cg-shipped-'));
    const file = join(dir, 'gateway.yaml');
    const shipped = readFileSync('config/gateway.yaml', 'utf8');
    const edited = shipped
      .replace(/^(listen:[^\n]*\n(?:[ \t]+[^\n]*\n)*?[ \t]+port:[ \t]*)8080/m, `$1${port}`)
      .replace(/^(admin:[^\n]*\n(?:[ \t]+[^\n]*\n)*?[ \t]+port:[ \t]*)9091/m, `$1${adminPort}`)
      .replace('url: http://127.0.0.1:3000', `url: http://127.0.0.1:${originPort}`);
    expect(edited.match(new RegExp(`port: (${port}|${adminPort})\\b`, 'g'))).toHaveLength(2);
    expect(edited).toContain(`http://127.0.0.1:${originPort}`);
    writeFileSync(file, edited);
    const child = spawnCli(['--config', file]);
    await waitFor(() => child.output().includes('crowdgate listening'));
    // 'down' after three failed probes, a second apart while the state is unknown.
    await waitFor(async () => {
      const r = await request(`http://127.0.0.1:${adminPort}/readyz`);
      const body = (await r.body.json()) as { sites: Array<{ state: string }> };
      return r.statusCode === 200 && body.sites[0]?.state === 'down';
    }, 8000);
    const ready = (await (await request(`http://127.0.0.1:${adminPort}/readyz`)).body.json()) as {
      sites: Array<{ site: string; state: string; origins: Array<{ url: string; configKey: string }> }>;
    };
    expect(ready.sites[0]).toMatchObject({ site: 'blog', state: 'down' });
    expect(ready.sites[0]!.origins[0]).toMatchObject({ url: `http://127.0.0.1:${originPort}`, configKey: 'sites[].origins[].url' });
    const page = await request(`http://127.0.0.1:${port}/`, { headers: { host: 'blog.example.com' } });
    expect(page.statusCode).toBe(502);
    const html = await page.body.text();
    expect(html).not.toContain(`127.0.0.1:${originPort}`); // a visitor's page: the admin listener names it
    expect(html).toContain('sites[].origins[].url');
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  });

  it('reloads on SIGHUP and keeps serving the old config when the edit is broken', async () => {
    const a = await origin('a');
    const b = await origin('b');
    const { port, file, write } = await signalledConfig('cg-hup-');
    write(a.url);
    const child = spawnCli(['--config', file]);
    await waitFor(() => child.output().includes('crowdgate listening'));
    const served = async () => {
      const r = await request(`http://127.0.0.1:${port}/x`);
      await r.body.text();
      return r.headers['x-origin-name'];
    };
    expect(await served()).toBe('a');
    write(b.url);
    child.kill('SIGHUP');
    await waitFor(async () => (await served()) === 'b');
    writeFileSync(file, 'sites: [ this is : not yaml');
    child.kill('SIGHUP');
    await waitFor(() => child.output().includes(`${file}:1:`));
    expect(await served()).toBe('b');
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  });

  it('applies a log.level edit on reload: access lines (info) stop at warn and come back at info', async () => {
    const a = await origin('a');
    const config = await signalledConfig('cg-level-');
    const { port, adminPort, file } = config;
    const write = (level: string) => config.write(a.url, { log: { level } });
    write('info');
    const child = spawnCli(['--config', file]);
    await waitFor(() => child.output().includes('crowdgate listening'));
    const accessLines = (path: string) => child.output().split('\n').filter((l) => l.includes(`"path":"${path}"`)).length;
    const get = async (path: string) => void (await (await request(`http://127.0.0.1:${port}${path}`)).body.text());
    await get('/before');
    await waitFor(() => accessLines('/before') === 1);
    write('warn');
    child.kill('SIGHUP');
    const generation = async () => ((await (await request(`http://127.0.0.1:${adminPort}/status.json`)).body.json()) as { generation: number }).generation;
    await waitFor(async () => (await generation()) === 2);
    await get('/quiet');
    write('info');
    child.kill('SIGHUP');
    await waitFor(async () => (await generation()) === 3);
    await get('/after');
    await waitFor(() => accessLines('/after') === 1);
    expect(accessLines('/quiet')).toBe(0);
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  });

  it('counts a pipelined request whose client left before its turn as done: the drain does not wait for it (attacker trial)', async () => {
    const o = await origin();
    o.route('/a', { delayMs: 400, headers: { 'cache-control': 'no-store' }, body: 'a' });
    o.route('/b', { delayMs: 400, headers: { 'cache-control': 'no-store' }, body: 'b' });
    const g = await gateway({ shutdown: { drainTimeoutMs: 4000 }, sites: [siteFor([o.url])] });
    const { hostname, port } = new URL(g.url);
    // 10 connections, each with two requests pipelined, closed before the first is answered:
    // the second's response waits in Node's queue and never gets the socket.
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        new Promise<void>((resolve, reject) => {
          const socket = connect(Number(port), hostname, () => {
            socket.write(`GET /a?${i} HTTP/1.1\r\nHost: a.test\r\n\r\nGET /b?${i} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
            setTimeout(() => socket.destroy(), 100);
          });
          socket.on('close', () => resolve());
          socket.on('error', reject);
        }),
      ),
    );
    // The fills sent go on (those still queued were given up); wait until the origin is done.
    await new Promise((r) => setTimeout(r, 100));
    for (let i = 0; i < 100 && o.inflight > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(o.inflight).toBe(0);
    // A pipelined request is taken up in its turn (http-server.ts inTurn): its client left
    // before, so it never reached the origin (it used to, its answer written nowhere).
    expect(o.count('/a')).toBeGreaterThan(0);
    expect(o.count('/b')).toBe(0);
    const started = performance.now();
    expect(await g.gw.drain()).toEqual({ drained: true, cut: 0 });
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it('counts a pipelined request done once when Node gave it the socket before the client left; the drain then waits for the requests still under way (attacker trial)', async () => {
    const o = await origin();
    o.route('/fast', { headers: { 'cache-control': 'no-store' }, body: 'fast' });
    o.route('/late', { delayMs: 400, headers: { 'cache-control': 'no-store' }, body: 'late' });
    const g = await gateway({ shutdown: { drainTimeoutMs: 4000 }, sites: [siteFor([o.url])] });
    const { hostname, port } = new URL(g.url);
    // The client leaves once the first answer is in, so the second response has the socket when
    // it closes (a fixed 150 ms left before the first answer on a loaded host: 3 lines of 5).
    await Promise.all(
      Array.from({ length: 5 }, (_, i) =>
        new Promise<void>((resolve) => {
          const socket = connect(Number(port), hostname, () => {
            socket.write(`GET /fast?${i} HTTP/1.1\r\nHost: a.test\r\n\r\nGET /late?${i} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
          });
          let seen = '';
          socket.on('data', (chunk: Buffer) => {
            seen += chunk.toString('latin1');
            if (seen.includes('\r\n\r\nfast')) setTimeout(() => socket.destroy(), 50);
          });
          setTimeout(() => socket.destroy(), 5_000).unref();
          socket.on('close', () => resolve());
          socket.on('error', () => undefined);
        }),
      ),
    );
    for (let i = 0; i < 100 && o.inflight > 0; i++) await new Promise((r) => setTimeout(r, 20));
    const lateLines = g.logs.filter((l) => l.type === 'access' && l.path === '/late');
    expect(lateLines).toHaveLength(5);
    // A visitor under way when the drain starts is waited for, not cut.
    const visitor = request(`${g.url}/late?visitor`).then(async (r) => ({ status: r.statusCode, body: await r.body.text() }));
    await new Promise((r) => setTimeout(r, 100));
    expect(await g.gw.drain()).toEqual({ drained: true, cut: 0 });
    expect(await visitor).toEqual({ status: 200, body: 'late' });
  });

  it('drains on SIGTERM: /readyz turns 503, in-flight requests finish, then it exits 0', async () => {
    const o = await origin();
    o.route('/slow', { delayMs: 800, headers: { 'cache-control': 'no-store' } });
    const [port, adminPort] = [await freePort(), await freePort()];
    const dir = mkdtempSync(join(tmpdir(), 'cg-drain-'));
    const file = join(dir, 'gateway.yaml');
    writeFileSync(
      file,
      stringify({
        listen: { host: '127.0.0.1', port },
        admin: { host: '127.0.0.1', port: adminPort },
        shutdown: { drainTimeoutMs: 5000 },
        sites: [siteFor([o.url])],
      }),
    );
    const child = spawnCli(['--config', file]);
    await waitFor(() => child.output().includes('crowdgate listening'));
    const inflight = request(`http://127.0.0.1:${port}/slow`);
    await waitFor(() => o.count('/slow') === 1);
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    await waitFor(async () => {
      try {
        const r = await request(`http://127.0.0.1:${adminPort}/readyz`);
        await r.body.text();
        return r.statusCode === 503;
      } catch {
        return false;
      }
    }, 2000);
    const res = await inflight;
    expect(res.statusCode).toBe(200);
    await res.body.text();
    expect(await exited).toBe(0);
    expect(child.output()).toContain('drained');
  });

  it('with shutdown.delayMs, SIGTERM first keeps serving with /readyz 503 and connections closed after each answer; a second SIGTERM drains at once', async () => {
    const o = await origin();
    const [port, adminPort] = [await freePort(), await freePort()];
    const dir = mkdtempSync(join(tmpdir(), 'cg-delay-'));
    const file = join(dir, 'gateway.yaml');
    // A minute: the test ends it with the second signal, never by the timer.
    writeFileSync(file, stringify({ listen: { host: '127.0.0.1', port }, admin: { host: '127.0.0.1', port: adminPort }, shutdown: { delayMs: 60_000 }, sites: [siteFor([o.url])] }));
    const child = spawnCli(['--config', file]);
    await waitFor(() => child.output().includes('crowdgate listening'));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    let readiness: { status?: string; ready?: boolean } = {};
    await waitFor(async () => {
      const r = await request(`http://127.0.0.1:${adminPort}/readyz`);
      readiness = (await r.body.json()) as typeof readiness;
      return r.statusCode === 503;
    }, 5000);
    expect(readiness).toMatchObject({ status: 'stopping', ready: false });
    expect(await (await request(`http://127.0.0.1:${adminPort}/metrics`)).body.text()).toMatch(/^crowdgate_draining 1$/m);
    // Still accepting and serving, each answer closing its connection.
    for (let i = 0; i < 3; i++) {
      const page = await request(`http://127.0.0.1:${port}/page${i}`);
      expect(page.statusCode).toBe(200);
      expect(page.headers.connection).toBe('close');
      await page.body.text();
    }
    expect(o.count('/page2')).toBe(1);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(child.output()).toContain('drained');
  });
});
