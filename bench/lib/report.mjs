/**
 * Writes one benchmark's results: `<dir>/<name>-<timestamp>.json` and `.md`, prints the Markdown
 * to stdout and the file names to stderr. Returns the path without extension, for extra files.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { noteMachineLoad } from './procs.mjs';

/**
 * The facts every report opens with: when, Node, CPUs, the load average at start (pass what
 * `noteMachineLoad('start')` returned) and now, and the command that reproduces the run.
 */
export function runFacts(script, loadAtStart) {
  return {
    date: new Date().toISOString(),
    node: process.version,
    nproc: cpus().length, // the machine's, not this process's (a pinned bench sees 1)
    loadAverage: { atStart: loadAtStart, atEnd: noteMachineLoad('end') },
    cpuModel: cpus()[0]?.model ?? 'unknown CPU',
    command: `node bench/${script} ${process.argv.slice(2).join(' ')}`.trim(),
  };
}

/** The report's first sentence, from `runFacts`. */
export function machineSentence(meta) {
  return `Node ${meta.node}, ${meta.nproc} CPUs, ${meta.cpuModel}, load average ${meta.loadAverage.atStart} at start, ${meta.loadAverage.atEnd} at end.`;
}

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
