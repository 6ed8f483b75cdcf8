/**
 * A cap on concurrent WebSocket connections per client address. The relay
 * takes a slot before it upgrades a request on `/ws/ide` or `/ws/bridge` and
 * gives it back when the socket closes, so sockets that never authenticate
 * count as much as live ones. Addresses with no open socket are forgotten:
 * the table holds one entry per address that has a socket open right now.
 *
 * @module
 */
import { MAX_CONNECTIONS_PER_ADDRESS } from "../shared/protocol.ts";

/** Options for {@linkcode ConnectionLimits}. */
export interface ConnectionLimitsOptions {
  /** Most sockets one address may hold open at once (default {@linkcode MAX_CONNECTIONS_PER_ADDRESS}). */
  perAddress?: number;
}

/**
 * Counts open sockets per client address and refuses slots past the cap.
 *
 * @example
 * ```ts
 * import { ConnectionLimits } from "./conn_limits.ts";
 * const limits = new ConnectionLimits({ perAddress: 1 });
 * const release = limits.acquire("192.0.2.7");
 * console.log(release !== undefined, limits.acquire("192.0.2.7")); // true undefined
 * release?.();
 * console.log(limits.count("192.0.2.7")); // 0
 * ```
 */
export class ConnectionLimits {
  /** The cap per address. */
  readonly perAddress: number;
  #open = new Map<string, number>();
  #total = 0;

  /** @param options The cap. */
  constructor(options: ConnectionLimitsOptions = {}) {
    const cap = options.perAddress ?? MAX_CONNECTIONS_PER_ADDRESS;
    if (!Number.isSafeInteger(cap) || cap < 1) {
      throw new RangeError(`Cannot limit connections: perAddress must be a positive integer, got ${cap}`);
    }
    this.perAddress = cap;
  }

  /**
   * Takes a slot for `address`.
   *
   * @param address The client address (what the relay rate-limits by).
   * @returns A function that gives the slot back (calling it again does
   * nothing), or `undefined` when `address` already holds
   * {@linkcode perAddress} slots.
   */
  acquire(address: string): (() => void) | undefined {
    const open = this.#open.get(address) ?? 0;
    if (open >= this.perAddress) return undefined;
    this.#open.set(address, open + 1);
    this.#total++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#total--;
      const left = (this.#open.get(address) ?? 1) - 1;
      if (left > 0) this.#open.set(address, left);
      else this.#open.delete(address);
    };
  }

  /** Open slots of `address`. */
  count(address: string): number {
    return this.#open.get(address) ?? 0;
  }

  /** Open slots of all addresses together. */
  get total(): number {
    return this.#total;
  }

  /** Addresses that hold at least one slot (the size of the table). */
  get addresses(): number {
    return this.#open.size;
  }
}
