/**
 * A small flag parser for coder1's commands: `--name value`, `--name=value`,
 * boolean switches and repeatable flags. Unknown flags, missing values and
 * stray arguments raise {@linkcode UsageError}, which main.ts turns into exit
 * code 2 with a one-line reason and the usage.
 *
 * @module
 */

/** A flag a command accepts. */
export interface FlagSpec {
  /** Name without dashes, e.g. `tls-cert`. */
  name: string;
  /** `string` takes a value, `boolean` does not, `multi` may repeat. */
  kind: "string" | "boolean" | "multi";
  /** Placeholder for the value in help, e.g. `FILE`. */
  value?: string;
  /** One line of help. */
  help: string;
  /** Validates a value: returns a reason when bad. */
  check?: (value: string) => string | undefined;
}

/** A command: its name, summary, flags and usage line. */
export interface CommandSpec {
  /** e.g. `relay serve`. */
  name: string;
  /** One line saying what it does. */
  summary: string;
  /** The flags it takes. */
  flags: FlagSpec[];
  /** Extra help text after the flags. */
  notes?: string;
}

/** Parsed flag values, keyed by flag name. */
export type FlagValues = Record<string, string | boolean | string[] | undefined>;

/** A command line that cannot be run as written. */
export class UsageError extends Error {
  /** The command whose usage to print. */
  readonly spec?: CommandSpec;
  /**
   * @param message The one-line reason.
   * @param spec The command, for its usage.
   */
  constructor(message: string, spec?: CommandSpec) {
    super(message);
    this.name = "UsageError";
    this.spec = spec;
  }
}

/**
 * Parses `args` against `spec`. Returns `{help: true}` for `--help`/`-h`.
 *
 * @param spec The command.
 * @param args The arguments after the command name.
 * @returns The values, with booleans false and multis [] when absent.
 *
 * @example
 * ```ts
 * import { parseFlags } from "./args.ts";
 * const spec = { name: "x", summary: "", flags: [{ name: "port", kind: "string" as const, help: "" }] };
 * console.log(parseFlags(spec, ["--port=9000"]).port); // "9000"
 * ```
 */
export function parseFlags(spec: CommandSpec, args: string[]): FlagValues {
  const values: FlagValues = {};
  for (const flag of spec.flags) {
    if (flag.kind === "boolean") values[flag.name] = false;
    if (flag.kind === "multi") values[flag.name] = [];
  }
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--help" || arg === "-h") return { ...values, help: true };
    if (!arg.startsWith("--")) throw new UsageError(`unexpected argument "${arg}"`, spec);
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const flag = spec.flags.find((f) => f.name === name);
    if (!flag) throw new UsageError(`unknown flag --${name}`, spec);
    if (flag.kind === "boolean") {
      if (eq !== -1) throw new UsageError(`--${name} takes no value`, spec);
      values[name] = true;
      continue;
    }
    let value: string;
    if (eq !== -1) value = arg.slice(eq + 1);
    else {
      if (i + 1 >= args.length || args[i + 1].startsWith("--")) {
        throw new UsageError(`--${name} needs a value`, spec);
      }
      value = args[++i];
    }
    const problem = flag.check?.(value);
    if (problem) throw new UsageError(`--${name} ${problem}`, spec);
    if (flag.kind === "multi") (values[name] as string[]).push(value);
    else if (values[name] !== undefined) throw new UsageError(`--${name} given twice`, spec);
    else values[name] = value;
  }
  return values;
}

/**
 * Renders a command's usage: synopsis, summary, flags.
 *
 * @param spec The command.
 * @returns Multi-line help text.
 */
export function usage(spec: CommandSpec): string {
  const synopsis = spec.flags.map((
    f,
  ) => (f.kind === "boolean"
    ? `[--${f.name}]`
    : `[--${f.name} ${f.value ?? "VALUE"}]${f.kind === "multi" ? "..." : ""}`)
  );
  const rows = spec.flags.map((f) => [`  --${f.name}${f.kind === "boolean" ? "" : ` ${f.value ?? "VALUE"}`}`, f.help]);
  rows.push(["  -h, --help", "Show this help"]);
  const width = Math.max(...rows.map((r) => r[0].length)) + 2;
  return [
    `Usage: coder1 ${spec.name} ${synopsis.join(" ")}`,
    "",
    spec.summary,
    "",
    "Options:",
    ...rows.map(([l, r]) => l.padEnd(width) + r),
    ...(spec.notes ? ["", spec.notes] : []),
  ].join("\n");
}

/** Check for a TCP port number (0 means any free port). */
export function checkPort(value: string): string | undefined {
  return /^\d+$/.test(value) && Number(value) <= 65535 ? undefined : `must be a port number (0-65535), got "${value}"`;
}

/** Check for a positive integer. */
export function checkPositiveInt(value: string): string | undefined {
  return /^[1-9]\d{0,8}$/.test(value) ? undefined : `must be a positive whole number, got "${value}"`;
}

const DURATION_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Reads a duration: a whole number and a unit, `s`, `m`, `h` or `d`.
 *
 * @param value The text, e.g. `90s`, `30m`, `24h`, `7d`.
 * @returns Milliseconds, or undefined when it is not a duration.
 *
 * @example
 * ```ts
 * import { parseDuration } from "./args.ts";
 * console.log(parseDuration("30m")); // 1800000
 * ```
 */
export function parseDuration(value: string): number | undefined {
  const m = /^([1-9]\d{0,6})([smhd])$/.exec(value);
  return m ? Number(m[1]) * DURATION_UNITS[m[2]] : undefined;
}

/** Check for a duration ({@linkcode parseDuration}) of at most `maxMs`. */
export function checkDuration(maxMs: number): (value: string) => string | undefined {
  return (value) => {
    const ms = parseDuration(value);
    if (ms === undefined) return `must be a number and s, m, h or d (e.g. 30m, 24h), got "${value}"`;
    return ms > maxMs ? `must be at most ${Math.floor(maxMs / 86_400_000)}d` : undefined;
  };
}

/** Check for an http(s) URL. */
export function checkHttpUrl(value: string): string | undefined {
  try {
    const url = new URL(value);
    return url.protocol === "http:" || url.protocol === "https:" ? undefined : `must be an http(s) URL, got "${value}"`;
  } catch {
    return `must be a URL, got "${value}"`;
  }
}
