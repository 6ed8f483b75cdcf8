/**
 * Crash reports from the bridge: when an error escapes everything in the
 * bridge process (an uncaught exception or an unhandled rejection), the
 * bridge writes a scrubbed report to `crash-report.json` in its config
 * directory (mode 0600, only the latest is kept) and dies as it would have.
 * On its next connection to a relay that offers `crashReports`, it scrubs the
 * report again, sends it in a `crash` frame and deletes it.
 *
 * With `CODER1_TELEMETRY=false` none of this happens: nothing is recorded,
 * and a report left from an earlier run is deleted unsent.
 *
 * What a report holds: the error's class, its message and stack with home
 * directories, paths, quoted strings, tokens and long numbers removed
 * (shared/scrub.ts), the coder1 version and the OS. Nothing else.
 *
 * @module
 */
import type { CrashBody } from "../shared/protocol.ts";
import { sanitizeCrash } from "../shared/scrub.ts";
import { VERSION } from "../shared/version.ts";

/** The report's file name in the bridge's config directory. */
export const CRASH_FILE = "crash-report.json";
/** A report older than this is deleted unsent (the relay would not keep it longer either). */
export const CRASH_MAX_AGE_MS = 30 * 24 * 60 * 60_000;

/**
 * Builds a scrubbed report from a thrown value.
 *
 * @param error What was thrown.
 * @param secrets Literal strings to hide (home directory, user and host name).
 * @returns The report.
 *
 * @example
 * ```ts
 * import { crashReportFor } from "./crash_report.ts";
 * const report = crashReportFor(new TypeError(`no "/home/ada/x"`), []);
 * console.log(report.errorClass, report.message); // TypeError no <str>
 * ```
 */
export function crashReportFor(error: unknown, secrets: readonly string[]): CrashBody {
  const err = error instanceof Error ? error : new Error(String(error));
  const stack = typeof err.stack === "string" ? err.stack : undefined;
  return sanitizeCrash({
    errorClass: err.constructor?.name || err.name || "Error",
    message: String(err.message ?? ""),
    ...(stack ? { stack } : {}),
    version: VERSION,
    os: Deno.build.os,
  }, { secrets })!;
}

/** Records and sends the bridge's crash reports for one config directory. */
export class CrashReports {
  /** The report file. */
  readonly file: string;
  #dir: string;
  #secrets: readonly string[];

  /**
   * @param configDir The bridge's config directory.
   * @param secrets Literal strings to hide besides what the scrubber finds (undefined ones are skipped).
   */
  constructor(configDir: string, secrets: readonly (string | undefined)[] = []) {
    this.#dir = configDir;
    this.file = `${configDir}/${CRASH_FILE}`;
    this.#secrets = secrets.filter((s): s is string => typeof s === "string" && s.length > 0);
  }

  /**
   * Writes a report for `error` (synchronously: the process is about to die).
   * Never throws.
   */
  record(error: unknown, now = Date.now()): void {
    try {
      const report = crashReportFor(error, this.#secrets);
      Deno.mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
      const tmp = `${this.file}.tmp`;
      Deno.writeTextFileSync(tmp, JSON.stringify({ at: now, report }), { mode: 0o600 });
      Deno.renameSync(tmp, this.file);
    } catch {
      // A crash while recording a crash: nothing more to do.
    }
  }

  /**
   * Records every uncaught error and unhandled rejection of this process
   * from now on. The process still ends the way it would have.
   *
   * @returns A function that removes the handlers.
   */
  install(): () => void {
    const onError = (event: ErrorEvent) => this.record(event.error ?? event.message);
    const onRejection = (event: PromiseRejectionEvent) => this.record(event.reason);
    globalThis.addEventListener("error", onError);
    globalThis.addEventListener("unhandledrejection", onRejection);
    return () => {
      globalThis.removeEventListener("error", onError);
      globalThis.removeEventListener("unhandledrejection", onRejection);
    };
  }

  /**
   * The pending report, validated and scrubbed again, or undefined (no file,
   * unreadable, malformed or too old: those files are deleted).
   */
  take(now = Date.now()): CrashBody | undefined {
    let text: string;
    try {
      text = Deno.readTextFileSync(this.file);
    } catch {
      return undefined;
    }
    try {
      const { at, report } = JSON.parse(text) as { at?: unknown; report?: unknown };
      if (typeof at === "number" && now - at < CRASH_MAX_AGE_MS && typeof report === "object" && report !== null) {
        const clean = sanitizeCrash(report as Record<string, unknown>, { secrets: this.#secrets });
        if (clean) return clean;
      }
    } catch {
      // Malformed: dropped below.
    }
    this.discard();
    return undefined;
  }

  /** Deletes the pending report, if any. */
  discard(): void {
    try {
      Deno.removeSync(this.file);
    } catch {
      // Not there.
    }
  }
}
