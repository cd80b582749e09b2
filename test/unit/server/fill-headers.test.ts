import { describe, expect, it } from 'vitest';
import type { PolicyOptions } from '../../../src/cache/policy.js';
import { carriesOwnCookies, identityFillInputs } from '../../../src/server/fill-headers.js';

/** Only the key template's cookie list is read. */
const policy = (cookies: string[] = []) => ({ route: { key: { cookies } } }) as unknown as PolicyOptions;

describe('carriesOwnCookies (a Vary: Cookie copy is not another cookie holder\'s page)', () => {
  it('a session or token cookie is the client\'s own', () => {
    expect(carriesOwnCookies('jwt=abc', policy())).toBe(true);
    expect(carriesOwnCookies('_ga=GA1.1.1; SESS123=x', policy())).toBe(true);
  });

  it('analytics cookies do not count', () => {
    expect(carriesOwnCookies('_ga=GA1.1.1; _gid=GA1.2.3; _fbp=fb.1; _hjSessionUser_1=x', policy())).toBe(false);
  });

  it('consent banners of the common CMS plugins do not count (a Drupal or WordPress crowd clicks "accept")', () => {
    const consent = [
      'cookie-agreed=2',
      'cookie-agreed-version=1.0.0',
      'cookie-agreed-categories=%5B%22analytics%22%5D',
      'cookielawinfo-checkbox-necessary=yes',
      'viewed_cookie_policy=yes',
      'cookieyes-consent=consentid:x',
      'cmplz_banner-status=dismissed',
      'borlabs-cookie=%7B%7D',
      'cookie_notice_accepted=true',
      'moove_gdpr_popup=%7B%7D',
      'didomi_token=abc',
      'addtl_consent=1~',
      'CookieConsent={stamp:x}',
    ];
    for (const c of consent) expect(carriesOwnCookies(c, policy()), c).toBe(false);
    expect(carriesOwnCookies(consent.join('; '), policy())).toBe(false);
  });

  it('on a route with ignoreSessionCookies, the site\'s session cookies do not count against a stored copy; any other still does, and against an answer not shared they all do', () => {
    const withSessions = { ...policy(), isIgnoredSessionCookie: (name: string) => name === 'DokuWiki' || name.startsWith('DW') } as PolicyOptions;
    expect(carriesOwnCookies('DokuWiki=abc; DW1f2e=x', withSessions, true)).toBe(false);
    expect(carriesOwnCookies('DokuWiki=abc; theme=dark', withSessions, true)).toBe(true);
    expect(carriesOwnCookies('DokuWiki=abc', withSessions)).toBe(true);
    expect(carriesOwnCookies('DokuWiki=abc', policy(), true)).toBe(true);
  });

  it('a keyed cookie is in the key, so it does not count either', () => {
    expect(carriesOwnCookies('lang=de', policy(['lang']))).toBe(false);
    expect(carriesOwnCookies('lang=de; theme=dark', policy(['lang']))).toBe(true);
  });
});

describe('identityFillInputs (headers naming who asks, which an answer may depend on unsaid)', () => {
  const keyed = (headers: string[] = []) => ({ route: { key: { headers, cookies: [] } } }) as unknown as PolicyOptions;

  it('names with a token, a user, a tenant or an email (oauth2-proxy\'s X-Forwarded-Email) count; per-request ids and what every browser sends do not', () => {
    const sent = {
      host: 'a.test',
      'user-agent': 'Mozilla/5.0',
      accept: 'text/html',
      'x-user-token': 'tok-alice',
      'x-tenant': 'one',
      'x-forwarded-email': 'alice@example.com',
      'x-auth-request-email': 'alice@example.com',
      'cf-ray': '8f0a-AMS',
      traceparent: '00-1-2-01',
      'x-junk': 'j',
    };
    expect(identityFillInputs(sent, keyed(), []).sort()).toEqual(['x-auth-request-email', 'x-forwarded-email', 'x-tenant', 'x-user-token']);
  });

  it('auth proxies\' and multi-tenant names count; a CSRF token or a signature alone does not, beside an identity word it does (attacker trial, review)', () => {
    const names = (headers: Record<string, string>) => identityFillInputs(headers, keyed(), []).sort();
    const who = ['x-workspace-id', 'x-uid', 'x-org-id', 'x-ssl-client-dn', 'x-forwarded-client-cert', 'x-amzn-oidc-data', 'x-consumer-id', 'x-shopify-shop-domain', 'x-user-signature', 'x-tenant-sig', 'x-client-id', 'x-user-uuid', 'x-visitor-id', 'x-viewer', 'x-profile-id', 'x-device-id', 'x-person', 'x-owner', 'x-subscriber-id'];
    const nobody = ['x-csrf-token', 'x-xsrf-token', 'x-csrftoken', 'signature', 'signature-input', 'signature-agent', 'x-akamai-g2o-auth-data', 'origin', 'x-request-id', 'x-id',
      'x-client-request-id', 'x-ms-client-request-id', 'x-client-trace-id', 'x-request-uuid', 'x-correlation-id', 'x-request-uid', 'x-trace-uid', 'x-device', 'x-datadog-parent-id', 'x-datadog-trace-id', 'x-b3-spanid', 'x-b3-parentspanid',
      'cloudfront-viewer-address', 'cloudfront-viewer-asn', 'cloudfront-viewer-tls', 'cloudfront-viewer-ja3-fingerprint', 'cloudfront-viewer-time-zone', 'cloudfront-is-mobile-viewer', 'cf-visitor'];
    expect(names(Object.fromEntries([...who, ...nobody].map((n) => [n, 'v'])))).toEqual([...who].sort());
  });

  it('a name the key template or the answer\'s Vary covers is not counted: its copies are already apart', () => {
    expect(identityFillInputs({ 'x-tenant': 'one', 'x-user-token': 't' }, keyed(['X-Tenant']), ['x-user-token'])).toEqual([]);
  });
});
