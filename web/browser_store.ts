/// <reference lib="dom" />
/**
 * The page's durable secrets, in IndexedDB: the IDE identity key pair (made
 * non-extractable, so script on the page can use it but never read it out)
 * and the pinned bridge identity keys ({@linkcode PinStore}).
 *
 * @module
 */
import { generateIdentity } from "../shared/e2e_crypto.ts";
import type { PinStore } from "../shared/ide_client.ts";

const DB_NAME = "coder1";
const KEYS = "keys";
const PINS = "pins";

function _open(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => {
      request.result.createObjectStore(KEYS);
      request.result.createObjectStore(PINS);
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function _run<T>(store: string, mode: IDBTransactionMode, fn: (s: IDBObjectStore) => IDBRequest): Promise<T> {
  const db = await _open();
  try {
    return await new Promise<T>((resolve, reject) => {
      const tx = db.transaction(store, mode);
      const request = fn(tx.objectStore(store));
      tx.oncomplete = () => resolve(request.result as T);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

/**
 * The IDE identity key pair kept in IndexedDB, created (non-extractable) on
 * first use.
 *
 * @returns The key pair.
 */
export async function loadIdentity(): Promise<CryptoKeyPair> {
  const existing = await _run<CryptoKeyPair | undefined>(KEYS, "readonly", (s) => s.get("identity"));
  if (existing?.privateKey && existing.publicKey) return existing;
  const pair = await generateIdentity(false);
  await _run(KEYS, "readwrite", (s) => s.put(pair, "identity"));
  return pair;
}

/** Pinned bridge keys in IndexedDB. */
export class IndexedDbPinStore implements PinStore {
  /** The pinned key of `bridgeId`, if any. */
  async get(bridgeId: string): Promise<string | undefined> {
    return await _run<string | undefined>(PINS, "readonly", (s) => s.get(bridgeId));
  }
  /** Pins `identity` for `bridgeId`. */
  async set(bridgeId: string, identity: string): Promise<void> {
    await _run(PINS, "readwrite", (s) => s.put(identity, bridgeId));
  }
  /** Forgets `bridgeId`. */
  async delete(bridgeId: string): Promise<void> {
    await _run(PINS, "readwrite", (s) => s.delete(bridgeId));
  }
}
