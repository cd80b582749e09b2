/**
 * The PURGE method on the public listener, Varnish-compatible: answered here from
 * purge.allow, never forwarded; every variant of the URL for the Host (or every Host).
 */
import { keyUrlPrefixFor } from '../cache/cache-key.js';
import type { SiteRuntime } from '../runtime.js';
import { fail } from './answer.js';
import { authorityOf, type Ctx } from './context.js';

/**
 * PURGE, as Varnish and Squid answer it (MediaWiki sends one to its CDN on every edit and
 * delete): answered here, never forwarded. Allowed only from `purge.allow` (the client address,
 * trusted proxies honoured), 405 otherwise. Clears every entry of the URL for this Host (every
 * Host with `purge.allHosts`): all Vary variants and key-template parts, here and, with Redis,
 * on every instance. 200 when something was purged, 404 when nothing was stored.
 */
export async function answerPurge(ctx: Ctx, site: SiteRuntime): Promise<void> {
  const { rt, deps } = ctx;
  ctx.state = 'bypass';
  if (!rt.purgeAllowed.isTrusted(ctx.clientAddress)) return fail(ctx, 'purge_not_allowed');
  const cfg = rt.config.purge;
  const route = site.compiled.matchRoute('GET', ctx.path);
  const prefix = keyUrlPrefixFor(site.name, ctx.url, site.policyFor(route).route.key, cfg.allHosts ? undefined : authorityOf(ctx));
  const { purged } = await deps.purge([{ kind: 'prefix', prefix }], cfg.mode);
  deps.metrics.get('purges').inc({ kind: 'url', mode: cfg.mode });
  deps.metrics.get('purgedEntries').inc({ mode: cfg.mode }, purged);
  const status = purged > 0 ? 200 : 404;
  const body = JSON.stringify({ status, purged, mode: cfg.mode, url: ctx.url }) + '\n';
  ctx.res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-request-id': ctx.requestId,
  });
  ctx.res.end(ctx.method === 'HEAD' ? undefined : body);
}
