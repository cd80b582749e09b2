/**
 * Builds dist/ once before the suite, so CLI tests run the real `crowdgate` binary
 * (node dist/main.js) exactly as `npm start` does. Type errors are the type check's job
 * (`npm run typecheck`); tsc still emits, so they don't stop the suite here.
 *
 * Gives the suite a temp directory of its own (TMPDIR, which the test workers and every process
 * they start inherit) and removes it when the suite ends: each gateway, process and test CA
 * writes its files under os.tmpdir(), and a full run left about 450 directories in /tmp.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export default function setup(): () => void {
  try {
    execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'pipe' });
  } catch (err) {
    const out = String((err as { stdout?: Buffer }).stdout ?? '');
    console.warn(`global-setup: tsc reported errors (dist/ still emitted):\n${out.slice(0, 2000)}`);
  }
  const previous = process.env.TMPDIR;
  const dir = mkdtempSync(join(tmpdir(), 'crowdgate-suite-'));
  process.env.TMPDIR = dir;
  return () => {
    if (previous === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = previous;
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch (err) {
      // A process a test left running may still write there: the suite's result stands.
      console.warn(`global-setup: could not remove ${dir}: ${String(err)}`);
    }
  };
}
