/**
 * Retry-After for shed answers (503 and 429): how long until the origin queue, at the rate it
 * is measured to drain, would have room for this client, plus jitter so refused clients do not
 * all come back in the same second.
 *
 * Owns the arithmetic only; the Limiter measures the drain rate and respond.ts writes the header.
 * Retry-After is whole seconds (delay-seconds, RFC 9110 §10.2.3:
 * https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3).
 */

export interface RetryAfterInput {
  /** Requests waiting for an origin permit now. */
  queueLength: number;
  /** Measured permit completions per second; 0 or less = not measured yet. */
  drainRatePerSecond: number;
  minSeconds: number;
  maxSeconds: number;
  /** Uniform in [0, 1); injectable for tests. Default Math.random. */
  random?: () => number;
  /** Base delay when no drain rate is measured (nothing completed lately), seconds. Default 5. */
  fallbackSeconds?: number;
}

/**
 *   base   = ceil(queueLength / drainRatePerSecond)         seconds to drain the queue ahead
 *            (fallbackSeconds when no rate is measured but requests are waiting: the origin
 *             finished nothing lately, so the queue will not move soon), at least minSeconds
 *   jitter = floor(random * (floor(base / 2) + 2))          0 .. base/2 + 1 whole seconds
 *   result = clamp(base + jitter, minSeconds, maxSeconds)
 * The spread is at least {+0, +1} s so even a 1 s answer splits the returning crowd in two.
 */
export function computeRetryAfterSeconds(input: RetryAfterInput): number {
  const { queueLength, drainRatePerSecond, minSeconds, maxSeconds } = input;
  const random = input.random ?? Math.random;
  let base: number;
  if (drainRatePerSecond > 0 && Number.isFinite(drainRatePerSecond)) base = Math.ceil(queueLength / drainRatePerSecond);
  else base = queueLength > 0 ? (input.fallbackSeconds ?? 5) : minSeconds;
  if (!(base >= minSeconds)) base = minSeconds; // also NaN; jitter then spreads from the floor
  const jitter = Math.floor(random() * (Math.floor(base / 2) + 2));
  const seconds = base + jitter;
  return seconds < minSeconds ? minSeconds : seconds > maxSeconds ? maxSeconds : seconds;
}

/**
 * Retry-After for one site: its origin queue and measured drain rate (Upstream.drainFacts)
 * within the configured bounds (`admission.retryAfterMinSeconds` / `retryAfterMaxSeconds`).
 */
export function retryAfterFromDrain(
  facts: { queueLength: number; drainRatePerSecond: number },
  bounds: { retryAfterMinSeconds: number; retryAfterMaxSeconds: number },
  random?: () => number,
): number {
  return computeRetryAfterSeconds({
    queueLength: facts.queueLength,
    drainRatePerSecond: facts.drainRatePerSecond,
    minSeconds: bounds.retryAfterMinSeconds,
    maxSeconds: bounds.retryAfterMaxSeconds,
    random,
  });
}
