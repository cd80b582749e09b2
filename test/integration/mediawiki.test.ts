/**
 * Issue #14: a real MediaWiki behind the gateway. Debian's `mediawiki` with `php-sqlite3`,
 * served by `php -S`, `$wgUseCdn` pointing at the gateway: an edit and a delete are visible to
 * anonymous visitors within 1 s.
 *
 * MediaWiki sends anonymous readers `Cache-Control: s-maxage=18000, must-revalidate, max-age=0`
 * (`$wgCdnMaxAge`), which the gateway's default route stores with no route TTL; on an edit or a
 * delete it sends `PURGE http://<$wgServer>/index.php?title=X` (and `...&action=history`) to
 * each `$wgCdnServers` entry as a PRESEND deferred update of the edit request itself (no job).
 * The gateway answers PURGE from loopback with its default `purge` settings (hard).
 *
 * The administrator edits through the gateway, as a real editor would: MediaWiki's session
 * cookie (`wiki_session`) matches the default `bypassCookies`, and the API calls are POSTs.
 * Readers are anonymous (no cookie) GETs of /index.php?title=X through the gateway.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { siteFor, startGateway, type StartedGateway } from '../helpers/gateway.js';
import { CookieJar } from '../helpers/cookie-jar.js';
import { startMediaWiki, type MediaWiki } from '../helpers/mediawiki.js';

const TITLE = 'Crowdgate_test_page';
const PAGE = `/index.php?title=${TITLE}`;
/** Requests php -S logged for the page as readers ask for it (not its history, not the API). */
const PAGE_AT_ORIGIN = new RegExp(`^GET /index\\.php\\?title=${TITLE}$`);
const VISIBLE_WITHIN_MS = 1_000;

let mw: MediaWiki | undefined;
let gw: StartedGateway | undefined;
/** A setup failure (php or MediaWiki missing, install failed), rethrown by the test so it fails rather than skips. */
let setupError: unknown;

beforeAll(async () => {
  try {
    // php -S first (its port is the gateway's origin), then the gateway on port 0, then the
    // settings naming the gateway, written before MediaWiki runs its first PHP request.
    mw = await startMediaWiki();
    gw = await startGateway({ sites: [siteFor([mw.url])] });
    const gatewayHost = new URL(gw.url).host;
    mw.configure({ server: gw.url, cdnServers: [gatewayHost], cdnMaxAge: 18_000 });
  } catch (err) {
    setupError = err;
  }
}, 60_000);

afterAll(async () => {
  await gw?.close();
  await mw?.stop();
});

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** An anonymous visitor: no cookie, plain GET through the gateway. */
async function read(url: string): Promise<Answer> {
  const res = await request(url);
  return { status: res.statusCode, headers: res.headers as Record<string, string>, body: await res.body.text() };
}

/** The logged-in editor: MediaWiki's action API with a hand-kept cookie jar. */
class Editor {
  private readonly cookies = new CookieJar();
  constructor(private readonly base: string) {}

  /** The names of the cookies MediaWiki has set and not cleared. */
  cookieNames(): string[] {
    return [...this.cookies.keys()];
  }

  async api(params: Record<string, string>): Promise<Record<string, any>> {
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
    const cookie = this.cookies.header();
    if (cookie !== undefined) headers.cookie = cookie;
    const res = await request(`${this.base}/api.php`, {
      method: 'POST',
      headers,
      body: new URLSearchParams({ ...params, format: 'json', formatversion: '2' }).toString(),
    });
    this.cookies.take(res.headers['set-cookie']);
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`api ${params.action}: HTTP ${res.statusCode}: ${text.slice(0, 500)}`);
    const json = JSON.parse(text) as Record<string, any>;
    if (json.error) throw new Error(`api ${params.action}: ${JSON.stringify(json.error)}`);
    return json;
  }

  async token(type: 'login' | 'csrf'): Promise<string> {
    const json = await this.api({ action: 'query', meta: 'tokens', type });
    const token = json.query?.tokens?.[`${type}token`];
    if (typeof token !== 'string') throw new Error(`no ${type} token: ${JSON.stringify(json)}`);
    return token;
  }

  async login(name: string, password: string): Promise<void> {
    const lgtoken = await this.token('login');
    const json = await this.api({ action: 'login', lgname: name, lgpassword: password, lgtoken });
    if (json.login?.result !== 'Success') throw new Error(`login failed: ${JSON.stringify(json)}`);
  }

  async edit(title: string, text: string): Promise<void> {
    const token = await this.token('csrf');
    const json = await this.api({ action: 'edit', title, text, summary: 'crowdgate test', token });
    if (json.edit?.result !== 'Success') throw new Error(`edit failed: ${JSON.stringify(json)}`);
  }

  async delete(title: string): Promise<void> {
    const token = await this.token('csrf');
    const json = await this.api({ action: 'delete', title, reason: 'crowdgate test', token });
    if (json.delete?.title === undefined) throw new Error(`delete failed: ${JSON.stringify(json)}`);
  }
}

/**
 * Statuses of the PURGE requests the gateway has answered, from its access log (which logs the
 * path without the query, so the page and its history URL look alike there): 200 when an entry
 * was cleared, 404 when nothing was stored.
 */
function purgeStatuses(): number[] {
  return gw!.accessLogs().filter((l) => l.method === 'PURGE').map((l) => Number(l.status));
}

/**
 * Reads the page as an anonymous visitor until `done` holds, for at most VISIBLE_WITHIN_MS
 * after `since` (the end of the editor's API call). Returns the answer and how long it took.
 */
async function readUntil(since: number, done: (a: Answer) => boolean): Promise<{ answer: Answer; ms: number; reads: number }> {
  let reads = 0;
  for (;;) {
    const answer = await read(`${gw!.url}${PAGE}`);
    reads++;
    const ms = performance.now() - since;
    if (done(answer) || ms >= VISIBLE_WITHIN_MS) return { answer, ms, reads };
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('MediaWiki behind the gateway ($wgUseCdn, HTTP PURGE)', () => {
  it('an edit and a delete are visible to anonymous visitors within 1 s', { timeout: 60_000 }, async () => {
    if (setupError) throw setupError;
    const editor = new Editor(gw!.url);
    await editor.login(mw!.admin.name, mw!.admin.password);
    // The README's editors' priority class matches `*UserID`: MediaWiki sets it at login (an
    // anonymous editor gets only `*_session`), beside the session cookie that bypasses the cache.
    expect(editor.cookieNames().filter((n) => /UserID$/.test(n))).toHaveLength(1);
    expect(editor.cookieNames().some((n) => /_session$/.test(n))).toBe(true);
    await editor.edit(TITLE, 'Crowdgate first version: ALPHA-ONE.');

    // Anonymous reads: the first fills the cache with MediaWiki's s-maxage, the second is a hit.
    const first = await read(`${gw!.url}${PAGE}`);
    expect(first.status).toBe(200);
    expect(first.body).toContain('ALPHA-ONE');
    expect(first.headers['cache-control']).toBe('s-maxage=18000, must-revalidate, max-age=0');
    expect(first.headers['set-cookie']).toBeUndefined();
    expect(first.headers['cache-status']).toMatch(/^crowdgate; fwd=uri-miss; fwd-status=200; stored/);
    await mw!.sync();
    expect(mw!.count(PAGE_AT_ORIGIN)).toBe(1);

    const second = await read(`${gw!.url}${PAGE}`);
    expect(second.status).toBe(200);
    expect(second.body).toContain('ALPHA-ONE');
    expect(second.headers['cache-status']).toMatch(/^crowdgate; hit; ttl=\d+/);
    await mw!.sync();
    expect(mw!.count(PAGE_AT_ORIGIN)).toBe(1);

    // Edit: MediaWiki PURGEs the page; the next anonymous read fetches the new revision.
    const purgesBeforeEdit = purgeStatuses().length;
    const urlsBeforeEdit = mw!.purgedUrls().length;
    await editor.edit(TITLE, 'Crowdgate second version: BRAVO-TWO.');
    const edited = performance.now();
    const afterEdit = await readUntil(edited, (a) => a.body.includes('BRAVO-TWO'));
    const editContext = `after ${afterEdit.ms.toFixed(0)} ms and ${afterEdit.reads} reads: ${afterEdit.answer.status} ` +
      `cache-status ${afterEdit.answer.headers['cache-status']}; MediaWiki purged ${mw!.purgedUrls().slice(urlsBeforeEdit).join(' ') || 'nothing'}; ` +
      `gateway answered PURGE with ${purgeStatuses().slice(purgesBeforeEdit).join(', ') || 'nothing'}`;
    expect(afterEdit.answer.body, editContext).toContain('BRAVO-TWO');
    expect(afterEdit.answer.body).not.toContain('ALPHA-ONE');
    expect(afterEdit.answer.status).toBe(200);
    expect(afterEdit.ms, editContext).toBeLessThan(VISIBLE_WITHIN_MS);
    expect(afterEdit.answer.headers['cache-status']).toMatch(/^crowdgate; fwd=uri-miss; fwd-status=200; stored/);
    // What MediaWiki sent (its `squid` debug log) and what the gateway answered: the page's
    // entry cleared (200), its history never stored (404).
    expect(mw!.purgedUrls().slice(urlsBeforeEdit)).toEqual([`${gw!.url}${PAGE}`, `${gw!.url}${PAGE}&action=history`]);
    expect(purgeStatuses().slice(purgesBeforeEdit).sort()).toEqual([200, 404]);
    await mw!.sync();
    expect(mw!.count(PAGE_AT_ORIGIN)).toBe(2);

    // The new revision is cached again: anonymous readers stay off the origin.
    const cachedAgain = await read(`${gw!.url}${PAGE}`);
    expect(cachedAgain.body).toContain('BRAVO-TWO');
    expect(cachedAgain.headers['cache-status']).toMatch(/^crowdgate; hit; ttl=\d+/);
    await mw!.sync();
    expect(mw!.count(PAGE_AT_ORIGIN)).toBe(2);

    // Delete: MediaWiki PURGEs the page again; anonymous readers get its 404 "no text" page.
    const purgesBeforeDelete = purgeStatuses().length;
    const urlsBeforeDelete = mw!.purgedUrls().length;
    await editor.delete(TITLE);
    const deleted = performance.now();
    const afterDelete = await readUntil(deleted, (a) => a.status === 404);
    const deleteContext = `after ${afterDelete.ms.toFixed(0)} ms and ${afterDelete.reads} reads: ${afterDelete.answer.status} ` +
      `cache-status ${afterDelete.answer.headers['cache-status']}; MediaWiki purged ${mw!.purgedUrls().slice(urlsBeforeDelete).join(' ') || 'nothing'}; ` +
      `gateway answered PURGE with ${purgeStatuses().slice(purgesBeforeDelete).join(', ') || 'nothing'}`;
    expect(afterDelete.answer.status, deleteContext).toBe(404);
    expect(afterDelete.ms, deleteContext).toBeLessThan(VISIBLE_WITHIN_MS);
    expect(afterDelete.answer.body).not.toContain('BRAVO-TWO');
    expect(afterDelete.answer.body).toContain('There is currently no text in this page');
    expect(afterDelete.answer.headers['cache-status']).toMatch(/fwd=uri-miss; fwd-status=404/);
    expect(mw!.purgedUrls().slice(urlsBeforeDelete)).toContain(`${gw!.url}${PAGE}`);
    expect(purgeStatuses().slice(purgesBeforeDelete)).toContain(200);
    await mw!.sync();
    expect(mw!.count(PAGE_AT_ORIGIN)).toBe(3);
  });

  it('a page first asked for by a script (`User-Agent: node`, Node\'s fetch) costs the origin one more fill, and the warning names the word found (new-user trial)', { timeout: 60_000 }, async () => {
    if (setupError) throw setupError;
    const title = 'Crowdgate_script_first';
    const page = `/index.php?title=${title}`;
    const atOrigin = new RegExp(`^GET /index\\.php\\?title=${title}$`);
    const editor = new Editor(gw!.url);
    await editor.login(mw!.admin.name, mw!.admin.password);
    await editor.edit(title, 'Read first by a monitor: CHARLIE-THREE.');
    const ask = async (userAgent: string) => {
      const res = await request(`${gw!.url}${page}`, { headers: { 'user-agent': userAgent } });
      return { status: res.statusCode, headers: res.headers as Record<string, string>, body: await res.body.text() };
    };
    const warnings = () => gw!.logs.filter((l) => /^origin answer repeats request headers/.test(String(l.msg)));
    const warnedBefore = warnings().length;
    // The rendered page's parser report says "visited node count": the word `node` is in it,
    // and the copy is stored as that User-Agent's variant (an echo cannot be told from it).
    const script = await ask('node');
    expect(script.status).toBe(200);
    expect(script.body).toContain('CHARLIE-THREE');
    expect(script.body).toMatch(/visited node count/);
    expect(script.headers['cache-status']).toMatch(/^crowdgate; fwd=uri-miss; fwd-status=200; stored/);
    expect(script.headers.vary).toMatch(/user-agent/i);
    const warned = warnings().slice(warnedBefore);
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ headers: ['user-agent'], found: { 'user-agent': 'value' }, values: { 'user-agent': 'node' }, url: page });
    // A browser's User-Agent is in no page: its fill is stored for every visitor, once.
    const firefox = 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0';
    const browser = await ask(firefox);
    expect(browser.body).toContain('CHARLIE-THREE');
    expect(browser.headers['cache-status']).toMatch(/^crowdgate; fwd=vary-miss; fwd-status=200; stored/);
    for (const ua of [firefox, 'curl/8.5.0', 'node']) expect((await ask(ua)).headers['cache-status'], ua).toMatch(/^crowdgate; hit; ttl=\d+/);
    await mw!.sync();
    expect(mw!.count(atOrigin)).toBe(2);
  });
});
