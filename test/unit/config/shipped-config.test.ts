import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { LineCounter, isMap, isPair, isScalar, isSeq, parseDocument, type Node as YamlNode } from 'yaml';
import { describe, expect, test } from 'vitest';
import { formatConfigError, loadConfigFile } from '../../../src/config/load.js';
import { makeConfigJsonSchema } from '../../../src/config/json-schema.js';

const FILE = fileURLToPath(new URL('../../../config/gateway.yaml', import.meta.url));
const TEXT = readFileSync(FILE, 'utf8');

/** Line (1-based) and column of every key in the document, with its dotted path. */
function keyPositions(text: string): Array<{ path: string; line: number; col: number }> {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter });
  const out: Array<{ path: string; line: number; col: number }> = [];
  const walk = (node: unknown, path: string) => {
    if (isMap(node)) {
      for (const pair of node.items) {
        if (!isPair(pair) || !isScalar(pair.key)) continue;
        const key = String(pair.key.value);
        const childPath = path ? `${path}.${key}` : key;
        out.push({ path: childPath, ...lineCounter.linePos((pair.key as YamlNode).range![0]) });
        walk(pair.value, childPath);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => walk(item, `${path}[${i}]`));
    }
  };
  walk(doc.contents, '');
  return out;
}

/** True when the key on `line` has a `#` comment after it, or the line above is a comment. */
function hasComment(lines: string[], line: number, col: number): boolean {
  const own = lines[line - 1] ?? '';
  const afterKey = own.slice(col - 1);
  // A comment starts at a '#' preceded by whitespace, outside quotes (none of our values quote a '#').
  if (/\s#/.test(stripQuoted(afterKey))) return true;
  const above = (lines[line - 2] ?? '').trim();
  return above.startsWith('#');
}

function stripQuoted(s: string): string {
  return s.replace(/"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'/g, '""');
}

describe('config/gateway.yaml (the shipped config)', () => {
  test('starts with the yaml-language-server schema line', () => {
    expect(TEXT.split('\n')[0]).toBe('# yaml-language-server: $schema=./gateway.schema.json');
  });

  test('validates', async () => {
    const r = await loadConfigFile(FILE, { env: {} });
    expect(r.ok ? [] : r.errors.map(formatConfigError)).toEqual([]);
  });

  test('is memory-only with the blog site on 127.0.0.1:3000, listening on 8080, admin on 127.0.0.1:9091', async () => {
    const r = await loadConfigFile(FILE, { env: {} });
    if (!r.ok) throw new Error('shipped config refused');
    const c = r.config;
    expect(c.redis).toBeUndefined();
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 8080, backlog: 4096 });
    expect(c.sites[0]!.balance).toBe('least-inflight'); // a member that slows down or hangs gets fewer requests
    expect([c.admin.host, c.admin.port]).toEqual(['127.0.0.1', 9091]);
    expect(c.sites.map((s) => s.name)).toEqual(['blog']);
    expect(c.sites[0]?.hosts).toEqual(['blog.example.com', '*']);
    expect(c.sites[0]?.origins.map((o) => o.url)).toEqual(['http://127.0.0.1:3000']);
    const routes = c.sites[0]?.routes ?? [];
    expect(routes.map((r) => r.name)).toEqual(['static', 'api', 'default']);
    expect(routes[0]?.match.pathPrefix).toBe('/static/');
    // No floor: a new user's /static/app.js is seldom fingerprinted, and a day's floor kept the
    // old file for a day after a deploy (new-user trial). Grace only.
    expect(routes[0]?.cache.ttlFloorSeconds).toBe(0);
    expect(routes[0]?.cache.graceSeconds).toBe(86400);
    expect(routes[1]?.match.pathPrefix).toBe('/api/');
    expect(routes[1]?.cache.enabled).toBe(false);
  });

  test('shows every top-level key (redis as a commented-out example)', () => {
    const topLevel = Object.keys((makeConfigJsonSchema() as { properties: object }).properties);
    const present = new Set(keyPositions(TEXT).filter((k) => !k.path.includes('.')).map((k) => k.path));
    const missing = topLevel.filter((k) => !present.has(k) && !new RegExp(`^# ${k}:`, 'm').test(TEXT));
    expect(missing).toEqual([]);
  });

  test('has a comment on every key (same line or the line above)', () => {
    const lines = TEXT.split('\n');
    const keys = keyPositions(TEXT);
    expect(keys.length).toBeGreaterThan(80);
    const uncommented = keys.filter((k) => !hasComment(lines, k.line, k.col)).map((k) => `${k.line}: ${k.path}`);
    expect(uncommented).toEqual([]);
  });

  test('the comment check catches a key without a comment', () => {
    const text = 'a: 1  # about a\n# about b\nb: 2\nc: "x # not a comment"\n';
    const lines = text.split('\n');
    const found = keyPositions(text).map((k) => [k.path, hasComment(lines, k.line, k.col)]);
    expect(found).toEqual([
      ['a', true],
      ['b', true],
      ['c', false],
    ]);
  });
});
