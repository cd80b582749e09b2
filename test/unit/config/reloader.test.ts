import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, test } from 'vitest';
import { loadConfigFile } from '../../../src/config/load.js';
import { createReloader, orphanedCaches, type ReloadLogger, type ReloadOutcome } from '../../../src/config/reloader.js';
import type { GatewayConfig } from '../../../src/config/schema.js';
import { ConfigSource } from '../../../src/config/source.js';

interface LogLine {
  level: 'info' | 'warn' | 'error';
  obj: object;
  msg: string;
}

/** A pino-shaped logger that keeps what it was given. */
function makeRecordingLogger(): ReloadLogger & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  return {
    lines,
    info: (obj, msg) => void lines.push({ level: 'info', obj, msg }),
    warn: (obj, msg) => void lines.push({ level: 'warn', obj, msg }),
    error: (obj, msg) => void lines.push({ level: 'error', obj, msg }),
  };
}

const dir = mkdtempSync(join(tmpdir(), 'crowdgate-reload-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const configText = ({ port = 8080, adminPort = 9091, level = 'info', siteName = 'blog', origin = 'http://127.0.0.1:3000' } = {}) => `listen: { port: ${port} }
admin: { port: ${adminPort} }
log: { level: ${level} }
sites:
  - name: ${siteName}
    hosts: ["*"]
    origins: [{ url: "${origin}" }]
`;

let n = 0;
async function setup(text = configText()) {
  const file = join(dir, `gateway-${++n}.yaml`);
  writeFileSync(file, text);
  const initial = await loadConfigFile(file, { env: {} });
  if (!initial.ok) throw new Error('fixture invalid');
  const source = new ConfigSource(initial.config);
  const logger = makeRecordingLogger();
  const results: ReloadOutcome[] = [];
  // The removal hold's waits, and what happens during each (nothing, unless a test says).
  const holds: number[] = [];
  const during: Array<() => void> = [];
  const sleep = async (ms: number) => {
    holds.push(ms);
    during.shift()?.();
  };
  const reloader = createReloader({ file, source, logger, onResult: (r) => results.push(r), parseOptions: { env: {} }, sleep });
  return { file, source, logger, results, reloader, holds, during };
}

describe('createReloader', () => {
  let ctx: Awaited<ReturnType<typeof setup>>;
  beforeEach(async () => {
    ctx = await setup();
  });

  test('a valid change is swapped in as the next generation', async () => {
    writeFileSync(ctx.file, configText({ level: 'debug' }));
    const outcome = await ctx.reloader.reload('watch');
    expect(outcome).toEqual({ ok: true, reason: 'watch', generation: 2, changed: true, restartRequired: [] });
    expect(ctx.source.current().log.level).toBe('debug');
    expect(ctx.results).toEqual([outcome]);
    expect(ctx.logger.lines.map((l) => [l.level, l.msg])).toEqual([['info', 'config reloaded: generation 2 (changed: log)']]);
  });

  test('names what changed in a changed site (new-user trial: "sites changed: blog" did not say the origin had moved)', async () => {
    writeFileSync(ctx.file, configText({ origin: 'http://127.0.0.1:3001', level: 'debug' }));
    expect((await ctx.reloader.reload('watch')).ok).toBe(true);
    expect(ctx.logger.lines.map((l) => l.msg)).toEqual(['config reloaded: generation 2 (sites changed: blog (origins); changed: log)']);
  });

  test('renaming a site warns that it starts with an empty cache (failure-day trial: its stale pages turned into 503s)', async () => {
    writeFileSync(ctx.file, configText({ siteName: 'www' }));
    expect((await ctx.reloader.reload('watch')).ok).toBe(true);
    const warned = ctx.logger.lines.filter((l) => l.level === 'warn').map((l) => l.msg);
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatch(/^site "blog" renamed to "www": .*empty cache/);
  });

  test('a watched edit that removes a site waits for the file to settle: the rest of a write cut before the second site arrives in time (config-edit trial)', async () => {
    const two = `${configText()}  - name: docs\n    hosts: ["docs.test"]\n    origins: [{ url: "http://127.0.0.1:3001" }]\n`;
    writeFileSync(ctx.file, two);
    expect((await ctx.reloader.reload('manual')).ok).toBe(true);
    expect(ctx.holds).toEqual([]); // adds only: no hold
    // The write cut before `- name: docs`: the first part alone parses, and would remove docs.
    writeFileSync(ctx.file, configText({ level: 'warn' }));
    ctx.during.push(() => writeFileSync(ctx.file, two.replace('level: info', 'level: warn')));
    expect((await ctx.reloader.reload('watch')).ok).toBe(true);
    expect(ctx.holds).toEqual([2_000]);
    expect(ctx.source.current().sites.map((s) => s.name)).toEqual(['blog', 'docs']);
    expect(ctx.source.current().log.level).toBe('warn');
    expect(ctx.logger.lines.some((l) => /sites removed/.test(l.msg))).toBe(false);
    // A removal the file keeps through the hold applies; a signal's is not held.
    writeFileSync(ctx.file, configText());
    expect((await ctx.reloader.reload('watch')).ok).toBe(true);
    expect(ctx.holds).toEqual([2_000, 2_000]);
    expect(ctx.source.current().sites.map((s) => s.name)).toEqual(['blog']);
    writeFileSync(ctx.file, two);
    await ctx.reloader.reload('signal');
    writeFileSync(ctx.file, configText());
    await ctx.reloader.reload('signal');
    expect(ctx.holds).toHaveLength(2);
  });

  test('removing a site (no site with its hosts left) warns that its copies are no longer reached', () => {
    const site = (name: string, hosts: string[]) => ({ name, hosts, routes: [] }) as unknown as GatewayConfig['sites'][number];
    const prev = { sites: [site('blog', ['blog.test']), site('docs', ['docs.test'])] } as unknown as GatewayConfig;
    const next = { sites: [site('blog', ['blog.test']), site('wiki', ['wiki.test'])] } as unknown as GatewayConfig;
    expect(orphanedCaches(prev, next)).toEqual([expect.stringMatching(/^site "docs" removed: its cached copies stay unused/)]);
    expect(orphanedCaches(prev, prev)).toEqual([]);
  });

  test('a route whose cache key changed warns that its pages start with an empty cache; the same key reordered or recased does not (config-edit trial)', () => {
    const key = (over: Record<string, unknown> = {}) => ({ query: 'all', params: [], dropTracking: ['utm_*'], headers: ['X-Tenant', 'Accept-Language'], cookies: [], ignoreCookies: [], ...over });
    const cfg = (k: ReturnType<typeof key>) =>
      ({ sites: [{ name: 'blog', hosts: ['blog.test'], routes: [{ name: 'default', cache: { key: k } }, { name: 'static', cache: { key: key() } }] }] }) as unknown as GatewayConfig;
    expect(orphanedCaches(cfg(key()), cfg(key({ headers: ['accept-language', 'x-tenant'], ignoreCookies: ['*UserName'] })))).toEqual([]);
    expect(orphanedCaches(cfg(key()), cfg(key({ headers: [], query: 'none' })))).toEqual([
      expect.stringMatching(/^site "blog" route "default": cache key changed \(query, headers\): its pages start with an empty cache/),
    ]);
  });

  test('an invalid file is refused, every error logged as file:line:col, and the old config kept', async () => {
    const before = ctx.source.current();
    writeFileSync(ctx.file, configText({ level: 'loud' }).replace('hosts:', 'hots:'));
    const outcome = await ctx.reloader.reload('signal');
    expect(outcome.ok).toBe(false);
    expect(ctx.source.current()).toBe(before);
    expect(ctx.source.generation).toBe(1);
    const errorLines = ctx.logger.lines.filter((l) => l.level === 'error').map((l) => l.msg);
    expect(errorLines).toEqual([
      expect.stringMatching(new RegExp(`^${ctx.file}:3:15 log\\.level: `)),
      `${ctx.file}:5:5 sites[0].hosts: missing required key "hosts"`,
      `${ctx.file}:6:5 sites[0].hots: unknown key "hots" (did you mean "hosts"?)`,
    ]);
    expect(ctx.logger.lines.at(-1)).toMatchObject({ level: 'warn', msg: expect.stringMatching(/refused: 3 error\(s\); still running generation 1/) });
    expect(ctx.results).toEqual([{ ok: false, reason: 'signal', generation: 1, errors: expect.any(Array) }]);
    expect(outcome.ok === false && outcome.errors).toHaveLength(3);
  });

  test('a deleted file is refused and the old config kept', async () => {
    rmSync(ctx.file);
    const outcome = await ctx.reloader.reload('manual');
    expect(outcome.ok === false && outcome.errors.map((e) => e.message)).toEqual(['cannot read config: file not found']);
    expect(ctx.source.generation).toBe(1);
  });

  test('an unchanged file reloads without a swap', async () => {
    let swaps = 0;
    ctx.source.onChange(() => void swaps++);
    const outcome = await ctx.reloader.reload('manual');
    expect(outcome).toMatchObject({ ok: true, changed: false, generation: 1 });
    expect(swaps).toBe(0);
  });

  test.each([
    { name: 'listen', change: { port: 8081 }, keys: ['listen'] },
    { name: 'admin.port', change: { adminPort: 9999 }, keys: ['admin.port'] },
    { name: 'both', change: { port: 8081, adminPort: 9999 }, keys: ['listen', 'admin.port'] },
  ])('a restart-only change ($name) is warned about, kept as running, while the rest applies', async ({ change, keys }) => {
    writeFileSync(ctx.file, configText({ ...change, level: 'warn' }));
    const outcome = await ctx.reloader.reload('watch');
    expect(outcome).toMatchObject({ ok: true, changed: true, restartRequired: keys });
    expect(ctx.source.current().log.level).toBe('warn');
    expect(ctx.source.current().listen.port).toBe(8080);
    expect(ctx.source.current().admin.port).toBe(9091);
    const warning = ctx.logger.lines.find((l) => l.level === 'warn');
    expect(warning?.msg).toMatch(new RegExp(`${keys.join(', ')}: these need a restart`));
    expect(warning?.obj).toMatchObject({ keys });
  });

  test('cache.maxBytes is restart-only (the memory store keeps the size it was built with): warned about, kept as running', async () => {
    writeFileSync(ctx.file, `${configText({ level: 'warn' })}cache: { maxBytes: 2097152 }\n`);
    const outcome = await ctx.reloader.reload('watch');
    expect(outcome).toMatchObject({ ok: true, changed: true, restartRequired: ['cache.maxBytes'] });
    expect(ctx.source.current().cache.maxBytes).toBe(268435456);
    expect(ctx.source.current().log.level).toBe('warn');
  });

  test('reload.watch and reload.debounceMs are restart-only (the watch is set up once): warned about, kept as running', async () => {
    writeFileSync(ctx.file, `${configText({ level: 'warn' })}reload: { watch: false, debounceMs: 50 }\n`);
    const outcome = await ctx.reloader.reload('watch');
    expect(outcome).toMatchObject({ ok: true, changed: true, restartRequired: ['reload'] });
    expect(ctx.source.current().reload).toEqual({ watch: true, debounceMs: 200 });
    expect(ctx.source.current().log.level).toBe('warn');
  });

  test('a restart-only change alone swaps nothing but still warns', async () => {
    writeFileSync(ctx.file, configText({ port: 8081 }));
    const outcome = await ctx.reloader.reload('watch');
    expect(outcome).toMatchObject({ ok: true, changed: false, restartRequired: ['listen'], generation: 1 });
    expect(ctx.logger.lines.some((l) => l.level === 'warn' && /restart/.test(l.msg))).toBe(true);
  });

  test('reloads asked for during a reload collapse into one follow-up that reads the latest file', async () => {
    writeFileSync(ctx.file, configText({ siteName: 'first' }));
    const first = ctx.reloader.reload('watch');
    // Asked while the first runs: these must share one more run, not five.
    const during = [1, 2, 3, 4, 5].map(() => ctx.reloader.reload('signal'));
    writeFileSync(ctx.file, configText({ siteName: 'latest' }));
    const [firstOutcome, ...duringOutcomes] = await Promise.all([first, ...during]);
    expect(ctx.results).toHaveLength(2);
    expect(firstOutcome).toBe(ctx.results[0]);
    for (const o of duringOutcomes) expect(o).toBe(ctx.results[1]);
    expect(ctx.source.current().sites[0]?.name).toBe('latest');
  });

  test('sequential reloads each run', async () => {
    for (const level of ['debug', 'warn', 'error'] as const) {
      writeFileSync(ctx.file, configText({ level }));
      await ctx.reloader.reload('manual');
    }
    expect(ctx.results.map((r) => r.generation)).toEqual([2, 3, 4]);
  });

  test('after close, queued and new reloads are refused without reading the file', async () => {
    writeFileSync(ctx.file, configText({ level: 'debug' }));
    const running = ctx.reloader.reload('watch');
    const queued = ctx.reloader.reload('watch');
    ctx.reloader.close();
    const later = ctx.reloader.reload('manual');
    expect((await running).ok).toBe(true);
    for (const o of [await queued, await later]) {
      expect(o.ok === false && o.errors.map((e) => e.message)).toEqual(['reloader is closed']);
    }
    expect(ctx.results).toHaveLength(1);
  });

  test('a failing change listener is logged; the new config stands', async () => {
    ctx.source.onChange(() => {
      throw new Error('rebuild failed');
    });
    writeFileSync(ctx.file, configText({ level: 'debug' }));
    const outcome = await ctx.reloader.reload('manual');
    expect(outcome).toMatchObject({ ok: true, generation: 2 });
    expect(ctx.logger.lines.some((l) => l.level === 'error' && /change listener failed/.test(l.msg))).toBe(true);
  });
});
