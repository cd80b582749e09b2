import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { startLiveReload } from '../../../src/config/live-reload.js';
import { loadConfigFile } from '../../../src/config/load.js';
import type { ReloadLogger } from '../../../src/config/reloader.js';
import { ConfigSource } from '../../../src/config/source.js';
import { GatewayMetrics } from '../../../src/metrics/gateway-metrics.js';

const quiet: ReloadLogger = { info: () => {}, warn: () => {}, error: () => {} };
const dir = mkdtempSync(join(tmpdir(), 'crowdgate-live-reload-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const configText = (level: string, watch: boolean) => `log: { level: ${level} }
reload: { watch: ${watch}, debounceMs: 20 }
sites:
  - name: blog
    hosts: ["*"]
    origins: [{ url: "http://127.0.0.1:3000" }]
`;

let n = 0;
async function setup(watch: boolean) {
  const file = join(dir, `gateway-${++n}.yaml`);
  writeFileSync(file, configText('info', watch));
  const initial = await loadConfigFile(file);
  if (!initial.ok) throw new Error('fixture invalid');
  const source = new ConfigSource(initial.config);
  const metrics = new GatewayMetrics({ defaultMetrics: false });
  const live = startLiveReload({ file, source, logger: quiet, metrics, reload: initial.config.reload, watchRetryMs: 50 });
  return { file, source, metrics, live };
}

/** The value of one sample line in the exposition text, or undefined when absent. */
async function sample(metrics: GatewayMetrics, line: string): Promise<number | undefined> {
  const found = (await metrics.render()).body.split('\n').find((l) => l.startsWith(`${line} `));
  return found === undefined ? undefined : Number(found.slice(line.length + 1));
}

async function until(ok: () => boolean, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('startLiveReload', () => {
  test('counts each reload by result and keeps whether the last one succeeded', async () => {
    const { file, source, metrics, live } = await setup(false);
    writeFileSync(file, configText('debug', false));
    expect(await live.reload('signal')).toMatchObject({ ok: true, generation: 2 });
    expect(source.current().log.level).toBe('debug');
    expect(await sample(metrics, 'crowdgate_config_reloads_total{result="success"}')).toBe(1);
    expect(await sample(metrics, 'crowdgate_config_last_reload_success')).toBe(1);
    writeFileSync(file, 'sites: [');
    expect(await live.reload('manual')).toMatchObject({ ok: false, generation: 2 });
    expect(await sample(metrics, 'crowdgate_config_reloads_total{result="failure"}')).toBe(1);
    expect(await sample(metrics, 'crowdgate_config_last_reload_success')).toBe(0);
    live.close();
  });

  test('with reload.watch, a deleted file is a refused reload (metrics, lastReload) until it is back (ops trial: only a log line said the next restart would fail)', async () => {
    const { file, source, metrics, live } = await setup(true);
    rmSync(file);
    await until(() => live.last()?.ok === false);
    expect(live.last()).toMatchObject({ ok: false, reason: 'watch', generation: 1, errorCount: 1 });
    expect(live.last()!.errors[0]).toContain('config file missing');
    expect(await sample(metrics, 'crowdgate_config_last_reload_success')).toBe(0);
    expect(await sample(metrics, 'crowdgate_config_reloads_total{result="failure"}')).toBe(1);
    writeFileSync(file, configText('info', true)); // back as it was
    await until(() => live.last()?.ok === true);
    expect(await sample(metrics, 'crowdgate_config_last_reload_success')).toBe(1);
    expect(source.generation).toBe(1);
    live.close();
  });

  test('with reload.watch, an edit of the file is applied; after close() it is not', async () => {
    const { file, source, live } = await setup(true);
    writeFileSync(file, configText('debug', true));
    await until(() => source.generation === 2);
    expect(source.current().log.level).toBe('debug');
    live.close();
    writeFileSync(file, configText('warn', true));
    await new Promise((r) => setTimeout(r, 200));
    expect(source.generation).toBe(2);
  });
});
