#!/usr/bin/env node
/**
 * Writes config/gateway.schema.json from src/config/schema.ts.
 *   node scripts/gen-schema.mjs          write the file
 *   node scripts/gen-schema.mjs --check  exit 1 when the committed file is stale
 * Runs the TypeScript source directly through Vite's module runner (installed with vitest),
 * so no build step is needed.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { runnerImport } from 'vite';

const root = fileURLToPath(new URL('..', import.meta.url));
const target = `${root}config/gateway.schema.json`;
const { module } = await runnerImport(`${root}src/config/json-schema.ts`, { root, logLevel: 'error' });
const text = module.renderConfigJsonSchema();

if (process.argv.includes('--check')) {
  const committed = await readFile(target, 'utf8').catch(() => '');
  if (committed !== text) {
    console.error(`${target} is stale: run npm run schema`);
    process.exit(1);
  }
  console.log(`${target} is up to date`);
} else {
  await writeFile(target, text);
  console.log(`wrote ${target}`);
}
