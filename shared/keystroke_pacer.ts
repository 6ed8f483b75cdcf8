/**
 * Keystroke timing obfuscation for one terminal, after OpenSSH's
 * ObscureKeystrokeTiming (9.5 and later). The relay sees when every frame
 * passes and how big it is; in a terminal that would be the rhythm of typing,
 * passwords included. While the user types, the pacer sends the terminal's
 * input on a fixed grid of ticks, one padded frame per tick whether a key was
 * typed or not (chaff), so within a burst of typing neither timing nor size
 * tells keystrokes from chaff. docs/PROTOCOL.md ("Keystroke timing") states the
 * rules for the wire; these are the pacer's:
 *
 * 1. **Off** (the user turned it off, the bridge does not take `term.keys`, or
 *    the stream is not live): input goes out at once, unpadded (`sendBulk`).
 * 2. **A burst starts** with a keystroke while none runs: it goes out at once in
 *    a padded frame (nothing could hide it: the burst's start is visible
 *    anyway), and ticks follow every `intervalMs` from that moment.
 * 3. **During a burst** a keystroke waits for the next tick. At each tick one
 *    padded frame leaves, carrying everything that waited, or nothing (chaff).
 * 4. **Bulk**: input that would not fit in the next tick's frame together with
 *    what already waits (a paste, a program typing faster than anyone can) is
 *    not keystroke rhythm: it goes out at once, unpadded, after what waited (in
 *    one frame, in order). It neither starts a burst nor makes it last longer;
 *    a burst's ticks go on around it.
 * 5. **A burst ends** at the first tick with nothing waiting that comes
 *    `chaffMinMs` plus a random time below `chaffRandomMs` after the last
 *    keystroke (drawn afresh at each keystroke): the end of the chaff does not
 *    say when the last key was typed.
 * 6. **Late ticks** (a busy event loop) skip the ticks they missed: the grid
 *    keeps its phase and there is no catch-up run of chaff.
 *
 * The costs: a keystroke during a burst waits up to one interval (half of it
 * on average), and a burst sends one frame per interval for 1 to 3 s after
 * the last keystroke.
 *
 * @module
 */
import type { Clock, Timers } from "./clock.ts";
import { concatBytes } from "./frame_codec.ts";
import {
  KEYSTROKE_CHAFF_MIN_MS,
  KEYSTROKE_CHAFF_RANDOM_MS,
  KEYSTROKE_INTERVAL_MS,
  TERMINAL_KEYS_BODY_BYTES,
} from "./protocol.ts";

/** Options for {@linkcode KeystrokePacer}. */
export interface KeystrokePacerOptions {
  /** Time and timers: the ticks are set on it (tests pass a `ManualClock`). */
  clock: Clock & Timers;
  /** Whether to pace now (rule 1); asked at every input and every tick. */
  pacing: () => boolean;
  /** Sends one padded frame carrying `bytes` (none: chaff); resolves when the stream has room. */
  sendKeys: (bytes: Uint8Array) => Promise<void>;
  /** Sends `bytes` at once, unpadded; resolves when the stream has room. */
  sendBulk: (bytes: Uint8Array) => Promise<void>;
  /** Time between ticks (default {@linkcode KEYSTROKE_INTERVAL_MS}). */
  intervalMs?: number;
  /** Least chaff time after a keystroke (default {@linkcode KEYSTROKE_CHAFF_MIN_MS}). */
  chaffMinMs?: number;
  /** Random chaff time on top, below this (default {@linkcode KEYSTROKE_CHAFF_RANDOM_MS}). */
  chaffRandomMs?: number;
  /** Most bytes one padded frame carries (default `TERMINAL_KEYS_BODY_BYTES` less its 2-byte length). */
  capacity?: number;
  /** A uniform random number in [0, 1) (default from `crypto.getRandomValues`). */
  random?: () => number;
}

/** Frames a pacer sent, by kind. */
export interface KeystrokeStats {
  /** Padded frames carrying input. */
  keys: number;
  /** Padded frames carrying nothing. */
  chaff: number;
  /** Unpadded sends (off, or bulk). */
  bulk: number;
}

/**
 * Paces one terminal's input.
 *
 * @example
 * ```ts
 * import { ManualClock } from "./clock.ts";
 * import { KeystrokePacer } from "./keystroke_pacer.ts";
 * const clock = new ManualClock(0);
 * const sent: string[] = [];
 * const pacer = new KeystrokePacer({
 *   clock,
 *   pacing: () => true,
 *   sendKeys: (b) => (sent.push(`${clock.now()} keys ${b.byteLength}`), Promise.resolve()),
 *   sendBulk: (b) => (sent.push(`${clock.now()} bulk ${b.byteLength}`), Promise.resolve()),
 *   random: () => 0,
 * });
 * pacer.input(new TextEncoder().encode("l")); // at once: it starts the burst
 * clock.advance(5);
 * pacer.input(new TextEncoder().encode("s")); // waits for the tick at 20
 * clock.advance(60);
 * console.log(sent); // ["0 keys 1", "20 keys 1", "40 keys 0", "60 keys 0"]
 * ```
 */
export class KeystrokePacer {
  #opts: KeystrokePacerOptions;
  #interval: number;
  #capacity: number;
  #random: () => number;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #waiters: ((sent: Promise<void>) => void)[] = [];
  #cancelTick?: () => void;
  /** When the next tick is due. */
  #due = 0;
  /** The burst ends at the first empty tick from this time on. */
  #chaffUntil = 0;
  #stats: KeystrokeStats = { keys: 0, chaff: 0, bulk: 0 };

  /** @param options Clock, when to pace, where frames go, and the timings. */
  constructor(options: KeystrokePacerOptions) {
    this.#opts = options;
    this.#interval = options.intervalMs ?? KEYSTROKE_INTERVAL_MS;
    this.#capacity = options.capacity ?? TERMINAL_KEYS_BODY_BYTES - 2;
    this.#random = options.random ?? _uniform;
    if (!(this.#interval > 0)) throw new RangeError(`Cannot pace keystrokes: interval ${this.#interval} ms`);
  }

  /** Whether a burst runs (ticks are set). */
  get bursting(): boolean {
    return this.#cancelTick !== undefined;
  }

  /** Bytes waiting for the next tick. */
  get waiting(): number {
    return this.#pendingBytes;
  }

  /** Frames sent so far, by kind. */
  get stats(): Readonly<KeystrokeStats> {
    return { ...this.#stats };
  }

  /**
   * Input typed or pasted: sent now, or at the next tick (rules 1-4).
   *
   * @param bytes The input.
   * @returns Resolves once it went out and the stream has room.
   */
  input(bytes: Uint8Array): Promise<void> {
    if (bytes.byteLength === 0) return Promise.resolve();
    if (!this.#opts.pacing()) {
      this.#end();
      return this.#bulk(bytes);
    }
    if (this.#pendingBytes + bytes.byteLength > this.#capacity) return this.#bulk(bytes);
    const now = this.#opts.clock.now();
    this.#chaffUntil = now + (this.#opts.chaffMinMs ?? KEYSTROKE_CHAFF_MIN_MS) +
      Math.floor(this.#random() * (this.#opts.chaffRandomMs ?? KEYSTROKE_CHAFF_RANDOM_MS));
    if (!this.bursting) {
      this.#due = now + this.#interval;
      this.#cancelTick = this.#opts.clock.after(this.#interval, () => this.#tick());
      return this.#keys(bytes);
    }
    this.#pending.push(bytes);
    this.#pendingBytes += bytes.byteLength;
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /**
   * Sends what waits now (padded while pacing, else unpadded) and ends the
   * burst: the terminal is being detached or closed, or pacing was turned off.
   *
   * @returns Resolves once it went out and the stream has room.
   */
  flush(): Promise<void> {
    this.#end();
    if (this.#pendingBytes === 0) return Promise.resolve();
    if (!this.#opts.pacing()) return this.#bulk(new Uint8Array(0));
    return this.#keys(this.#take());
  }

  /** Ends the burst and drops what waits (the terminal is gone); pending inputs resolve. */
  stop(): void {
    this.#end();
    this.#take();
    this.#settle(Promise.resolve());
  }

  #tick(): void {
    this.#cancelTick = undefined;
    if (!this.#opts.pacing()) {
      if (this.#pendingBytes > 0) void this.#bulk(new Uint8Array(0));
      return;
    }
    const now = this.#opts.clock.now();
    if (this.#pendingBytes > 0) void this.#keys(this.#take());
    else if (now < this.#chaffUntil) void this.#keys(new Uint8Array(0));
    else return; // The burst is over.
    // The next tick on the grid; a late one skips those it missed.
    this.#due += this.#interval;
    if (this.#due <= now) this.#due += Math.floor((now - this.#due) / this.#interval + 1) * this.#interval;
    this.#cancelTick = this.#opts.clock.after(this.#due - now, () => this.#tick());
  }

  /** Sends one padded frame; the waiting inputs resolve with it. */
  #keys(bytes: Uint8Array): Promise<void> {
    if (bytes.byteLength > 0) this.#stats.keys++;
    else this.#stats.chaff++;
    return this.#settle(this.#opts.sendKeys(bytes));
  }

  /** Sends what waits and then `bytes`, unpadded, in one go. */
  #bulk(bytes: Uint8Array): Promise<void> {
    const all = this.#pendingBytes > 0 ? concatBytes([...this.#take(true), bytes]) : bytes;
    this.#stats.bulk++;
    return this.#settle(this.#opts.sendBulk(all));
  }

  #settle(sent: Promise<void>): Promise<void> {
    for (const resolve of this.#waiters.splice(0)) resolve(sent);
    return sent;
  }

  /** Empties the queue: its bytes joined (or as parts); the waiters stay to be settled. */
  #take(): Uint8Array;
  #take(parts: true): Uint8Array[];
  #take(parts = false): Uint8Array | Uint8Array[] {
    const taken = this.#pending;
    this.#pending = [];
    this.#pendingBytes = 0;
    if (parts) return taken;
    return taken.length === 1 ? taken[0] : concatBytes(taken);
  }

  #end(): void {
    this.#cancelTick?.();
    this.#cancelTick = undefined;
  }
}

function _uniform(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0] / 2 ** 32;
}
