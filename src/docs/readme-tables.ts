/**
 * README tables generated from their sources of truth: the error catalogue (errors.ts) and the
 * metric catalogue (metrics/names.ts). `npm run docs` writes them between their markers; a test
 * fails when the README is stale, so the docs list exactly the codes and metrics that exist.
 */
import { ERRORS } from '../errors.js';
import { METRIC_LIST } from '../metrics/names.js';

export const TABLES = {
  errors: { start: '<!-- errors:start -->', end: '<!-- errors:end -->', render: renderErrorTable },
  metrics: { start: '<!-- metrics:start -->', end: '<!-- metrics:end -->', render: renderMetricTable },
} as const;

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

export function renderErrorTable(): string {
  const rows = Object.entries(ERRORS).map(
    ([code, spec]) => `| \`${code}\` | ${spec.status} | ${cell(spec.message)} | ${cell(spec.action)} |`,
  );
  return ['| code | status | message | what to do |', '|---|---|---|---|', ...rows].join('\n');
}

export function renderMetricTable(): string {
  const rows = METRIC_LIST.map(
    (m) => `| \`${m.name}\` | ${m.type} | ${m.labels.map((l) => `\`${l}\``).join(', ') || '—'} | ${cell(m.help)} |`,
  );
  return ['| metric | type | labels | meaning |', '|---|---|---|---|', ...rows].join('\n');
}

/** Replaces what stands between `start` and `end` with `content`. */
export function spliceBetween(doc: string, start: string, end: string, content: string): string {
  const a = doc.indexOf(start);
  const b = doc.indexOf(end);
  if (a === -1 || b === -1 || b < a) throw new Error(`markers ${start} … ${end} not found`);
  return `${doc.slice(0, a + start.length)}\n${content}\n${doc.slice(b)}`;
}

export function renderReadmeTables(doc: string): string {
  let out = doc;
  for (const t of Object.values(TABLES)) out = spliceBetween(out, t.start, t.end, t.render());
  return out;
}
