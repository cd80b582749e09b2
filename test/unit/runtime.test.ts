import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { parseConfigText } from '../../src/config/load.js';
import { PriorityClasses, Runtime } from '../../src/runtime.js';

describe('PriorityClasses', () => {
  it('orders the configured classes, puts "default" last and background below them all', () => {
    const p = new PriorityClasses([{ name: 'checkout' }, { name: 'default' }, { name: 'api' }]);
    expect(p.names).toEqual(['checkout', 'api', 'default']);
    expect(p.default).toBe(2);
    expect(p.background).toBe(3);
    expect(p.count).toBe(4);
    expect(p.configured).toBe(3); // "default" named in the config is not counted twice
    expect(p.indexOf('api')).toBe(1);
    expect(p.nameOf(p.default)).toBe('default');
    expect(p.nameOf(p.background)).toBe('background');
  });

  it('has "default" alone when nothing is configured', () => {
    const p = new PriorityClasses([]);
    expect(p.names).toEqual(['default']);
    expect([p.default, p.background, p.count, p.configured]).toEqual([0, 1, 2, 1]);
  });
});

describe('Runtime.priorityOf', () => {
  it('matches a priority cookie by name, with * for any run of characters (a session cookie with a hash suffix)', () => {
    const loaded = parseConfigText(
      stringify({
        admission: { priorities: [{ name: 'editors', match: { cookie: 'wordpress_logged_in*' } }, { name: 'exact', match: { cookie: 'sid' } }] },
        sites: [{ name: 'blog', hosts: ['*'], origins: [{ url: 'http://127.0.0.1:9' }] }],
      }),
      'gw.yaml',
      { env: {} },
    );
    if (!loaded.ok) throw new Error('config refused');
    const rt = new Runtime(loaded.config, 1, () => ({}) as never);
    const route = rt.sites[0]!.compiled.matchRoute('GET', '/');
    const of = (cookie?: string) => rt.priorities.nameOf(rt.priorityOf(route, 'GET', '/', cookie === undefined ? {} : { cookie }));
    expect(of('wordpress_logged_in_5f2a=admin%7Ctoken')).toBe('editors');
    expect(of('_ga=1; wordpress_logged_in_=x')).toBe('editors');
    expect(of('wordpress_test_cookie=1')).toBe('default');
    expect(of('sid=1')).toBe('exact');
    expect(of('sidx=1')).toBe('default');
    expect(of()).toBe('default');
  });
});
