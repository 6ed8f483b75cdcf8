/**
 * The relay's pushback: a receiver whose send buffer at the relay grows past
 * {@linkcode FLOW_HIGH_BYTES} is "congested", and its senders are told to
 * pause (`flow {paused: true}`) until it is down to
 * {@linkcode FLOW_LOW_BYTES}. The hub decides who the senders are; this
 * module only watches buffers and says when to pause and resume.
 *
 * @module
 */
import { FLOW_HIGH_BYTES, FLOW_LOW_BYTES } from "../shared/protocol.ts";

/** How often paused senders' receivers are checked for having drained. */
export const FLOW_POLL_MS = 10;

/** What the watcher needs of a receiver: its socket's send buffer. */
export interface FlowReceiver {
  /** The receiver's socket. */
  socket: { readonly bufferedAmount: number; readonly readyState: number };
}

/** Options for {@linkcode FlowWatch}. */
export interface FlowWatchOptions<R extends FlowReceiver> {
  /** Tell `receiver`'s senders to pause. */
  pause: (receiver: R) => void;
  /** Tell `receiver`'s senders to go on (the receiver drained, or left). */
  resume: (receiver: R) => void;
  /** Pause above this many buffered bytes (default {@linkcode FLOW_HIGH_BYTES}). */
  highBytes?: number;
  /** Resume at or below this (default {@linkcode FLOW_LOW_BYTES}). */
  lowBytes?: number;
}

/**
 * Watches congested receivers: {@linkcode check} after each send, a poll while
 * any receiver is congested.
 *
 * @example
 * ```ts
 * import { FlowWatch } from "./flow_control.ts";
 * const watch = new FlowWatch({ pause: () => {}, resume: () => {} });
 * watch.check({ socket: { bufferedAmount: 0, readyState: 1 } });
 * console.log(watch.size); // 0
 * ```
 */
export class FlowWatch<R extends FlowReceiver> {
  #congested = new Set<R>();
  #timer?: ReturnType<typeof setInterval>;
  #opts: FlowWatchOptions<R>;
  #high: number;
  #low: number;

  /** @param options Pause and resume callbacks, thresholds. */
  constructor(options: FlowWatchOptions<R>) {
    this.#opts = options;
    this.#high = options.highBytes ?? FLOW_HIGH_BYTES;
    this.#low = options.lowBytes ?? FLOW_LOW_BYTES;
  }

  /** How many receivers are congested now. */
  get size(): number {
    return this.#congested.size;
  }

  /** Whether `receiver`'s senders are paused. */
  isCongested(receiver: R): boolean {
    return this.#congested.has(receiver);
  }

  /** After a send to `receiver`: pause its senders if its buffer passed the high mark. */
  check(receiver: R): void {
    if (this.#congested.has(receiver) || receiver.socket.bufferedAmount <= this.#high) return;
    this.#congested.add(receiver);
    this.#opts.pause(receiver);
    this.#timer ??= setInterval(() => this.poll(), FLOW_POLL_MS);
  }

  /** Resumes the senders of every congested receiver that drained (or closed). */
  poll(): void {
    for (const receiver of this.#congested) {
      const open = receiver.socket.readyState === WebSocket.OPEN;
      if (open && receiver.socket.bufferedAmount > this.#low) continue;
      this.release(receiver);
    }
  }

  /** `receiver` left (or drained): resume its senders now. */
  release(receiver: R): void {
    if (!this.#congested.delete(receiver)) return;
    this.#opts.resume(receiver);
    if (this.#congested.size === 0) this.#stopTimer();
  }

  /** Forgets `receiver` without resuming anyone (its senders are gone too). */
  forget(receiver: R): void {
    this.#congested.delete(receiver);
    if (this.#congested.size === 0) this.#stopTimer();
  }

  /** Stops watching everything. */
  clear(): void {
    this.#congested.clear();
    this.#stopTimer();
  }

  #stopTimer(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
