/**
 * A real WordPress behind the gateway with the README's quick start for it: Debian's `wordpress`
 * on its own MariaDB, served by `php -S` (test/helpers/wordpress.ts), and the site's routes as
 * the quick start gives them (`assets` with `ignoreSessionCookies`, the optional `held-comments`,
 * then `pages` with a minute's lifetime), WordPress's home URL the gateway's.
 *
 * WordPress sends its pages without cache headers, sets its login cookie (`wordpress_logged_in_*`)
 * on path `/`, shows a logged-in user the admin bar on every page, and shows a commenter's comment
 * held for moderation to that commenter alone (`comment_author_*` cookies, or the
 * `unapproved` / `moderation-hash` URL it redirects to). What the four questions ask of it:
 * anonymous readers share one copy and stay off the origin, nobody anonymous ever gets the
 * administrator's page or a held comment, and a comment that is published shows at once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { siteFor, startGateway, type StartedGateway } from '../helpers/gateway.js';
import { CookieJar } from '../helpers/cookie-jar.js';
import { startWordPress, type WordPress } from '../helpers/wordpress.js';

let wp: WordPress | undefined;
let gw: StartedGateway | undefined;
/** A setup failure (php, WordPress or MariaDB missing), rethrown by each test so it fails rather than skips. */
let setupError: unknown;

/** The README's routes for WordPress: assets, the optional held-comments, then pages for a minute. */
const ROUTES = [
  {
    name: 'assets',
    match: { pathRegex: '^/wp-(includes|content|admin)/.*\\.(js|css|png|jpe?g|gif|svg|webp|woff2?|ttf|ico)$|^/wp-admin/load-(scripts|styles)\\.php$' },
    cache: { defaultTtlSeconds: 3600, ignoreSessionCookies: true },
  },
  { name: 'held-comments', match: { query: { unapproved: '*' } }, cache: { enabled: false } },
  { name: 'pages', match: { pathPrefix: '/' }, cache: { defaultTtlSeconds: 60 } },
];
/** The README's priority classes for WordPress. */
const PRIORITIES = [
  { name: 'editors', match: { cookie: 'wordpress_logged_in*', pathPrefix: '/wp-' } },
  { name: 'editors-rest', match: { cookie: 'wordpress_logged_in*', header: 'X-WP-Nonce' } },
  { name: 'posts', match: { method: 'POST' } },
];

beforeAll(async () => {
  try {
    wp = await startWordPress();
    // Every comment held for moderation but an administrator's (WordPress's "Comment must be
    // manually approved"; its default holds only an author's first).
    wp.php("update_option('comment_moderation', '1');");
    gw = await startGateway({ admission: { priorities: PRIORITIES }, sites: [siteFor([wp.url], { routes: ROUTES })] });
    wp.configure(gw.url);
  } catch (err) {
    setupError = err;
  }
}, 90_000);

afterAll(async () => {
  await gw?.close();
  await wp?.stop();
});

interface Answer {
  status: number;
  headers: Record<string, string | string[]>;
  body: string;
}

/** A visitor with a cookie jar. */
class Visitor {
  readonly jar = new CookieJar();

  /** `address`: the client's, as a load balancer in front (a trusted proxy on loopback) names it in X-Forwarded-For. */
  constructor(private readonly address?: string) {}

  async ask(path: string, opts: { method?: 'GET' | 'POST'; form?: Record<string, string> } = {}): Promise<Answer> {
    const headers: Record<string, string> = {};
    if (this.address) headers['x-forwarded-for'] = this.address;
    const cookie = this.jar.header();
    if (cookie !== undefined) headers.cookie = cookie;
    if (opts.form) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await request(`${gw!.url}${path}`, {
      method: opts.method ?? 'GET',
      headers,
      body: opts.form ? new URLSearchParams(opts.form).toString() : undefined,
    });
    this.jar.take(res.headers['set-cookie']);
    return { status: res.statusCode, headers: res.headers as Answer['headers'], body: await res.body.text() };
  }
}

/** An anonymous reader: no cookie at all. */
const anonymous = (path: string) => new Visitor().ask(path);

/** The administrator, logged in through the gateway with wp-login.php's form (and its test cookie). */
async function loggedInAdmin(): Promise<Visitor> {
  const admin = new Visitor();
  const form = await admin.ask('/wp-login.php');
  expect(form.status).toBe(200);
  expect([...admin.jar.keys()]).toContain('wordpress_test_cookie');
  const login = await admin.ask('/wp-login.php', {
    method: 'POST',
    form: { log: wp!.admin.name, pwd: wp!.admin.password, 'wp-submit': 'Log In', redirect_to: `${gw!.url}/wp-admin/`, testcookie: '1' },
  });
  expect(login.status, login.body.slice(0, 500)).toBe(302);
  expect([...admin.jar.keys()].some((n) => n.startsWith('wordpress_logged_in_'))).toBe(true);
  return admin;
}

const POST_PAGE = '/?p=1'; // "Hello world!", the post wp_install() makes
const POST_AT_ORIGIN = /^GET \/\?p=1$/;
const cacheStatus = (a: Answer) => String(a.headers['cache-status'] ?? '');

describe('WordPress behind the gateway (the README\'s quick start)', () => {
  it('anonymous readers share one copy for the route\'s minute; the administrator gets her own page with the admin bar, and nobody else ever does', { timeout: 60_000 }, async () => {
    if (setupError) throw setupError;
    const first = await anonymous(POST_PAGE);
    expect(first.status).toBe(200);
    expect(first.body).toContain('Hello world!');
    // WordPress says nothing of caching; the route's minute stores it.
    expect(first.headers['cache-control']).toBeUndefined();
    expect(cacheStatus(first)).toMatch(/^crowdgate; fwd=uri-miss; fwd-status=200; stored; ttl=(5[5-9]|60);/);
    const second = await anonymous(POST_PAGE);
    expect(cacheStatus(second)).toMatch(/^crowdgate; hit; ttl=\d+/);
    await wp!.sync();
    expect(wp!.count(POST_AT_ORIGIN)).toBe(1);

    const admin = await loggedInAdmin();
    const own = await admin.ask(POST_PAGE);
    expect(own.status).toBe(200);
    expect(cacheStatus(own)).toMatch(/fwd=bypass/);
    expect(own.body).toContain('id="wpadminbar"');
    await wp!.sync();
    expect(wp!.count(POST_AT_ORIGIN)).toBe(2);

    // The next anonymous readers still get the shared copy, without the admin bar.
    for (let i = 0; i < 3; i++) {
      const later = await anonymous(POST_PAGE);
      expect(cacheStatus(later)).toMatch(/^crowdgate; hit; ttl=\d+/);
      expect(later.body).not.toContain('wpadminbar');
      expect(later.body).not.toContain('Log Out');
    }
    await wp!.sync();
    expect(wp!.count(POST_AT_ORIGIN)).toBe(2);
  });

  it('scripts and styles are one shared copy for anonymous readers and the logged-in administrator alike (the assets route)', { timeout: 60_000 }, async () => {
    if (setupError) throw setupError;
    const script = '/wp-includes/js/jquery/jquery.min.js';
    const atOrigin = new RegExp(`^GET ${script.replace(/[./]/g, '\\$&')}$`);
    const first = await anonymous(script);
    expect(first.status).toBe(200);
    expect(cacheStatus(first)).toMatch(/stored; ttl=(359[5-9]|3600);/);
    const admin = await loggedInAdmin();
    const theirs = await admin.ask(script);
    expect(theirs.status).toBe(200);
    expect(theirs.body).toBe(first.body);
    expect(cacheStatus(theirs)).toMatch(/^crowdgate; hit; ttl=\d+/);
    await wp!.sync();
    expect(wp!.count(atOrigin)).toBe(1);
    // The admin's scripts joined into one answer (three on every admin page): one copy too.
    const joined = '/wp-admin/load-scripts.php?c=0&load%5Bchunk_0%5D=jquery-core,jquery-migrate,utils&ver=6.1.9';
    const admins = await admin.ask(joined);
    expect(admins.status).toBe(200);
    expect(admins.body).toContain('jQuery');
    expect(cacheStatus(admins)).toMatch(/stored; ttl=/);
    const readers = await anonymous(joined);
    expect(readers.body).toBe(admins.body);
    expect(cacheStatus(readers)).toMatch(/^crowdgate; hit; ttl=\d+/);
    await wp!.sync();
    expect(wp!.count(/^GET \/wp-admin\/load-scripts\.php/)).toBe(1);
  });

  it('a comment held for moderation is shown to its commenter alone; a published one shows to every reader at once', { timeout: 60_000 }, async () => {
    if (setupError) throw setupError;
    // The copy readers share.
    expect((await anonymous(POST_PAGE)).status).toBe(200);
    expect(cacheStatus(await anonymous(POST_PAGE))).toMatch(/^crowdgate; hit/);

    // A visitor's comment is held (the site holds all but the administrator's). With the
    // consent box ticked WordPress sets comment_author_* cookies (a default bypassCookies
    // pattern), and shows the held comment to the request that carries them.
    const commenter = new Visitor('203.0.113.10');
    const held = 'HELD-FOR-MODERATION-7f3a';
    const posted = await commenter.ask('/wp-comments-post.php', {
      method: 'POST',
      form: { comment_post_ID: '1', comment: `A first comment: ${held}`, author: 'Visitor', email: 'visitor@example.com', url: '', 'wp-comment-cookies-consent': 'yes', submit: 'Post Comment' },
    });
    expect(posted.status, posted.body.slice(0, 500)).toBe(302);
    expect([...commenter.jar.keys()].some((n) => n.startsWith('comment_author_'))).toBe(true);
    const theirView = await commenter.ask(POST_PAGE);
    expect(cacheStatus(theirView)).toMatch(/fwd=bypass/);
    expect(theirView.body).toContain(held);
    expect(theirView.body).toContain('Your comment is awaiting moderation');
    // Without consent, no cookie: WordPress redirects to the post with `unapproved` and
    // `moderation-hash`, and shows the held comment on that URL (its own key) alone.
    const shy = new Visitor('203.0.113.20');
    const heldToo = 'HELD-WITHOUT-COOKIES-2b8e';
    const postedToo = await shy.ask('/wp-comments-post.php', {
      method: 'POST',
      form: { comment_post_ID: '1', comment: `Another comment: ${heldToo}`, author: 'Shy', email: 'shy@example.com', url: '', submit: 'Post Comment' },
    });
    expect(postedToo.status, postedToo.body.slice(0, 500)).toBe(302);
    expect(shy.jar.size).toBe(0);
    const location = new URL(String(postedToo.headers.location));
    expect(location.searchParams.get('unapproved')).toMatch(/^\d+$/);
    expect(location.searchParams.get('moderation-hash')).toMatch(/^[0-9a-f]+$/);
    const shyView = await shy.ask(`${location.pathname}${location.search}`);
    expect(shyView.body).toContain(heldToo);
    expect(shyView.body).not.toContain(held);
    // WordPress sends that URL max-age=600; the README's held-comments route keeps it out of the
    // cache, so it goes once the comment is marked spam (attacker trial).
    expect(shyView.headers['cache-control']).toMatch(/max-age=600/);
    expect(cacheStatus(shyView)).not.toMatch(/stored/);
    const commentId = location.searchParams.get('unapproved')!;
    wp!.php(`wp_spam_comment(${Number(commentId)});`);
    const afterSpam = await anonymous(`${location.pathname}${location.search}`);
    expect(afterSpam.status).toBe(200);
    expect(afterSpam.body).not.toContain(heldToo);
    // On the post's URL, without the cookies: never a held comment (several readers, hits and fills).
    for (let i = 0; i < 3; i++) {
      const reader = await anonymous(POST_PAGE);
      expect(reader.status).toBe(200);
      expect(reader.body).not.toContain(held);
      expect(reader.body).not.toContain(heldToo);
      expect(reader.body).not.toContain('awaiting moderation');
    }

    // The administrator's comment is published at once; its POST clears the page it redirects
    // to, and the next anonymous reader sees it (no waiting for the route's minute).
    const admin = await loggedInAdmin();
    const form = await admin.ask(POST_PAGE);
    const nonce = /name="_wp_unfiltered_html_comment_disabled" value="([0-9a-f]+)"/.exec(form.body)?.[1];
    const published = 'PUBLISHED-AT-ONCE-91c2';
    const byAdmin = await admin.ask('/wp-comments-post.php', {
      method: 'POST',
      form: { comment_post_ID: '1', comment: `The author replies: ${published}`, submit: 'Post Comment', ...(nonce ? { _wp_unfiltered_html_comment_disabled: nonce } : {}) },
    });
    expect(byAdmin.status, byAdmin.body.slice(0, 500)).toBe(302);
    expect(String(byAdmin.headers.location)).not.toMatch(/unapproved/);
    const reader = await anonymous(POST_PAGE);
    expect(reader.body).toContain(published);
    expect(reader.body).not.toContain(held);
    expect(reader.body).not.toContain(heldToo);
    expect(reader.body).not.toContain('wpadminbar');
    expect(cacheStatus(reader)).toMatch(/^crowdgate; fwd=stale; fwd-status=200; stored/);
  });

  it('the README\'s priority classes take the editor\'s admin pages, her block editor\'s REST calls in both forms, and every POST; readers\' pages none (access log `priority`)', { timeout: 60_000 }, async () => {
    if (setupError) throw setupError;
    const admin = await loggedInAdmin();
    const editor = await admin.ask('/wp-admin/post-new.php');
    expect(editor.status).toBe(200);
    // The nonce the block editor sends with each REST call (wp.apiFetch's nonce middleware).
    const nonce = /createNonceMiddleware\( "([0-9a-f]+)" \)/.exec(editor.body)?.[1];
    expect(nonce).toBeDefined();
    const rest = async (path: string) => {
      const res = await request(`${gw!.url}${path}`, {
        headers: { cookie: admin.jar.header()!, 'x-wp-nonce': nonce! },
      });
      await res.body.text();
      return res.statusCode;
    };
    // Plain permalinks (WordPress's default): the block editor's form of the REST root.
    expect(await rest('/index.php?rest_route=/wp/v2/users/me&context=edit')).toBe(200);
    // The pretty form, a site with pretty permalinks' (here WordPress redirects it: the class is the request's).
    await rest('/wp-json/wp/v2/types/post?context=edit');
    await anonymous('/?p=1');
    const lines = gw!.accessLogs();
    const priorityOf = (match: (l: Record<string, unknown>) => boolean) => [...new Set(lines.filter(match).map((l) => l.priority ?? 'default'))];
    expect(priorityOf((l) => l.path === '/wp-admin/post-new.php')).toEqual(['editors']);
    expect(priorityOf((l) => typeof l.query === 'string' && l.query.startsWith('rest_route='))).toEqual(['editors-rest']);
    expect(priorityOf((l) => l.path === '/wp-json/wp/v2/types/post')).toEqual(['editors']);
    expect(priorityOf((l) => l.path === '/wp-login.php' && l.method === 'POST')).toEqual(['posts']);
    expect(priorityOf((l) => l.path === '/' && l.query === 'p=1' && l.cookie !== true)).toEqual(['default']);
  });
});
