/**
 * The one error catalogue: every error the gateway itself answers with, its HTTP status, the
 * message a user sees, and what the operator should do. The README's error table is checked
 * against this list by a test. Owns the catalogue and the small error page; does not decide
 * when an error happens.
 */

export interface ErrorSpec {
  status: number;
  message: string;
  /** What the operator (or client) should do about it. */
  action: string;
}

export const ERRORS = {
  bad_request: {
    status: 400,
    message: 'The request is malformed.',
    action: 'Fix the client; the gateway refuses requests it cannot parse unambiguously.',
  },
  ambiguous_length: {
    status: 400,
    message: 'The request has both Content-Length and Transfer-Encoding.',
    action: 'Fix the client; such requests are refused, never forwarded (request smuggling).',
  },
  unsupported_transfer_coding: {
    status: 501,
    message: 'The request uses a transfer coding the gateway does not implement.',
    action: 'Send the body with Content-Length or `Transfer-Encoding: chunked` alone (RFC 9112 §6.1); any other coding list is refused, never forwarded (request smuggling).',
  },
  no_site: {
    status: 404,
    message: 'No site is configured for this host.',
    action: 'Add the host to a site\'s `sites[].hosts`, or add a catch-all "*".',
  },
  body_too_large: {
    status: 413,
    message: 'The request body is larger than allowed.',
    action: 'Raise `limits.maxBodyBytes` if such bodies are expected.',
  },
  upload_buffer_full: {
    status: 503,
    message: 'The upload could not be taken right now. Please retry shortly.',
    action: 'The request bodies being read at once filled `limits.requestBuffering.maxBytes` while this one was arriving, or its spool file could not be written (disk full): raise the cap, or free the disk. A body whose declared length does not fit at its start streams instead.',
  },
  request_timeout: {
    status: 408,
    message: 'The request body stopped arriving.',
    action: 'The client sent nothing of its body for `limits.requestTimeoutMs` (a stalled or abandoned upload); a body that keeps coming is never cut. Raise it if clients pause that long mid-upload.',
  },
  headers_too_large: {
    status: 431,
    message: 'The request head has too many or too large headers.',
    action: 'Raise `limits.maxHeaderBytes` / `limits.maxHeadersCount` if legitimate clients hit this.',
  },
  purge_regex_unsupported: {
    status: 400,
    message: 'Only a path prefix followed by .* can be purged by regex.',
    action: 'Send `PURGE /prefix/.*` with `X-Purge-Method: regex` (Varnish HTTP Purge\'s form), or purge through the admin listener (`prefix`, `tag`, `all`).',
  },
  purge_not_allowed: {
    status: 405,
    message: 'PURGE is not allowed from this address.',
    action: 'Send PURGE from an address in `purge.allow` (default loopback), or purge through the admin listener.',
  },
  rate_limited: {
    status: 429,
    message: 'Too many requests from this client.',
    action: 'The client should wait for Retry-After; tune `rateLimit` on the site or route.',
  },
  origin_unreachable: {
    status: 502,
    message: 'The origin server could not be reached.',
    action: 'Start the origin, or fix `sites[].origins[].url` to point at it.',
  },
  origin_reset: {
    status: 502,
    message: 'The origin server closed the connection before answering.',
    action:
      'Check the origin\'s logs; it may be crashing or overloaded. Not given for a reused keep-alive connection the origin closed as idle under a GET, HEAD or OPTIONS without a body: that is sent once more on a new connection (Origin health).',
  },
  origin_bad_response: {
    status: 502,
    message: 'The origin server sent an invalid response.',
    action:
      'Check the origin; its response could not be parsed, its status was outside 100-599 (RFC 9110 §15), its head was over 16 KiB, it was framed with a compressing transfer coding (`Transfer-Encoding: gzip, chunked`; deflate, compress, br, zstd), it sent `100 Continue` to a cache fill (legal, but undici, which makes fills, cannot read one; a pass-through can), or a body delimited by the connection\'s close ended with a reset (cut short).',
  },
  origin_timeout: {
    status: 504,
    message: 'The origin server did not answer in time.',
    action: 'Check the origin\'s load, or raise `sites[].timeouts.connectMs` (no connection in time), `sites[].timeouts.responseHeadersMs` (no answer in time; `unsafeResponseHeadersMs` for a POST, PUT, PATCH or DELETE) or `sites[].timeouts.idleMs` (a body that stopped coming).',
  },
  origin_unavailable: {
    status: 503,
    message: 'The site is unavailable right now. Please retry shortly.',
    action: "Check the origin: it answered 503 (or 429) to the fill this request waited on and to the waiters' own one; a 503's Retry-After (up to 1 h) is passed on.",
  },
  origin_failed: {
    status: 502,
    message: 'The origin server failed on this page. Please retry shortly.',
    action: 'Check the origin\'s logs: it answered a server error (500, 502, 504...) to the cache fill this request waited on, and to the waiters\' own fill after it. They get this (or a stored copy) rather than each asking the failing origin again; the requests that led the fills got the origin\'s own answer.',
  },
  origin_loop: {
    status: 508,
    message: 'The site is misconfigured: its gateway sends requests back to itself.',
    action:
      "An origin URL (`sites[].origins[].url`) points at crowdgate itself (its own listener, or a load balancer in front of it): point it at the application. The request came back carrying this gateway's own `CDN-Loop` id (RFC 8586) and was not sent round again; the log says so at warn, once a minute per site.",
  },
  only_if_cached: {
    status: 504,
    message: 'The request asked for only-if-cached and nothing usable is cached.',
    action: 'None: RFC 9111 §5.2.1.7 requires 504 here.',
  },
  no_healthy_origin: {
    status: 502,
    message: 'No origin server is healthy.',
    action: 'Check the origins\' health (`/readyz`, `crowdgate_origin_healthy`) and `sites[].healthCheck`.',
  },
  circuit_open: {
    status: 503,
    message: 'The origin is failing; requests are paused briefly to let it recover.',
    action: 'Check the origin; the breaker closes by itself (`sites[].circuit`).',
  },
  overloaded: {
    status: 503,
    message: 'The site is very busy right now. Please retry shortly.',
    action: 'Expected in a flash crowd; see `admission` and the shed metrics. `Cache-Status` (`detail="shed-<reason>"`) and the access line say why: `shed-route_busy` is a route\'s own `maxConcurrent` cap, not the site\'s load (its detail names the route: raise the cap or split the route).',
  },
  internal_error: {
    status: 500,
    message: 'The gateway could not complete this request.',
    action: 'A gateway bug or a request the gateway could not send on: see the gateway log for this request id. The origin is not blamed (no ejection, no breaker).',
  },
  draining: {
    status: 503,
    message: 'The gateway is shutting down.',
    action: 'None: clients are sent elsewhere by the load balancer once /readyz fails.',
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export const ERROR_CODES = Object.keys(ERRORS) as ErrorCode[];

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
}

/** True when the client prefers JSON over HTML (a plain check of Accept, not full negotiation). */
export function prefersJson(accept: string | undefined): boolean {
  if (!accept) return false;
  const json = accept.indexOf('application/json');
  if (json === -1) return false;
  const html = accept.indexOf('text/html');
  return html === -1 || json < html;
}

export interface ErrorBody {
  contentType: string;
  body: Buffer;
}

/**
 * The small error page: JSON `{ error, status, message, detail, requestId }` or a short HTML page.
 * `detail` may name an origin or a config key; it never contains request data.
 */
export function makeErrorBody(
  code: ErrorCode,
  opts: { accept?: string; detail?: string; requestId?: string },
): ErrorBody {
  const spec: ErrorSpec = ERRORS[code];
  if (prefersJson(opts.accept)) {
    const payload = {
      error: code,
      status: spec.status,
      message: spec.message,
      ...(opts.detail ? { detail: opts.detail } : {}),
      ...(opts.requestId ? { requestId: opts.requestId } : {}),
    };
    return { contentType: 'application/json; charset=utf-8', body: Buffer.from(JSON.stringify(payload) + '\n') };
  }
  const detail = opts.detail ? `<p>${escapeHtml(opts.detail)}</p>` : '';
  const rid = opts.requestId ? `<p><small>request ${escapeHtml(opts.requestId)} · ${code}</small></p>` : '';
  const html =
    `<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">` +
    `<title>${spec.status} ${escapeHtml(spec.message)}</title></head>` +
    `<body style="font-family:sans-serif;max-width:40em;margin:3em auto;padding:0 1em">` +
    `<h1>${spec.status}</h1><p>${escapeHtml(spec.message)}</p>${detail}${rid}</body></html>\n`;
  return { contentType: 'text/html; charset=utf-8', body: Buffer.from(html) };
}
