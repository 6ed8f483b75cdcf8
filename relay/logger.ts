/**
 * The relay's log: one line per event, an event name plus ids and counts.
 * Callers pass metadata only; command text, output, codes and tokens never
 * reach a log line (docs/PROTOCOL.md, "What the relay sees").
 *
 * @module
 */

/** Log levels, least to most severe. */
export const LOG_LEVELS = ["debug", "info", "warn", "error", "silent"] as const;
/** One of {@linkcode LOG_LEVELS}. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Fields of a log line: ids, counts, versions. Never content. */
export type LogFields = Record<string, string | number | boolean | undefined>;

/** Writes log lines. */
export interface Logger {
  /** Routine events. */
  info(event: string, fields?: LogFields): void;
  /** Something odd but handled. */
  warn(event: string, fields?: LogFields): void;
  /** Something failed. */
  error(event: string, fields?: LogFields): void;
}

/**
 * Creates a logger writing `time level event k=v ...` lines.
 *
 * @param options Minimum level and the sink (stderr by default).
 * @returns The logger.
 *
 * @example
 * ```ts
 * import { createLogger } from "./logger.ts";
 * const lines: string[] = [];
 * createLogger({ write: (l) => lines.push(l) }).info("relay.start", { port: 8787 });
 * console.log(lines[0].includes("relay.start port=8787")); // true
 * ```
 */
export function createLogger(options: { level?: LogLevel; write?: (line: string) => void } = {}): Logger {
  const min = LOG_LEVELS.indexOf(options.level ?? "info");
  const write = options.write ?? ((line: string) => console.error(line));
  const emit = (level: LogLevel, event: string, fields: LogFields = {}) => {
    if (LOG_LEVELS.indexOf(level) < min) return;
    const parts = Object.entries(fields)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${JSON.stringify(v)}`.replace(/^(\w+)="([\w.:-]*)"$/, "$1=$2"));
    write([new Date().toISOString(), level.toUpperCase(), event, ...parts].join(" "));
  };
  return {
    info: (e, f) => emit("info", e, f),
    warn: (e, f) => emit("warn", e, f),
    error: (e, f) => emit("error", e, f),
  };
}
