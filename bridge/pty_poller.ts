/**
 * One `poll()` for every terminal of the bridge. Deno runs `nonblocking` FFI
 * calls on a small pool of threads (about 32): a blocking wait per terminal
 * would stall everything past a few dozen terminals. So the poller keeps at
 * most one `poll()` in flight, over all the descriptors that want something,
 * plus the read end of a wake pipe; when the set changes (a terminal opens or
 * closes, a stream wants more output, a write is waiting) a byte on the pipe
 * ends the wait and the next round polls the new set. The reads and writes
 * themselves are non-blocking calls made by the targets on the main thread.
 * With nothing to wait for, no call is in flight and no thread is used.
 *
 * bridge/pty.ts supplies the libc calls; tests could supply fakes.
 *
 * @module
 */

/** Data to read (`POLLIN`; the same on Linux and macOS). */
export const POLLIN = 0x1;
/** Room to write. */
export const POLLOUT = 0x4;
/** An error on the descriptor (always reported). */
export const POLLERR = 0x8;
/** Hung up: for a PTY master, no process holds the terminal any more (always reported). */
export const POLLHUP = 0x10;
/** Not an open descriptor (always reported). */
export const POLLNVAL = 0x20;

/** `sizeof(struct pollfd)`: int fd, short events, short revents. */
const POLLFD_BYTES = 8;

/**
 * Consecutive rounds served by a synchronous `poll(…, 0)` on the main thread
 * before the poller waits on the thread pool again. While output streams in,
 * this skips the thread hop per round; the bound lets other tasks run.
 */
const SYNC_ROUNDS = 8;

/** A descriptor the poller watches. */
export interface PollTarget {
  /** The descriptor. */
  readonly fd: number;
  /** The events wanted now (`POLLIN`, `POLLOUT`); 0 leaves it out of the next round. */
  interest(): number;
  /** Called on the main thread with what `poll()` reported. */
  ready(revents: number): void;
}

/** The system calls the poller needs. */
export interface PollCalls {
  /** `poll()` on a pool thread (`nonblocking` FFI); `timeoutMs` -1 waits for ever. */
  pollAsync(fds: Uint8Array<ArrayBuffer>, count: number, timeoutMs: number): Promise<number>;
  /** `poll()` on the calling thread. */
  pollNow(fds: Uint8Array<ArrayBuffer>, count: number, timeoutMs: number): number;
  /** The read end of the wake pipe (non-blocking). */
  readonly wakeFd: number;
  /** Writes one byte to the wake pipe. */
  wake(): void;
  /** Reads everything waiting on the wake pipe. */
  drainWake(): void;
}

/**
 * Watches many descriptors with one `poll()` at a time.
 *
 * @example
 * ```ts ignore
 * import { FdPoller, POLLIN } from "./pty_poller.ts";
 * const poller = new FdPoller(calls); // calls: PollCalls from bridge/pty.ts
 * poller.add({ fd: 5, interest: () => POLLIN, ready: (revents) => console.log(revents) });
 * ```
 */
export class FdPoller {
  #calls: PollCalls;
  #targets = new Set<PollTarget>();
  #loop: Promise<void> | null = null;
  /** A `poll()` is in flight on a pool thread (or its result not yet handled). */
  #waiting = false;
  /** A wake byte was written and not yet drained. */
  #woken = false;
  /** Reasons to keep a `poll()` in flight even with no descriptor to watch. */
  #holds = 0;

  /** @param calls The system calls (bridge/pty.ts binds them to libc). */
  constructor(calls: PollCalls) {
    this.#calls = calls;
  }

  /** How many descriptors are registered. */
  get size(): number {
    return this.#targets.size;
  }

  /**
   * Registers a target; it is polled from the next round on.
   *
   * @param target The descriptor and its callbacks.
   */
  add(target: PollTarget): void {
    this.#targets.add(target);
    this.changed();
  }

  /**
   * Unregisters a target. It gets no more `ready` calls, even for a round in
   * flight, so its descriptor may be closed right after.
   *
   * @param target A registered target.
   */
  remove(target: PollTarget): void {
    if (this.#targets.delete(target)) this.changed();
  }

  /**
   * Keeps a `poll()` in flight (on the wake pipe alone if need be) until
   * {@linkcode FdPoller.release}: an FFI call in flight is what keeps Deno's
   * event loop alive, and a signal listener does not. The terminals hold the
   * poller while a session leader has not been reaped, so `await exited`
   * works in a script that has nothing else to do. Costs no CPU.
   */
  hold(): void {
    this.#holds++;
    this.changed();
  }

  /** Ends one {@linkcode FdPoller.hold}. */
  release(): void {
    if (this.#holds === 0) throw new RangeError("Cannot release the poller: it is not held");
    this.#holds--;
    this.changed();
  }

  /** Tells the poller that some target's interest may have changed. */
  changed(): void {
    if (this.#waiting) {
      if (!this.#woken) {
        this.#woken = true;
        this.#calls.wake();
      }
    } else if (!this.#loop) {
      this.#loop = this.#run().finally(() => (this.#loop = null));
    }
  }

  /**
   * Resolves once no `poll()` is in flight (nothing is watched or held).
   * Tests await it after closing their terminals, so no FFI call outlives
   * them.
   *
   * @returns A promise that resolves when the poller is idle.
   */
  async idle(): Promise<void> {
    while (this.#loop) await this.#loop;
  }

  async #run(): Promise<void> {
    let syncRounds = 0;
    // Let the caller finish what it is doing (e.g. registering several
    // targets) before the first round.
    await Promise.resolve();
    while (true) {
      const round: PollTarget[] = [];
      const events: number[] = [];
      for (const target of this.#targets) {
        const wanted = target.interest();
        if (wanted === 0) continue;
        round.push(target);
        events.push(wanted);
      }
      if (round.length === 0 && !this.#woken && this.#holds === 0) return;

      const count = round.length + 1;
      const buffer = new Uint8Array(count * POLLFD_BYTES);
      const fds = new Int32Array(buffer.buffer);
      const shorts = new Int16Array(buffer.buffer);
      fds[0] = this.#calls.wakeFd;
      shorts[2] = POLLIN;
      for (let i = 0; i < round.length; i++) {
        fds[(i + 1) * 2] = round[i].fd;
        shorts[(i + 1) * 4 + 2] = events[i];
      }

      let ready = 0;
      if (syncRounds < SYNC_ROUNDS) {
        ready = this.#calls.pollNow(buffer, count, 0);
        syncRounds++;
      }
      if (ready === 0) {
        syncRounds = 0;
        this.#waiting = true;
        try {
          ready = await this.#calls.pollAsync(buffer, count, -1);
        } finally {
          this.#waiting = false;
        }
      }
      if (ready < 0) continue; // EINTR: poll again.

      if (shorts[3] !== 0 || this.#woken) {
        this.#woken = false;
        this.#calls.drainWake();
      }
      for (let i = 0; i < round.length; i++) {
        const revents = shorts[(i + 1) * 4 + 3];
        if (revents === 0 || !this.#targets.has(round[i])) continue;
        try {
          round[i].ready(revents);
        } catch (error) {
          // A target's bug must not stop every other terminal.
          console.error("pty poller: a target failed:", error);
        }
      }
      // Give streams' readers and other tasks a turn between rounds.
      await Promise.resolve();
    }
  }
}
