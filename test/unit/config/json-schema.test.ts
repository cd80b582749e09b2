import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { JSON_SCHEMA_ID, makeConfigJsonSchema, renderConfigJsonSchema } from '../../../src/config/json-schema.js';

const COMMITTED = new URL('../../../config/gateway.schema.json', import.meta.url);

describe('config/gateway.schema.json', () => {
  test('the committed file matches the schema (run `npm run schema` when this fails)', () => {
    expect(readFileSync(COMMITTED, 'utf8')).toBe(renderConfigJsonSchema());
  });

  test('carries $id, title and the 2020-12 dialect', () => {
    expect(makeConfigJsonSchema()).toMatchObject({
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      $id: JSON_SCHEMA_ID,
      title: expect.any(String),
    });
  });

  test('describes what a user writes: only `sites` is required, defaults are shown', () => {
    const schema = makeConfigJsonSchema() as {
      required?: string[];
      properties: Record<string, { default?: unknown; properties?: Record<string, { default?: unknown }> }>;
    };
    expect(schema.required).toEqual(['sites']);
    expect(schema.properties.listen?.properties?.port?.default).toBe(8080);
  });

  test('rejects unknown keys at every object level, as the loader does', () => {
    const open: string[] = [];
    const walk = (node: unknown, path: string) => {
      if (node === null || typeof node !== 'object') return;
      const n = node as Record<string, unknown>;
      if (n.type === 'object' && n.properties && n.additionalProperties !== false) open.push(path);
      for (const [k, v] of Object.entries(n)) walk(v, `${path}/${k}`);
    };
    walk(makeConfigJsonSchema(), '#');
    expect(open).toEqual([]);
  });

  test('uses no format that JSON Schema does not define', () => {
    const formats = new Set<string>();
    JSON.stringify(makeConfigJsonSchema(), (k, v: unknown) => {
      if (k === 'format' && typeof v === 'string') formats.add(v);
      return v;
    });
    const standard = new Set(['uri', 'uri-reference', 'email', 'hostname', 'ipv4', 'ipv6', 'date-time', 'uuid', 'regex']);
    expect([...formats].filter((f) => !standard.has(f))).toEqual([]);
  });
});
