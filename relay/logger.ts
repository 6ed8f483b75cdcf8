/**
 * The relay's log: one line per event, an event name plus ids and counts,
 * as text (`time LEVEL event k=v ...`) or as one JSON object per line.
 * Callers pass metadata only; command text, output, codes and tokens never
 * reach a log line (docs/PROTOCOL.md, "What the relay can see").
 *
 * As a second line of defence the logger redacts what slips through anyway:
 * a string field whose name says it is a secret (`code`, `token`, `cookie`,
 * ...), JWT-looking and long base64 strings, 6-digit numbers and SAS-shaped
 * digits, and in `error` texts also paths and quoted strings
 * (shared/scrub.ts). tests/observability_test.ts checks this on a real relay.
 *
 * @module
 */
import { scrubText } from "../shared/scrub.ts";

/** Log levels, least to most severe. */
export const LOG_LEVELS = ["debug", "info", "warn", "error", "silent"] as const;
/** One of {@linkcode LOG_LEVELS}. */
export type LogLevel = typeof LOG_LEVELS[number];
/** Line formats. */
export const LOG_FORMATS = ["text", "json"] as const;
/** One of {@linkcode LOG_FORMATS}. */
export type LogFormat = typeof LOG_FORMATS[number];

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

/** Options for {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Lowest level written (default `info`). */
  level?: LogLevel;
  /** `text` (default) or `json`. */
  format?: LogFormat;
  /** Where lines go (default: stderr). */
  write?: (line: string) => void;
  /** The wall clock for timestamps (default: the real one). */
  now?: () => number;
}

/** Field names whose string values are never written. */
const SECRET_FIELD = /(?:code|token|cookie|secret|password|passwd|authorization|jwt|sas|key)$/i;

/**
 * Redacts one field value: secret-named strings entirely; elsewhere
 * JWT-looking and long base64 runs, 6-digit and `ddd ddd` numbers; `error`
 * texts are also scrubbed of paths and quoted strings.
 *
 * @param name The field name.
 * @param value The value.
 * @returns What may be written.
 *
 * @example
 * ```ts
 * import { redactField } from "./logger.ts";
 * console.log(redactField("token", "eyJhbGciOi...")); // "<redacted>"
 * console.log(redactField("reason", "code 482913 refused")); // "code <digits> refused"
 * ```
 */
export function redactField(name: string, value: string | number | boolean): string | number | boolean {
  if (typeof value !== "string") return value;
  if (SECRET_FIELD.test(name)) return "<redacted>";
  let out = name === "error" ? scrubText(value) : value;
  out = out
    .replace(/\beyJ[\w-]*\.[\w-]*(?:\.[\w-]*)?/g, "<token>")
    .replace(/[A-Za-z0-9_+\/-]{40,}={0,2}/g, "<token>")
    .replace(/(?<![\w-])\d{3}[ -]?\d{3}(?![\w-])/g, "<digits>");
  return out;
}

/**
 * Creates a logger writing `time LEVEL event k=v ...` lines, or JSON lines
 * `{"time", "level", "event", ...fields}`.
 *
 * @param options Minimum level, format, sink (stderr by default) and clock.
 * @returns The logger.
 *
 * @example
 * ```ts
 * import { createLogger } from "./logger.ts";
 * const lines: string[] = [];
 * createLogger({ write: (l) => lines.push(l) }).info("relay.start", { port: 8787 });
 * console.log(lines[0].includes("relay.start port=8787")); // true
 * createLogger({ format: "json", write: (l) => lines.push(l) }).info("relay.start", { port: 8787 });
 * console.log(JSON.parse(lines[1]).port); // 8787
 * ```
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const min = LOG_LEVELS.indexOf(options.level ?? "info");
  const write = options.write ?? ((line: string) => console.error(line));
  const now = options.now ?? Date.now;
  const json = options.format === "json";
  const emit = (level: LogLevel, event: string, fields: LogFields = {}) => {
    if (LOG_LEVELS.indexOf(level) < min) return;
    const time = new Date(now()).toISOString();
    const entries = Object.entries(fields)
      .filter((e): e is [string, string | number | boolean] => e[1] !== undefined)
      .filter(([k]) => !(json && (k === "time" || k === "level" || k === "event")))
      .map(([k, v]) => [k, redactField(k, v)] as const);
    if (json) {
      write(JSON.stringify({ time, level, event, ...Object.fromEntries(entries) }));
      return;
    }
    const parts = entries.map(([k, v]) => `${k}=${JSON.stringify(v)}`.replace(/^(\w+)="([\w.:-]*)"$/, "$1=$2"));
    write([time, level.toUpperCase(), event, ...parts].join(" "));
  };
  return {
    info: (e, f) => emit("info", e, f),
    warn: (e, f) => emit("warn", e, f),
    error: (e, f) => emit("error", e, f),
  };
}
