import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, test } from 'vitest';
import { REFERENCE_END, REFERENCE_START, renderConfigReference } from '../../../src/config/reference.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

function run(script: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(ROOT, 'scripts', script), ...args], { cwd: ROOT, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const dir = mkdtempSync(join(tmpdir(), 'crowdgate-gen-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Each test starts a node process (about a second); they are independent, so run them together.
describe.concurrent('config generator scripts run from a fresh clone, without a build', () => {
  test('gen-schema.mjs --check passes on the committed config/gateway.schema.json', async () => {
    const r = await run('gen-schema.mjs', ['--check']);
    expect(r).toMatchObject({ code: 0, stderr: '' });
  });

  test('gen-config-reference.mjs writes the table between the markers, keeping the rest', async () => {
    const readme = join(dir, 'README.md');
    writeFileSync(readme, `# x\n\n${REFERENCE_START}\nstale\n${REFERENCE_END}\n\nafter\n`);
    expect((await run('gen-config-reference.mjs', [readme])).code).toBe(0);
    expect(readFileSync(readme, 'utf8')).toBe(`# x\n\n${REFERENCE_START}\n${renderConfigReference()}${REFERENCE_END}\n\nafter\n`);
  });

  test('gen-config-reference.mjs --check fails on a stale table and leaves the file alone', async () => {
    const readme = join(dir, 'STALE.md');
    const stale = `${REFERENCE_START}\nstale\n${REFERENCE_END}\n`;
    writeFileSync(readme, stale);
    const r = await run('gen-config-reference.mjs', ['--check', readme]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/stale/);
    expect(readFileSync(readme, 'utf8')).toBe(stale);
  });

  test('gen-config-reference.mjs fails with a clear message when the markers are missing', async () => {
    const readme = join(dir, 'NO-MARKERS.md');
    writeFileSync(readme, '# x\n');
    const r = await run('gen-config-reference.mjs', [readme]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/markers not found/);
    expect(readFileSync(readme, 'utf8')).toBe('# x\n');
  });
});
