/**
 * OPTIONS and TRACE the gateway answers itself. Max-Forwards (RFC 9110 §7.6.2): a proxy that
 * receives an OPTIONS with `Max-Forwards: 0` is its final recipient and answers it; with a
 * larger value it forwards the request with the value decremented. Other methods ignore the
 * field. TRACE is never forwarded, whatever its Max-Forwards (nginx answers it 405 too): an
 * origin that echoes it (Apache's `TraceEnable` is on by default) would return the client's
 * cookies and the headers the gateway adds to a script (cross-site tracing; attacker trial).
 * And `OPTIONS *` (§9.3.7), which asks about the server in general: the gateway is that server
 * to its clients (it was a 400, `unsupported request target`).
 */
import { answerOwn } from './answer.js';
import type { Ctx } from './context.js';

/** The methods the gateway answers for the origin: what it forwards (RFC 9110 §9.3). */
const ALLOW = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS';

/**
 * Answers a TRACE (405: the gateway does not reflect requests, and that echo would return the
 * client's cookies to a script, RFC 9110 §9.3.8), or an OPTIONS request whose Max-Forwards is 0
 * (200 with `Allow`), and returns true; or decrements an OPTIONS' larger value on the request
 * before it is forwarded (false). A value that is not a number is left as it is.
 */
export function answerMaxForwards(ctx: Ctx): boolean {
  const { req } = ctx;
  if (ctx.method === 'TRACE') {
    const headers = { allow: ALLOW, 'content-length': '0', 'cache-control': 'no-store' };
    answerOwn(ctx, 405, { state: 'bypass', detail: 'trace' }, headers, '');
    return true;
  }
  if (ctx.method !== 'OPTIONS') return false;
  const raw = req.headers['max-forwards'];
  if (typeof raw !== 'string' || !/^\s*\d+\s*$/.test(raw)) return false;
  const n = Number(raw);
  if (n > 0) {
    req.headers['max-forwards'] = String(n - 1);
    return false;
  }
  const headers = { allow: ALLOW, 'content-length': '0', 'cache-control': 'no-store' };
  answerOwn(ctx, 200, { state: 'bypass', detail: 'max-forwards' }, headers, '');
  return true;
}

/** `OPTIONS *`: 200 with `Allow`, answered here (true); false for any other request. */
export function answerServerOptions(ctx: Ctx): boolean {
  if (ctx.method !== 'OPTIONS' || ctx.rawUrl !== '*') return false;
  const headers = { allow: ALLOW, 'content-length': '0', 'cache-control': 'no-store' };
  answerOwn(ctx, 200, { state: 'bypass', detail: 'options' }, headers, '');
  return true;
}
