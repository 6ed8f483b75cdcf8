/**
 * Time is injected: code expiry, rate windows and token lifetimes read the
 * clock through this interface so tests can move time without sleeping.
 *
 * @module
 */

/** A source of the current time in milliseconds since the epoch. */
export interface Clock {
  /** The current time (ms since the epoch). */
  now(): number;
}

/** The real clock. */
export const systemClock: Clock = { now: () => Date.now() };

/**
 * A clock tests move by hand.
 *
 * @example
 * ```ts
 * import { ManualClock } from "./clock.ts";
 * const clock = new ManualClock(1000);
 * clock.advance(5 * 60_000);
 * console.log(clock.now()); // 301000
 * ```
 */
export class ManualClock implements Clock {
  #now: number;
  /** @param start The starting time (ms since the epoch). */
  constructor(start = Date.now()) {
    this.#now = start;
  }
  /** The current manual time. */
  now(): number {
    return this.#now;
  }
  /** Moves time forward by `ms`. */
  advance(ms: number): void {
    this.#now += ms;
  }
}
