/**
 * The relay's durable record of bridge credentials, in one SQLite file
 * (`credentials.sqlite` in the data directory, mode 0600, WAL):
 *
 * | Table         | One row per                          | What for                                               |
 * | ------------- | ------------------------------------ | ------------------------------------------------------ |
 * | `credentials` | bridge credential line (bridge id)   | the page's list, rotation and reuse detection, revoke  |
 * | `revocations` | revoked token id, until its expiry   | a revoked token stays dead, across restarts            |
 *
 * Every write is one indexed row (O(log n), no rewrite of the whole list, no
 * fsync per write in WAL with `synchronous = NORMAL`), so a revoke costs the
 * same at 300,000 entries as at one; the sweep drops expired rows in bounded
 * batches. A `revoked.json` from an older relay is imported once and renamed.
 *
 * @module
 */
import { DatabaseSync } from "node:sqlite";

/** The file's name in the data directory. */
export const CREDENTIALS_FILE = "credentials.sqlite";
/** Rows the sweep deletes per statement, so one sweep never holds the event loop for long. */
const SWEEP_BATCH = 5_000;
/** Most credentials listed for one browser session (newest first). */
export const MAX_LISTED_CREDENTIALS = 100;

/** Why a credential line was revoked. */
export type RevokeReason = "user" | "logout" | "reuse" | "replaced";

/** One credential line: a bridge id and the token it currently holds. */
export interface CredentialRecord {
  /** The bridge id (the tokens' `sub`). */
  bridgeId: string;
  /** The browser session it is bound to. */
  sid: string;
  /** When the code was redeemed (ms since the epoch). */
  issuedAt: number;
  /** The client address that redeemed the code. */
  issuedFrom: string;
  /** Last login (ms since the epoch). */
  lastSeen?: number;
  /** The client address of the last login. */
  lastAddress?: string;
  /** The bridge version it last reported. */
  version?: string;
  /** The current token's id. */
  jti: string;
  /** The token it replaced (accepted once more under the grace rule). */
  prevJti?: string;
  /** Whether the current token has been presented at a login. */
  jtiUsed: boolean;
  /** Whether this line rotates (its bridge asked for rotation once): then logins must ask too. */
  rotating: boolean;
  /** The current token's expiry (ms since the epoch). */
  expiresAt: number;
  /** Whether the user approved this bridge in the IDE (seen as an `e2e.approve` forwarded to it). */
  approved: boolean;
  /** When it was revoked, if it was. */
  revokedAt?: number;
  /** Why it was revoked. */
  revokedReason?: RevokeReason;
}

interface Row {
  bridge_id: string;
  sid: string;
  issued_at: number;
  issued_from: string;
  last_seen: number | null;
  last_address: string | null;
  version: string | null;
  jti: string;
  prev_jti: string | null;
  jti_used: number;
  rotating: number;
  expires_at: number;
  approved: number;
  revoked_at: number | null;
  revoked_reason: string | null;
}

/**
 * The credentials file.
 *
 * @example
 * ```ts
 * import { CredentialLedger } from "./credential_ledger.ts";
 * const ledger = new CredentialLedger(":memory:");
 * ledger.revokeToken("some-jti", Date.now() + 60_000);
 * console.log(ledger.isTokenRevoked("some-jti")); // true
 * ledger.close();
 * ```
 */
export class CredentialLedger {
  #db: DatabaseSync;
  #get;
  #put;
  #revoke;
  #isRevoked;

  /** @param file The SQLite file (created mode 0600), or `:memory:`. */
  constructor(file: string) {
    if (file !== ":memory:") {
      Deno.openSync(file, { create: true, write: true, mode: 0o600 }).close();
      if (Deno.build.os !== "windows") Deno.chmodSync(file, 0o600);
    }
    this.#db = new DatabaseSync(file);
    this.#db.exec(`
      PRAGMA journal_mode = WAL;
      PRAGMA synchronous = NORMAL;
      PRAGMA busy_timeout = 2000;
      CREATE TABLE IF NOT EXISTS credentials (
        bridge_id TEXT PRIMARY KEY,
        sid TEXT NOT NULL,
        issued_at INTEGER NOT NULL,
        issued_from TEXT NOT NULL,
        last_seen INTEGER,
        last_address TEXT,
        version TEXT,
        jti TEXT NOT NULL,
        prev_jti TEXT,
        jti_used INTEGER NOT NULL DEFAULT 0,
        rotating INTEGER NOT NULL DEFAULT 0,
        expires_at INTEGER NOT NULL,
        approved INTEGER NOT NULL DEFAULT 0,
        revoked_at INTEGER,
        revoked_reason TEXT
      );
      CREATE INDEX IF NOT EXISTS credentials_sid ON credentials (sid, issued_at);
      CREATE INDEX IF NOT EXISTS credentials_expiry ON credentials (expires_at);
      CREATE TABLE IF NOT EXISTS revocations (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS revocations_expiry ON revocations (expires_at);
    `);
    this.#get = this.#db.prepare("SELECT * FROM credentials WHERE bridge_id = ?");
    this.#put = this.#db.prepare(`
      INSERT OR REPLACE INTO credentials (bridge_id, sid, issued_at, issued_from, last_seen, last_address, version,
        jti, prev_jti, jti_used, rotating, expires_at, approved, revoked_at, revoked_reason)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    this.#revoke = this.#db.prepare(
      "INSERT INTO revocations (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO UPDATE SET expires_at = excluded.expires_at",
    );
    this.#isRevoked = this.#db.prepare("SELECT 1 FROM revocations WHERE jti = ?");
  }

  /**
   * Imports a `revoked.json` (`{jti: expiresAt}`) left by an older relay, once:
   * the file is renamed to `revoked.json.imported` afterwards.
   *
   * @param file The JSON file.
   * @returns How many revocations were imported.
   */
  importJson(file: string): number {
    let text: string;
    try {
      text = Deno.readTextFileSync(file);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return 0;
      throw error;
    }
    const data = JSON.parse(text) as Record<string, unknown>;
    let n = 0;
    this.#db.exec("BEGIN");
    try {
      for (const [jti, exp] of Object.entries(data)) {
        if (typeof exp === "number") (this.#revoke.run(jti, exp), n++);
      }
      this.#db.exec("COMMIT");
    } catch (error) {
      this.#db.exec("ROLLBACK");
      throw error;
    }
    Deno.renameSync(file, `${file}.imported`);
    return n;
  }

  /** Revokes a token id until `expiresAt` (one row). */
  revokeToken(jti: string, expiresAt: number): void {
    this.#revoke.run(jti, expiresAt);
  }

  /** Whether a token id is revoked. */
  isTokenRevoked(jti: string): boolean {
    return this.#isRevoked.get(jti) !== undefined;
  }

  /** Number of revocations kept (tests and metrics). */
  get revocationCount(): number {
    return Number((this.#db.prepare("SELECT count(*) AS n FROM revocations").get() as { n: number }).n);
  }

  /** Many revocations in one transaction (tests fill the table with it). */
  revokeTokens(entries: Iterable<[string, number]>): void {
    this.#db.exec("BEGIN");
    try {
      for (const [jti, exp] of entries) this.#revoke.run(jti, exp);
      this.#db.exec("COMMIT");
    } catch (error) {
      this.#db.exec("ROLLBACK");
      throw error;
    }
  }

  /** The line of `bridgeId`, if the relay knows it. */
  get(bridgeId: string): CredentialRecord | undefined {
    const row = this.#get.get(bridgeId) as Row | undefined;
    return row ? _record(row) : undefined;
  }

  /** Stores (inserts or replaces) a line. */
  put(r: CredentialRecord): void {
    this.#put.run(
      r.bridgeId,
      r.sid,
      r.issuedAt,
      r.issuedFrom,
      r.lastSeen ?? null,
      r.lastAddress ?? null,
      r.version ?? null,
      r.jti,
      r.prevJti ?? null,
      r.jtiUsed ? 1 : 0,
      r.rotating ? 1 : 0,
      r.expiresAt,
      r.approved ? 1 : 0,
      r.revokedAt ?? null,
      r.revokedReason ?? null,
    );
  }

  /** The lines of browser session `sid`, newest first (at most {@linkcode MAX_LISTED_CREDENTIALS}). */
  list(sid: string): CredentialRecord[] {
    const rows = this.#db.prepare(
      "SELECT * FROM credentials WHERE sid = ? ORDER BY issued_at DESC, rowid DESC LIMIT ?",
    ).all(sid, MAX_LISTED_CREDENTIALS) as unknown as Row[];
    return rows.map(_record);
  }

  /**
   * Drops revocations and credential lines past their expiry, at most
   * {@linkcode SWEEP_BATCH} rows per table per call.
   *
   * @returns How many rows were deleted.
   */
  sweep(now: number): number {
    let removed = 0;
    for (const table of ["revocations", "credentials"]) {
      removed += Number(
        this.#db.prepare(
          `DELETE FROM ${table} WHERE rowid IN (SELECT rowid FROM ${table} WHERE expires_at <= ? LIMIT ${SWEEP_BATCH})`,
        ).run(now).changes,
      );
    }
    return removed;
  }

  /** Closes the file. */
  close(): void {
    this.#db.close();
  }
}

function _record(row: Row): CredentialRecord {
  const r: CredentialRecord = {
    bridgeId: row.bridge_id,
    sid: row.sid,
    issuedAt: Number(row.issued_at),
    issuedFrom: row.issued_from,
    jti: row.jti,
    jtiUsed: row.jti_used === 1,
    rotating: row.rotating === 1,
    expiresAt: Number(row.expires_at),
    approved: row.approved === 1,
  };
  if (row.last_seen !== null) r.lastSeen = Number(row.last_seen);
  if (row.last_address !== null) r.lastAddress = row.last_address;
  if (row.version !== null) r.version = row.version;
  if (row.prev_jti !== null) r.prevJti = row.prev_jti;
  if (row.revoked_at !== null) r.revokedAt = Number(row.revoked_at);
  if (row.revoked_reason !== null) r.revokedReason = row.revoked_reason as RevokeReason;
  return r;
}
