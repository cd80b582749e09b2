/**
 * One active health probe: GET `<member base path><healthCheck.path>` over a fresh connection,
 * judged by status against `expectStatus`, bounded by `timeoutMs`. And the parser for
 * `expectStatus` ("2xx,3xx", "200,204").
 *
 * Owns the network side of a probe only. It does not count passes and failures or decide
 * up/down (member.ts), and does not schedule probes (pool.ts).
 *
 * Why a fresh connection (`agent: false`, `Connection: close`) rather than the member's
 * keep-alive agent: a probe should prove that a *new* connection can be opened and answered.
 * A pooled socket can keep working after the origin stopped accepting (listen socket closed,
 * backlog full), which would report "up" for a member live traffic cannot reach.
 */
import http from 'node:http';
import https from 'node:https';

export interface ProbeResult {
  ok: boolean;
  /** Response status, when a response head arrived. */
  status?: number;
  /** Why the probe failed: 'timeout', 'status 503', or the socket error code/message. */
  error?: string;
  /** Real time from sending to the response head (or failure), in ms. */
  durationMs: number;
}

export interface ProbeTarget {
  /** The member's base URL; its path (if any) is prefixed to `path`. */
  url: URL;
  /** healthCheck.path, starting with '/'. */
  path: string;
  timeoutMs: number;
  /** From parseExpectStatus. */
  isExpectedStatus: (status: number) => boolean;
  /** Aborts the probe (pool close); the result is then a failure with error 'aborted'. */
  signal?: AbortSignal;
  /** The CDN-Loop value to send for the probe's path (http/loop.ts): a probe of the gateway itself comes back 508. */
  loopMember?: (path: string) => string;
}

/**
 * Parse "2xx,3xx" / "200,204" / "2xx,404" into a predicate on the status code.
 * The schema already checks the shape; this throws a message naming the value otherwise.
 */
export function parseExpectStatus(spec: string): (status: number) => boolean {
  const classes = new Set<number>();
  const exact = new Set<number>();
  for (const raw of spec.split(',')) {
    const part = raw.trim().toLowerCase();
    if (/^[1-5]xx$/.test(part)) classes.add(Number(part[0]));
    else if (/^[1-5]\d\d$/.test(part)) exact.add(Number(part));
    else throw new Error(`healthCheck.expectStatus: "${raw}" in "${spec}" is not a status like 200 or a class like 2xx`);
  }
  return (status) => exact.has(status) || classes.has(Math.floor(status / 100));
}

/** Join the member's base path and the probe path without doubling the slash. */
export function makeProbePath(base: URL, path: string): string {
  const prefix = base.pathname.replace(/\/+$/, '');
  return prefix + path;
}

/** Run one probe. Never rejects: every failure is a result with `ok: false`. */
export function probe(target: ProbeTarget): Promise<ProbeResult> {
  const startedAt = performance.now();
  const elapsed = (): number => performance.now() - startedAt;
  const { url } = target;
  const transport = url.protocol === 'https:' ? https : http;

  const probePath = makeProbePath(url, target.path);
  return new Promise<ProbeResult>((resolve) => {
    let settled = false;
    let headStatus: number | undefined;
    const settle = (r: Omit<ProbeResult, 'durationMs'>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      target.signal?.removeEventListener('abort', onAbort);
      resolve({ ...r, durationMs: elapsed() });
    };

    const req = transport.request({
      protocol: url.protocol,
      hostname: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port || undefined,
      method: 'GET',
      path: probePath,
      agent: false,
      headers: {
        host: url.host,
        'user-agent': 'crowdgate-health-check',
        accept: '*/*',
        connection: 'close',
        ...(target.loopMember !== undefined ? { 'cdn-loop': target.loopMember(probePath) } : {}),
      },
    });

    // The whole probe — connect, head and body — must finish within timeoutMs.
    const timer = setTimeout(() => {
      settle(headStatus === undefined ? { ok: false, error: 'timeout' } : { ok: false, status: headStatus, error: 'timeout' });
      req.destroy();
    }, target.timeoutMs);
    timer.unref();

    const onAbort = (): void => {
      settle({ ok: false, error: 'aborted' });
      req.destroy();
    };
    if (target.signal?.aborted) onAbort();
    else target.signal?.addEventListener('abort', onAbort, { once: true });

    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      headStatus = status;
      const verdict = target.isExpectedStatus(status) ? { ok: true, status } : { ok: false, status, error: `status ${status}` };
      // The status decides; the body is drained (inside the same timeout) so the origin
      // finishes cleanly. A body cut short counts as a failure.
      res.resume();
      res.once('close', () => {
        settle(res.complete ? verdict : { ok: false, status, error: 'body aborted' });
        req.destroy();
      });
    });
    req.on('error', (err: NodeJS.ErrnoException) => settle({ ok: false, error: err.code ?? err.message }));
    req.end();
  });
}
