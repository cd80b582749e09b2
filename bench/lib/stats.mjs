/**
 * Small statistics helpers shared by the benchmarks: percentiles over latency samples,
 * medians, and number formatting for the Markdown tables.
 *
 * Owns arithmetic only; it does not measure anything or know about HTTP.
 */

/**
 * The p-th percentile (0 ≤ p ≤ 100) of an ascending-sorted array, by the nearest-rank method:
 * the smallest sample such that at least p % of the samples are ≤ it. NaN when empty.
 * @param {ArrayLike<number>} sorted ascending
 * @param {number} p percent
 * @returns {number}
 */
export function percentile(sorted, p) {
  const n = sorted.length;
  if (n === 0) return NaN;
  const rank = Math.ceil((p / 100) * n); // nearest rank, 1-based
  return sorted[Math.min(n - 1, Math.max(0, rank - 1))];
}

/**
 * Summary of latency samples in ms: count, p50, p99, p99.9, max, mean.
 * @param {ArrayLike<number>} samples unsorted; not modified
 */
export function summarize(samples) {
  const sorted = Float64Array.from(samples).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    p999: percentile(sorted, 99.9),
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
    mean: sorted.length ? sum / sorted.length : NaN,
  };
}

/** Median of numbers (NaN when empty). @param {number[]} xs */
export function median(xs) {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Milliseconds for a table: "—" for NaN, 2 significant decimals under 10 ms. @param {number} ms */
export function fmtMs(ms) {
  if (!Number.isFinite(ms)) return '—';
  if (ms < 10) return ms.toFixed(2);
  if (ms < 1000) return ms.toFixed(1);
  return ms.toFixed(0);
}

/** A ratio 0..1 as a percentage with one decimal ("—" for NaN). @param {number} r */
export function fmtPct(r) {
  if (!Number.isFinite(r)) return '—';
  if (r === 1) return '100 %';
  return `${(r * 100).toFixed(r > 0.999 ? 2 : 1)} %`;
}

/** Integer with thousands separators. @param {number} n */
export function fmtInt(n) {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—';
}
