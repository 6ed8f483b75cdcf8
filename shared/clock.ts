/**
 * Time is injected: code expiry, rate windows, token lifetimes, heartbeats
 * and the IDE client's timeouts read the clock (and set timers) through these
 * interfaces, so tests can move time without sleeping.
 *
 * @module
 */

/** A source of the current time in milliseconds since the epoch. */
export interface Clock {
  /** The current time (ms since the epoch). */
  now(): number;
}

/**
 * Calls back later, on a clock's time: code that waits takes one of these
 * beside its {@linkcode Clock}, so a test fires its timers by moving a
 * {@linkcode ManualClock} instead of sleeping.
 */
export interface Timers {
  /**
   * Calls `fn` once, `ms` milliseconds from now.
   *
   * @param ms The delay.
   * @param fn What to call.
   * @returns A function that cancels the call (it does nothing once `fn` ran).
   */
  after(ms: number, fn: () => void): () => void;
}

/** The real clock and timers (`Date.now()`, `setTimeout`). */
export const systemClock: Clock & Timers = {
  now: () => Date.now(),
  after(ms, fn) {
    const id = setTimeout(fn, ms);
    return () => clearTimeout(id);
  },
};

/**
 * A clock tests move by hand. Its timers fire only from
 * {@linkcode ManualClock.advance}, each at its due time, in order.
 *
 * @example
 * ```ts
 * import { ManualClock } from "./clock.ts";
 * const clock = new ManualClock(1000);
 * clock.after(500, () => console.log(`fired at ${clock.now()}`));
 * clock.advance(5 * 60_000); // fired at 1500
 * console.log(clock.now()); // 301000
 * ```
 */
export class ManualClock implements Clock, Timers {
  #now: number;
  #timers: { due: number; seq: number; fn: () => void }[] = [];
  #seq = 0;

  /** @param start The starting time (ms since the epoch). */
  constructor(start = Date.now()) {
    this.#now = start;
  }

  /** The current manual time. */
  now(): number {
    return this.#now;
  }

  /**
   * Calls `fn` when {@linkcode ManualClock.advance} reaches `ms` from now.
   *
   * @param ms The delay (negative counts as 0).
   * @param fn What to call.
   * @returns A function that cancels the call.
   */
  after(ms: number, fn: () => void): () => void {
    const timer = { due: this.#now + Math.max(0, ms), seq: this.#seq++, fn };
    this.#timers.push(timer);
    return () => {
      this.#timers = this.#timers.filter((t) => t !== timer);
    };
  }

  /** Milliseconds until each pending timer is due, soonest first. */
  get pending(): number[] {
    return this.#timers.map((t) => t.due - this.#now).sort((a, b) => a - b);
  }

  /**
   * Moves time forward by `ms`, firing every timer that falls due on the way
   * (timers set while firing included), each with the clock at its due time.
   *
   * @param ms How far to move (not negative).
   */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`Cannot advance the clock: ${ms} ms`);
    const end = this.#now + ms;
    for (let timer = this.#next(); timer && timer.due <= end; timer = this.#next()) {
      this.#timers = this.#timers.filter((t) => t !== timer);
      this.#now = timer.due;
      timer.fn();
    }
    this.#now = end;
  }

  #next(): { due: number; seq: number; fn: () => void } | undefined {
    let next: { due: number; seq: number; fn: () => void } | undefined;
    for (const t of this.#timers) if (!next || t.due < next.due || (t.due === next.due && t.seq < next.seq)) next = t;
    return next;
  }
}
