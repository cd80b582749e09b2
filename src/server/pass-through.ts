/**
 * Streaming pass-through (bypass and pass): the request goes to a member through the limiter
 * and back to the client as it streams, with one retry on another member for a refused
 * connection; a successful unsafe request invalidates what it changed (RFC 9111 §4.4).
 */
import { latencyClassOf, pageOf } from '../admission/limiter.js';
import type { OutgoingHttpHeaders } from 'node:http';
import { CACHED_METHODS, RETRYABLE_METHODS } from '../http/facts.js';
import { makeAuthority, makeCacheKey, normaliseHost, parseUrlPath } from '../cache/cache-key.js';
import { invalidationTargets } from '../cache/revalidation.js';
import type { PurgeSelector } from '../cache/stores/cache-store.js';
import { hasBody, type ForwardOutcome } from '../origin/forward.js';
import type { BufferedBody } from '../origin/request-body.js';
import { NOT_COUNTED } from '../admission/admission.js';
import type { OriginMember } from '../origin/pool.js';
import { MAX_FREED_ANSWERS } from '../origin/member.js';
import { appendVia, dropClientAddressClaims, dropNeverForwarded, dropOddFieldNames, isAnswered, isResponseGone, setForwardedHeaders, stripHopByHop } from './headers.js';
import { chainCacheStatus, formatCacheStatus } from './respond.js';
import { makeOnTheFlyEncoder, onTheFlyRequestOf } from './on-the-fly.js';
import { shed, fail } from './answer.js';
import { hostOf, noteAttempt, schemeOf, type Ctx, type Lookup } from './context.js';
import { stripTargeted } from './fill-headers.js';
import { queueDeadlineFor, routeCapOf, timeoutsFor } from '../runtime.js';
import { originFailure, hasStaleOnFailure, hasOtherMember, refusedFill, serveFailed, serveStaleOr } from './stale.js';

/**
 * forward, unless the pressure gate sheds and its allowance of forwards while shedding is in
 * use (admission.admitForward): then 503 shed-pressure. The allowance is held until the answer
 * is done or cut, or ALLOWANCE_HOLD_MS at most: an event stream or a long-poll must not keep
 * it for hours (eight live-blog readers' EventSources would have refused every editor's
 * publish in each later shedding spell; review).
 */
export function forwardUnlessShed(ctx: Ctx, state: 'bypass' | 'pass', lookup?: Lookup): void | Promise<void> {
  const release = ctx.deps.admission.admitForward();
  // Shed: a stored copy the request may fall back on (a pass's, see passForOwnCookies) answers
  // rather than a 503, as any stored page does while the gate is over.
  if (release === undefined) return lookup?.entry ? serveStaleOr(ctx, lookup, 'pressure', () => shed(ctx, 'pressure')) : shed(ctx, 'pressure');
  if (release !== NOT_COUNTED) {
    const held = setTimeout(release, ALLOWANCE_HOLD_MS);
    held.unref();
    ctx.res.once('close', () => {
      clearTimeout(held);
      release();
    });
  }
  return forward(ctx, state, lookup);
}

/** The longest one forward holds the pressure gate's allowance, ms. */
export const ALLOWANCE_HOLD_MS = 5_000;

/**
 * Streaming pass-through for requests the cache does not answer: through the limiter, to a
 * member, with one retry on another member when an idempotent request could not connect, and
 * one on a new connection when an idempotent request without a body met a reused keep-alive
 * connection the origin had just closed.
 */
export async function forward(ctx: Ctx, state: 'bypass' | 'pass', lookup?: Lookup): Promise<void> {
  const { deps, req, res, rt } = ctx;
  const site = ctx.site!;
  ctx.state = state;
  prepareForwardHeaders(ctx);
  const excluded = new Set<OriginMember>();
  const abort = new AbortController();
  // Only a client that left before its answer stops the wait for a permit: aborting on every
  // close would build an AbortError (a DOMException, with its stack) for each request.
  const onClose = () => {
    if (!isAnswered(res)) abort.abort();
  };
  res.once('close', onClose);
  if (isResponseGone(res)) abort.abort(); // gone already: its 'close' has fired, and nothing would stop its wait
  let reusedRetried = false;
  let freshNext = false;
  // Sent again after a suspect member answered 502 or 503: no ejected member's trial.
  let afterTrial = false;
  // The body is read whole first (request-body.ts): its client's pace holds no permit and no
  // origin connection.
  const body = await readBody(ctx);
  if (body === null) {
    res.off('close', onClose);
    return; // the client left mid-body, or was answered: nothing to send
  }
  try {
    for (let attempt = 0; ; attempt++) {
      const deadlineAt = deps.clock.now() + queueDeadlineFor(rt.config, ctx.route);
      const admitted = await deps.upstream.admit(site.config, site.pool, {
        priority: ctx.priority,
        deadlineAt,
        kind: 'forward',
        latencyClass: latencyClassOf('forward', ctx.route?.name ?? '-', ctx.path),
        path: ctx.path,
        page: pageOf(ctx.path, ctx.url),
        client: ctx.clientAddress,
        exclude: excluded,
        noTrial: afterTrial,
        signal: abort.signal,
        routeCap: routeCapOf(ctx.route),
        hasFallback: lookup !== undefined && hasStaleOnFailure(ctx, lookup),
      });
      if (!admitted.ok) {
        if (isResponseGone(res)) return;
        const refused = refusedFill(ctx, admitted);
        if (lookup) return serveFailed(ctx, lookup, refused);
        if (refused.shedReason) return shed(ctx, refused.shedReason);
        return fail(ctx, refused.code, refused.detail);
      }
      const lease = admitted.lease;
      const member = lease.member;
      noteAttempt(ctx, member, attempt > 0);
      let outcome: ForwardOutcome | undefined;
      let headAt: number | undefined;
      const freshConnection = freshNext;
      freshNext = false;
      try {
        if (isResponseGone(res)) outcome = { kind: 'client_gone' };
        else
          outcome = await deps.forwarder.web(req, res, {
            target: { url: member.url, agent: member.agent },
            timeouts: timeoutsFor(site.config, ctx.route, ctx.method),
            changeOrigin: !site.config.preserveHost,
            maxBodyBytes: rt.config.limits.maxBodyBytes,
            ...(body !== undefined ? { body } : {}),
            onHead: (status, headers) => {
              // The origin's time to its head (a streamed body's own time is the client's
              // too; a request body's upload is inside it).
              headAt = deps.clock.now();
              ctx.upstreamMs = (ctx.upstreamMs ?? 0) + (headAt - lease.startedAt);
              if (lookup) stripTargeted(headers, lookup.policy.targetedHeader);
              else stripTargeted(headers, rt.config.cache.targetedHeader);
              headers['cache-status'] = chainCacheStatus(
                headers['cache-status'],
                formatCacheStatus({ state, fwdStatus: status, detail: ctx.passDetail ?? state, requestId: ctx.requestId }),
              );
              headers['x-request-id'] = ctx.requestId;
              headers['via'] = appendVia(headers['via']);
              if (status >= 200 && status < 400 && !CACHED_METHODS.has(ctx.method) && site.config.invalidateOnUnsafeMethods)
                invalidateAfterUnsafe(ctx, status, headers);
              return headers;
            },
            encodeBody: (status, head) =>
              makeOnTheFlyEncoder(rt.config.compression, ctx.method, onTheFlyRequestOf(req.headers, site.credentialHeaders), status, head),
            freshConnection,
            // A client that stops reading the body, or an endless event stream, gives its
            // origin permit back: 100 slow readers of large answers held every permit, and
            // every other miss got 503 (attacker trial); so did 25 open event streams
            // (failure-day trial). The lease ends here; the finish below is then ignored.
            // At most MAX_FREED_ANSWERS per member at once: past it an answer holds its permit
            // to its end, as any answer (review: 300 downloads took every socket of the agent).
            onPermitFree: (status) => {
              if (member.freedAnswers >= MAX_FREED_ANSWERS || isResponseGone(res) || isAnswered(res)) return;
              member.freedAnswers++;
              res.once('close', () => member.freedAnswers--);
              lease.finish({ kind: 'response', status, clientHeld: true });
            },
            // A download (longer than the cache keeps) gives its permit back at its head: ten
            // 20 MiB downloads held every permit for their whole transfer, and 50 of a crowd
            // of 60 were refused at the deadline while the origin had room (normal-day trial).
            // An origin that streams it from a worker still holds the worker: the next
            // request's head waits for one, and its permit with it.
            downloadBytes: rt.config.cache.maxObjectBytes,
            // A client that stops sending its body gives the permit back too (attacker trial).
            onBodyStall: () => lease.finish({ kind: 'body_stalled' }),
            // A request to a suspect member (OriginLease.suspect) is a visitor's: its 502 or 503
            // is not theirs to see while another member is usable, when the request can be
            // sent again (nginx's proxy_next_upstream http_503, for such requests only).
            // Not a 504: behind a proxy of its own (nginx before PHP-FPM) the application may
            // have run the request, and a GET with a side effect would run twice (review).
            passOver: (status) =>
              lease.suspect &&
              (status === 502 || status === 503) &&
              attempt === 0 &&
              RETRYABLE_METHODS.has(ctx.method) &&
              (body !== undefined || !hasBody(req)) &&
              hasOtherMember(site, member, deps.clock.now()),
          });
      } finally {
        // An attempt that got no head: its time until it failed or timed out.
        if (headAt === undefined) ctx.upstreamMs = (ctx.upstreamMs ?? 0) + (deps.clock.now() - lease.startedAt);
        lease.finish(
          outcome === undefined
            ? { kind: 'abandoned' }
            : outcome.kind === 'ok' || outcome.kind === 'passed_over'
              ? { kind: 'response', status: outcome.status }
              : outcome.kind === 'client_gone' || outcome.kind === 'body_too_large'
                ? { kind: 'client_gone' }
                : { kind: 'failure', failure: outcome.failure, reusedConnection: outcome.kind === 'failure' && outcome.reusedConnection },
        );
      }
      if (outcome.kind === 'ok' || outcome.kind === 'client_gone') return;
      if (outcome.kind === 'passed_over') {
        excluded.add(member);
        afterTrial = true;
        continue;
      }
      // A streamed body cut off mid-way (the origin failed while it arrived): its rest will never
      // be read, so the answer closes the connection. Kept alive, the connection went dead: the
      // client's next request on it got nothing, then a reset (config-edit trial).
      if (!req.complete) res.shouldKeepAlive = false;
      if (outcome.kind === 'body_too_large') {
        // nginx's client_max_body_size for a chunked body: 413, and the connection closed (the
        // rest of the body is never read).
        if (outcome.headSent || res.headersSent) {
          res.destroy();
          return;
        }
        res.setHeader('connection', 'close');
        return fail(ctx, 'body_too_large', `the chunked request body passed limits.maxBodyBytes (${rt.config.limits.maxBodyBytes} bytes)`);
      }
      if (outcome.kind === 'broken') return; // head already sent; the client connection was cut
      const idempotent = RETRYABLE_METHODS.has(ctx.method);
      if (outcome.reusedConnection && idempotent && !hasBody(req) && !reusedRetried) {
        // A keep-alive connection the origin closed as idle just as the request went out
        // (origin/forward.ts tells it from a reset on a new connection, which is not retried),
        // before any byte of the answer: nothing reached the client and the request has no
        // body to replay, so send it once more, on a new connection, to another member when one
        // is usable (as below), else to this one. It did not count against the member
        // (upstream.ts); the retry's own failure does. A request with a body is never sent
        // twice: it streamed from the client and may be partly sent.
        reusedRetried = true;
        freshNext = true;
        if (hasOtherMember(site, member, deps.clock.now())) excluded.add(member);
        continue;
      }
      // A connection that was never made carried nothing: any method is sent once more on
      // another member, as nginx's proxy_next_upstream does, when its body can be sent again
      // (none, or read whole first). A POST to a member an edit had just pointed at a dead port
      // got 502 while another member was healthy (config-edit trial). Only a refusal of the
      // connection itself says so for a POST: a TLS error is a connect_error too, and may come
      // after the request went out (review: a POST ran on both members).
      if (
        outcome.failure === 'connect_error' &&
        (body !== undefined || !hasBody(req)) &&
        (idempotent || neverConnected(outcome.error)) &&
        site.config.retryOnConnectFailure &&
        attempt === 0 &&
        hasOtherMember(site, member, deps.clock.now())
      ) {
        excluded.add(member);
        continue;
      }
      if (outcome.failure === 'error') {
        deps.logger.warn({ err: outcome.error, requestId: ctx.requestId, origin: member.name }, 'request could not be forwarded');
        return fail(ctx, 'internal_error', `the request could not be forwarded: ${outcome.error.message}`);
      }
      const failed = originFailure(outcome.failure, { https: member.url.protocol === 'https:', error: outcome.error });
      if (lookup) return serveStaleOr(ctx, lookup, failed.staleReason, () => fail(ctx, failed.code, failed.detail));
      return fail(ctx, failed.code, failed.detail);
    }
  } finally {
    res.off('close', onClose);
    body?.release();
  }
}

/**
 * The request's body read whole (request-body.ts) when buffering is on for its route;
 * undefined to stream it as it comes; null when the client went away or was answered here
 * (413, 503). A spooled body's headers now say its length.
 */
async function readBody(ctx: Ctx): Promise<BufferedBody | undefined | null> {
  const { deps, req, rt } = ctx;
  const buffering = rt.config.limits.requestBuffering;
  if (!(ctx.route?.config.requestBuffering ?? buffering.enabled)) return undefined;
  const read = await deps.bodies.read(req, {
    maxBodyBytes: rt.config.limits.maxBodyBytes,
    maxBytes: buffering.maxBytes,
    memoryBytes: buffering.memoryBytes,
    directory: buffering.directory,
  });
  switch (read.kind) {
    case 'stream':
      if (read.unbuffered !== undefined && deps.bodies.warnDue(deps.clock.now()))
        deps.logger.warn({ requestId: ctx.requestId, reason: read.unbuffered, directory: buffering.directory || '(system temp)' }, 'request body streamed unbuffered: the spool directory cannot be written');
      return undefined;
    case 'gone':
      return null;
    case 'too_large':
      // nginx's client_max_body_size for a chunked body: 413, and the connection closed (the
      // rest of the body is never read).
      ctx.res.setHeader('connection', 'close');
      fail(ctx, 'body_too_large', `the chunked request body passed limits.maxBodyBytes (${rt.config.limits.maxBodyBytes} bytes)`);
      return null;
    case 'no_room':
      deps.logger.warn({ requestId: ctx.requestId, reason: read.reason }, 'request body not buffered');
      ctx.res.setHeader('connection', 'close');
      fail(ctx, 'upload_buffer_full', read.reason);
      return null;
    case 'body': {
      const headers = req.headers;
      delete headers['transfer-encoding'];
      headers['content-length'] = String(read.body.length);
      return read.body;
    }
  }
}

/** The error says no connection was ever made (refused, unreachable, no such host): nothing was sent. */
function neverConnected(err: Error): boolean {
  const code = (err as { code?: string }).code;
  return code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'ENOTFOUND' || code === 'EAI_AGAIN';
}

/** Prepares the client's request for forwarding: hop-by-hop out, X-Forwarded-* and Via in. */
function prepareForwardHeaders(ctx: Ctx): void {
  const headers = ctx.req.headers as Record<string, string | string[] | undefined>;
  const original = { ...ctx.req.headers };
  // Keep Transfer-Encoding so Node reproduces the body framing; strip every other hop-by-hop
  // field, including the client's Connection (with an agent, http-proxy would forward it).
  // (WebSocket upgrades never come here: server/websocket.ts tunnels them.)
  stripHopByHop(headers, TE_KEEP);
  // Node's server has already answered the client's `Expect: 100-continue` (the body is on its
  // way), and http-proxy emits no 'proxyReq' for a request that carries Expect: none of the
  // origin timeouts, nor the cut when the client leaves, were armed for it (a curl POST over
  // 1 KiB against a hung origin held its permit without limit).
  delete headers['expect'];
  setForwardedHeaders(headers as Record<string, string | string[] | number | undefined>, original, {
    peerAddress: ctx.peerAddress,
    peerTrusted: ctx.peerTrusted,
    scheme: ctx.scheme,
    loop: { site: ctx.site!.name, target: ctx.url },
  });
  headers['x-request-id'] = ctx.requestId;
  // The client-address fields other proxies write: from a client that is not a trusted proxy
  // they are its own claims (`X-Real-IP: 127.0.0.1` to an origin that allow-lists it, or rate
  // limits by it), replaced like its X-Forwarded-For, never passed on.
  if (!ctx.peerTrusted) dropClientAddressClaims(headers);
  // Behind a trusted proxy, the Host a fill sends (the key's, its X-Forwarded-Host): a GET's
  // fill and a POST to the same page reach the same origin vhost.
  else {
    const host = hostOf(ctx);
    if (host !== undefined) headers.host = normaliseHost(host, schemeOf(ctx).toLowerCase() === 'https' ? 'https' : 'http');
  }
  // `X.Real.IP` or `X_Real_IP` is `HTTP_X_REAL_IP` to PHP: never passed on, as nginx does.
  dropOddFieldNames(headers);
  // `Proxy` is `HTTP_PROXY` to a CGI stack (httpoxy): never passed on, from any client.
  dropNeverForwarded(headers);
}
const TE_KEEP: ReadonlySet<string> = new Set(['transfer-encoding']);



/** RFC 9111 §4.4: a successful unsafe request invalidates the URI and same-origin Location / Content-Location. */
function invalidateAfterUnsafe(ctx: Ctx, status: number, headers: OutgoingHttpHeaders): void {
  const site = ctx.site!;
  const host = ctx.req.headers['x-forwarded-host'] ?? ctx.req.headers.host ?? 'localhost';
  const origin = `${schemeOf(ctx)}://${Array.isArray(host) ? host[0] : host}`;
  const targets = invalidationTargets(
    { method: ctx.method, url: ctx.url, headers: ctx.req.headers },
    { status, headers: headers as Record<string, string | string[] | undefined> },
    origin,
  );
  // The copies under both schemes, as PURGE clears them: an edit made over https leaves the
  // page read over plain HTTP (and the other way round) just as stale.
  const authorities = ['http', 'https'].map((scheme) => makeAuthority(hostOf(ctx), scheme));
  const selectors: PurgeSelector[] = targets.flatMap((target) => {
    const { path, query } = parseUrlPath(target);
    const route = site.compiled.matchRoute('GET', path, query);
    const key = site.policyFor(route).route.key;
    return authorities.map((authority) => ({
      kind: 'key' as const,
      key: makeCacheKey({ site: site.name, authority, url: target, headers: ctx.req.headers, key }),
    }));
  });
  if (selectors.length > 0) void ctx.deps.purge(selectors, 'soft').catch(() => undefined);
}
