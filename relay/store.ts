/**
 * The relay's state behind one interface: live pairing codes, rate windows,
 * token revocations, credential lines, and (for several relay instances)
 * session leases, bridge presence and events between instances.
 * {@linkcode MemoryStore} is the embedded default (one process); the Redis
 * implementation (relay/redis_store.ts) shares the same contract between
 * instances (codes taken with an atomic get-and-delete, rate windows timed by
 * Redis, leases with compare-and-set on their epoch).
 *
 * @module
 */
import { type CredentialRecord, MAX_LISTED_CREDENTIALS, type RevokeReason } from "./credential_ledger.ts";

/** The sweep drops a rate window idle for this long: longer than any window the relay passes to `hit`. */
const RATE_WINDOW_RETENTION_MS = 10 * 60_000;

/** A live pairing code. */
export interface CodeEntry {
  /** The browser session the code is bound to. */
  sessionId: string;
  /** When the code stops working (ms since the epoch). */
  expiresAt: number;
  /** The client address (rate-limit unit) of the browser that asked for it. */
  address?: string;
}

/** Result of counting one event against a rate window. */
export interface RateResult {
  /** Whether the event is within the limit (and was counted). */
  allowed: boolean;
  /** When refused: milliseconds until the oldest counted event leaves the window. */
  retryAfterMs: number;
}

/**
 * Which relay instance is a browser session's home (holds its room: the IDE
 * sockets and the bridge), until when, and under which epoch. The epoch grows
 * by one each time another instance takes the lease over, so a home that was
 * paused past its lease can tell it is stale.
 */
export interface Lease {
  /** The holder's instance id (its advertise URL). */
  instance: string;
  /** Grows by one on every change of holder. */
  epoch: number;
  /** When it lapses unless renewed (ms since the epoch, by the store's clock). */
  expiresAt: number;
}

/** What one instance tells the others (Redis pub/sub; the memory store delivers in process). */
export type RelayEvent =
  /** A credential line was revoked: every instance closes that bridge's connections (4410). */
  { kind: "revoked"; bridgeId: string; reason: RevokeReason };

/** Everything the relay keeps between requests. All methods are atomic. */
export interface RelayStore {
  /** True when the state is shared with other instances (Redis); false for the embedded store. */
  readonly shared: boolean;
  /** Stores a code unless it is live already; returns false on a collision. */
  putCode(code: string, entry: CodeEntry, now: number): Promise<boolean>;
  /** Takes a code out (get-and-delete): a code can be taken once, ever. */
  takeCode(code: string): Promise<CodeEntry | undefined>;
  /** Takes a code out only if it was issued to `address`; otherwise leaves it and returns undefined. */
  takeCodeFrom(code: string, address: string): Promise<CodeEntry | undefined>;
  /** Removes a live code if it still belongs to `sessionId` (a session's new code retires its old one). */
  deleteCode(code: string, sessionId: string): Promise<void>;
  /** The session's current code, if it asked for one. */
  sessionCode(sessionId: string): Promise<string | undefined>;
  /** The session's current code while it is live (not redeemed, retired or expired), with its expiry. */
  liveSessionCode(sessionId: string, now: number): Promise<{ code: string; expiresAt: number } | undefined>;
  /** Records the session's current code. */
  setSessionCode(sessionId: string, code: string, expiresAt: number): Promise<void>;
  /** Counts an event under `key` if fewer than `limit` happened in the last `windowMs`. */
  hit(key: string, limit: number, windowMs: number, now: number): Promise<RateResult>;
  /** Revokes a token id until it would have expired anyway. */
  revoke(jti: string, expiresAt: number): Promise<void>;
  /** Whether a token id is revoked. */
  isRevoked(jti: string): Promise<boolean>;
  /** Drops expired codes, empty rate windows and revocations past their expiry. */
  sweep(now: number): Promise<void>;

  /** The credential line of `bridgeId`, if known. */
  getCredential(bridgeId: string): Promise<CredentialRecord | undefined>;
  /**
   * Stores a credential line. With `expectJti`, only if the stored line still
   * holds that token id (or there is none): false means another login changed
   * it first (two instances rotating one token at once).
   */
  putCredential(record: CredentialRecord, expectJti?: string): Promise<boolean>;
  /** The lines of browser session `sid`, newest first (at most `MAX_LISTED_CREDENTIALS`). */
  listCredentials(sid: string): Promise<CredentialRecord[]>;

  /**
   * Claims the lease of session `sid` for `instance`: granted (a new epoch)
   * when nobody holds it or it lapsed, renewed when `instance` holds it
   * already. Returns the lease as it stands: the caller's, or the live holder's.
   */
  claimLease(sid: string, instance: string, ttlMs: number, now: number): Promise<Lease>;
  /** Extends `instance`'s lease at `epoch`; false when it is no longer held by it at that epoch (taken over). */
  renewLease(sid: string, instance: string, epoch: number, ttlMs: number, now: number): Promise<boolean>;
  /**
   * Takes the lease over from a holder found dead (its instance refused the
   * connection): only while the lease is still at `staleEpoch`. Returns the
   * new lease (epoch + 1), or undefined when it changed meanwhile.
   */
  takeOverLease(
    sid: string,
    instance: string,
    staleEpoch: number,
    ttlMs: number,
    now: number,
  ): Promise<Lease | undefined>;
  /** Gives the lease up (the room emptied) if `instance` still holds it at `epoch`. */
  releaseLease(sid: string, instance: string, epoch: number): Promise<void>;
  /** The lease of `sid` while it is live. */
  lease(sid: string, now: number): Promise<Lease | undefined>;

  /** Records that credential line `bridgeId` has an open connection on `instance` for `ttlMs` (renewed while open). */
  setPresence(bridgeId: string, instance: string, ttlMs: number, now: number): Promise<void>;
  /** The connection on `instance` closed. */
  clearPresence(bridgeId: string, instance: string): Promise<void>;
  /** Whether line `bridgeId` has an open connection on any instance. */
  isPresent(bridgeId: string, now: number): Promise<boolean>;

  /** Tells every instance (this one included) about `event`. */
  publish(event: RelayEvent): Promise<void>;
  /** Calls `listener` for every published event; returns the unsubscribe function. */
  subscribe(listener: (event: RelayEvent) => void): () => void;
  /** Whether the store answers (`/readyz`). Never throws. */
  ping(): Promise<boolean>;
  /** Lets go of connections and timers. */
  close(): Promise<void>;
}

/** What {@linkcode MemoryStore} needs to keep credential lines and revocations on disk (relay/credential_ledger.ts). */
export interface CredentialLog extends RevocationLog {
  /** The line of `bridgeId`. */
  get(bridgeId: string): CredentialRecord | undefined;
  /** Inserts or replaces a line. */
  put(record: CredentialRecord): void;
  /** The lines of `sid`, newest first. */
  list(sid: string): CredentialRecord[];
}

/** Where {@linkcode MemoryStore} keeps revocations durably (relay/credential_ledger.ts): one row per revoke. */
export interface RevocationLog {
  /** Revokes a token id until `expiresAt`. */
  revokeToken(jti: string, expiresAt: number): void;
  /** Whether a token id is revoked. */
  isTokenRevoked(jti: string): boolean;
  /** Drops revocations past their expiry (in bounded batches). */
  sweep(now: number): number;
}

/** Options for {@linkcode MemoryStore}. */
export interface MemoryStoreOptions {
  /** Keeps revocations across restarts; without it they live in memory only. */
  revocations?: RevocationLog;
  /** Keeps credential lines and revocations across restarts (takes precedence over `revocations`). */
  ledger?: CredentialLog;
}

/**
 * The embedded store: everything in memory except revocations, which go to a
 * {@linkcode RevocationLog} when one is given, so that a logged-out token
 * stays dead after a restart. One revoke writes one row, whatever the number
 * of revocations already kept.
 */
export class MemoryStore implements RelayStore {
  readonly shared = false;
  #codes = new Map<string, CodeEntry>();
  #credentials = new Map<string, CredentialRecord>();
  #leases = new Map<string, Lease>();
  #presence = new Map<string, { instance: string; until: number }>();
  #listeners = new Set<(event: RelayEvent) => void>();
  #ledger?: CredentialLog;
  #sessionCodes = new Map<string, { code: string; expiresAt: number }>();
  #windows = new Map<string, number[]>();
  #revoked = new Map<string, number>();
  #log?: RevocationLog;

  /** @param options Where revocations persist. */
  constructor(options: MemoryStoreOptions = {}) {
    this.#ledger = options.ledger;
    this.#log = options.ledger ?? options.revocations;
  }

  putCode(code: string, entry: CodeEntry, now: number): Promise<boolean> {
    const existing = this.#codes.get(code);
    if (existing && existing.expiresAt > now) return Promise.resolve(false);
    this.#codes.set(code, entry);
    return Promise.resolve(true);
  }

  takeCode(code: string): Promise<CodeEntry | undefined> {
    const entry = this.#codes.get(code);
    this.#codes.delete(code);
    return Promise.resolve(entry);
  }

  takeCodeFrom(code: string, address: string): Promise<CodeEntry | undefined> {
    const entry = this.#codes.get(code);
    if (entry?.address !== address) return Promise.resolve(undefined);
    this.#codes.delete(code);
    return Promise.resolve(entry);
  }

  deleteCode(code: string, sessionId: string): Promise<void> {
    // The digits may have been redeemed or expired and drawn again for another session.
    if (this.#codes.get(code)?.sessionId === sessionId) this.#codes.delete(code);
    return Promise.resolve();
  }

  sessionCode(sessionId: string): Promise<string | undefined> {
    return Promise.resolve(this.#sessionCodes.get(sessionId)?.code);
  }

  liveSessionCode(sessionId: string, now: number): Promise<{ code: string; expiresAt: number } | undefined> {
    const current = this.#sessionCodes.get(sessionId);
    const entry = current && this.#codes.get(current.code);
    const live = entry?.sessionId === sessionId && entry.expiresAt > now;
    return Promise.resolve(live ? { code: current!.code, expiresAt: entry.expiresAt } : undefined);
  }

  setSessionCode(sessionId: string, code: string, expiresAt: number): Promise<void> {
    this.#sessionCodes.set(sessionId, { code, expiresAt });
    return Promise.resolve();
  }

  hit(key: string, limit: number, windowMs: number, now: number): Promise<RateResult> {
    const events = (this.#windows.get(key) ?? []).filter((t) => t > now - windowMs);
    if (events.length >= limit) {
      this.#windows.set(key, events);
      return Promise.resolve({ allowed: false, retryAfterMs: Math.max(1, events[0] + windowMs - now) });
    }
    events.push(now);
    this.#windows.set(key, events);
    return Promise.resolve({ allowed: true, retryAfterMs: 0 });
  }

  revoke(jti: string, expiresAt: number): Promise<void> {
    if (this.#log) this.#log.revokeToken(jti, expiresAt);
    else this.#revoked.set(jti, expiresAt);
    return Promise.resolve();
  }

  isRevoked(jti: string): Promise<boolean> {
    return Promise.resolve(this.#log ? this.#log.isTokenRevoked(jti) : this.#revoked.has(jti));
  }

  sweep(now: number): Promise<void> {
    for (const [code, entry] of this.#codes) if (entry.expiresAt <= now) this.#codes.delete(code);
    for (const [sid, entry] of this.#sessionCodes) if (entry.expiresAt <= now) this.#sessionCodes.delete(sid);
    for (const [key, events] of this.#windows) {
      // Windows here are at most a few minutes, so an event older than the retention is stale
      // for all of them: a flood from many addresses leaves nothing behind for long.
      if (events.length === 0 || events[events.length - 1] < now - RATE_WINDOW_RETENTION_MS) this.#windows.delete(key);
    }
    for (const [jti, exp] of this.#revoked) if (exp <= now) this.#revoked.delete(jti);
    for (const [id, record] of this.#credentials) if (record.expiresAt <= now) this.#credentials.delete(id);
    for (const [sid, lease] of this.#leases) {
      if (lease.expiresAt <= now - RATE_WINDOW_RETENTION_MS) this.#leases.delete(sid);
    }
    for (const [id, entry] of this.#presence) if (entry.until <= now) this.#presence.delete(id);
    this.#log?.sweep(now);
    return Promise.resolve();
  }

  getCredential(bridgeId: string): Promise<CredentialRecord | undefined> {
    const record = this.#ledger ? this.#ledger.get(bridgeId) : this.#credentials.get(bridgeId);
    return Promise.resolve(record && structuredClone(record));
  }

  putCredential(record: CredentialRecord, expectJti?: string): Promise<boolean> {
    if (expectJti !== undefined) {
      const current = this.#ledger ? this.#ledger.get(record.bridgeId) : this.#credentials.get(record.bridgeId);
      if (current && current.jti !== expectJti) return Promise.resolve(false);
    }
    if (this.#ledger) this.#ledger.put(record);
    else this.#credentials.set(record.bridgeId, structuredClone(record));
    return Promise.resolve(true);
  }

  listCredentials(sid: string): Promise<CredentialRecord[]> {
    if (this.#ledger) return Promise.resolve(this.#ledger.list(sid));
    const lines = [...this.#credentials.values()].filter((r) => r.sid === sid).reverse();
    lines.sort((a, b) => b.issuedAt - a.issuedAt);
    return Promise.resolve(lines.slice(0, MAX_LISTED_CREDENTIALS).map((r) => structuredClone(r)));
  }

  claimLease(sid: string, instance: string, ttlMs: number, now: number): Promise<Lease> {
    const current = this.#leases.get(sid);
    if (current && current.expiresAt > now && current.instance !== instance) return Promise.resolve({ ...current });
    const lease = current && current.instance === instance && current.expiresAt > now
      ? { ...current, expiresAt: now + ttlMs }
      : { instance, epoch: (current?.epoch ?? 0) + 1, expiresAt: now + ttlMs };
    this.#leases.set(sid, lease);
    return Promise.resolve({ ...lease });
  }

  renewLease(sid: string, instance: string, epoch: number, ttlMs: number, now: number): Promise<boolean> {
    const current = this.#leases.get(sid);
    if (!current || current.instance !== instance || current.epoch !== epoch) return Promise.resolve(false);
    current.expiresAt = now + ttlMs;
    return Promise.resolve(true);
  }

  takeOverLease(
    sid: string,
    instance: string,
    staleEpoch: number,
    ttlMs: number,
    now: number,
  ): Promise<Lease | undefined> {
    const current = this.#leases.get(sid);
    if (current && current.epoch !== staleEpoch) return Promise.resolve(undefined);
    const lease = { instance, epoch: staleEpoch + 1, expiresAt: now + ttlMs };
    this.#leases.set(sid, lease);
    return Promise.resolve({ ...lease });
  }

  releaseLease(sid: string, instance: string, epoch: number): Promise<void> {
    const current = this.#leases.get(sid);
    // Expired rather than deleted: the next holder's epoch keeps growing.
    if (current?.instance === instance && current.epoch === epoch) current.expiresAt = 0;
    return Promise.resolve();
  }

  lease(sid: string, now: number): Promise<Lease | undefined> {
    const current = this.#leases.get(sid);
    return Promise.resolve(current && current.expiresAt > now ? { ...current } : undefined);
  }

  setPresence(bridgeId: string, instance: string, ttlMs: number, now: number): Promise<void> {
    this.#presence.set(bridgeId, { instance, until: now + ttlMs });
    return Promise.resolve();
  }

  clearPresence(bridgeId: string, instance: string): Promise<void> {
    if (this.#presence.get(bridgeId)?.instance === instance) this.#presence.delete(bridgeId);
    return Promise.resolve();
  }

  isPresent(bridgeId: string, now: number): Promise<boolean> {
    const entry = this.#presence.get(bridgeId);
    return Promise.resolve(entry !== undefined && entry.until > now);
  }

  publish(event: RelayEvent): Promise<void> {
    for (const listener of this.#listeners) listener(event);
    return Promise.resolve();
  }

  subscribe(listener: (event: RelayEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  ping(): Promise<boolean> {
    return Promise.resolve(true);
  }

  close(): Promise<void> {
    this.#listeners.clear();
    return Promise.resolve();
  }

  /** Number of live codes (for tests and metrics). */
  get codeCount(): number {
    return this.#codes.size;
  }
}
