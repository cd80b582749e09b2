import { describe, expect, it } from 'vitest';
import { routeSchema, siteSchema } from '../../../src/config/schema.js';
import { compileSite, MAX_QUERY_PARAMS, normaliseHost, readHostEntry, SiteRouter } from '../../../src/server/site-router.js';

const site = (name: string, hosts: string[]) => ({ name, config: { hosts } });

describe('SiteRouter', () => {
  const router = new SiteRouter([site('exact', ['blog.example.com']), site('wild', ['*.example.com']), site('deeper', ['*.shop.example.com']), site('all', ['*'])]);
  it.each([
    ['blog.example.com', 'exact'],
    ['BLOG.Example.com:8080', 'exact'],
    ['blog.example.com.', 'exact'],
    ['www.example.com', 'wild'],
    ['a.shop.example.com', 'deeper'],
    ['example.com', 'all'],
    ['other.org', 'all'],
    [undefined, 'all'],
    ['bad host!', 'all'],
  ])('%s -> %s', (host, expected) => {
    expect(router.match(host)?.name).toBe(expected);
  });
  it('answers undefined without a catch-all', () => {
    expect(new SiteRouter([site('x', ['x.test'])]).match('y.test')).toBeUndefined();
  });
  it('answers the same from its host memo, also after a flood of new names', () => {
    const r = new SiteRouter([site('exact', ['blog.example.com']), site('wild', ['*.example.com'])]);
    expect(r.match('Blog.example.com')?.name).toBe('exact');
    expect(r.match('Blog.example.com')?.name).toBe('exact'); // memoised
    expect(r.match('nowhere.test')).toBeUndefined();
    for (let i = 0; i < 3000; i++) expect(r.match(`h${i}.example.com`)?.name).toBe('wild');
    expect(r.match('nowhere.test')).toBeUndefined();
    expect(r.match('Blog.example.com')?.name).toBe('exact');
    expect((r as unknown as { memo: Map<string, unknown> }).memo.size).toBeLessThanOrEqual(1024);
  });
  it('reads a listed host as it reads a Host: a port or a trailing dot in the config is ignored (they matched nothing)', () => {
    const r = new SiteRouter([site('docs', ['docs.example.com:80', 'Wiki.Example.com.', '*.shop.example.com.', '[::1]:8443']), site('other', ['https://blog.example.com', 'blog.example.com/'])]);
    expect(r.match('docs.example.com')?.name).toBe('docs');
    expect(r.match('docs.example.com:8080')?.name).toBe('docs');
    expect(r.match('wiki.example.com.')?.name).toBe('docs');
    expect(r.match('a.shop.example.com')?.name).toBe('docs');
    expect(r.match('[::1]:80')?.name).toBe('docs');
    // A scheme or a path: no Host matches it (the loader warns), whatever the router guesses.
    expect(r.match('blog.example.com')).toBeUndefined();
    expect(r.match('https')).toBeUndefined();
    expect(readHostEntry('https://blog.example.com')).toBeUndefined();
    expect(readHostEntry('*')).toEqual({ kind: 'all' });
    expect(readHostEntry('*.Example.com:443')).toEqual({ kind: 'wildcard', suffix: '.example.com' });
  });
  it('normalises IPv6 literals', () => {
    expect(normaliseHost('[::1]:8080')).toBe('[::1]');
  });
});

describe('routes', () => {
  const cfg = siteSchema.parse({
    name: 's',
    hosts: ['*'],
    origins: [{ url: 'http://127.0.0.1:1' }],
    routes: [
      { name: 'static', match: { pathPrefix: '/static/' } },
      { name: 'posts', match: { pathRegex: '^/\\d{4}/', methods: ['GET', 'HEAD'] } },
    ],
  });
  const compiled = compileSite(cfg, routeSchema.parse({ name: 'default' }));
  it.each([
    ['GET', '/static/a.css', 'static'],
    ['GET', '/2024/hello', 'posts'],
    ['POST', '/2024/hello', 'default'],
    ['GET', '/about', 'default'],
  ])('%s %s -> %s', (method, path, expected) => {
    expect(compiled.matchRoute(method, path).name).toBe(expected);
  });
  it('never caches what a never-cached route\'s path spelled loosely reaches (attacker trial: /API/x, //api/x, /api;a/x, /api%2Fx were cached under the default route)', () => {
    const site = siteSchema.parse({
      name: 's',
      hosts: ['*'],
      origins: [{ url: 'http://127.0.0.1:1' }],
      routes: [
        { name: 'static', match: { pathPrefix: '/static/' } },
        { name: 'api', match: { pathPrefix: '/api/' }, cache: { enabled: false } },
        { name: 'admin', match: { pathRegex: '^/admin(/|$)' }, cache: { enabled: false } },
      ],
    });
    const c = compileSite(site, routeSchema.parse({ name: 'default' }));
    for (const path of ['/API/x', '//api/x', '/api;a/x', '/api%2Fx', '/api%2fx', '/Api\\x', '/ADMIN', '//admin/x', '/api%3Ba/x', '/api%252Fx', '/api./x', '/api%20/x', '/api%09/x', '/admin.', '/(S(x))/api/x', '/(A(b))/api/x', '/api%0a/x', '/api%00/x', '/ap%2569/x', '/%2561pi/x', '/%41PI/x', '/%2541pi/x', '/api%2520/x', '/api%25252fx'])
      expect(c.matchRoute('GET', path).name, path).toBe(path.toLowerCase().includes('admin') ? 'admin' : 'api');
    // Spelled as it is, and paths no never-cached route reaches loosely, keep their route.
    expect(c.matchRoute('GET', '/api/x').name).toBe('api');
    expect(c.matchRoute('GET', '/Static/a.css').name).toBe('default');
    expect(c.matchRoute('GET', '/static//a.css').name).toBe('static');
    expect(c.matchRoute('GET', '/apiary').name).toBe('default');
    expect(c.matchRoute('GET', '/About').name).toBe('default');
  });
  it('matches query parameters: every value of the name, percent-decoded, any case (MediaWiki\'s slow Special: pages share index.php with its articles)', () => {
    const site = siteSchema.parse({
      name: 's',
      hosts: ['*'],
      origins: [{ url: 'http://127.0.0.1:1' }],
      routes: [
        { name: 'special', match: { pathPrefix: '/index.php', query: { title: 'Special:*' } }, cache: { ttlFloorSeconds: 60 } },
        { name: 'both', match: { query: { a: '1', b: '*' } } },
      ],
    });
    const c = compileSite(site, routeSchema.parse({ name: 'default' }));
    const route = (target: string) => {
      const q = target.indexOf('?');
      return c.matchRoute('GET', q < 0 ? target : target.slice(0, q), q < 0 ? undefined : target.slice(q + 1)).name;
    };
    expect(route('/index.php?title=Special:RecentChanges')).toBe('special');
    expect(route('/index.php?action=history&title=special%3Aexport')).toBe('special');
    expect(route('/index.php?title=Special:Search&title=Special:Export')).toBe('special');
    expect(route('/index.php?title=Main_Page')).toBe('default');
    expect(route('/index.php?title=Special:A&title=Main_Page')).toBe('default'); // not every value
    expect(route('/index.php')).toBe('default');
    expect(route('/index.php?titles=Special:A')).toBe('default');
    expect(route('/w/index.php?title=Special:A')).toBe('default'); // the path still counts
    expect(route('/?a=1&b=')).toBe('both');
    expect(route('/?a=1&b')).toBe('both');
    expect(route('/?a=1')).toBe('default');
    expect(route('/?a=2&b=x')).toBe('default');
    expect(route('/?a=%ZZ&b=1')).toBe('default'); // undecodable: read as it came
    // A cached route (uncapped) is taken only as spelled: a loose reading leaves the default.
    expect(route('/index.php?title=_Special:A')).toBe('default');
  });
  it("takes gitweb's `;`-joined links on a cached route whose condition is written for that form (the README's advice)", () => {
    const site = siteSchema.parse({
      name: 's',
      hosts: ['*'],
      origins: [{ url: 'http://127.0.0.1:1' }],
      routes: [{ name: 'feeds', match: { query: { p: '*;a=rss*' } }, cache: { defaultTtlSeconds: 300 } }],
    });
    const c = compileSite(site, routeSchema.parse({ name: 'default' }));
    expect(c.matchRoute('GET', '/', 'p=garage.git;a=rss').name).toBe('feeds');
    expect(c.matchRoute('GET', '/', 'p=garage.git;a=rss;f=README').name).toBe('feeds');
    expect(c.matchRoute('GET', '/', 'p=garage.git;a=summary').name).toBe('default');
    // Split at `&` only: the `&` form is another condition's.
    expect(c.matchRoute('GET', '/', 'p=garage.git&a=rss').name).toBe('default');
  });
  it('sends a request to a never-cached route a query condition reaches loosely: any one value, any case, `;` a separator, PHP\'s name, `_` a blank, decoded twice', () => {
    const site = siteSchema.parse({
      name: 's',
      hosts: ['*'],
      origins: [{ url: 'http://127.0.0.1:1' }],
      routes: [
        { name: 'static', match: { pathPrefix: '/static/' } },
        { name: 'export', match: { query: { title: 'Special:Export*' } }, cache: { enabled: false } },
      ],
    });
    const c = compileSite(site, routeSchema.parse({ name: 'default' }));
    const route = (path: string, query?: string) => c.matchRoute('GET', path, query).name;
    for (const query of [
      'title=Special:Export',
      'title=Main&title=Special:Export', // PHP, Django and Rails read the last
      'title=Special:Export&title=Main', // Express and ASP.NET the first, or both
      'TITLE=Special:Export', // ASP.NET
      'x=1;title=Special:Export', // Rack 2 splits at `;`
      '%20title=Special:Export', // PHP drops a name's leading blanks
      'title=_Special:Export_', // MediaWiki trims underscores
      'title=Special%253AExport', // decoded twice
      'title=Special:Export%2FMain',
      'title%00x=Special:Export', // PHP ends a name at a NUL
      '[title]=Special:Export', // Rack 2
      '[[title]]=Special:Export',
      'title]=Special:Export',
      '%5Btitle%5D=Special:Export', // qs (Express)
      'title[]=Special:Export', // an array named title (PHP, Rack)
      'title=:Special:Export', // MediaWiki: a leading `:`, blanks beside the `:`, other blanks, direction marks
      'title=Special_:Export',
      'title=Special:_Export',
      'title=Special%C2%A0:Export',
      'title=%E2%80%8ESpecial:Export',
      'title=Special%3A%0AExport',
    ])
      expect(route('/index.php', query), query).toBe('export');
    expect(route('/static/x.css', 'title=Special:Export')).toBe('static'); // first match wins, as spelled
    expect(route('/static/x.css', 'title=special:export')).toBe('static');
    expect(route('/index.php', 'title=Main')).toBe('default');
    expect(route('/index.php', 'ti.tle=Special:Export')).toBe('default');
    expect(route('/index.php', 'ti[tle=Special:Export')).toBe('default');
    expect(route('/index.php', 'title=Special:Exports_Main')).toBe('export'); // the glob's own `*`
    expect(route('/index.php', 'title=Special Page:Export')).toBe('default');
    expect(route('/index.php', 'subtitle=Special:Export')).toBe('default');
    expect(route('/static/x.css', 'v=1')).toBe('static');
    expect(route('/static/x.css')).toBe('static');
  });
  it('sends a request to a capped route (maxConcurrent) a condition reaches loosely, as to a never-cached one: its cap is not sidestepped (attacker trial: ?%20search=x reached MediaWiki\'s search beside its cap)', () => {
    const site = siteSchema.parse({
      name: 's',
      hosts: ['*'],
      origins: [{ url: 'http://127.0.0.1:1' }],
      routes: [
        { name: 'search', match: { pathPrefix: '/index.php', query: { search: '*' } }, maxConcurrent: 2 },
        { name: 'special', match: { pathPrefix: '/index.php', query: { title: 'Special:*' } }, maxConcurrent: 2 },
        { name: 'reports', match: { pathPrefix: '/report' }, maxConcurrent: 1 },
        { name: 'pages', match: { pathPrefix: '/' }, cache: { ttlFloorSeconds: 60 } },
      ],
    });
    const c = compileSite(site, routeSchema.parse({ name: 'default' }));
    const route = (path: string, query?: string) => c.matchRoute('GET', path, query).name;
    expect(route('/index.php', 'search=foo')).toBe('search');
    expect(route('/index.php', 'search=foo%0Abar')).toBe('search'); // a line break is a character like any (it was not, as a regular expression)
    for (const query of ['%20search=foo', 'search%00x=foo', 'SEARCH=foo', '[search]=foo', 'search[]=foo']) expect(route('/index.php', query), query).toBe('search');
    for (const query of ['title=_Special:Search', 'title=:Special:Search', 'title=Special_:Search', 'title=special:search', 'title=Main&title=Special:Search'])
      expect(route('/index.php', query), query).toBe('special');
    // A capped route's path is read as spelled: read case-blind, a regular expression for
    // `/search` put wiki pages named `Search_Tips` under the cap (review).
    expect(route('/REPORT/x')).toBe('pages');
    expect(route('/report/x')).toBe('reports');
    // An escape that is not UTF-8 (or a lone `%`) leaves the rest decoded, as PHP reads it.
    expect(route('/index.php', 'title=Special%3AExport/%FF')).toBe('special');
    expect(route('/index.php', 'title=%53pecial:Search/%')).toBe('special');
    // What reaches no guarded route keeps its own.
    expect(route('/index.php', 'title=Main_Page')).toBe('pages');
    expect(route('/about')).toBe('pages');
    expect(route('/About')).toBe('pages');
  });
  it('takes the first guarded route a loose reading reaches before the route matched as spelled, past unguarded ones; a capped route\'s path regular expression is not read case-blind (review)', () => {
    const site = siteSchema.parse({
      name: 's',
      hosts: ['*'],
      origins: [{ url: 'http://127.0.0.1:1' }],
      routes: [
        { name: 'render', match: { query: { action: 'render' } } },
        { name: 'special', match: { query: { title: 'Special:*' } }, cache: { enabled: false } },
        { name: 'reports', match: { pathRegex: '(\\.pdf|\\.csv)$|/gantt|/activity|/search' }, maxConcurrent: 1 },
        { name: 'late', match: { pathPrefix: '/late/' }, cache: { enabled: false } },
      ],
    });
    const c = compileSite(site, routeSchema.parse({ name: 'default' }));
    const route = (path: string, query?: string) => c.matchRoute('GET', path, query).name;
    expect(route('/index.php', 'Action=render&title=Special_:Export')).toBe('special');
    expect(route('/index.php', 'action=render&title=Special_:Export')).toBe('render'); // as spelled, render comes first
    for (const path of ['/projects/app/wiki/Search_Tips', '/projects/app/wiki/Activity_Log_Howto', '/projects/app/wiki/Gantt_Usage', '/attachments/download/7/Manual.PDF'])
      expect(route(path), path).toBe('default');
    expect(route('/projects/app/search')).toBe('reports');
    expect(route('/LATE/x')).toBe('late');
  });
  it('reads a query as far as origins read one: the first 1 000 parameters (PHP\'s max_input_vars, qs\'s parameterLimit, Django\'s limit)', () => {
    const site = siteSchema.parse({ name: 's', hosts: ['*'], origins: [{ url: 'http://127.0.0.1:1' }], routes: [{ name: 'raw', match: { query: { action: 'raw' } }, cache: { enabled: false } }] });
    const c = compileSite(site, routeSchema.parse({ name: 'default' }));
    const junk = (n: number) => Array.from({ length: n }, (_, i) => `p${i}=v`).join('&');
    expect(MAX_QUERY_PARAMS).toBe(1000);
    expect(c.matchRoute('GET', '/w', `${junk(999)}&action=raw`).name).toBe('raw');
    expect(c.matchRoute('GET', '/w', `${junk(999)}&ACTION=raw`).name).toBe('raw');
    expect(c.matchRoute('GET', '/w', `${junk(1000)}&action=raw`).name).toBe('default');
  });
  it('does not add a second catch-all when the config ends with one', () => {
    const withDefault = siteSchema.parse({ name: 's', hosts: ['*'], origins: [{ url: 'http://127.0.0.1:1' }], routes: [{ name: 'default' }] });
    expect(compileSite(withDefault, routeSchema.parse({ name: 'default' })).routes.map((r) => r.name)).toEqual(['default']);
  });
  it('names the added catch-all with a name no route of the site has (a route named _default lost its cache settings to it)', () => {
    const site = siteSchema.parse({
      name: 's',
      hosts: ['*'],
      origins: [{ url: 'http://127.0.0.1:1' }],
      routes: [
        { name: '_default', match: { pathPrefix: '/x' } },
        { name: 'default', match: { pathPrefix: '/y' } },
      ],
    });
    const names = compileSite(site, routeSchema.parse({ name: 'default' })).routes.map((r) => r.name);
    expect(names).toEqual(['_default', 'default', '__default']);
  });
});
