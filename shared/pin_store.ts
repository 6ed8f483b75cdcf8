/**
 * Where the IDE pins the identity keys of the bridges its user approved, so
 * that a later connection presenting another key is refused. Browsers keep
 * them in IndexedDB (web/browser_store.ts); {@linkcode MemoryPinStore} keeps
 * them for the life of one client.
 *
 * @module
 */

/** Pinned bridge identity keys (raw Ed25519, base64url) by bridge id. */
export interface PinStore {
  /** The pinned key of `bridgeId`, if any. */
  get(bridgeId: string): Promise<string | undefined>;
  /** Pins `identity` for `bridgeId`. */
  set(bridgeId: string, identity: string): Promise<void>;
  /** Forgets `bridgeId`. */
  delete(bridgeId: string): Promise<void>;
}

/**
 * A {@linkcode PinStore} in memory.
 *
 * @example
 * ```ts
 * import { MemoryPinStore } from "./pin_store.ts";
 * const pins = new MemoryPinStore();
 * await pins.set("b1", "key");
 * console.log(await pins.get("b1")); // key
 * ```
 */
export class MemoryPinStore implements PinStore {
  #pins = new Map<string, string>();
  /** The pinned key of `bridgeId`, if any. */
  get(bridgeId: string): Promise<string | undefined> {
    return Promise.resolve(this.#pins.get(bridgeId));
  }
  /** Pins `identity` for `bridgeId`. */
  set(bridgeId: string, identity: string): Promise<void> {
    this.#pins.set(bridgeId, identity);
    return Promise.resolve();
  }
  /** Forgets `bridgeId`. */
  delete(bridgeId: string): Promise<void> {
    this.#pins.delete(bridgeId);
    return Promise.resolve();
  }
}
