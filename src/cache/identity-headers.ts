/**
 * Request header names that say who is asking (`X-User-Token`, `X-Tenant`, `X-Customer-Id`,
 * oauth2-proxy's `X-Forwarded-Email`): an answer may depend on one without saying so in Vary.
 * Owns the name test only; fill.ts decides what a copy made with one varies on, and
 * cache-store.ts which copy of a key goes first when it holds too many.
 */

const IDENTITY_NAME = /auth|token|key|session|user|account|tenant|customer|member|login|jwt|secret|sig|credential|identity|principal|email/i;

/**
 * Names that match but say nothing about whose page it is: a CSRF token (axios and AngularJS
 * send `X-XSRF-TOKEN` on every request once the cookie is set, rails-ujs `X-CSRF-Token`,
 * Django setups `X-CSRFToken`; it is checked on unsafe methods and picks no page), and a
 * per-request signature (Web Bot Auth's `Signature`, Akamai's G2O origin check): taken as an
 * identity, every request of a crowd made a fill of its own (review: 20 requests for a page,
 * each with its own X-CSRF-Token, 20 origin fetches).
 */
const NOT_IDENTITY = /csrf|xsrf|signature|g2o/i;

/** Whether a (lower-case) request header name says who asks (see the module doc). */
export function isIdentityHeaderName(name: string): boolean {
  return IDENTITY_NAME.test(name) && !NOT_IDENTITY.test(name);
}
