import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../../src/errors.js';
import { METRIC_LIST } from '../../../src/metrics/names.js';
import { renderReadmeTables, renderErrorTable, spliceBetween } from '../../../src/docs/readme-tables.js';

const readme = readFileSync('README.md', 'utf8');

describe('README generated tables', () => {
  it('are up to date (run npm run docs)', () => {
    expect(renderReadmeTables(readme)).toBe(readme);
  });

  it('list exactly the error codes in the catalogue', () => {
    const section = readme.slice(readme.indexOf('<!-- errors:start -->'), readme.indexOf('<!-- errors:end -->'));
    const listed = [...section.matchAll(/^\| `([a-z_]+)` \|/gm)].map((m) => m[1]);
    expect(listed.sort()).toEqual([...ERROR_CODES].sort());
  });

  it('list exactly the metrics in the catalogue', () => {
    const section = readme.slice(readme.indexOf('<!-- metrics:start -->'), readme.indexOf('<!-- metrics:end -->'));
    const listed = [...section.matchAll(/^\| `(crowdgate_[a-z_]+)` \|/gm)].map((m) => m[1]);
    expect(listed.sort()).toEqual(METRIC_LIST.map((m) => m.name).sort());
  });

  it('detects a stale table', () => {
    const stale = spliceBetween(readme, '<!-- errors:start -->', '<!-- errors:end -->', '| `gone` | 500 | x | y |');
    expect(renderReadmeTables(stale)).not.toBe(stale);
    expect(renderReadmeTables(stale)).toContain(renderErrorTable());
  });
});
