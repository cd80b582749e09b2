/**
 * When to renew a certificate and how long to wait after a failed attempt. Pure functions of
 * times in epoch milliseconds, so the manager's timing is decided by its injected clock.
 */

export const DAY_MS = 86_400_000;

/** Renew this long before notAfter by default (the Let's Encrypt convention for 90-day certificates). */
export const DEFAULT_RENEW_BEFORE_MS = 30 * DAY_MS;

/**
 * The moment to start renewing: `renewBeforeMs` before notAfter, but never earlier than two thirds
 * into the lifetime, so a short certificate (6 days, 1 day) is not renewed the moment it arrives.
 */
export function renewalTime(notBefore: number, notAfter: number, renewBeforeMs = DEFAULT_RENEW_BEFORE_MS): number {
  const lifetime = Math.max(0, notAfter - notBefore);
  return notAfter - Math.min(renewBeforeMs, lifetime / 3);
}

export interface BackoffPolicy {
  /** The delay after the first failure. */
  initialMs: number;
  /** No delay is longer than this (the retries go on at this pace). */
  maxMs: number;
  /** Each delay is drawn from [d * (1 - jitter), d]: 0 = none, 0.5 = up to half off. */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 60_000, maxMs: 6 * 3_600_000, jitter: 0.5 };

/**
 * The delay before attempt `failures + 1`, after `failures` (>= 1) consecutive failures:
 * initialMs * 2^(failures-1), capped at maxMs, less a random share of up to `jitter` so many
 * instances that failed together do not retry together. `random` returns [0, 1).
 */
export function backoffDelay(failures: number, policy: BackoffPolicy = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const n = Math.max(1, Math.floor(failures));
  // 2^(n-1) overflows to Infinity for large n; min() keeps it at the cap.
  const base = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(n - 1, 1023));
  const jitter = Math.min(1, Math.max(0, policy.jitter));
  return Math.max(0, Math.round(base * (1 - jitter * random())));
}
