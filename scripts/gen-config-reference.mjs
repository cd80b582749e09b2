#!/usr/bin/env node
/**
 * Writes the configuration reference table into README.md between
 * <!-- config-reference:start --> and <!-- config-reference:end -->.
 *   node scripts/gen-config-reference.mjs [README.md]          write
 *   node scripts/gen-config-reference.mjs --check [README.md]  exit 1 when stale
 *   node scripts/gen-config-reference.mjs --print              print the table only
 * Runs the TypeScript source directly through Vite's module runner (installed with vitest).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { runnerImport } from 'vite';

const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
const target = args.find((a) => !a.startsWith('--')) ?? `${root}README.md`;
const { module } = await runnerImport(`${root}src/config/reference.ts`, { root, logLevel: 'error' });
const reference = module.renderConfigReference();

if (args.includes('--print')) {
  process.stdout.write(reference);
  process.exit(0);
}
const before = await readFile(target, 'utf8');
let after;
try {
  after = module.spliceConfigReference(before, reference);
} catch (err) {
  console.error(`${target}: ${err.message}`);
  process.exit(1);
}
if (args.includes('--check')) {
  if (after !== before) {
    console.error(`${target}: configuration reference is stale: run npm run config-reference`);
    process.exit(1);
  }
  console.log(`${target}: configuration reference is up to date`);
} else {
  await writeFile(target, after);
  console.log(`wrote the configuration reference into ${target}`);
}
