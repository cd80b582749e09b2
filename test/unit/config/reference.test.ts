import { describe, expect, test } from 'vitest';
import { makeConfigJsonSchema } from '../../../src/config/json-schema.js';
import {
  REFERENCE_END,
  REFERENCE_START,
  listConfigKeys,
  renderConfigReference,
  spliceConfigReference,
} from '../../../src/config/reference.js';

type Node = { [key: string]: unknown };

/** Every leaf key path in the JSON Schema, found independently of reference.ts. */
function leafPaths(node: Node, prefix: string, out: string[]): string[] {
  const props = node.properties as Record<string, Node> | undefined;
  if (node.type !== 'object' || !props) {
    out.push(prefix);
    return out;
  }
  for (const [key, child] of Object.entries(props)) {
    const path = prefix ? `${prefix}.${key}` : key;
    const items = child.items as Node | undefined;
    if (child.type === 'array' && items?.type === 'object' && items.properties) leafPaths(items, `${path}[]`, out);
    else leafPaths(child, path, out);
  }
  return out;
}

function rowFor(table: string, path: string): string | undefined {
  return table.split('\n').find((line) => line.startsWith(`| \`${path}\` |`));
}

describe('renderConfigReference', () => {
  const table = renderConfigReference();
  const leaves = leafPaths(makeConfigJsonSchema(), '', []);

  test('lists every leaf key of the JSON Schema, one row each', () => {
    expect(leaves.length).toBeGreaterThan(50);
    const missing = leaves.filter((p) => rowFor(table, p) === undefined);
    expect(missing).toEqual([]);
    const keyRows = table.split('\n').filter((l) => /^\| `/.test(l));
    expect(keyRows).toHaveLength(leaves.length);
  });

  test.each([
    { path: 'listen.port', applies: '**restart**' },
    { path: 'admin.host', applies: '**restart**' },
    { path: 'admin.purgeToken', applies: 'live' },
    { path: 'limits.maxHeaderBytes', applies: '**restart**' },
    { path: 'limits.maxHeadersCount', applies: 'live' },
    { path: 'redis.commandTimeoutMs', applies: '**restart**' },
    { path: 'redis.sentinels[].host', applies: '**restart**' },
    { path: 'sites[].routes[].cache.ttlFloorSeconds', applies: 'live' },
  ])('$path applies $applies', ({ path, applies }) => {
    const cells = rowFor(table, path)?.split(' | ');
    expect(cells?.[3]).toBe(applies);
  });

  test('a row shows type, default and description from the schema', () => {
    const row = listConfigKeys().find((r) => r.path === 'sites[].routes[].cache.graceSeconds');
    expect(row).toMatchObject({ type: 'number ≥ 0', defaultText: '3600', isSection: false });
    expect(row?.description).toMatch(/stale/);
    expect(listConfigKeys().find((r) => r.path === 'sites[].name')?.defaultText).toBe('required');
    expect(listConfigKeys().find((r) => r.path === 'admin.purgeToken')?.defaultText).toBe('—');
  });

  test('enum types list their values and escape the table separator', () => {
    expect(rowFor(table, 'log.level')).toContain('"fatal" \\| "error"');
  });
});

describe('spliceConfigReference', () => {
  const doc = `# Title\n\n## Configuration\n\n${REFERENCE_START}\nold table\n${REFERENCE_END}\n\n## Next\n`;

  test('replaces only what lies between the markers, and is stable when run again', () => {
    const once = spliceConfigReference(doc, 'NEW\n');
    expect(once).toBe(`# Title\n\n## Configuration\n\n${REFERENCE_START}\nNEW\n${REFERENCE_END}\n\n## Next\n`);
    expect(spliceConfigReference(once, 'NEW\n')).toBe(once);
  });

  test.each([
    { name: 'no markers', text: '# Title\n' },
    { name: 'only the start marker', text: `${REFERENCE_START}\n` },
    { name: 'markers in the wrong order', text: `${REFERENCE_END}\n${REFERENCE_START}\n` },
  ])('refuses a document with $name', ({ text }) => {
    expect(() => spliceConfigReference(text, 'x')).toThrow(/markers not found/);
  });
});
