/**
 * Writes one benchmark's results: `<dir>/<name>-<timestamp>.json` and `.md`, prints the Markdown
 * to stdout and the file names to stderr. Returns the path without extension, for extra files.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export function writeReport({ dir, name, date, json, md }) {
  mkdirSync(dir, { recursive: true });
  const base = join(dir, `${name}-${date.replace(/[:.]/g, '-').slice(0, 19)}`);
  // JSON.stringify already writes NaN and ±Infinity as null.
  writeFileSync(`${base}.json`, JSON.stringify(json, null, 1));
  writeFileSync(`${base}.md`, md);
  process.stdout.write(md);
  process.stderr.write(`\nwrote ${base}.json and ${base}.md\n`);
  return base;
}
