/**
 * Exponential backoff, the one copy: the bridge's reconnects, the web page's
 * reconnects and the IDE client's handshakes after abandoned ones all use it.
 *
 * @module
 */

/** Options for {@linkcode backoffDelay}. */
export interface BackoffOptions {
  /** The first delay (attempt 0). */
  baseMs: number;
  /** The largest delay, before jitter. */
  maxMs: number;
  /**
   * `equal`: half the delay fixed, half random ("equal jitter"), so peers that
   * failed together do not retry together. `none`: exactly the delay.
   */
  jitter?: "equal" | "none";
  /** Random numbers in [0, 1) (tests pass a fixed one). */
  random?: () => number;
}

/**
 * The delay before retry number `attempt` (0 for the first retry): `baseMs`
 * doubled per attempt, capped at `maxMs`, then jittered.
 *
 * @param attempt How many attempts failed before this one (0, 1, 2, ...).
 * @param options Base, cap, jitter and random source.
 * @returns The delay in milliseconds.
 *
 * @example
 * ```ts
 * import { backoffDelay } from "./backoff.ts";
 * console.log(backoffDelay(3, { baseMs: 500, maxMs: 30_000, jitter: "none" })); // 4000
 * ```
 */
export function backoffDelay(attempt: number, options: BackoffOptions): number {
  if (!Number.isSafeInteger(attempt) || attempt < 0) throw new RangeError(`Cannot back off: bad attempt ${attempt}`);
  // 2^32 is far past any cap; stopping there keeps the arithmetic exact.
  const ceiling = Math.min(options.maxMs, options.baseMs * 2 ** Math.min(attempt, 32));
  if (options.jitter === "none") return ceiling;
  const random = options.random ?? Math.random;
  return ceiling / 2 + random() * (ceiling / 2);
}
