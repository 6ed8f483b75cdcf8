/**
 * Telemetry, exactly as SECURITY.md promises and nothing more: metadata in
 * one SQLite file (`node:sqlite`) in the relay's data directory.
 *
 * | Table               | One row per                         | Columns                                          |
 * | ------------------- | ----------------------------------- | ------------------------------------------------ |
 * | `connection_events` | bridge connect or disconnect        | time, bridge id, bridge version, event           |
 * | `command_counts`    | bridge and UTC day                  | day, bridge id, commands started, commands ended |
 * | `crash_reports`     | crash report a bridge sent          | time, error class, message, stack, version, OS   |
 *
 * Command counts come from frame types the relay reads in headers
 * (`cmd.start`, `cmd.exit`, `cmd.error`), never from bodies. Crash reports are
 * scrubbed again here before they are kept (shared/scrub.ts). Nothing is kept
 * about a bridge that said `telemetry: false`, and nothing at all when the
 * relay runs with `CODER1_TELEMETRY=false` (then no file is created).
 *
 * Two caps bound the file whatever bridges send: at most
 * {@linkcode TELEMETRY_ROWS_PER_BRIDGE_PER_DAY} connection events and crash
 * reports per bridge per UTC day (more are dropped until the next day), and
 * once the file reaches {@linkcode TELEMETRY_MAX_FILE_BYTES} new connection
 * events and crash reports are dropped until pruning makes room (command
 * counts, one row per bridge and day, are still added up). Each cap logs
 * `telemetry.cap` once when it starts dropping.
 *
 * Rows older than {@linkcode TELEMETRY_RETENTION_MS} are deleted when the
 * relay starts and every {@linkcode TELEMETRY_PRUNE_INTERVAL_MS}, with
 * `secure_delete` so deleted rows do not linger in the file. Writes are
 * batched in memory and committed every {@linkcode TELEMETRY_FLUSH_INTERVAL_MS}
 * (one transaction), so the event loop never waits for a disk sync per command.
 *
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import type { Clock } from "../shared/clock.ts";
import type { CrashBody } from "../shared/protocol.ts";
import { sanitizeCrash } from "../shared/scrub.ts";

/** How long telemetry is kept. */
export const TELEMETRY_RETENTION_MS = 30 * 24 * 60 * 60_000;
/** How often the relay deletes rows past retention (besides at start). */
export const TELEMETRY_PRUNE_INTERVAL_MS = 60 * 60_000;
/** How often batched telemetry is written to the file. */
export const TELEMETRY_FLUSH_INTERVAL_MS = 5_000;
/** The file's name in the data directory. */
export const TELEMETRY_FILE = "telemetry.sqlite";
/** Connection events plus crash reports kept per bridge per UTC day; more are dropped. */
export const TELEMETRY_ROWS_PER_BRIDGE_PER_DAY = 500;
/** Past this file size, new connection events and crash reports are dropped until pruning makes room. */
export const TELEMETRY_MAX_FILE_BYTES = 256 * 1024 * 1024;
/** Pending rows above which a flush happens at once (bounds memory). */
const MAX_PENDING = 10_000;
const SCHEMA_VERSION = 1;
const DAY_MS = 24 * 60 * 60_000;

/** A connection event. */
export type ConnectionEvent = "connect" | "disconnect";

/** What the hub records. A disabled recorder ({@linkcode NO_TELEMETRY}) does nothing. */
export interface TelemetryRecorder {
  /** Whether anything is recorded (the relay then offers bridges `crashReports`). */
  readonly enabled: boolean;
  /** A bridge connected (authenticated) or its connection closed. */
  connection(bridgeId: string, version: string, event: ConnectionEvent): void;
  /** The relay forwarded a `cmd.start` to this bridge. */
  commandStarted(bridgeId: string): void;
  /** This bridge sent a `cmd.exit` or `cmd.error`. */
  commandEnded(bridgeId: string): void;
  /** A bridge sent a crash report (scrubbed again before it is kept); `bridgeId` counts it against that bridge's cap. */
  crash(report: CrashBody, bridgeId?: string): void;
}

/** The recorder of a relay that keeps no telemetry. */
export const NO_TELEMETRY: TelemetryRecorder = {
  enabled: false,
  connection() {},
  commandStarted() {},
  commandEnded() {},
  crash() {},
};

/** Everything stored, as `coder1 relay telemetry` shows it. */
export interface TelemetryDump {
  /** The SQLite file. */
  file: string;
  /** Days rows are kept. */
  retentionDays: number;
  /** Only rows at or after this time (ms since the epoch), if given. */
  since?: number;
  /** Connection events, oldest first. */
  connections: { at: string; bridgeId: string; bridgeVersion: string; event: ConnectionEvent }[];
  /** Command counts per bridge per UTC day, oldest first. */
  commandCounts: { day: string; bridgeId: string; started: number; ended: number }[];
  /** Crash reports, oldest first. */
  crashes: { at: string; errorClass: string; message: string; stack: string | null; version: string; os: string }[];
}

/**
 * The UTC day (`YYYY-MM-DD`) of a time.
 *
 * @param ms Milliseconds since the epoch.
 * @returns The day.
 */
export function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/**
 * The telemetry file of a running relay: batches events in memory, commits
 * them every few seconds, prunes on a schedule.
 */
export class TelemetryStore implements TelemetryRecorder {
  readonly enabled = true;
  /** The SQLite file. */
  readonly file: string;
  #db: DatabaseSync;
  #clock: Clock;
  #connections: [number, string, string, ConnectionEvent][] = [];
  #counts = new Map<string, { day: string; bridgeId: string; started: number; ended: number }>();
  #crashes: [number, CrashBody][] = [];
  #timers: ReturnType<typeof setInterval>[] = [];
  #closed = false;
  #onError: (error: unknown) => void;
  #onCap: (cap: "bridge-day" | "file-size", bridgeId?: string) => void;
  #maxFileBytes: number;
  /** Rows taken today per bridge (connection events and crash reports). */
  #rowsToday = new Map<string, number>();
  #today = "";
  #full = false;

  /**
   * Opens (or creates, mode 0600) the telemetry file in `dataDir`.
   *
   * @param dataDir The relay's data directory (it must exist).
   * @param options The clock (tests inject a manual one), where failed
   *   writes are reported (they never throw into the relay), where a cap
   *   that starts dropping rows is reported, and the file-size cap (tests shrink it).
   */
  constructor(
    dataDir: string,
    options: {
      clock: Clock;
      onError?: (error: unknown) => void;
      onCap?: (cap: "bridge-day" | "file-size", bridgeId?: string) => void;
      maxFileBytes?: number;
    },
  ) {
    this.file = `${dataDir}/${TELEMETRY_FILE}`;
    this.#clock = options.clock;
    this.#onError = options.onError ?? (() => {});
    this.#onCap = options.onCap ?? (() => {});
    this.#maxFileBytes = options.maxFileBytes ?? TELEMETRY_MAX_FILE_BYTES;
    // Create it private before SQLite does (SQLite would use the umask).
    Deno.openSync(this.file, { create: true, write: true, mode: 0o600 }).close();
    if (Deno.build.os !== "windows") Deno.chmodSync(this.file, 0o600);
    this.#db = new DatabaseSync(this.file);
    // A rollback journal, not WAL: `coder1 relay telemetry` may then read the
    // file without creating -wal/-shm files (owned by whoever ran it).
    this.#db.exec(`
      PRAGMA journal_mode = DELETE;
      PRAGMA secure_delete = ON;
      PRAGMA busy_timeout = 2000;
      CREATE TABLE IF NOT EXISTS connection_events (
        at INTEGER NOT NULL,
        bridge_id TEXT NOT NULL,
        bridge_version TEXT NOT NULL,
        event TEXT NOT NULL CHECK (event IN ('connect', 'disconnect'))
      );
      CREATE INDEX IF NOT EXISTS connection_events_at ON connection_events (at);
      CREATE TABLE IF NOT EXISTS command_counts (
        day TEXT NOT NULL,
        bridge_id TEXT NOT NULL,
        started INTEGER NOT NULL DEFAULT 0,
        ended INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (day, bridge_id)
      );
      CREATE TABLE IF NOT EXISTS crash_reports (
        at INTEGER NOT NULL,
        error_class TEXT NOT NULL,
        message TEXT NOT NULL,
        stack TEXT,
        bridge_version TEXT NOT NULL,
        os TEXT NOT NULL
      );
      CREATE INDEX IF NOT EXISTS crash_reports_at ON crash_reports (at);
      PRAGMA user_version = ${SCHEMA_VERSION};
    `);
  }

  /**
   * Starts the timers: flush every {@linkcode TELEMETRY_FLUSH_INTERVAL_MS}
   * and prune every `pruneIntervalMs`.
   *
   * @param options Intervals (tests shrink them).
   */
  start(options: { flushIntervalMs?: number; pruneIntervalMs?: number } = {}): void {
    this.#timers.push(
      setInterval(() => this.#safely(() => this.flush()), options.flushIntervalMs ?? TELEMETRY_FLUSH_INTERVAL_MS),
      setInterval(() => this.#safely(() => this.prune()), options.pruneIntervalMs ?? TELEMETRY_PRUNE_INTERVAL_MS),
    );
  }

  connection(bridgeId: string, version: string, event: ConnectionEvent): void {
    if (this.#closed || !this.#take(bridgeId)) return;
    this.#connections.push([this.#clock.now(), bridgeId, version, event]);
    this.#flushIfFull();
  }

  commandStarted(bridgeId: string): void {
    if (!this.#closed) this.#count(bridgeId).started++;
  }

  commandEnded(bridgeId: string): void {
    if (!this.#closed) this.#count(bridgeId).ended++;
  }

  crash(report: CrashBody, bridgeId?: string): void {
    if (this.#closed || (bridgeId !== undefined && !this.#take(bridgeId))) return;
    const clean = sanitizeCrash({ ...report });
    if (!clean) return;
    this.#crashes.push([this.#clock.now(), clean]);
    this.#flushIfFull();
  }

  /** Writes everything batched so far in one transaction. */
  flush(): void {
    if (this.#connections.length + this.#counts.size + this.#crashes.length === 0) return;
    let connections = this.#connections, crashes = this.#crashes;
    const counts = [...this.#counts.values()];
    if (this.#fileBytes() >= this.#maxFileBytes) {
      // Full: the bounded command counts go on, the rows that grow the file wait for pruning.
      if (!this.#full) this.#onCap("file-size");
      this.#full = true;
      connections = [];
      crashes = [];
    } else this.#full = false;
    this.#connections = [];
    this.#counts = new Map();
    this.#crashes = [];
    this.#db.exec("BEGIN");
    try {
      const addConnection = this.#db.prepare(
        "INSERT INTO connection_events (at, bridge_id, bridge_version, event) VALUES (?, ?, ?, ?)",
      );
      for (const row of connections) addConnection.run(...row);
      const addCount = this.#db.prepare(`
        INSERT INTO command_counts (day, bridge_id, started, ended) VALUES (?, ?, ?, ?)
        ON CONFLICT (day, bridge_id) DO UPDATE SET started = started + excluded.started, ended = ended + excluded.ended
      `);
      for (const c of counts) addCount.run(c.day, c.bridgeId, c.started, c.ended);
      const addCrash = this.#db.prepare(
        "INSERT INTO crash_reports (at, error_class, message, stack, bridge_version, os) VALUES (?, ?, ?, ?, ?, ?)",
      );
      for (const [at, r] of crashes) addCrash.run(at, r.errorClass, r.message, r.stack ?? null, r.version, r.os);
      this.#db.exec("COMMIT");
    } catch (error) {
      this.#db.exec("ROLLBACK");
      throw error;
    }
  }

  /**
   * Deletes rows older than the retention period. Command counts go by UTC
   * day: a day's row is deleted once that day began more than 30 days ago, so
   * no count is kept longer than the period.
   *
   * @returns How many rows were deleted.
   */
  prune(): number {
    const cutoff = this.#clock.now() - TELEMETRY_RETENTION_MS;
    let removed = 0;
    removed += Number(this.#db.prepare("DELETE FROM connection_events WHERE at < ?").run(cutoff).changes);
    removed += Number(this.#db.prepare("DELETE FROM command_counts WHERE day <= ?").run(utcDay(cutoff)).changes);
    removed += Number(this.#db.prepare("DELETE FROM crash_reports WHERE at < ?").run(cutoff).changes);
    return removed;
  }

  /** Flushes, stops the timers and closes the file. */
  close(): void {
    if (this.#closed) return;
    for (const timer of this.#timers) clearInterval(timer);
    this.#safely(() => this.flush());
    this.#closed = true;
    this.#db.close();
  }

  /** Counts one row against the bridge's daily cap; false (drop it) past the cap. */
  #take(bridgeId: string): boolean {
    const day = utcDay(this.#clock.now());
    if (day !== this.#today) {
      this.#today = day;
      this.#rowsToday.clear();
    }
    const n = (this.#rowsToday.get(bridgeId) ?? 0) + 1;
    this.#rowsToday.set(bridgeId, n);
    if (n === TELEMETRY_ROWS_PER_BRIDGE_PER_DAY + 1) this.#onCap("bridge-day", bridgeId);
    return n <= TELEMETRY_ROWS_PER_BRIDGE_PER_DAY;
  }

  /** The file's size as SQLite sees it (pages in use and free). */
  #fileBytes(): number {
    const pages = this.#db.prepare("PRAGMA page_count").get() as { page_count: number };
    const size = this.#db.prepare("PRAGMA page_size").get() as { page_size: number };
    return Number(pages.page_count) * Number(size.page_size);
  }

  #count(bridgeId: string) {
    const day = utcDay(this.#clock.now());
    const key = `${day} ${bridgeId}`;
    let entry = this.#counts.get(key);
    if (!entry) {
      entry = { day, bridgeId, started: 0, ended: 0 };
      this.#counts.set(key, entry);
      this.#flushIfFull();
    }
    return entry;
  }

  #flushIfFull(): void {
    if (this.#closed) return;
    if (this.#connections.length + this.#counts.size + this.#crashes.length >= MAX_PENDING) {
      this.#safely(() => this.flush());
    }
  }

  #safely(fn: () => void): void {
    try {
      fn();
    } catch (error) {
      // Telemetry must never take the relay down.
      this.#onError(error);
    }
  }
}

/**
 * Reads what a telemetry file holds, read-only (the relay may be running).
 *
 * @param file The SQLite file.
 * @param options Only rows at or after `since` (ms since the epoch).
 * @returns Everything stored, oldest first.
 * @throws {Deno.errors.NotFound} When there is no such file.
 */
export function readTelemetry(file: string, options: { since?: number } = {}): TelemetryDump {
  Deno.statSync(file); // NotFound rather than an empty database created by accident.
  const db = new DatabaseSync(file, { readOnly: true });
  try {
    db.exec("PRAGMA busy_timeout = 2000");
    const since = options.since ?? 0;
    const connections = db.prepare(
      "SELECT at, bridge_id, bridge_version, event FROM connection_events WHERE at >= ? ORDER BY at, rowid",
    ).all(since) as { at: number; bridge_id: string; bridge_version: string; event: ConnectionEvent }[];
    const counts = db.prepare(
      "SELECT day, bridge_id, started, ended FROM command_counts WHERE day >= ? ORDER BY day, bridge_id",
    ).all(utcDay(since)) as { day: string; bridge_id: string; started: number; ended: number }[];
    const crashes = db.prepare(
      "SELECT at, error_class, message, stack, bridge_version, os FROM crash_reports WHERE at >= ? ORDER BY at, rowid",
    ).all(since) as {
      at: number;
      error_class: string;
      message: string;
      stack: string | null;
      bridge_version: string;
      os: string;
    }[];
    return {
      file,
      retentionDays: TELEMETRY_RETENTION_MS / DAY_MS,
      ...(options.since !== undefined ? { since: options.since } : {}),
      connections: connections.map((r) => ({
        at: new Date(r.at).toISOString(),
        bridgeId: r.bridge_id,
        bridgeVersion: r.bridge_version,
        event: r.event,
      })),
      commandCounts: counts.map((r) => ({
        day: r.day,
        bridgeId: r.bridge_id,
        started: Number(r.started),
        ended: Number(r.ended),
      })),
      crashes: crashes.map((r) => ({
        at: new Date(r.at).toISOString(),
        errorClass: r.error_class,
        message: r.message,
        stack: r.stack,
        version: r.bridge_version,
        os: r.os,
      })),
    };
  } finally {
    db.close();
  }
}
