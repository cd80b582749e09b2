// `npm start` runs this first: build dist/ with tsc when it is missing or older than src/.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

function newest(dir) {
  let t = 0;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const s = statSync(p);
    t = Math.max(t, s.isDirectory() ? newest(p) : s.mtimeMs);
  }
  return t;
}

const target = 'dist/main.js';
const stale = !existsSync(target) || newest('src') > statSync(target).mtimeMs || statSync('package.json').mtimeMs > statSync(target).mtimeMs;
if (stale) {
  console.error('crowdgate: building (tsc) ...');
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
}
