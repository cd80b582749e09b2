import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { parseConfigText } from '../../src/config/load.js';
import { configHashOf, PriorityClasses, Runtime, timeoutsFor } from '../../src/runtime.js';

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

describe('configHashOf', () => {
  const parse = (extra: Record<string, unknown>, ttl = 60, file = 'test.yaml', site: Record<string, unknown> = {}) => {
    const r = parseConfigText(
      stringify({ ...extra, sites: [{ name: 'blog', hosts: ['*'], origins: [{ url: 'http://127.0.0.1:3000' }], routes: [{ name: 'pages', cache: { defaultTtlSeconds: ttl } }], ...site }] }),
      file,
      { env: {}, checkFiles: false },
    );
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.config;
  };

  it('is the same for two instances that differ only in where they listen (multi-instance trial), and differs for any other setting', () => {
    const one = configHashOf(parse({ listen: { host: '127.0.0.1', port: 8081 }, admin: { port: 9101 }, tls: { port: 8443 } }));
    const two = configHashOf(parse({ listen: { host: '0.0.0.0', port: 8082 }, admin: { host: '10.0.0.5', port: 9102 }, tls: { host: '::', port: 9443 } }));
    expect(one).toMatch(/^[0-9a-f]{12}$/);
    expect(two).toBe(one);
    expect(configHashOf(parse({ listen: { host: '127.0.0.1', port: 8081 } }, 61))).not.toBe(configHashOf(parse({ listen: { host: '127.0.0.1', port: 8081 } }, 60)));
    expect(configHashOf(parse({ listen: { backlog: 100 } }))).not.toBe(configHashOf(parse({})));
    expect(configHashOf(parse({ admin: { statusToken: 'x'.repeat(16) } }))).not.toBe(configHashOf(parse({})));
  });

  it('is the same for one file in two directories while no site uses ACME (fleet trial: acme.storageDir, resolved against each file\'s directory, gave three instances three hashes)', () => {
    expect(configHashOf(parse({}, 60, '/srv/gw1/gateway.yaml'))).toBe(configHashOf(parse({}, 60, '/srv/gw2/gateway.yaml')));
    // Where a site's certificates come from ACME, the storage is part of what it runs with.
    const acme = { tls: { acme: true }, hosts: ['blog.example.com'] };
    expect(configHashOf(parse({ tls: { port: 8443 } }, 60, '/srv/gw1/gateway.yaml', acme))).not.toBe(configHashOf(parse({ tls: { port: 8443 } }, 60, '/srv/gw2/gateway.yaml', acme)));
  });
});

describe('timeoutsFor', () => {
  const siteOf = (timeouts: Record<string, number>, routeTimeouts?: Record<string, number>) => {
    const loaded = parseConfigText(
      stringify({ sites: [{ name: 's', hosts: ['*'], origins: [{ url: 'http://127.0.0.1:1' }], timeouts, routes: [{ name: 'r', ...(routeTimeouts ? { timeouts: routeTimeouts } : {}) }] }] }),
      'test.yaml',
      { env: {} },
    );
    if (!loaded.ok) throw new Error(JSON.stringify(loaded.errors));
    const site = loaded.config.sites[0]!;
    return { site, route: { config: site.routes[0]! } };
  };

  it('gives an unsafe method unsafeResponseHeadersMs (60 s by default) and a safe one responseHeadersMs', () => {
    const { site, route } = siteOf({});
    expect(timeoutsFor(site, route, 'GET').responseHeadersMs).toBe(15_000);
    expect(timeoutsFor(site, route, 'OPTIONS').responseHeadersMs).toBe(15_000);
    expect(timeoutsFor(site, route).responseHeadersMs).toBe(15_000);
    for (const m of ['POST', 'PUT', 'PATCH', 'DELETE', 'PROPFIND']) expect(timeoutsFor(site, route, m).responseHeadersMs, m).toBe(60_000);
  });

  it('never gives an unsafe method less than responseHeadersMs, and a route\'s own values win', () => {
    const raised = siteOf({ responseHeadersMs: 120_000 });
    expect(timeoutsFor(raised.site, raised.route, 'POST').responseHeadersMs).toBe(120_000);
    const route = siteOf({}, { responseHeadersMs: 90_000 });
    expect(timeoutsFor(route.site, route.route, 'POST').responseHeadersMs).toBe(90_000);
    // A route's own shorter wait, with no unsafe one of its own, holds for its POSTs too.
    const quick = siteOf({}, { responseHeadersMs: 5_000 });
    expect(timeoutsFor(quick.site, quick.route, 'POST').responseHeadersMs).toBe(5_000);
    const own = siteOf({}, { unsafeResponseHeadersMs: 30_000 });
    expect(timeoutsFor(own.site, own.route, 'POST').responseHeadersMs).toBe(30_000);
    expect(timeoutsFor(own.site, own.route, 'GET').responseHeadersMs).toBe(15_000);
  });
});
