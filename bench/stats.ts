/**
 * Summaries of timing samples: median and p99 (nearest rank), with the
 * count, mean and extremes, rounded for the report.
 *
 * @module
 */

/** A summary of samples in one unit. */
export interface Summary {
  /** Number of samples. */
  n: number;
  /** The middle sample (the mean of the two middle ones for an even count). */
  median: number;
  /** The 99th percentile by nearest rank (the maximum below 100 samples). */
  p99: number;
  /** Arithmetic mean. */
  mean: number;
  /** Smallest and largest sample. */
  min: number;
  max: number;
}

/**
 * Summarises samples.
 *
 * @param samples The samples (not modified).
 * @param digits Decimal places to keep (default 3).
 * @returns The summary.
 * @throws {RangeError} When there are no samples.
 *
 * @example
 * ```ts
 * import { summarize } from "./stats.ts";
 * console.log(summarize([3, 1, 2]).median); // 2
 * ```
 */
export function summarize(samples: readonly number[], digits = 3): Summary {
  if (samples.length === 0) throw new RangeError("Cannot summarize: no samples");
  const sorted = [...samples].sort((a, b) => a - b);
  const n = sorted.length;
  const mid = Math.floor(n / 2);
  const median = n % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  const p99 = sorted[Math.min(n - 1, Math.ceil(0.99 * n) - 1)];
  const mean = sorted.reduce((a, b) => a + b, 0) / n;
  const r = (v: number) => round(v, digits);
  return { n, median: r(median), p99: r(p99), mean: r(mean), min: r(sorted[0]), max: r(sorted[n - 1]) };
}

/**
 * Rounds to a number of decimal places.
 *
 * @param value The number.
 * @param digits Decimal places.
 * @returns The rounded number.
 */
export function round(value: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/**
 * A ratio of two figures, rounded to two decimals.
 *
 * @param value The figure.
 * @param baseline What it is compared with.
 * @returns `value / baseline`, or NaN when the baseline is zero.
 */
export function ratio(value: number, baseline: number): number {
  return baseline === 0 ? NaN : round(value / baseline, 2);
}
