#!/usr/bin/env node
/**
 * Regenerates the README's generated sections (configuration reference, error table, metric
 * table) and config/gateway.schema.json. `--check` exits 1 when any of them is stale.
 * Runs the TypeScript sources through Vite's module runner (installed with vitest).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { runnerImport } from 'vite';

const root = fileURLToPath(new URL('..', import.meta.url));
const check = process.argv.includes('--check');
const load = async (p) => (await runnerImport(`${root}${p}`, { root, logLevel: 'error' })).module;
const reference = await load('src/config/reference.ts');
const tables = await load('src/docs/readme-tables.ts');
const jsonSchema = await load('src/config/json-schema.ts');

const files = [
  ['README.md', (doc) => tables.renderReadmeTables(reference.spliceConfigReference(doc))],
  ['config/gateway.schema.json', () => jsonSchema.renderConfigJsonSchema()],
];
let stale = 0;
for (const [file, render] of files) {
  const before = await readFile(`${root}${file}`, 'utf8').catch(() => '');
  const after = render(before);
  if (after === before) continue;
  stale++;
  if (check) console.error(`${file} is stale: run npm run docs`);
  else {
    await writeFile(`${root}${file}`, after);
    console.log(`wrote ${file}`);
  }
}
if (check && stale > 0) process.exit(1);
