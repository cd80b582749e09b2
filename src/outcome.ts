/**
 * The vocabulary shared by Cache-Status, the access log and metric labels.
 * See README "Cache states".
 */
export const CACHE_STATES = [
  'hit',
  'miss',
  'expired',
  'revalidated',
  'updating',
  'stale',
  'bypass',
  'pass',
  'shed',
  'error',
] as const;
export type CacheState = (typeof CACHE_STATES)[number];

/** Why admission refused a request. */
export const SHED_REASONS = [
  'pressure', // the gateway process itself is overloaded (event-loop delay, heap)
  'queue_full', // the origin queue is at its bound
  'predicted_wait', // refused at arrival: the queue ahead would not drain before the request's deadline
  'deadline', // waited in the queue past the request's deadline
  'stalled', // waited through a stall of the origin (nothing answered) to the longest wait, 5 s
  'codel', // dropped by CoDel under a standing queue
  'evicted', // pushed out of the queue by a higher-priority arrival
  'slow_share', // a slow endpoint's request waited past its deadline for the slow requests' share of the origin
  'route_busy', // the route's maxConcurrent requests were at the origin until the request's deadline
  'circuit_open', // the origin member's breaker is open
  'rate_limited', // per-client token bucket empty (429)
] as const;
export type ShedReason = (typeof SHED_REASONS)[number];

/** Why a stale entry was served. */
export const STALE_REASONS = [
  'while_revalidate', // inside stale-while-revalidate (state 'updating')
  'error', // origin answered 5xx
  'timeout', // origin too slow
  'unreachable', // connection refused / reset / TLS failure on this request
  'origin_down', // no member usable: probes or ejection marked every member down (not contacted)
  'shed', // admission refused the origin request
  'backlog', // the origin is busy (no member has a free permit): answered at once, the refresh waits its turn
  'circuit_open',
  'pressure',
] as const;
export type StaleReason = (typeof STALE_REASONS)[number];

export interface RequestOutcome {
  state: CacheState;
  collapsed: boolean;
  shedReason?: ShedReason;
  staleReason?: StaleReason;
}
