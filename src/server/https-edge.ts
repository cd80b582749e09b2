/**
 * What the `tls` section asks of answers, decided per request: Strict-Transport-Security on
 * answers over HTTPS (`tls.hsts`), and the redirect of plain-HTTP requests to https
 * (`tls.redirectHttp`) for sites that have a certificate.
 *
 * The redirect is never sent for `/.well-known/acme-challenge/` (an ACME HTTP-01 challenge
 * must be answered over plain HTTP), for PURGE (handle-request.ts answers it before), when a
 * trusted proxy says the client already used https, when the Host is not a plain host name,
 * or when the site has no certificate installed (a redirect to a name the HTTPS listener
 * cannot prove would lock the site's visitors out).
 *
 * Owns the header value and the redirect's Location; the answer is recorded and written as
 * every other (answer.ts answerOwn). The listener is tls/https-server.ts.
 */
import type { TlsConfig } from '../config/schema.js';
import { answerOwn } from './answer.js';
import { HOST_AND_PORT, schemeOf, type Ctx } from './context.js';
import type { SiteRuntime } from '../runtime.js';

export const ACME_CHALLENGE_PREFIX = '/.well-known/acme-challenge/';

const hstsValues = new WeakMap<TlsConfig, string | undefined>();

/** The Strict-Transport-Security value for this config, or undefined when off (computed once per config). */
export function hstsValue(tls: TlsConfig): string | undefined {
  if (hstsValues.has(tls)) return hstsValues.get(tls);
  const { maxAgeSeconds, includeSubDomains, preload } = tls.hsts;
  const value =
    maxAgeSeconds > 0 ? `max-age=${maxAgeSeconds}${includeSubDomains ? '; includeSubDomains' : ''}${preload ? '; preload' : ''}` : undefined;
  hstsValues.set(tls, value);
  return value;
}

/** Answers a plain-HTTP request with the redirect to https when the config asks for one; true when it did. */
export function redirectToHttps(ctx: Ctx, site: SiteRuntime): boolean {
  const { rt, deps, req } = ctx;
  const tls = rt.config.tls;
  if (!tls.redirectHttp || ctx.scheme === 'https') return false;
  if (ctx.path.startsWith(ACME_CHALLENGE_PREFIX)) return false;
  const port = deps.tls?.redirectPort(rt.config);
  if (port === undefined || schemeOf(ctx) === 'https') return false; // a trusted proxy in front already speaks https to the client
  const host = req.headers.host;
  // A host name or IP literal with an optional port, nothing else: safe to write into Location.
  if (host === undefined || !HOST_AND_PORT.test(host)) return false;
  // The name as routing and the key hold it (lower case, no trailing dot): `a.test.` is the
  // same site and must not stay on plain HTTP, and is sent to its canonical name.
  const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.split(':')[0]!.toLowerCase().replace(/\.$/, '');
  // Only to a name the site's certificate covers: a `*` site, a wildcard host or an IP is served
  // over plain HTTP as before rather than sent to a certificate error.
  if (deps.tls?.hasCertificate(site.name, name) !== true) return false;
  const location = `https://${name}${port === 443 ? '' : `:${port}`}${ctx.url}`;
  const headers = { location, 'content-type': 'text/plain; charset=utf-8' };
  answerOwn(ctx, tls.redirectStatus, { state: 'bypass', detail: 'https-redirect' }, headers, `Moved to ${location}\n`);
  return true;
}
