/**
 * The relay's state behind one interface: live pairing codes, rate windows
 * and token revocations. {@linkcode MemoryStore} is the embedded default; a
 * Redis implementation for several relays can follow the same contract
 * (codes taken with an atomic get-and-delete, rate windows as expiring sets).
 *
 * @module
 */

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

/** Everything the relay keeps between requests. All methods are atomic. */
export interface RelayStore {
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
}

/**
 * The embedded store: everything in memory except revocations, which go to a
 * {@linkcode RevocationLog} when one is given, so that a logged-out token
 * stays dead after a restart. One revoke writes one row, whatever the number
 * of revocations already kept.
 */
export class MemoryStore implements RelayStore {
  #codes = new Map<string, CodeEntry>();
  #sessionCodes = new Map<string, { code: string; expiresAt: number }>();
  #windows = new Map<string, number[]>();
  #revoked = new Map<string, number>();
  #log?: RevocationLog;

  /** @param options Where revocations persist. */
  constructor(options: MemoryStoreOptions = {}) {
    this.#log = options.revocations;
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
    this.#log?.sweep(now);
    return Promise.resolve();
  }

  /** Number of live codes (for tests and metrics). */
  get codeCount(): number {
    return this.#codes.size;
  }
}
