/**
 * Builds dist/ once before the suite, so CLI tests run the real `crowdgate` binary
 * (node dist/main.js) exactly as `npm start` does. Type errors are the type check's job
 * (`npm run typecheck`); tsc still emits, so they don't stop the suite here.
 */
import { execFileSync } from 'node:child_process';

export default function setup(): void {
  try {
    execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'pipe' });
  } catch (err) {
    const out = String((err as { stdout?: Buffer }).stdout ?? '');
    console.warn(`global-setup: tsc reported errors (dist/ still emitted):\n${out.slice(0, 2000)}`);
  }
}
