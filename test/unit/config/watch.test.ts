import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { watchConfig, type ConfigWatcher } from '../../../src/config/watch.js';

// Real files and real fs.watch: these tests wait on the file system, in short bounded waits.
const DEBOUNCE_MS = 40;
/** Long enough for a stray second callback to show up if the debounce were broken. */
const QUIET_MS = DEBOUNCE_MS * 4;

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the watcher');
    await delay(5);
  }
}

let watcher: ConfigWatcher | undefined;
let dir: string;
afterEach(() => {
  watcher?.close();
  watcher = undefined;
  rmSync(dir, { recursive: true, force: true });
});

function setup(initial = 'a: 1\n', partialHoldMs?: number) {
  dir = mkdtempSync(join(tmpdir(), 'crowdgate-watch-'));
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, initial);
  const calls: number[] = [];
  watcher = watchConfig({ file, debounceMs: DEBOUNCE_MS, onChange: () => calls.push(Date.now()), retryMs: 50, partialHoldMs });
  return { file, calls };
}

describe('watchConfig', () => {
  test('a plain write gives one callback', async () => {
    const { file, calls } = setup();
    writeFileSync(file, 'a: 2\n');
    await waitFor(() => calls.length >= 1);
    await delay(QUIET_MS);
    expect(calls).toHaveLength(1);
  });

  test('an atomic rename-save (temp file renamed over the original) gives one callback', async () => {
    const { file, calls } = setup();
    const temp = join(dir, '.gateway.yaml.swp');
    writeFileSync(temp, 'a: 2\n');
    renameSync(temp, file);
    await waitFor(() => calls.length >= 1);
    await delay(QUIET_MS);
    expect(calls).toHaveLength(1);
  });

  test('keeps watching after a rename-save replaced the inode', async () => {
    const { file, calls } = setup();
    for (const [i, content] of ['a: 2\n', 'a: 3\n'].entries()) {
      const temp = join(dir, `tmp-${i}`);
      writeFileSync(temp, content);
      renameSync(temp, file);
      await waitFor(() => calls.length >= i + 1);
    }
    expect(calls).toHaveLength(2);
  });

  test('a burst of writes inside the debounce window gives one callback, after the last write', async () => {
    // A wider window here so a busy machine pausing between writes cannot split the burst.
    const debounceMs = 150;
    dir = mkdtempSync(join(tmpdir(), 'crowdgate-watch-'));
    const file = join(dir, 'gateway.yaml');
    writeFileSync(file, 'a: 0\n');
    const calls: number[] = [];
    watcher = watchConfig({ file, debounceMs, onChange: () => calls.push(Date.now()) });
    let lastWriteAt = 0;
    for (let i = 1; i <= 10; i++) {
      writeFileSync(file, `a: ${i}\n`);
      lastWriteAt = Date.now();
      await delay(5);
    }
    await waitFor(() => calls.length >= 1);
    await delay(debounceMs * 2);
    expect(calls).toHaveLength(1);
    // The timer restarts on every event, so the callback comes a full window after the last write.
    expect(calls[0]! - lastWriteAt).toBeGreaterThanOrEqual(debounceMs - 5);
  });

  test('changes to other files in the directory are ignored', async () => {
    const { calls } = setup();
    writeFileSync(join(dir, 'other.yaml'), 'b: 1\n');
    writeFileSync(join(dir, 'gateway.yaml.bak'), 'b: 1\n');
    await delay(QUIET_MS);
    expect(calls).toHaveLength(0);
  });

  test('an edit is applied while another file in the directory is written more often than the debounce', async () => {
    const { file, calls } = setup();
    // A log file beside the config, written every DEBOUNCE_MS / 4 for the whole test.
    const log = join(dir, 'app.log');
    let n = 0;
    const churn = setInterval(() => writeFileSync(log, `line ${n++}\n`, { flag: 'a' }), DEBOUNCE_MS / 4);
    try {
      await delay(DEBOUNCE_MS * 2);
      const editedAt = Date.now();
      writeFileSync(file, 'a: 2\n');
      await waitFor(() => calls.length > 0, DEBOUNCE_MS * 10);
      expect(calls[0]! - editedAt).toBeLessThan(DEBOUNCE_MS * 8);
    } finally {
      clearInterval(churn);
    }
  });

  test('a file missing for a while gives no callback until it is back', async () => {
    const { file, calls } = setup();
    rmSync(file);
    await delay(QUIET_MS);
    expect(calls).toHaveLength(0);
    writeFileSync(file, 'a: 2\n');
    await waitFor(() => calls.length >= 1);
    await delay(QUIET_MS);
    expect(calls).toHaveLength(1);
  });

  test('a file gone at two checks in a row is reported missing once, and back once (new-user trial: a deleted config logged nothing)', async () => {
    dir = mkdtempSync(join(tmpdir(), 'crowdgate-watch-'));
    const file = join(dir, 'gateway.yaml');
    writeFileSync(file, 'a: 1\n');
    const missing: boolean[] = [];
    watcher = watchConfig({ file, debounceMs: DEBOUNCE_MS, onChange: () => {}, retryMs: 50, onMissing: (m) => missing.push(m) });
    // An editor's rename-save puts it back within a check: nothing to report.
    for (let i = 0; i < 5; i++) {
      const temp = join(dir, `tmp-${i}`);
      writeFileSync(temp, `a: ${i}\n`);
      renameSync(temp, file);
      await delay(20);
    }
    await delay(200);
    expect(missing).toEqual([]);
    rmSync(file);
    await waitFor(() => missing.length >= 1);
    await delay(200); // still missing: reported once
    expect(missing).toEqual([true]);
    writeFileSync(file, 'a: 2\n');
    await waitFor(() => missing.length >= 2);
    expect(missing).toEqual([true, false]);
  });

  test('a Kubernetes-style symlink swap (the file name never in an event) gives a callback', async () => {
    dir = mkdtempSync(join(tmpdir(), 'crowdgate-watch-'));
    // Layout of a ConfigMap volume: gateway.yaml -> ..data/gateway.yaml, ..data -> ..v1
    mkdirSync(join(dir, '..v1'));
    writeFileSync(join(dir, '..v1', 'gateway.yaml'), 'a: 1\n');
    symlinkSync('..v1', join(dir, '..data'));
    symlinkSync(join('..data', 'gateway.yaml'), join(dir, 'gateway.yaml'));
    const calls: number[] = [];
    watcher = watchConfig({ file: join(dir, 'gateway.yaml'), debounceMs: DEBOUNCE_MS, onChange: () => calls.push(1) });
    mkdirSync(join(dir, '..v2'));
    writeFileSync(join(dir, '..v2', 'gateway.yaml'), 'a: 22\n');
    symlinkSync('..v2', join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    await waitFor(() => calls.length >= 1);
    expect(calls).toHaveLength(1);
  });

  test('a file cut mid-line waits for the rest (a write in two parts), and one callback follows it', async () => {
    const { file, calls } = setup('a: 1\n', 2_000);
    writeFileSync(file, 'a: 2\nurl: http://127.0.0.1:491'); // the first part of a slow writer's file
    await delay(DEBOUNCE_MS * 8);
    expect(calls).toHaveLength(0);
    const restAt = Date.now();
    writeFileSync(file, '00\n', { flag: 'a' });
    await waitFor(() => calls.length >= 1);
    expect(calls[0]!).toBeGreaterThanOrEqual(restAt);
    await delay(QUIET_MS);
    expect(calls).toHaveLength(1);
  });

  test('an emptied file (truncate, then write) waits for its content, and one callback follows it', async () => {
    const { file, calls } = setup('a: 1\n', 2_000);
    writeFileSync(file, '');
    await delay(DEBOUNCE_MS * 8);
    expect(calls).toHaveLength(0);
    const restAt = Date.now();
    writeFileSync(file, 'a: 2\n', { flag: 'a' });
    await waitFor(() => calls.length >= 1);
    expect(calls[0]!).toBeGreaterThanOrEqual(restAt);
    await delay(QUIET_MS);
    expect(calls).toHaveLength(1);
  });

  test('a file that ends without a newline still applies, once it has been quiet for the hold', async () => {
    const { file, calls } = setup('a: 1\n', 300);
    const writtenAt = Date.now();
    writeFileSync(file, 'a: 2');
    await waitFor(() => calls.length >= 1);
    expect(calls[0]! - writtenAt).toBeGreaterThanOrEqual(290);
    await delay(QUIET_MS);
    expect(calls).toHaveLength(1);
  });

  test('the hold counts from when the change was seen, not from the file\'s mtime (a clock-skewed file 30 days ahead)', async () => {
    const { file, calls } = setup('a: 1\n', 300);
    const writtenAt = Date.now();
    writeFileSync(file, 'a: 2');
    const ahead = new Date(Date.now() + 30 * 86_400_000);
    utimesSync(file, ahead, ahead);
    await waitFor(() => calls.length >= 1, 3_000);
    expect(calls[0]! - writtenAt).toBeLessThan(1_500);
    await delay(QUIET_MS);
    expect(calls).toHaveLength(1);
  });

  test('keeps watching after its directory is removed and made again, or moved away and made again', async () => {
    const { file, calls } = setup();
    rmSync(dir, { recursive: true });
    mkdirSync(dir);
    writeFileSync(file, 'a: 2\n');
    await waitFor(() => calls.length >= 1);
    writeFileSync(file, 'a: 3\n');
    await waitFor(() => calls.length >= 2);
    renameSync(dir, `${dir}.gone`);
    try {
      mkdirSync(dir);
      writeFileSync(file, 'a: 4\n');
      await waitFor(() => calls.length >= 3);
      writeFileSync(file, 'a: 5\n');
      await waitFor(() => calls.length >= 4);
      await delay(QUIET_MS);
      expect(calls).toHaveLength(4);
    } finally {
      rmSync(`${dir}.gone`, { recursive: true, force: true });
    }
  });

  test('close stops callbacks, including one already debouncing', async () => {
    const { file, calls } = setup();
    writeFileSync(file, 'a: 2\n');
    await delay(5);
    watcher?.close();
    writeFileSync(file, 'a: 3\n');
    await delay(QUIET_MS);
    expect(calls).toHaveLength(0);
  });
});
