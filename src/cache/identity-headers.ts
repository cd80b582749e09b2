/**
 * Request header names that say who is asking (`X-User-Token`, `X-Tenant`, `X-Customer-Id`,
 * oauth2-proxy's `X-Forwarded-Email`, the client certificate an mTLS terminator passes on,
 * `X-Forwarded-Client-Cert`, `X-SSL-Client-DN`; AWS ALB's `X-Amzn-Oidc-Data`, Kong's
 * `X-Consumer-Id`, `X-Org-Id`, `X-Workspace-Id`, `X-Shopify-Shop-Domain`; `X-Visitor-Id`,
 * `X-Viewer`, `X-Profile-Id`, `X-Device-Id`, which an attacker trial found shared): an answer may depend
 * on one without saying so in Vary. A name test: a header of the site's own with a neutral name
 * (`X-Id`) is not known; key it (`key.headers`) or send only what the key covers
 * (`fillHeaders.only`).
 * Owns the name test only; fill.ts decides what a copy made with one varies on, and
 * cache-store.ts which copy of a key goes first when it holds too many.
 */

const IDENTITY_NAME =
  /auth|token|key|session|user|account|tenant|customer|member|login|jwt|secret|sig|credential|identity|principal|email|cert|client|oidc|consumer|uid|org|workspace|shop|visitor|viewer|profile|person|owner|subscriber|device[-_]?id/i;

/**
 * Parts of a name that say nothing about whose page it is, taken out before the test above: a
 * CSRF token (axios and AngularJS send `X-XSRF-TOKEN` on every request once the cookie is set,
 * rails-ujs `X-CSRF-Token`, Django setups `X-CSRFToken`; it is checked on unsafe methods and
 * picks no page), and a per-request signature (Web Bot Auth's `Signature`, Akamai's G2O origin
 * check `X-Akamai-G2O-Auth-Data`), a per-request id (`X-Client-Request-Id`, Azure SDKs'
 * `x-ms-client-request-id`, Envoy's `x-client-trace-id`, `X-Request-UUID`, `X-Request-UID`), and User-Agent
 * (the browser's, not the user's). Taken as an identity, every request of a crowd made a fill
 * of its own (review: 20 requests for a page, each with its own X-CSRF-Token, 20 origin
 * fetches). Nor CloudFront's viewer headers (`CloudFront-Viewer-Address`, `-ASN`, `-TLS`,
 * `CloudFront-Is-Mobile-Viewer`...) or Cloudflare's `CF-Visitor`, which those CDNs add to every
 * request: taken for identities (for their `viewer`, `visitor`), every page not `public` was
 * filled per connection (review). A name with another identity word beside them still counts (`X-User-Signature`:
 * attacker trial, a whole name dropped for its `signature` sent Alice's page to everyone).
 */
const NOT_IDENTITY_PARTS = /[xc]?s?rf[-_]?token|csrf|xsrf|signature|g2o[-a-z]*|user-agent|(?:client[-_]?)?(?:request|trace|correlation|span)[-_]?u?id|uuid|guid|^cloudfront-[-a-z0-9]*|^cf-visitor$/gi;

/** Whether a (lower-case) request header name says who asks (see the module doc). */
export function isIdentityHeaderName(name: string): boolean {
  return IDENTITY_NAME.test(name.replace(NOT_IDENTITY_PARTS, ''));
}
