import { isIP } from 'node:net';
import { createSecureContext } from 'node:tls';
/**
 * The configuration schema: the single source of the config's types, defaults, docs and the
 * generated config/gateway.schema.json. Every key has a description; keys marked
 * "(restart)" are read only at startup, every other key applies on reload.
 *
 * Owns the shape and the defaults. It does not read files (load.ts) or hold the live
 * snapshot (source.ts).
 */
import { z } from 'zod';
import { DEFAULT_COMPRESSIBLE_TYPES, TYPE_PATTERN_RE } from '../cache/content-coding.js';
import { acmeHostnames } from '../tls/acme/hostnames.js';
import { isStorageSiteName } from '../tls/acme/disk-store.js';

const port = z.number().int().min(0).max(65535);
/**
 * The longest timer Node can set (2^31 - 1 ms, 24.8 days): a longer delay fires after 1 ms, with
 * a TimeoutOverflowWarning, so a 30-day `responseHeadersMs` answered every request with an
 * instant 504 and blamed the origin, and a 30-day probe interval probed back to back.
 */
export const MAX_TIMER_MS = 2_147_483_647;
const positiveMs = (what: string) =>
  z.number().int().positive().max(MAX_TIMER_MS, `must be at most ${MAX_TIMER_MS} ms (24.8 days), the longest timer Node can set`).describe(what);
const nonNegativeSeconds = (what: string) => z.number().min(0).describe(what);

const name = z
  .string()
  .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1-64 characters of letters, digits, _ . -');

export const listenSchema = z
  .strictObject({
    host: z.string().default('0.0.0.0').describe('Address to listen on (restart).'),
    port: port.default(8080).describe('Port to listen on; 0 picks a free port (restart).'),
    backlog: z
      .number()
      .int()
      .min(1)
      .max(65535)
      .default(4096)
      .describe(
        'Connections the kernel holds for accept() on the public listeners (plain and HTTPS): a flash crowd opens thousands at once, and one past a full queue waits for a SYN retransmit (1 s, then 3 s). Linux caps it at net.core.somaxconn, as Go (Caddy) does by default; Node\'s own default is 511 (restart).',
      ),
  })
  .describe('The public listener (restart to change).');

export const adminSchema = z
  .strictObject({
    host: z.string().default('127.0.0.1').describe('Admin address; keep it private (restart).'),
    port: port.default(9091).describe('Admin port; 0 picks a free port (restart).'),
    purgeToken: z
      .string()
      .min(16, 'must be at least 16 characters')
      .optional()
      .describe(
        'Bearer token for POST /purge. Unset disables purge. "${ENV_NAME}" reads it from the environment.',
      ),
    statusToken: z
      .string()
      .min(16, 'must be at least 16 characters')
      .optional()
      .describe('Bearer token for /status and /status.json (they name hot paths and origins); without it /readyz leaves out the origin addresses and names (states stay). Unset: open, like /metrics.'),
    allowedHosts: z
      .array(z.string().min(1))
      .default([])
      .describe(
        "On a loopback admin address, the Host names answered besides IP addresses, localhost (and *.localhost) and this machine's name; any other gets 421, so a web page open on this machine cannot rebind a name of its own to 127.0.0.1 and read /status or /metrics. On any other address every name is answered (the tokens guard it).",
      ),
  })
  .describe('The admin listener: /healthz /readyz /metrics /status /purge. On a non-loopback address without a token, the gateway warns at start.');

export const logSchema = z
  .strictObject({
    level: z
      .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
      .default('info')
      .describe('Log level.'),
    access: z.boolean().default(true).describe('Write one JSON access-log line per request.'),
  })
  .describe('Structured JSON logging (pino) to stdout.');

export const serverLimitsSchema = z
  .strictObject({
    maxHeaderBytes: z
      .number()
      .int()
      .min(1024)
      .max(1_048_576)
      .default(16_384)
      .describe('Largest request head accepted, in bytes; larger gets 431 (restart).'),
    maxHeadersCount: z
      .number()
      .int()
      .min(8)
      .max(2000)
      .default(100)
      .describe('Most request headers accepted; more gets 431 (over HTTP/2, more than twice this resets the stream, and a raise reaches HTTP/2 after a restart).'),
    headersTimeoutMs: positiveMs('Time a client has to send the whole request head (slow-loris guard); on the HTTPS listener also the TLS handshake\'s, which a reload reaches only after a restart (Node sets it once per server).').default(
      10_000,
    ),
    requestTimeoutMs: positiveMs(
      'Longest silence while a request body arrives (nginx client_body_timeout): a client that sends nothing of its body for this long gets 408 request_timeout. A body that keeps coming is never cut, however long it takes. On the HTTPS listener, a connection or stream silent this long is closed.',
    ).default(60_000),
    keepAliveTimeoutMs: positiveMs('Idle time before a client keep-alive connection is closed.').default(5_000),
    sendTimeoutMs: positiveMs(
      'A response its client stops reading (bytes waiting to be sent, nothing taken) for this long closes the connection (nginx send_timeout). A connection waiting on the origin, or a quiet stream, is not affected. Plain listener; the HTTPS listener closes any connection idle for requestTimeoutMs.',
    ).default(60_000),
    maxBodyBytes: z
      .number()
      .int()
      .min(0)
      .default(104_857_600)
      .describe(
        'Largest request body forwarded, in bytes: a larger Content-Length gets 413 at once; a chunked body that grows past it aborts the origin request and gets 413 (connection closed).',
      ),
    requestBuffering: z
      .strictObject({
        enabled: z
          .boolean()
          .default(true)
          .describe(
            'Read a request body whole before the origin is asked (nginx proxy_request_buffering): a slow upload holds no permit and no origin connection (a PHP worker). Bodies up to 64 KiB stay in memory (while memoryBytes has room), larger ones go to an unlinked temp file; the origin gets a Content-Length. Off: bodies stream as they come. A route may say otherwise (routes[].requestBuffering).',
          ),
        directory: z
          .string()
          .default('')
          .describe('Where larger bodies are spooled; empty: the system temp directory ($TMPDIR, else /tmp).'),
        maxBytes: z
          .number()
          .int()
          .min(0)
          .default(1_073_741_824)
          .describe(
            'Most bytes all spooled bodies hold at once, counted as they arrive: a body declaring a length past what is left streams as it comes; one that outgrows what is left while it arrives (a chunked one, or others grew) gets 503 upload_buffer_full.',
          ),
        memoryBytes: z
          .number()
          .int()
          .min(0)
          .default(67_108_864)
          .describe(
            'Most bytes request bodies hold in memory at once, counted as they arrive and until the request is done: past it small bodies are spooled to files like large ones (within maxBytes); a small body whose declared length fits neither streams as it comes, one that runs out of both while it arrives gets 503 upload_buffer_full. Bounds what many HTTP/2 streams each sending 64 KiB and stalling can hold (8 MB a connection uncounted).',
          ),
      })
      .prefault({})
      .describe('Request buffering: uploads read whole before they reach the origin.'),
    maxConnections: z
      .number()
      .int()
      .min(0)
      .default(0)
      .describe(
        'Most open client connections; past it new ones are closed at once. 0 (default): no cap of our own, only the open-file limit; set it below `ulimit -n` so origin and admin connections keep file descriptors.',
      ),
    maxConnectionsPerClient: z
      .number()
      .int()
      .min(0)
      .default(0)
      .describe(
        'Most open connections from one client address, trusted proxies exempt; past it new ones are closed at once (0: no cap; many users can share one address behind NAT).',
      ),
  })
  .describe('Limits that protect the listener from slow or hostile clients.');

export const shutdownSchema = z
  .strictObject({
    drainTimeoutMs: positiveMs('On SIGTERM/SIGINT, how long in-flight requests may finish.').default(10_000),
    delayMs: z
      .number()
      .int()
      .min(0)
      .max(600_000)
      .default(0)
      .describe(
        'On SIGTERM/SIGINT, keep serving this long before draining, ms, with /readyz answering 503 and answers closing their connections, so a load balancer takes the instance out first; a second signal drains at once (0: drain at once).',
      ),
  })
  .describe('Graceful shutdown.');

export const reloadSchema = z
  .strictObject({
    watch: z.boolean().default(true).describe('Reload when the config file changes (SIGHUP always reloads).'),
    debounceMs: positiveMs('Wait for edits to settle before reloading.').default(200),
  })
  .describe('Live reload of this file.');

/** Mozilla "intermediate" (v5.7) TLS 1.2 suites, in its order; TLS 1.3 suites are OpenSSL's defaults. */
export const INTERMEDIATE_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
  'DHE-RSA-AES128-GCM-SHA256',
  'DHE-RSA-AES256-GCM-SHA384',
  'DHE-RSA-CHACHA20-POLY1305',
].join(':');

/** A cipher list OpenSSL can build a TLS context from (refused at check-config and reload, never at a handshake). */
function isCipherListOpenSslTakes(list: string): boolean {
  try {
    createSecureContext({ ciphers: list });
    return true;
  } catch {
    return false;
  }
}

export const tlsSchema = z
  .strictObject({
    host: z.string().optional().describe('Address of the HTTPS listener (restart); unset: the same as `listen.host`.'),
    port: port
      .optional()
      .describe('Port of the HTTPS listener; unset: no HTTPS listener (the plain `listen` listener stays); 0 picks a free port (restart).'),
    minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2').describe('Oldest TLS version accepted.'),
    ciphers: z
      .string()
      .min(1)
      .refine(isCipherListOpenSslTakes, { message: 'OpenSSL knows no cipher in this list (check it with `openssl ciphers -v LIST`)' })
      .default(INTERMEDIATE_CIPHERS)
      .describe('OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are always OpenSSL\'s defaults); default Mozilla "intermediate". A list OpenSSL cannot use is refused at --check-config and reload.'),
    http2: z.boolean().default(true).describe('Offer HTTP/2 (ALPN h2) beside HTTP/1.1 on the HTTPS listener (restart).'),
    redirectHttp: z
      .boolean()
      .default(false)
      .describe('Answer plain-HTTP requests for a site that has a certificate with a redirect to https (never /.well-known/acme-challenge/ paths, never PURGE).'),
    redirectStatus: z
      .union([z.literal(301), z.literal(308)])
      .default(308)
      .describe('Status of that redirect: 308 keeps the method and body, 301 is for very old clients.'),
    redirectPort: port
      .optional()
      .describe('Port written in redirects when clients reach HTTPS on another port than `tls.port` (NAT, a container); unset: the bound port (443 is left out).'),
    hsts: z
      .strictObject({
        maxAgeSeconds: z
          .number()
          .int()
          .min(0)
          .default(0)
          .describe('Strict-Transport-Security max-age on HTTPS answers; 0: no header.'),
        includeSubDomains: z.boolean().default(false).describe('Add includeSubDomains to the header.'),
        preload: z.boolean().default(false).describe('Add preload to the header (only with a max-age of at least a year and includeSubDomains).'),
      })
      .prefault({})
      .describe('HTTP Strict Transport Security (RFC 6797), sent on answers over HTTPS only.'),
  })
  .describe('TLS termination: the HTTPS listener (HTTP/2 and HTTP/1.1 on one port). Certificates are per site (`sites[].tls`), chosen by SNI.');

export const siteTlsSchema = z
  .strictObject({
    certFile: z
      .string()
      .min(1)
      .optional()
      .describe('PEM file with the certificate chain (leaf first); relative to the config file. Watched: a renewed file is served without restart. Needs keyFile; not with acme.'),
    keyFile: z.string().min(1).optional().describe('PEM file with the private key of that certificate; relative to the config file. Watched.'),
    acme: z
      .boolean()
      .optional()
      .describe(
        'true: get and renew this site\'s certificate automatically from the ACME CA (top-level `acme`) for its concrete `hosts` ("*" and "*.wildcard" names are left out), validated by HTTP-01 on the plain listener; needs `tls.port`. Instead of certFile/keyFile.',
      ),
  })
  .describe(
    'This site\'s certificate for the HTTPS listener, from files (certFile + keyFile) or from ACME (acme: true), chosen when the client\'s SNI name matches one of `hosts`; a site with host "*" (else the first with a certificate) answers clients that send no or an unknown name.',
  );

/** Let's Encrypt's production directory: the default CA. */
export const LETS_ENCRYPT_DIRECTORY = 'https://acme-v02.api.letsencrypt.org/directory';

export const acmeSchema = z
  .strictObject({
    directoryUrl: z
      .string()
      .url()
      .refine((u) => u.startsWith('https://'), 'must be an https:// URL (RFC 8555 §6.1)')
      .default(LETS_ENCRYPT_DIRECTORY)
      .describe(
        'The ACME CA\'s directory URL. Default Let\'s Encrypt production; its staging CA (untrusted certificates, high limits) is https://acme-staging-v02.api.letsencrypt.org/directory.',
      ),
    email: z
      .string()
      .regex(/^[^\s@:,]+@[^\s@:,]+$/, 'must be an e-mail address, e.g. ops@example.com')
      .optional()
      .describe('Contact address of the ACME account (the CA may write about problems with it); optional.'),
    storageDir: z
      .string()
      .min(1)
      .default('crowdgate-acme')
      .describe(
        'Directory for the ACME account, certificates and keys (created mode 0700, keys 0600); relative to the config file. Keep it across restarts and deployments: a restart then places no order.',
      ),
    renewBeforeDays: z
      .number()
      .positive()
      .default(30)
      .describe('Renew a certificate this many days before it expires (never earlier than two thirds into its lifetime).'),
    caBundleFile: z
      .string()
      .min(1)
      .optional()
      .describe(
        'PEM file of the CA certificate(s) trusted, instead of the system\'s roots, for the ACME server\'s own HTTPS (a private or test CA); relative to the config file.',
      ),
    checkIntervalMs: positiveMs('How often certificates are checked for renewal (and a failed attempt retried once its backoff has passed).').default(600_000),
    requestTimeoutMs: positiveMs('Timeout of one HTTP request to the CA.').default(30_000),
    backoff: z
      .strictObject({
        initialMs: positiveMs('Wait after a first failed attempt.').default(60_000),
        maxMs: positiveMs('Longest wait between attempts (the wait doubles up to it).').default(21_600_000),
        jitter: z
          .number()
          .min(0)
          .max(1)
          .default(0.5)
          .describe('Share of each wait taken off at random (0-1), so instances that failed together do not retry together.'),
      })
      .prefault({})
      .describe('Retrying a failed certificate attempt; the certificate in use keeps serving meanwhile.'),
    lockTtlMs: positiveMs(
      'With `redis`: lifetime of a site\'s renewal lock, so one instance orders at a time; longer than an order takes, short enough to outlive a crashed holder.',
    ).default(600_000),
  })
  .describe(
    'Automatic HTTPS: certificates from an ACME CA (RFC 8555, HTTP-01) for the sites with `tls.acme: true`; unused otherwise. Applies live: a change starts a new ACME client, which takes up the stored certificates.',
  );

/** The host:port of a URL, or undefined when it does not parse. */
function hostOfUrl(url: string): string | undefined {
  try {
    return new URL(url).host;
  } catch {
    return undefined;
  }
}

/**
 * The URL's host, as written, is an IPv4 address in one of the legacy short or hex forms the
 * URL parser still reads (`127`, `127.1`, `0x7f.1`): never what an operator means, and what a
 * config file cut mid-line looks like (`url: http://127` sent a site's traffic to 0.0.0.127,
 * where something answered; config-edit trial).
 */
function isShorthandIPv4(url: string): boolean {
  const host = /^https?:\/\/(?:[^@/?#]*@)?([^:/?#]*)/i.exec(url)?.[1] ?? '';
  if (!/^(?:0x[0-9a-f]*|\d+)(?:\.(?:0x[0-9a-f]*|\d*))*$/i.test(host)) return false;
  return !/^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

export const originSchema = z
  .strictObject({
    url: z
      .string()
      .url()
      .refine((u) => /^https?:\/\//.test(u), 'must be an http:// or https:// URL')
      .refine((u) => !isShorthandIPv4(u), 'write the IPv4 address in full (127.0.0.1): a host of digits and dots in fewer than four parts, or in hex, is read as another address (`http://127` is 0.0.0.127)')
      .describe('Origin base URL, e.g. http://127.0.0.1:3000.'),
    name: name.optional().describe('Name used in metrics and logs; defaults to host:port.'),
    weight: z.number().int().min(1).max(1000).default(1).describe('Relative share of traffic.'),
    backup: z.boolean().default(false).describe('Used only when every primary member is down.'),
  })
  .describe('One origin member.');

export const healthCheckSchema = z
  .strictObject({
    enabled: z.boolean().default(true).describe('Probe each member actively.'),
    path: z.string().startsWith('/').default('/').describe('Path probed with GET.'),
    intervalMs: positiveMs('Time between probes. An edit counts it from each member\'s last probe (reloads every second used to push the probe back for good).').default(5_000),
    timeoutMs: positiveMs('A probe slower than this fails.').default(2_000),
    healthyThreshold: z.number().int().min(1).default(2).describe('Consecutive passes to mark up.'),
    unhealthyThreshold: z.number().int().min(1).default(3).describe('Consecutive failures to mark down.'),
    expectStatus: z
      .string()
      .regex(/^[1-5](xx|\d\d)(,[1-5](xx|\d\d))*$/)
      .default('2xx,3xx,4xx')
      .describe(
        'Statuses that count as healthy, e.g. "2xx,3xx" or "200". The default takes any answer below 500 as alive: an origin whose probe path answers 404 or 401 (an API, an app behind a login) is up.',
      ),
  })
  .describe('Active health checks.');

export const passiveSchema = z
  .strictObject({
    consecutiveFailures: z
      .number()
      .int()
      .min(1)
      .default(5)
      .describe(
        'Failures in a row that say the member is sick (connection refused, timeout, reset, 502/503/504 from it) and eject it. A 500 or 4xx from the application, a client that left or an error the request caused never count; the last usable member is never ejected.',
      ),
    ejectMs: positiveMs('How long an ejected member is skipped.').default(10_000),
  })
  .describe('Passive ejection from live traffic.');

export const timeoutsSchema = z
  .strictObject({
    connectMs: positiveMs('Time to open a TCP connection to the origin.').default(2_000),
    responseHeadersMs: positiveMs('Time from the end of the request (its body included: a slow upload is not cut by it) to the response head (504 after).').default(
      15_000,
    ),
    unsafeResponseHeadersMs: positiveMs(
      'The same for POST, PUT, PATCH, DELETE and other unsafe methods, and never less than responseHeadersMs: the origin carries such a request out whether the gateway waits or not (nginx waits 60 s), so a 504 tells its client it failed when it may not have (a WordPress comment answered 504 at 15 s was saved, and its retry answered "duplicate comment").',
    ).default(60_000),
    idleMs: positiveMs('Longest silence on an open origin response body.').default(30_000),
  })
  .describe('Origin timeouts.');

export const circuitSchema = z
  .strictObject({
    enabled: z.boolean().default(true).describe('Trip a per-member breaker on failures. A reload changes every circuit setting in place: an open breaker stays open (under the new openMs).'),
    consecutiveFailures: z
      .number()
      .int()
      .min(1)
      .default(10)
      .describe('Failures in a row that open it (the same failures that count for ejection: connection refused, timeout, reset, 502/503/504).'),
    errorRatePercent: z
      .number()
      .min(1)
      .max(100)
      .default(50)
      .describe('Error rate over the window that opens it.'),
    minRequests: z.number().int().min(1).default(20).describe('Requests in the window before the rate counts.'),
    windowMs: positiveMs('Error-rate window.').default(10_000),
    openMs: positiveMs('How long it stays open before half-open probes.').default(5_000),
    halfOpenProbes: z.number().int().min(1).default(3).describe('Probe requests allowed while half-open.'),
  })
  .describe('Per-member circuit breaker.');

const trackingDefaults = [
  'utm_*',
  'fbclid',
  'gclid',
  'dclid',
  'gbraid',
  'wbraid',
  'msclkid',
  'mc_*',
  'igshid',
  'yclid',
  '_ga',
  '_gl',
  'ref_src',
];

export const cacheKeySchema = z
  .strictObject({
    query: z
      .enum(['all', 'keep', 'drop', 'none'])
      .default('all')
      .describe('all: every parameter (sorted); keep: only `params`; drop: all but `params`; none: ignore the query. A fill asks the origin for the key\'s query, so a parameter left out of the key never reaches it on a fill (`?action=history` dropped is the article); a pass-through sends the query as it came.'),
    params: z.array(z.string()).default([]).describe('Parameter names for keep/drop; `*` suffix matches a prefix.'),
    dropTracking: z
      .array(z.string())
      .default(trackingDefaults)
      .describe('Tracking parameters always removed from the key; `*` suffix matches a prefix.'),
    headers: z.array(z.string()).default([]).describe('Request headers whose values vary the key.'),
    cookies: z.array(z.string()).default([]).describe('Cookie names whose values vary the key.'),
    ignoreCookies: z
      .array(z.string().min(1))
      .max(100)
      .default([])
      .describe(
        'Cookies that never change this route\'s pages (`*` matches any run of characters, any case), beside the built-in analytics and consent cookies: a request carrying only these is answered from a copy that varies on Cookie, or came without cache headers, instead of being passed to the origin. It does not lift a bypass (bypassCookies). For MediaWiki: `["*UserName"]` (kept 180 days after a logout). Never a session cookie: its holder would get the anonymous page. Default none.',
      ),
  })
  .describe('The cache key template. The site name is always part of the key.');

export const routeCacheSchema = z
  .strictObject({
    enabled: z.boolean().default(true).describe('Cache this route at all.'),
    defaultTtlSeconds: nonNegativeSeconds(
      'Lifetime for storable responses without explicit freshness. 0 = none: such a response is kept only by the heuristic (a tenth of its Last-Modified age, at most a day) when it has a Last-Modified, else not reused.',
    ).default(0),
    ttlFloorSeconds: nonNegativeSeconds(
      'Shortest lifetime given to a storable 2xx or 3xx response (errors keep their own or `negativeTtlSeconds`).',
    ).default(0),
    ttlCeilingSeconds: z
      .number()
      .positive()
      .optional()
      .describe('Longest lifetime given to a storable response.'),
    microcacheSeconds: z
      .number()
      .min(0)
      .max(5)
      .default(0)
      .describe(
        'Opt-in: cache responses the origin marks uncacheable (no-cache / max-age=0) for this long. Never with Set-Cookie, Authorization, private or no-store.',
      ),
    negativeTtlSeconds: z
      .record(z.string().regex(/^[1-5]\d\d$/, 'must be an HTTP status code'), z.number().min(0))
      .default({})
      .describe('Lifetime per error status without freshness info, e.g. {"404": 10}.'),
    staleWhileRevalidateSeconds: nonNegativeSeconds(
      'Operator opt-in: a stale-while-revalidate window for responses that give none (a just-expired page answered at once while one background fetch refreshes it). 0 = only what the origin says (RFC 9111/5861). Without it, a page being refreshed is still answered at once to the requests that arrive while its one refresh is under way (see README "Caching rules").',
    ).default(0),
    graceSeconds: nonNegativeSeconds(
      'Serve stale this long past expiry when the origin fails or is protected (beside stale-if-error). A reload that raises it gives the copies this instance holds the new grace too.',
    ).default(3600),
    graceOverridesMustRevalidate: z
      .boolean()
      .default(false)
      .describe(
        'Opt-in deviation from RFC 9111 §4.2.4 (as Varnish grace makes): pages sent with must-revalidate, proxy-revalidate or s-maxage (MediaWiki sends all three) may still be served stale within graceSeconds while the origin fails (error, timeout, unreachable, circuit open). Never for stale-while-revalidate or while the origin is merely busy.',
      ),
    setCookie: z
      .enum(['refuse', 'strip'])
      .default('refuse')
      .describe('refuse: never store a response with Set-Cookie (or the obsolete Set-Cookie2); strip: store it without them.'),
    ignoreSessionCookies: z
      .boolean()
      .default(false)
      .describe(
        'Opt-in, for files whose answer never depends on the session (a CMS\'s scripts, styles, images): a bypassCookies cookie does not send this route\'s requests to the origin; they are cached and shared like any other (from a copy that varies on Cookie too: DokuWiki\'s styles say so, and every visitor has its session cookie), and its fills carry no session cookie (only the key template\'s cookies, as every fill). WordPress sets its login cookie on path /, so a logged-in user fetched every script uncached and uncompressed, each through the origin\'s limiter. Credentials (Authorization, credentialHeaders) still bypass. Never for a route whose files a plugin guards by session.',
      ),
    key: cacheKeySchema.prefault({}),
  })
  .describe('Per-route cache rules.');

export const routeMatchSchema = z
  .strictObject({
    pathPrefix: z.string().startsWith('/').optional().describe('Path prefix to match.'),
    pathRegex: z
      .string()
      .refine((s) => {
        try {
          new RegExp(s);
          return true;
        } catch {
          return false;
        }
      }, 'is not a valid regular expression')
      .optional()
      .describe('Regular expression the path must match.'),
    methods: z
      .array(z.string().regex(/^[A-Z]+$/, 'must be an upper-case method name'))
      .optional()
      .describe('Methods to match; all when unset.'),
    query: z
      .record(z.string().min(1).max(200), z.string().max(1000))
      .refine((q) => Object.keys(q).length > 0, 'lists no parameter (leave it out to match any query)')
      .refine((q) => Object.keys(q).length <= 64, 'lists more than 64 parameters')
      .optional()
      .describe(
        'Query parameters to match, name to value (`*` matches any run of characters, any case; the value percent-decoded, `+` a space): every value the request gives the name must match, and the name must be there. For a page whose slow and quick answers share one path, as MediaWiki\'s `index.php?title=Special:…`: `{ title: "Special:*" }`. A route that is never cached (`cache.enabled: false`) or capped (`maxConcurrent`) also takes a request where any one value matches as origins read it loosely (any case, `;` a separator, a name as PHP, Rack and qs read it, MediaWiki\'s title rules); the URL\'s query only, never a POST body. Parameters are split at `&` only, as the cache key splits them: for an app that joins them with `;` (gitweb\'s `?p=repo.git;a=rss`, some Rack apps) write the condition for that form, `{ p: "*;a=rss*" }`, or a cached route never takes its links (new-user trial).',
      ),
  })
  .describe('What a route matches; all conditions must hold.');

export const rateLimitSchema = z
  .strictObject({
    enabled: z.boolean().default(true).describe('Apply per-client token buckets.'),
    ratePerSecond: z.number().positive().describe('Tokens refilled per second.'),
    burst: z.number().int().positive().describe('Bucket size.'),
    keyHeader: z
      .string()
      .optional()
      .describe('Key buckets by this request header instead of the client address.'),
  })
  .describe('Per-client rate limit (429 with Retry-After when empty).');

export const routeSchema = z
  .strictObject({
    name: name.describe('Route name, used in metrics and logs.'),
    match: routeMatchSchema.prefault({}),
    cache: routeCacheSchema.prefault({}),
    priority: z.string().optional().describe('Priority class name (admission.priorities) for this route.'),
    rateLimit: rateLimitSchema.optional(),
    timeouts: z
      .strictObject({
        responseHeadersMs: positiveMs('This route\'s time to the response head, in place of the site\'s (a long-poll or report endpoint).').optional(),
        unsafeResponseHeadersMs: positiveMs('This route\'s time to the response head of an unsafe method (POST...), in place of the site\'s. A route that sets only responseHeadersMs gives it to every method.').optional(),
        idleMs: positiveMs('This route\'s longest silence on a response body, in place of the site\'s.').optional(),
      })
      .optional()
      .describe('Origin timeouts for this route, over the site\'s `timeouts` (a long poll held 20 s got 504 at the site\'s 15 s).'),
    requestBuffering: z
      .boolean()
      .optional()
      .describe('Read request bodies whole before the origin is asked, in place of limits.requestBuffering.enabled: false for an endpoint that must see an upload as it streams (a live import that reports progress).'),
    maxConcurrent: z
      .number()
      .int()
      .positive()
      .optional()
      .describe(
        'At most this many of this route\'s requests at the origin at once, per gateway instance (nginx\'s limit_conn, HAProxy\'s maxconn): for an endpoint that holds a worker for seconds (a report, an export) on an origin with a few workers. Those beyond wait at the gateway up to the route\'s queue deadline, then are refused `route_busy` (or served stale). Default: no cap.',
      ),
    queueDeadlineMs: positiveMs(
      'Longest this route\'s requests wait for an origin permit, in place of admission.queue.deadlineMs: longer for slow endpoints a browser calls in bursts (WordPress\'s block editor sends a dozen 0.5 s REST calls at once, and 500 ms refused a third of them).',
    ).optional(),
  })
  .describe('A route within a site.');

/** The session cookies of common apps and frameworks: `sites[].bypassCookies` when not given. */
export const DEFAULT_BYPASS_COOKIES: readonly string[] = [
  '*session*',
  '*sess',
  'sid',
  'PHPSESSID',
  'JSESSIONID',
  'wordpress_logged_in_*',
  'wp-postpass_*',
  'comment_author_*',
  'wp-resetpass-*',
  'wp-activate-*',
  'SESS*',
  'SSESS*',
  'connect.sid',
  '_session_id',
  'sessionid',
  'laravel_session',
  'ghost-members-ssr*',
];

export const siteSchema = z
  .strictObject({
    name: name.describe('Site name: in the cache key, metrics and logs. Renamed, the site starts with an empty cache (no stale copies to answer with while its origin fails; the reload warns); the old name\'s copies age out, or are revalidated before use if the name comes back.'),
    hosts: z
      .array(z.string().min(1))
      .min(1)
      .describe('Host names: exact, "*.example.com" wildcard, or "*" catch-all; compared as a request\'s Host is (case, any port and a trailing dot ignored). An entry with a scheme or path matches nothing and is warned about.'),
    origins: z.array(originSchema).min(1).describe('Origin members.'),
    balance: z
      .enum(['round-robin', 'least-inflight'])
      .default('least-inflight')
      .describe(
        'How a member is chosen among the healthy primaries: least-inflight (default) takes the one with the fewest requests in flight for its weight, ties in weighted round-robin, so a member that slowed down or hangs gets fewer; round-robin is nginx\'s smooth weighted round-robin, and a member whose limiter is full then refuses its share while another sits idle.',
      ),
    healthCheck: healthCheckSchema.prefault({}),
    passive: passiveSchema.prefault({}),
    timeouts: timeoutsSchema.prefault({}),
    circuit: circuitSchema.prefault({}),
    retryOnConnectFailure: z
      .boolean()
      .default(true)
      .describe('Retry a request once on another member when connecting fails: an idempotent one on any connect error, any method (its body sent again from the request buffer; a body streamed unbuffered is not) only when the connection itself was refused or unreachable, so nothing reached the origin (a TLS error may come after the request went out); a cache fill (a GET) also when it timed out.'),
    preserveHost: z
      .boolean()
      .default(true)
      .describe('Send the client\'s Host to the origin (true) or the origin URL\'s host (false).'),
    bypassCookies: z
      .array(z.string())
      .default([...DEFAULT_BYPASS_COOKIES])
      .describe(
        'Requests carrying one of these cookies (glob, case-insensitive) bypass the cache: logged-in users see their own pages. Not a cookie only named like a session: Hotjar\'s `_hj*`, Adobe\'s `s_sess`, MediaWiki\'s `*mwuser-sessionId`. Cache fills never forward other cookies. A list given here replaces the default one: keep the defaults you need (a request carrying a default one the list leaves out logs a warning, once per pattern).',
      ),
    fillHeaders: z
      .strictObject({
        drop: z
          .array(z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be a header field name'))
          .default([
            'X-Original-URL',
            'X-Rewrite-URL',
            'X-HTTP-Method-Override',
            'X-HTTP-Method',
            'X-Method-Override',
            'Forwarded',
            'X-Forwarded-Scheme',
            'X-Forwarded-Port',
            'X-Forwarded-Prefix',
            'X-Forwarded-Server',
            'X-Forwarded-Ssl',
            'X-Url-Scheme',
            'Front-End-Https',
            'X-Host',
            'X-Original-Host',
            'X-Forwarded-Path',
            'X-Original-Method',
            'X-Original-URI',
            'X-Forwarded-Uri',
            'X-Forwarded-Url',
            'X-Forwarded-Protocol',
            'X-Real-IP',
            'True-Client-IP',
            'X-Client-IP',
            'Client-IP',
            'X-Cluster-Client-IP',
            'CF-Connecting-IP',
            'Fastly-Client-IP',
            'X-Originating-IP',
            'X-Remote-IP',
            'X-Remote-Addr',
            'X-ProxyUser-Ip',
            'X-Original-Forwarded-For',
            'Forwarded-For',
            'X-Scheme',
            'X-Forwarded',
            'X-HTTP-Host-Override',
            'X-Arr-Ssl',
            'X-Backend-Host',
            'Proxy-Host',
            'Base-Url',
            'X-Http-Destinationurl',
            'X-Override-URL',
            'Max-Forwards',
            'X-Wap-Profile',
            'X-Wap-Clientid',
            'Wap-Connection',
            'Profile',
            'X-Operamini-Phone-Ua',
            'X-Nokia-Ipaddress',
            'X-Nokia-Gateway-Id',
            'X-Orange-Id',
            'X-Vodafone-3gpdpcontext',
            'X-Huawei-Userid',
            'Ua-Os',
            'X-Mobile-Gateway',
            'X-Att-Deviceid',
            'UA-CPU',
            'X-Device-User-Agent',
            'X-Original-User-Agent',
            'X-Skyfire-Phone',
            'X-Bolt-Phone-Ua',
            'Device-Stock-Ua',
            'X-Ucbrowser-Device-Ua',
            'CF-IPCountry',
            'CF-IPCity',
            'CF-IPContinent',
            'CF-Region',
            'CF-Region-Code',
            'CF-Device-Type',
            'CloudFront-Viewer-Country',
            'CloudFront-Viewer-Country-Region',
            'CloudFront-Viewer-City',
            'CloudFront-Is-Mobile-Viewer',
            'CloudFront-Is-Tablet-Viewer',
            'CloudFront-Is-Desktop-Viewer',
            'X-AppEngine-Country',
            'X-AppEngine-Region',
            'X-AppEngine-City',
            'X-Vercel-IP-Country',
            'X-Country-Code',
            'X-Forwarded-PathBase',
            'X-Middleware-Subrequest',
            'X-Middleware-Prefetch',
            'X-Now-Route-Matches',
            'X-Nextjs-Data',
            'X-Matched-Path',
            'X-Invoke-Path',
            'X-Invoke-Query',
            'X-Invoke-Status',
            'X-Invoke-Output',
            'X-Nuxt-No-SSR',
            'Surrogate-Capability',
            'X-Envoy-Original-Path',
            'Early-Data',
          ])
          .describe('Request headers never sent on a shared cache fill: they rewrite the URL, method, scheme, host or client address an origin framework acts on, or carry the client\'s country or device as a CDN in front saw it, or say "phone" to a device detector (Mobile_Detect, in many WordPress themes and plugins, takes the mere presence of `X-Wap-Profile`, `Profile`, `UA-OS`, `X-Att-Deviceid` and the like, or `UA-CPU: ARM`, for a phone, and reads `X-Device-User-Agent` and its siblings as the User-Agent), or are a framework\'s internal ones (Next.js `X-Middleware-Subrequest` skips its middleware, auth included; `X-Middleware-Prefetch` and `X-Now-Route-Matches` made it answer an empty or static page stored for everyone, `X-Nextjs-Data` a redirect without its Location; `X-Matched-Path` and `X-Invoke-*` pick the route it renders; Nuxt\'s `X-Nuxt-No-SSR` makes it answer its empty SPA shell; `Surrogate-Capability` makes Symfony and other ESI origins answer raw `<esi:include>` tags, which crowdgate does not process), or say what only a proxy in front may say (`Early-Data`: RFC 8470; Envoy\'s original path), and are not in the key (name one in a route\'s `key.headers` to cache per value). Host, User-Agent and Accept* are sent on every fill whatever the list says (the variant key reads them): naming one here is a warning at load.'),
        only: z
          .array(z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be a header field name'))
          .optional()
          .describe(
            'Strict mode: when set, a fill sends only these request headers (plus Host, Accept*, User-Agent, the key template\'s headers and the names a stored Vary lists). Unset: every header except `drop`, names with anything but letters, digits and hyphens and fetch-context headers (Referer, Sec-*, X-Requested-With...). A name with an underscore or a dot is never sent unless the key template names it.',
          ),
      })
      .prefault({})
      .describe('What a shared cache fill passes on from the client request (cookies: only the key template\'s; credentials bypass the cache).'),
    credentialHeaders: z
      .array(z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be a header field name'))
      .default(['Authorization', 'Proxy-Authorization', 'X-Api-Key', 'X-Auth-Token', 'X-Access-Token', 'X-Redmine-API-Key'])
      .describe(
        'Requests carrying one of these headers bypass the cache (like bypassCookies): a credential personalises the answer, so it never reaches a shared fill or a shared copy.',
      ),
    bypassHeaders: z
      .array(z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be a header field name'))
      .default(['HX-Request', 'X-PJAX', 'Turbo-Frame', 'X-Inertia', 'X-Up-Target', 'RSC'])
      .describe(
        'Requests carrying one of these headers bypass the cache: they ask the origin for another answer at the same URL (an htmx, pjax, Turbo Frame, Inertia or Unpoly fragment, a Next.js RSC flight payload) that origins seldom name in Vary. Cached, one fragment would be stored as the page for everyone; dropped from the fill, the fragment request would get the whole page. Where every stored copy of the URL varies on the fragment headers a request carries and on every other header a fill would send for it but Accept* and User-Agent (the origin sent Vary: HX-Request, or Next.js its Vary: RSC, ...), the request is cached as its own variant instead, except under fillHeaders.only. A header that must always bypass belongs in credentialHeaders.',
      ),
    invalidateOnUnsafeMethods: z
      .boolean()
      .default(true)
      .describe(
        'A POST, PUT, DELETE or PATCH the origin answers 2xx or 3xx marks its URL and its same-origin Location / Content-Location (each also without its query: a saved edit sent to /page/?updated) for revalidation, on every instance (RFC 9111 §4.4): a comment shows at once. Off, as nginx and Varnish by default: pages change at their TTL or a PURGE, and nobody whose POST the origin answers 2xx (WordPress answers one to most URLs) can make a hot page\'s readers wait for a revalidation at will.',
      ),
    honorClientNoCache: z
      .boolean()
      .default(false)
      .describe(
        'Let client Cache-Control no-cache / max-age / min-fresh / Pragma force a refetch. Off: in a crowd a reload storm must not pass through.',
      ),
    rateLimit: rateLimitSchema.optional(),
    tls: siteTlsSchema.optional(),
    routes: z
      .array(routeSchema)
      .default([])
      .describe('Routes, first match wins; a "default" route matching everything is added last.'),
  })
  .describe('A site: hosts, origins and routes.');

export const limitSchema = z
  .strictObject({
    algorithm: z
      .enum(['gradient2', 'aimd', 'fixed'])
      .default('gradient2')
      .describe('How the per-origin concurrency limit is learned.'),
    initial: z.number().int().min(1).default(8).describe('Starting limit.'),
    min: z.number().int().min(1).default(2).describe('Lowest limit.'),
    max: z.number().int().min(1).default(256).describe('Highest learned limit.'),
    ceiling: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe('Hard cap on concurrent origin requests per member, on top of the learned limit.'),
    slowShare: z
      .boolean()
      .default(false)
      .describe(
        'Learned limits: when quick pages are held up behind slow requests (an origin with a few workers, all busy with slow pages), hold the slow requests beyond a share at the gateway (README Overload control). Off by default: on an origin with room, a stall of over a second with slow requests out sets a share, and some slow requests are refused for a while after it.',
      ),
  })
  .describe('Per-origin adaptive concurrency limit.');

export const queueSchema = z
  .strictObject({
    maxLength: z.number().int().min(0).default(1000).describe('Most requests waiting for a permit per member.'),
    deadlineMs: positiveMs('How long a request waits for a permit before it is shed, unless minWaitRoundTrips gives a request a client waits for longer (at most 5 s: its round trips, or through a stall).').default(500),
    codelTargetMs: positiveMs(
      'CoDel target queue delay: a queue whose shortest wait stays above this for an interval is standing; then it bounds pass-through waits.',
    ).default(50),
    codelIntervalMs: positiveMs('CoDel interval; under a standing queue it bounds cache-fill waits.').default(100),
    standingBoundAfterMs: z
      .number()
      .int()
      .min(0)
      .max(MAX_TIMER_MS, `must be at most ${MAX_TIMER_MS} ms (24.8 days), the longest timer Node can set`)
      .default(1000)
      .describe(
        'Learned limits: how long a queue stands, counted from when it began to or from the end of the last no-load probe, whichever is later, before arrivals a client waits for (minWaitRoundTrips) are held to the CoDel bounds, unless the evidence of queueing is strong (three quarters of the recent windows, as in a crowd); meanwhile their waits are bounded by their deadline. Either way only while the queue outgrows the deadlines of such requests of the same or a more important class (one forecast past its deadline, one refused at it, or a full queue, within the last 30 s; twice as long, up to 240 s, each time it outgrows them again within that long of being let grow): a queue whose waits fit them is a population the origin serves at its pace (a search crowd on a few PHP workers). On an ordinary day a queue stands for a moment (a busy host, a probe, a burst), and held to the CoDel target at once, arrivals the origin had room for were refused. A request a usable stale copy answers keeps the bounds at once, as does any request behind a fixed or AIMD limit. 0: at once (once the queue outgrows its deadlines).',
      ),
    minWaitRoundTrips: z
      .number()
      .min(0)
      .default(8)
      .describe(
        'A request a client waits for (not one a usable stale copy can answer) waits at least this many of the origin\'s typical round trips (at most 5 s) when that is longer than its deadline: against 0.5 s answers a 500 ms deadline refused a burst the origin drains in a few round trips. Under a standing queue such a request is held to the CoDel bound only while the queue outgrows its deadlines (standingBoundAfterMs) and with 8 or more requests ahead of it and more work than 8 typical requests, and once admitted it is not cut at that bound. Through a stall (permits out and none answered) or a no-load probe of a learned limit, such a request waits on up to 5 s from its arrival rather than being refused at its deadline. 0: the deadline and the CoDel bounds alone.',
      ),
  })
  .describe('The bounded queue in front of the limiter.');

export const priorityMatchSchema = z
  .strictObject({
    pathPrefix: z.string().startsWith('/').optional().describe('Matches paths starting with this prefix.'),
    method: z.string().optional().describe('Matches this request method.'),
    header: z.string().optional().describe('Matches when this request header is present.'),
    cookie: z.string().optional().describe('Matches when a cookie of this name is present; `*` matches any run of characters (`wordpress_logged_in*`).'),
    route: z.string().optional().describe('Matches this route name.'),
  })
  .describe('All given conditions must hold.');

export const priorityClassSchema = z
  .strictObject({
    name: name.describe('Class name, used in metrics and by routes[].priority.'),
    match: priorityMatchSchema.prefault({}),
  })
  .describe('A priority class; earlier classes are more important.');

export const pressureSchema = z
  .strictObject({
    enabled: z.boolean().default(true).describe('Protect the process itself: answer from the store first when it is busy, and shed non-hit work when its event loop or heap is over its threshold.'),
    maxEventLoopDelayMs: positiveMs('p99 event-loop delay above which non-hit work is shed.').default(250),
    maxEventLoopUtilization: z
      .number()
      .min(0.1)
      .max(1)
      .default(0.98)
      .describe('Utilisation above which (with a fifth of maxEventLoopDelayMs of delay) stored copies answer first; it never sheds on its own; 1 = off.'),
    maxHeapUsedRatio: z.number().min(0.1).max(1).default(0.92).describe('Heap used / limit above which non-hit work is shed.'),
    sampleIntervalMs: positiveMs('Sampling period.').default(250),
    forwardWhileShedding: z
      .number()
      .int()
      .min(0)
      .max(10_000)
      .default(8)
      .describe(
        'While the gate sheds, this many requests the cache cannot answer (pages of logged-in users, a POST: publish, login, comment) are still forwarded at once; past it they get 503. 0 sheds them all.',
      ),
  })
  .describe('The pressure gate protecting the gateway process.');

export const admissionSchema = z
  .strictObject({
    pressure: pressureSchema.prefault({}),
    limit: limitSchema.prefault({}),
    queue: queueSchema.prefault({}),
    retryAfterMinSeconds: z.number().int().min(1).default(1).describe('Smallest Retry-After given.'),
    retryAfterMaxSeconds: z.number().int().min(1).default(60).describe('Largest Retry-After given.'),
    priorities: z
      .array(priorityClassSchema)
      .default([])
      .describe('Priority classes, most important first; unmatched requests get the class "default" (last).'),
  })
  .describe('Admission control: pressure gate, origin limiter, queue, priorities.');

export const collapseSchema = z
  .strictObject({
    maxWaiters: z.number().int().min(1).default(10_000).describe('Most requests waiting on one fetch.'),
    waitDeadlineMs: positiveMs('A waiter gives up after this and takes stale or fetches alone; never before the fill itself may get its answer\'s head (the route\'s connectMs + responseHeadersMs, twice when it may try another member, plus 1 s).').default(10_000),
    hitForPassSeconds: z
      .number()
      .min(0)
      .default(5)
      .describe('After an uncacheable response, skip collapsing for that key this long, twice as long each time a fill finds it uncacheable again (up to 120 s, or this when longer); meanwhile one request a second still fills it, and a storable answer ends the mark. Also: requests with cookies of their own or a Range to other queries of its path are sent as they came.'),
  })
  .describe('Request collapsing.');

export const cacheSchema = z
  .strictObject({
    maxBytes: z.number().int().min(1_048_576).default(268_435_456).describe('Memory cache size in bytes: each entry counts its body, stored encodings, key and headers plus 1.4 KiB, what an entry costs in the V8 heap beside them. Budget RSS of a few times this under heavy churn (V8 collects lazily below its heap limit).'),
    maxObjectBytes: z
      .number()
      .int()
      .min(1024)
      .default(8_388_608)
      .describe('Largest response body stored (its bytes as the origin sent them; the URL and headers do not count); larger ones stream through, their origin permit given back at their head (a download). A reload applies to the next fills: after a cut, larger copies stored already are served until they expire.'),
    maxVariants: z.number().int().min(1).max(64).default(16).describe('Most Vary variants kept per URL. A new one beyond it drops the oldest server-error variant (a 5xx stored with a lifetime), else the oldest copy kept for one asker (a header naming who asks, see Caching rules), else the one that answered the fewest hits (the oldest among equals): a stored 5xx never stands in for a failed origin, a page\'s older variant may, and a flood of made-up values pushes out its own variants, not the copy readers get.'),
    targetedHeader: z
      .string()
      .default('Crowdgate-Cache-Control')
      .describe('Our own targeted cache-control header (RFC 9213), honoured then stripped.'),
    collapse: collapseSchema.prefault({}),
  })
  .describe('The shared cache.');

export const redisSchema = z
  .strictObject({
    url: z
      .string()
      .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
      .optional()
      .describe('Standalone Redis, e.g. redis://127.0.0.1:6379 (restart).'),
    sentinels: z
      .array(z.strictObject({ host: z.string().describe('Sentinel host.'), port: port.describe('Sentinel port.') }))
      .optional()
      .describe('Sentinel addresses; needs sentinelName (restart).'),
    sentinelName: z.string().optional().describe('Sentinel master group name (restart).'),
    cluster: z.array(z.string()).optional().describe('Cluster seed URLs (restart).'),
    keyPrefix: z.string().default('crowdgate:').describe('Prefix for every key, one per deployment (restart).'),
    commandTimeoutMs: positiveMs('A Redis command slower than this fails open (treated as a miss).').default(75),
    connectTimeoutMs: positiveMs('Time to connect to Redis.').default(1_000),
    maxEntryBytes: z
      .number()
      .int()
      .min(1024)
      .default(1_048_576)
      .describe('Largest entry written to Redis; larger ones stay in memory only.'),
    breakerFailures: z.number().int().min(1).default(3).describe('Errors in a row that make the gateway skip Redis.'),
    breakerOpenMs: positiveMs('How long Redis is skipped before one probe.').default(2_000),
    lockTtlMs: positiveMs('Cross-instance fill lock lifetime, renewed while the fill runs; a dead holder blocks a key no longer.').default(5_000),
    lockWaitMs: positiveMs(
      'How often another instance checks that the holder still holds its lock while it waits (up to cache.collapse.waitDeadlineMs in all); one that no longer does is not waited for.',
    ).default(3_000),
  })
  .refine((r) => r.url || r.sentinels || r.cluster, 'needs url, sentinels or cluster')
  .refine((r) => !r.sentinels || r.sentinelName, 'sentinels need sentinelName')
  .describe('Shared Redis tier (L2 cache, cross-instance collapsing and purge). Omit for memory-only.');

const addressOrCidr = z.string().refine((v) => {
  const [addr, bits, extra] = v.trim().split('/');
  const family = isIP(addr ?? '');
  if (family === 0 || extra !== undefined) return false;
  if (bits === undefined) return true;
  const n = Number(bits);
  return /^\d+$/.test(bits) && n >= 0 && n <= (family === 4 ? 32 : 128);
}, 'must be an IP address or CIDR, e.g. 127.0.0.1 or 10.0.0.0/8');

export const purgeSchema = z
  .strictObject({
    allow: z
      .array(addressOrCidr)
      .default(['127.0.0.1', '::1'])
      .describe('Client addresses or CIDRs that may send PURGE (trusted proxies honoured); anyone else gets 405.'),
    mode: z.enum(['hard', 'soft']).default('hard').describe('hard: delete the URL\'s entries; soft: mark them stale (revalidated by the next request).'),
    allHosts: z
      .boolean()
      .default(false)
      .describe('PURGE clears the URL for every Host of the site, not only the Host the PURGE request names.'),
  })
  .describe(
    'The HTTP PURGE method on the public listener, as Varnish and Squid answer it (MediaWiki, WordPress cache plugins): answered by the gateway, never forwarded; 200 when something was purged, 404 when nothing was stored, 405 from other addresses.',
  );

export const compressionSchema = z
  .strictObject({
    enabled: z
      .boolean()
      .default(true)
      .describe(
        'Store brotli and gzip encodings of compressible responses at fill time and send each client the best one it accepts; false also answers identity at once from encodings already stored.',
      ),
    types: z
      .array(z.string().regex(TYPE_PATTERN_RE, 'must be a media type: type/subtype, type/* or type/*+suffix'))
      .default([...DEFAULT_COMPRESSIBLE_TYPES])
      .describe('Media types compressed: type/subtype, type/* (any subtype) or type/*+suffix (e.g. application/*+json). text/event-stream never is.'),
    minBytes: z
      .number()
      .int()
      .min(0)
      .default(1024)
      .describe('Bodies smaller than this (bytes) are stored identity only.'),
    minSavingsRatio: z
      .number()
      .min(0)
      .max(0.9)
      .default(0.1)
      .describe('An encoding is stored only if it saves at least this share of the identity bytes (0.1 = 10 %).'),
    brotliQuality: z.number().int().min(0).max(11).default(5).describe('Brotli quality for stored encodings (0-11).'),
    gzipLevel: z.number().int().min(1).max(9).default(6).describe('Gzip level for stored encodings (1-9).'),
    fillBytesPerSecond: z
      .number()
      .int()
      .min(0)
      .default(2 * 1024 * 1024)
      .describe(
        'Bodies over 16 KiB compressed at fill time, in bytes per second for the whole gateway (a burst of 8 s of it), one client at most half of it; past it they are stored identity only (reason budget). 0: no bound.',
      ),
    passThrough: z
      .strictObject({
        enabled: z
          .boolean()
          .default(true)
          .describe('Compress uncached pass-through GET answers (200, compressible type) while they stream, when the client accepts it.'),
        brotliQuality: z.number().int().min(0).max(11).default(3).describe('Brotli quality on the fly (cheap: 1-4).'),
        gzipLevel: z.number().int().min(1).max(9).default(1).describe('Gzip level on the fly (cheap: 1-3).'),
      })
      .prefault({})
      .describe('On-the-fly compression of answers the cache does not store (bypass, pass): per request, so a cheap level.'),
  })
  .describe(
    'Compression stored once: brotli and gzip encodings made once per fill (off the hit path) and kept beside the identity body; the cache byte bound counts them.',
  );

export const gatewayConfigSchema = z
  .strictObject({
    listen: listenSchema.prefault({}),
    admin: adminSchema.prefault({}),
    tls: tlsSchema.prefault({}),
    acme: acmeSchema.prefault({}),
    log: logSchema.prefault({}),
    limits: serverLimitsSchema.prefault({}),
    shutdown: shutdownSchema.prefault({}),
    reload: reloadSchema.prefault({}),
    trustedProxies: z
      .array(addressOrCidr)
      .default(['127.0.0.1', '::1'])
      .describe(
        'Addresses or CIDRs whose X-Forwarded-For is believed (walked from the right; a hop with a port, `1.2.3.4:4711` or `[2001:db8::1]:443`, is its address; an unreadable hop such as `unknown`, or a header that names no hop (empty, `,`), makes the client `unknown`, never the proxy itself, so it cannot PURGE).',
      ),
    cache: cacheSchema.prefault({}),
    purge: purgeSchema.prefault({}),
    compression: compressionSchema.prefault({}),
    admission: admissionSchema.prefault({}),
    redis: redisSchema.optional(),
    sites: z.array(siteSchema).min(1).describe('The sites served.'),
  })
  .superRefine((cfg, ctx) => {
    const siteNames = new Set<string>();
    cfg.sites.forEach((site, i) => {
      if (siteNames.has(site.name))
        ctx.addIssue({ code: 'custom', path: ['sites', i, 'name'], message: `duplicate site name "${site.name}"` });
      siteNames.add(site.name);
      const routeNames = new Set<string>();
      site.routes.forEach((route, j) => {
        if (routeNames.has(route.name))
          ctx.addIssue({
            code: 'custom',
            path: ['sites', i, 'routes', j, 'name'],
            message: `duplicate route name "${route.name}"`,
          });
        routeNames.add(route.name);
        if (route.priority && !cfg.admission.priorities.some((p) => p.name === route.priority) && route.priority !== 'default')
          ctx.addIssue({
            code: 'custom',
            path: ['sites', i, 'routes', j, 'priority'],
            message: `unknown priority class "${route.priority}" (define it under admission.priorities)`,
          });
        const c = route.cache;
        if (c.ttlCeilingSeconds !== undefined && c.ttlCeilingSeconds < c.ttlFloorSeconds)
          ctx.addIssue({
            code: 'custom',
            path: ['sites', i, 'routes', j, 'cache', 'ttlCeilingSeconds'],
            message: 'must not be below ttlFloorSeconds',
          });
      });
      const memberNames = new Set<string>();
      site.origins.forEach((o, k) => {
        const n = o.name ?? hostOfUrl(o.url);
        if (n === undefined) return; // the url's own check reports it (`127.0.0.1:3000` threw here)
        if (memberNames.has(n))
          ctx.addIssue({ code: 'custom', path: ['sites', i, 'origins', k], message: `duplicate origin "${n}"` });
        memberNames.add(n);
      });
      if (site.origins.every((o) => o.backup))
        ctx.addIssue({ code: 'custom', path: ['sites', i, 'origins'], message: 'needs at least one non-backup origin' });
      checkSiteTls(site, cfg.tls.port, i, ctx);
    });
    if (cfg.tls.hsts.preload && (cfg.tls.hsts.maxAgeSeconds < 31_536_000 || !cfg.tls.hsts.includeSubDomains))
      ctx.addIssue({
        code: 'custom',
        path: ['tls', 'hsts', 'preload'],
        message: 'preload needs maxAgeSeconds of at least 31536000 and includeSubDomains (hstspreload.org)',
      });
    if (cfg.acme.backoff.initialMs > cfg.acme.backoff.maxMs)
      ctx.addIssue({ code: 'custom', path: ['acme', 'backoff', 'initialMs'], message: 'must not exceed backoff.maxMs' });
    if (cfg.admission.limit.min > cfg.admission.limit.max)
      ctx.addIssue({ code: 'custom', path: ['admission', 'limit', 'min'], message: 'must not exceed limit.max' });
    if (cfg.admission.retryAfterMinSeconds > cfg.admission.retryAfterMaxSeconds)
      ctx.addIssue({
        code: 'custom',
        path: ['admission', 'retryAfterMinSeconds'],
        message: 'must not exceed retryAfterMaxSeconds',
      });
  });

/** `sites[i].tls`: files or ACME, never both; ACME needs the HTTPS listener, names it can issue for and a storage-safe site name. */
function checkSiteTls(
  site: { name: string; hosts: readonly string[]; tls?: { certFile?: string | undefined; keyFile?: string | undefined; acme?: boolean | undefined } | undefined },
  httpsPort: number | undefined,
  i: number,
  ctx: { addIssue(issue: { code: 'custom'; path: Array<string | number>; message: string }): void },
): void {
  const tls = site.tls;
  if (!tls) return;
  const at = (...rest: Array<string | number>) => ['sites', i, ...rest];
  if (tls.acme === true) {
    if (tls.certFile !== undefined || tls.keyFile !== undefined)
      ctx.addIssue({ code: 'custom', path: at('tls', 'acme'), message: 'acme: true and certFile/keyFile are mutually exclusive: keep one way of getting this site\'s certificate' });
    if (httpsPort === undefined)
      ctx.addIssue({ code: 'custom', path: at('tls', 'acme'), message: 'needs the HTTPS listener: set tls.port (e.g. 443)' });
    if (!isStorageSiteName(site.name))
      ctx.addIssue({ code: 'custom', path: at('name'), message: 'an ACME site\'s name names its storage directory: start it with a letter or digit, no ".."' });
    const hosts = acmeHostnames(site.hosts);
    for (const bad of hosts.invalid) ctx.addIssue({ code: 'custom', path: at('hosts', bad.index), message: `${JSON.stringify(bad.host)} ${bad.reason} (tls.acme)` });
    if (hosts.invalid.length === 0 && hosts.names.length === 0)
      ctx.addIssue({
        code: 'custom',
        path: at('hosts'),
        message: 'tls.acme needs at least one concrete host name: "*", "*.wildcard" names and IP addresses cannot be validated over HTTP-01',
      });
    return;
  }
  if (tls.certFile === undefined && tls.keyFile === undefined) {
    ctx.addIssue({ code: 'custom', path: at('tls'), message: 'needs certFile and keyFile, or acme: true' });
    return;
  }
  if (tls.certFile === undefined) ctx.addIssue({ code: 'custom', path: at('tls', 'certFile'), message: 'missing required key "certFile" (keyFile needs its certificate)' });
  if (tls.keyFile === undefined) ctx.addIssue({ code: 'custom', path: at('tls', 'keyFile'), message: 'missing required key "keyFile" (certFile needs its private key)' });
}

export type GatewayConfig = z.output<typeof gatewayConfigSchema>;
export type GatewayConfigInput = z.input<typeof gatewayConfigSchema>;
export type SiteConfig = GatewayConfig['sites'][number];
export type RouteConfig = SiteConfig['routes'][number];
export type RouteCacheConfig = RouteConfig['cache'];
export type CacheKeyConfig = RouteCacheConfig['key'];
export type OriginConfig = SiteConfig['origins'][number];
export type AdmissionConfig = GatewayConfig['admission'];
export type LimitConfig = AdmissionConfig['limit'];
export type QueueConfig = AdmissionConfig['queue'];
export type CircuitConfig = SiteConfig['circuit'];
export type HealthCheckConfig = SiteConfig['healthCheck'];
export type RateLimitConfig = NonNullable<SiteConfig['rateLimit']>;
export type PressureConfig = AdmissionConfig['pressure'];
export type TlsConfig = GatewayConfig['tls'];
export type SiteTlsConfig = NonNullable<SiteConfig['tls']>;
export type AcmeConfig = GatewayConfig['acme'];

/** A site's certificate and key files, for the HTTPS listener. */
export interface SiteCertificateFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

/** The site's certificate files, when its certificate comes from files (not ACME, not none). */
export function certificateFilesOf(site: SiteConfig): SiteCertificateFiles | undefined {
  const tls = site.tls;
  if (!tls || tls.acme === true || tls.certFile === undefined || tls.keyFile === undefined) return undefined;
  return { certFile: tls.certFile, keyFile: tls.keyFile };
}
export type RedisConfig = NonNullable<GatewayConfig['redis']>;
export type CompressionConfig = GatewayConfig['compression'];

/** Keys that only take effect at startup; everything else applies on reload. */
export const RESTART_KEYS = ['listen', 'admin.host', 'admin.port', 'tls.host', 'tls.port', 'tls.http2', 'limits.maxHeaderBytes', 'cache.maxBytes', 'redis', 'reload'] as const;
