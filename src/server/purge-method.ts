/**
 * The PURGE method on the public listener, Varnish-compatible: answered here from
 * purge.allow, never forwarded; every variant of the URL for the Host under both schemes (or
 * every Host).
 */
import { keyPrefixFor, keyUrlSelectorsFor, makeAuthority, parseUrlPath } from '../cache/cache-key.js';
import type { PurgeSelector } from '../cache/stores/cache-store.js';
import type { SiteRuntime } from '../runtime.js';
import { answerOwn, fail } from './answer.js';
import { hostOf, type Ctx } from './context.js';

/**
 * PURGE, as Varnish and Squid answer it (MediaWiki sends one to its CDN on every edit and
 * delete): answered here, never forwarded. Allowed only from `purge.allow` (the client address,
 * trusted proxies honoured), 405 otherwise. Clears every entry of the URL for this Host, over
 * http and https alike (every Host with `purge.allHosts`): all Vary variants and key-template parts, here and, with Redis,
 * on every instance. 200 when something was purged, 404 when nothing was stored.
 */
export async function answerPurge(ctx: Ctx, site: SiteRuntime): Promise<void> {
  const { rt, deps } = ctx;
  ctx.state = 'bypass'; // what the access log says of a client that leaves before the purge is done
  if (!rt.purgeAllowed.isTrusted(ctx.clientAddress)) return fail(ctx, 'purge_not_allowed');
  const cfg = rt.config.purge;
  let selectors: PurgeSelector[];
  let kind = 'url';
  if (isRegexPurge(ctx)) {
    // Varnish HTTP Purge (WordPress's Proxy Cache Purge plugin) empties the cache with
    // `PURGE /.*` and `X-Purge-Method: regex`; answered 404 as a URL, "purge all" did nothing
    // (WordPress trial). A literal path prefix followed by `.*` is a prefix purge; any other
    // regex is refused, never taken for a URL. Of the PURGE's own Host, under both schemes, as
    // a URL purge (every Host with `purge.allHosts`): one tenant's "purge all" (a theme switch)
    // emptied every host of a shared site (review).
    const prefix = regexPrefixOf(ctx.rawUrl);
    if (prefix === undefined) return fail(ctx, 'purge_regex_unsupported');
    const authorities = cfg.allHosts ? undefined : ['http', 'https'].map((scheme) => makeAuthority(hostOf(ctx), scheme));
    selectors = [{ kind: 'prefix', prefix: keyPrefixFor(site.name, prefix), ...(authorities ? { authorities } : {}) }];
    kind = 'prefix';
  } else {
    const route = site.compiled.matchRoute('GET', ctx.path, parseUrlPath(ctx.url).query);
    const key = site.policyFor(route).route.key;
    // The Host's copies under both schemes: the copy readers got over HTTPS is purged by a PURGE
    // sent over plain HTTP (MediaWiki sends its purges to $wgCdnServers over HTTP: an https URL
    // would be tunnelled with CONNECT), and the other way round. The scheme the purger used
    // to reach us says nothing about which copy is stale.
    selectors = cfg.allHosts
      ? keyUrlSelectorsFor(site.name, ctx.url, key)
      : ['http', 'https'].flatMap((scheme) => keyUrlSelectorsFor(site.name, ctx.url, key, makeAuthority(hostOf(ctx), scheme)));
  }
  const { purged } = await deps.purge(selectors, cfg.mode);
  deps.metrics.get('purges').inc({ kind, mode: cfg.mode });
  deps.metrics.get('purgedEntries').inc({ mode: cfg.mode }, purged);
  const status = purged > 0 ? 200 : 404;
  const body = JSON.stringify({ status, purged, mode: cfg.mode, url: ctx.url }) + '\n';
  const headers = { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' };
  answerOwn(ctx, status, { state: 'bypass', detail: 'purge' }, headers, body);
}

/** `X-Purge-Method: regex` (Varnish HTTP Purge's purge-all and its prefix purges). */
function isRegexPurge(ctx: Ctx): boolean {
  const method = ctx.req.headers['x-purge-method'];
  return typeof method === 'string' && method.trim().toLowerCase() === 'regex';
}

/**
 * The literal path prefix of a regex that is one followed by `.*` (`/.*`, `/blog/.*`), from
 * the target as sent (an absolute-form target's path), before dot-segment and percent
 * normalisation, which would read a regex's own characters as path syntax; undefined for any
 * other regex: a query, an anchor, a class, an alternation, a quantifier, an escape or a `.`
 * (any character, of which a literal prefix would purge only a part) before the trailing `.*`.
 */
export function regexPrefixOf(rawTarget: string): string | undefined {
  const target = /^https?:\/\/[^/]*(\/.*)$/i.exec(rawTarget)?.[1] ?? rawTarget;
  if (!target.startsWith('/') || !target.endsWith('.*')) return undefined;
  const prefix = target.slice(0, -2);
  if (/[\\^$.*+?()[\]{}|]/.test(prefix)) return undefined;
  return prefix;
}
