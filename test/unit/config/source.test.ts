import { describe, expect, test } from 'vitest';
import { parseConfigText } from '../../../src/config/load.js';
import type { GatewayConfig } from '../../../src/config/schema.js';
import { ConfigSource } from '../../../src/config/source.js';

function makeConfig(siteName: string, extra = ''): GatewayConfig {
  const r = parseConfigText(
    `${extra}sites:\n  - name: ${siteName}\n    hosts: ["*"]\n    origins: [{ url: "http://127.0.0.1:3000" }]\n`,
    'test.yaml',
    { env: {} },
  );
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
}

describe('ConfigSource', () => {
  test('starts at generation 1 with the initial snapshot, frozen', () => {
    const initial = makeConfig('a');
    const source = new ConfigSource(initial);
    expect(source.generation).toBe(1);
    expect(source.current()).toBe(initial);
    expect(Object.isFrozen(source.current().sites[0])).toBe(true);
  });

  test('freezes a config that was not frozen yet', () => {
    const thawed = structuredClone(makeConfig('a'));
    const source = new ConfigSource(thawed);
    expect(Object.isFrozen(source.current().cache.collapse)).toBe(true);
    source.swap(structuredClone(makeConfig('b')));
    expect(Object.isFrozen(source.current().sites[0]?.origins)).toBe(true);
  });

  test('a snapshot taken before a swap keeps the old values (in-flight requests finish on it)', () => {
    const source = new ConfigSource(makeConfig('old'));
    const inFlight = source.current();
    source.swap(makeConfig('new'));
    expect(inFlight.sites[0]?.name).toBe('old');
    expect(source.current().sites[0]?.name).toBe('new');
  });

  test('each swap increments the generation', () => {
    const source = new ConfigSource(makeConfig('a'));
    for (const [i, name] of ['b', 'c', 'd'].entries()) {
      source.swap(makeConfig(name));
      expect(source.generation).toBe(i + 2);
    }
  });

  test('listeners get (next, prev) after the swap, and stop after unsubscribing', () => {
    const a = makeConfig('a');
    const b = makeConfig('b');
    const c = makeConfig('c');
    const source = new ConfigSource(a);
    const seen: Array<[string, string, string]> = [];
    const off = source.onChange((next, prev) => {
      seen.push([next.sites[0]!.name, prev.sites[0]!.name, source.current().sites[0]!.name]);
    });
    source.swap(b);
    off();
    source.swap(c);
    expect(seen).toEqual([['b', 'a', 'b']]);
  });

  test('the same function subscribed twice is called twice and unsubscribes independently', () => {
    const source = new ConfigSource(makeConfig('a'));
    let calls = 0;
    const listener = () => void calls++;
    const off1 = source.onChange(listener);
    source.onChange(listener);
    off1();
    source.swap(makeConfig('b'));
    expect(calls).toBe(1);
  });

  test('a throwing listener does not stop the others or undo the swap', () => {
    const source = new ConfigSource(makeConfig('a'));
    const reached: string[] = [];
    source.onChange(() => {
      throw new Error('pool rebuild failed');
    });
    source.onChange((next) => reached.push(next.sites[0]!.name));
    expect(() => source.swap(makeConfig('b'))).toThrow(AggregateError);
    expect(reached).toEqual(['b']);
    expect(source.current().sites[0]?.name).toBe('b');
    expect(source.generation).toBe(2);
  });
});
