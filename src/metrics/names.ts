/**
 * The metric catalogue: every metric name, type, label set and help text, once. The registry
 * (gateway-metrics.ts), the README's metrics table and the Grafana dashboard are checked against
 * it. Labels come only from small fixed sets: config names (site, route, origin), cache state,
 * status class, shed/stale reason, priority class — never raw paths or client addresses.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface MetricSpec {
  name: string;
  type: MetricType;
  help: string;
  labels: readonly string[];
  buckets?: readonly number[];
}

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/**
 * Origin round trips: finer between 0.5 and 15 s, where slow endpoints and slowed origins sit (an
 * origin answering every request in 2.0-2.1 s read p50 1.75 s from the 1-2.5 s bucket:
 * observability trial).
 */
const ORIGIN_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 7.5, 10, 15, 30];

function spec<const N extends string, const T extends MetricType>(
  name: N,
  type: T,
  help: string,
  labels: readonly string[] = [],
  buckets?: readonly number[],
): MetricSpec & { name: N; type: T } {
  return buckets ? { name, type, help, labels, buckets } : { name, type, help, labels };
}

export const METRICS = {
  requests: spec(
    'crowdgate_requests_total',
    'counter',
    'Requests answered, by site, route, cache state and status class.',
    ['site', 'route', 'state', 'status_class'],
  ),
  requestDuration: spec(
    'crowdgate_request_duration_seconds',
    'histogram',
    'Time from request arrival until the response is finished (or cut), by site and cache state.',
    ['site', 'state'],
    LATENCY_BUCKETS,
  ),
  collapsed: spec(
    'crowdgate_collapsed_requests_total',
    'counter',
    'Requests that waited on another request\'s origin fetch instead of fetching themselves.',
    ['site'],
  ),
  staleServed: spec(
    'crowdgate_stale_served_total',
    'counter',
    'Stale responses served, by why (while_revalidate, error, timeout, unreachable, origin_down, shed, backlog, circuit_open, pressure).',
    ['site', 'reason'],
  ),
  notStored: spec(
    'crowdgate_not_stored_total',
    'counter',
    'Origin answers to cache fills that were not stored, by site, route and why (set_cookie, no_store, private, no_freshness, never_usable, vary, authorization, clear_site_data, status, method, must_understand, request_no_store, disabled; too_large: past cache.maxObjectBytes; origin_error: a 5xx or 429 answered in place of a stored copy or with no lifetime; client_address: the answer repeats the client address): a hit ratio near zero names its cause here (a plugin setting a cookie on every page: set_cookie).',
    ['site', 'route', 'reason'],
  ),
  hitForPass: spec(
    'crowdgate_hit_for_pass_total',
    'counter',
    'Hit-for-pass markers set after an uncacheable response (the key stops collapsing briefly).',
    ['site'],
  ),
  fillReflected: spec(
    'crowdgate_fill_reflected_inputs_total',
    'counter',
    'Fills whose answer repeated a request header nothing keys (stored as varying on it, as if the origin had sent Vary).',
    ['site'],
  ),
  cacheEntries: spec('crowdgate_cache_entries', 'gauge', 'Entries (URLs) in the memory cache.'),
  cacheBytes: spec('crowdgate_cache_bytes', 'gauge', 'Bytes held by the memory cache (bodies, their stored encodings and headers).'),
  requestBodyBytes: spec(
    'crowdgate_request_body_bytes',
    'gauge',
    'Bytes of request bodies read ahead of the origin (limits.requestBuffering), by where they are held: memory (against memoryBytes) or file (against maxBytes; a spooled body\'s bytes not yet written count in both).',
    ['where'],
  ),
  cacheMaxBytes: spec('crowdgate_cache_max_bytes', 'gauge', 'Configured memory cache size (cache.maxBytes).'),
  compressionEncodings: spec(
    'crowdgate_compression_encodings_stored_total',
    'counter',
    'Encodings made at fill time and stored beside the identity body, by coding (br, gzip).',
    ['coding'],
  ),
  compressionSavedBytes: spec(
    'crowdgate_compression_saved_bytes_total',
    'counter',
    'Bytes an encoding saves against the identity body, summed over the encodings stored, by coding.',
    ['coding'],
  ),
  compressionSkipped: spec(
    'crowdgate_compression_skipped_total',
    'counter',
    'Stored 200 responses of a compressible type kept identity only, by why (small, no_transform, encoded, no_savings, budget).',
    ['reason'],
  ),
  cacheEvictions: spec('crowdgate_cache_evictions_total', 'counter', 'Entries evicted from the memory cache for space.'),
  storeOperations: spec(
    'crowdgate_store_operations_total',
    'counter',
    'Cache store lookups and writes by tier (memory, redis) and result (hit, miss, set, skip, error).',
    ['tier', 'result'],
  ),
  purges: spec(
    'crowdgate_purges_total',
    'counter',
    'Purge requests by selector kind (key, prefix, tag, all from the admin API; url for the PURGE method, prefix for its regex form) and mode (soft, hard).',
    ['kind', 'mode'],
  ),
  purgedEntries: spec('crowdgate_purged_entries_total', 'counter', 'Entries affected by purges.', ['mode']),
  originRequests: spec(
    'crowdgate_origin_requests_total',
    'counter',
    'Requests sent to origin members, by outcome (ok, status_5xx, timeout, connect_error, reset, reset_reused, bad_response, error, client_gone, client_stalled; client_stalled: the client sent no byte of its body for 1 s, and the permit was given back; reset_reused: a reused keep-alive connection closed before any byte of the answer; not counted against the member, and an idempotent request without a body is sent once more on a new connection).',
    ['site', 'origin', 'kind', 'outcome'],
  ),
  originDuration: spec(
    'crowdgate_origin_duration_seconds',
    'histogram',
    'Time from sending an origin request to its response head.',
    ['site', 'origin'],
    ORIGIN_BUCKETS,
  ),
  originHealthy: spec(
    'crowdgate_origin_healthy',
    'gauge',
    '1 when the member is routable (health checks up, not ejected), else 0.',
    ['site', 'origin'],
  ),
  originHealthChanges: spec(
    'crowdgate_origin_health_changes_total',
    'counter',
    'Changes of a member\'s routability, by cause: ejected (passive failures), ejection_ended (a trial, a probe or its time), probe (the active checks), traffic (a request that succeeded after the probes said down). Counts what the healthy gauge may show for less than a scrape interval.',
    ['site', 'origin', 'cause'],
  ),
  originHealthChecks: spec(
    'crowdgate_origin_health_checks_total',
    'counter',
    'Active health probes by verdict: pass (the expected status), fail, excused (timed out, or answered 5xx, while the member answered live requests: counted as alive; never a refused connection nor another status). Each probe once, whether or not it changed the member\'s state.',
    ['site', 'origin', 'result'],
  ),
  originRetries: spec(
    'crowdgate_origin_retries_total',
    'counter',
    'Origin requests sent once more after an attempt failed: to another member after a refused connection, a timeout or a suspect member\'s 502-504, or on a new connection after a reused one closed. Not a request\'s own origin request after a shared fill made without its cookies.',
    ['site'],
  ),
  originLimit: spec(
    'crowdgate_origin_limit',
    'gauge',
    'Current concurrency limit for the member (learned, capped by the ceiling).',
    ['site', 'origin'],
  ),
  originInflight: spec('crowdgate_origin_inflight', 'gauge', 'Origin requests in flight to the member.', [
    'site',
    'origin',
  ]),
  originSaturated: spec(
    'crowdgate_origin_saturated_seconds_total',
    'counter',
    'Time during which every counted permit of the member was in use and requests waited for one: its rate is the share of time the origin was the bottleneck (the CrowdgateOriginLimiterSaturated alert reads it).',
    ['site', 'origin'],
  ),
  originPeerInflight: spec(
    'crowdgate_origin_peer_inflight',
    'gauge',
    'Origin requests others have in flight to the member (same URL): what the other gateways sharing the Redis tier said, as of their last report (every 0.5 s; dropped after 2 s), and this gateway\'s other sites that name the same URL. Only with `redis:` or such sites.',
    ['site', 'origin'],
  ),
  originLimitProbes: spec(
    'crowdgate_origin_limit_probes_total',
    'counter',
    'No-load probes of the learned limit (the limit held at a quarter for a few round trips to measure the origin\'s round trip without queueing): `source="own"` started here, `"peer"` joined because another gateway sharing the Redis tier started one.',
    ['site', 'origin', 'source'],
  ),
  queueHeldToBounds: spec(
    'crowdgate_queue_held_to_bounds',
    'gauge',
    'Behind a learned limit, 1 while the member\'s queue has outgrown the deadlines of requests clients wait for (one forecast past its deadline or refused at it, or a full queue, within the last 30 s; longer while a crowd goes on): under a standing queue their waits are then held to the CoDel bounds and the rest refused `predicted_wait`; 0 while a standing queue\'s waits end only at their deadline (README Overload control, "only while the queue outgrows its deadlines"). Always 1 behind a fixed or AIMD limit.',
    ['site', 'origin'],
  ),
  originSlowShare: spec(
    'crowdgate_origin_slow_share',
    'gauge',
    'How many slow requests the member may have out while quick requests were held up behind them (README Overload control, "slow requests get a share"); 0 while no share is set.',
    ['site', 'origin'],
  ),
  routeInflight: spec(
    'crowdgate_route_inflight',
    'gauge',
    'A capped route\'s requests at the origin now (`routes[].maxConcurrent`; only routes with a cap, from their first request).',
    ['site', 'route'],
  ),
  routeQueueLength: spec(
    'crowdgate_route_queue_length',
    'gauge',
    'A capped route\'s requests waiting at the gateway for a turn (`routes[].maxConcurrent`): refused `route_busy` at their deadline.',
    ['site', 'route'],
  ),
  queueLength: spec('crowdgate_queue_length', 'gauge', 'Requests waiting for an origin permit (slow requests held for their share included).', ['site', 'origin']),
  queueWait: spec(
    'crowdgate_queue_wait_seconds',
    'histogram',
    'Time requests that had to queue waited for an origin permit, admitted or not (a request given a permit at once is not observed: no queue, no series, and the p99 panel is empty).',
    ['site', 'origin'],
    WAIT_BUCKETS,
  ),
  shed: spec(
    'crowdgate_shed_total',
    'counter',
    'Requests refused by admission with nothing stale to serve, by reason and priority class.',
    ['site', 'reason', 'priority'],
  ),
  rateLimited: spec('crowdgate_rate_limited_total', 'counter', 'Requests refused with 429 by a per-client bucket.', [
    'site',
    'route',
  ]),
  retryAfter: spec(
    'crowdgate_retry_after_seconds',
    'histogram',
    'Retry-After values given on 503 and 429 answers.',
    [],
    [1, 2, 5, 10, 20, 30, 60],
  ),
  circuitState: spec(
    'crowdgate_circuit_state',
    'gauge',
    'Per-member breaker state: 0 closed, 1 half-open, 2 open.',
    ['site', 'origin'],
  ),
  pressureEventLoopDelay: spec(
    'crowdgate_pressure_event_loop_delay_seconds',
    'gauge',
    'p99 event-loop delay over the last sample period.',
  ),
  pressureUtilization: spec(
    'crowdgate_pressure_event_loop_utilization',
    'gauge',
    'Event-loop utilisation (0-1) over the last sample period.',
  ),
  pressureHeap: spec('crowdgate_pressure_heap_used_ratio', 'gauge', 'V8 heap used / heap limit.'),
  pressureOverloaded: spec('crowdgate_pressure_overloaded', 'gauge', '1 while the pressure gate is over any threshold (stored copies answer first).'),
  pressureShedding: spec('crowdgate_pressure_shedding', 'gauge', '1 while the pressure gate also sheds what the cache cannot answer (event-loop delay or heap over its threshold).'),
  websocketTunnels: spec('crowdgate_websocket_tunnels', 'gauge', 'Open WebSocket tunnels.', ['site']),
  configReloads: spec(
    'crowdgate_config_reloads_total',
    'counter',
    'Config reloads by result (success, failure).',
    ['result'],
  ),
  configLastReloadSuccess: spec(
    'crowdgate_config_last_reload_success',
    'gauge',
    '1 when the last reload attempt succeeded (or none failed since start), 0 when it was refused.',
  ),
  configGeneration: spec('crowdgate_config_generation', 'gauge', 'Config generation in force (starts at 1).'),
  configInfo: spec(
    'crowdgate_config_info',
    'gauge',
    '1, labelled with the running config\'s hash (first 12 hex digits of the SHA-256 of the validated config, listener hosts and ports left out, and `acme` while no site uses it): instances that disagree run different configs.',
    ['hash'],
  ),
  configRestartPending: spec(
    'crowdgate_config_restart_pending',
    'gauge',
    '1 while the config file changes keys that only a restart applies (listen, tls.port, redis...), else 0.',
  ),
  redisUp: spec('crowdgate_redis_up', 'gauge', '1 when the Redis tier answers, 0 while it is skipped.'),
  redisFills: spec(
    'crowdgate_redis_fills_total',
    'counter',
    'Cache fills asked across instances, by outcome: locked (this instance fetched), filled (another instance\'s fill answered, or a copy it had just stored), timeout (waited for another instance, then fetched here), redis_down (fetched here, Redis unavailable), lap (held by an instance the request came through, by its CDN-Loop: fetched here, not waited for).',
    ['outcome'],
  ),
  purgesPending: spec(
    'crowdgate_purges_pending',
    'gauge',
    'Purges made here (one per URL, prefix, tag or key) that Redis has not taken yet, its records or the notice to the other instances: retried while Redis answers.',
  ),
  draining: spec('crowdgate_draining', 'gauge', '1 while the gateway is shutting down (shutdown.delayMs, then draining).'),
  clientConnections: spec('crowdgate_client_connections', 'gauge', 'Open client connections on the public listeners (plain and HTTPS).'),
  clientConnectionsRefused: spec(
    'crowdgate_client_connections_refused_total',
    'counter',
    'Client connections closed at once by a cap, by reason (max_connections, per_client), or HTTP/2 connections closed for resetting most of their streams as they opened (rapid_reset).',
    ['reason'],
  ),
  tlsCertificateLoads: spec(
    'crowdgate_tls_certificate_loads_total',
    'counter',
    'Site certificate files read for the HTTPS listener, by site and result (success; failure: the old certificate kept serving).',
    ['site', 'result'],
  ),
  tlsCertificateNotAfter: spec(
    'crowdgate_tls_certificate_not_after_seconds',
    'gauge',
    'When the certificate each site serves on the HTTPS listener expires (Unix seconds), from files or ACME (the temporary one included); alert well before it.',
    ['site'],
  ),
  acmeOrders: spec(
    'crowdgate_acme_orders_total',
    'counter',
    'Certificate orders this instance ran against the ACME CA, by site and result (success: issued and installed; failure: retried after a backoff, the certificate in use kept).',
    ['site', 'result'],
  ),
  acmeTemporary: spec(
    'crowdgate_acme_temporary',
    'gauge',
    '1 while an ACME site is served its temporary self-signed certificate (no CA certificate yet), 0 once the CA\'s is installed.',
    ['site'],
  ),
  acmeChallenges: spec(
    'crowdgate_acme_challenges_total',
    'counter',
    'HTTP-01 challenge requests the plain listener answered for ACME sites, by result (answered: a token of ours; unknown: 404).',
    ['result'],
  ),
} as const;

export type MetricKey = keyof typeof METRICS;

export const METRIC_LIST: readonly MetricSpec[] = Object.values(METRICS);
