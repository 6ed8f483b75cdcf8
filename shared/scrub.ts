/**
 * Scrubbing for crash reports: the only free text a bridge ever sends the
 * relay for its own use. The bridge scrubs a report before it stores and
 * before it sends it, and the relay scrubs it again before it keeps it, so
 * neither an old bridge nor a hostile one can make the relay store a path,
 * a quoted string, a token or a pairing code.
 *
 * What is replaced, in this order (each replacement is a `<placeholder>` that
 * no later rule matches, so scrubbing twice changes nothing):
 *
 * 1. Caller-given secrets (the home directory, the user name, the host name).
 * 2. Quoted strings: `"..."`, `` `...` `` and `'...'`, quotes included (an
 *    apostrophe inside a word, as in "can't", does not open a quote); an
 *    unterminated `"` or `` ` `` hides the rest of its line.
 * 3. URLs (`file://` ones become `<path>`, keeping a `:line:column` suffix).
 * 4. Paths: Windows (`C:\...`, `\\server\share`), home-relative (`~/...`),
 *    absolute Unix (`/...`), and relative ones with a slash (`a/b`, `./x`).
 * 5. E-mail addresses, JWT-looking tokens, UUIDs, IPv4 addresses, long hex
 *    and base64 runs, `NAME=value` assignments.
 * 6. Runs of five or more digits and `ddd ddd` (pairing codes, SAS values).
 *
 * It keeps error class names, plain words and short numbers (line and column
 * numbers of stack frames), which is what makes a crash report useful.
 *
 * @module
 */
import type { CrashBody } from "./protocol.ts";

/** Longest crash message kept, after scrubbing. */
export const MAX_CRASH_MESSAGE_CHARS = 1024;
/** Longest crash stack kept, after scrubbing. */
export const MAX_CRASH_STACK_CHARS = 4096;
/** Longest error class name, version or OS string. */
export const MAX_CRASH_LABEL_CHARS = 64;
/** Text longer than this is cut before scrubbing (bounds the work). */
const MAX_INPUT_CHARS = 16 * 1024;

/** Options for {@linkcode scrubText}. */
export interface ScrubOptions {
  /**
   * Literal strings to hide wherever they appear, such as the home
   * directory, the user name and the host name. Strings shorter than 3
   * characters are ignored (they would eat ordinary words).
   */
  secrets?: readonly string[];
}

// Placeholders contain no quote, slash, digit or `=`, so no rule matches them.
const PATH = "<path>";
const STR = "<str>";

type Rule = [RegExp, string | ((match: string, ...groups: string[]) => string)];

/** Keeps a `:line` or `:line:column` suffix of a path (stack frames). */
function _pathKeepingPosition(match: string): string {
  const suffix = /(?::\d{1,6}){1,2}$/.exec(match)?.[0] ?? "";
  return PATH + suffix;
}

const PATH_CHARS = String.raw`[^\s"'\x60<>()\[\]{},;|]`;

const RULES: Rule[] = [
  // Quoted strings, before paths: a quote may hold anything, spaces included.
  [/"(?:[^"\\\n]|\\.)*"/g, STR],
  [/`(?:[^`\\\n]|\\.)*`/g, STR],
  [/(?<![\p{L}\p{N}_])'(?:[^'\\\n]|\\.)*'(?![\p{L}\p{N}_])/gu, STR],
  // Whatever follows an unterminated double quote or backtick on its line.
  [/["`][^\n]*/g, STR],
  // URLs. file:// URLs are paths (stack frames keep their position).
  [new RegExp(String.raw`\bfile:\/\/${PATH_CHARS}*`, "gi"), _pathKeepingPosition],
  [/\b[a-z][a-z0-9+.-]*:\/\/[^\s"'`<>()\[\]{}]+/gi, "<url>"],
  // Windows drive paths and UNC paths.
  [new RegExp(String.raw`\b[A-Za-z]:[\\/]${PATH_CHARS}*`, "g"), _pathKeepingPosition],
  [new RegExp(String.raw`\\\\${PATH_CHARS}+`, "g"), _pathKeepingPosition],
  // Home-relative, absolute and relative Unix paths.
  [new RegExp(String.raw`(?<![\w.~-])~[\w.-]*(?:\/${PATH_CHARS}*)?`, "g"), _pathKeepingPosition],
  [new RegExp(String.raw`(?<![\w./-])\/${PATH_CHARS}+`, "g"), _pathKeepingPosition],
  [new RegExp(String.raw`(?<![\w/-])\.{1,2}\/${PATH_CHARS}*`, "g"), _pathKeepingPosition],
  [new RegExp(String.raw`\b[\w.-]+(?:[\\/][\w.-]+)+${PATH_CHARS}*`, "g"), _pathKeepingPosition],
  // Addresses, tokens and ids.
  [/[\w.+-]+@[\w-]+(?:\.[\w-]+)+/g, "<email>"],
  [/\beyJ[\w-]*\.[\w-]*(?:\.[\w-]*)?/g, "<token>"],
  [/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi, "<id>"],
  [/\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b/g, "<addr>"],
  [/\b[A-Za-z_][A-Za-z0-9_]*=[^\s)\]},;]*/g, "<assignment>"],
  [/\b[0-9a-f]{16,}\b/gi, "<hex>"],
  [/[A-Za-z0-9_+\/=-]{20,}/g, (m) => (/\d/.test(m) && /[A-Za-z]/.test(m) ? "<token>" : m)],
  // Pairing codes, SAS values and any other long number.
  [/\b\d{3}[ -]\d{3}\b/g, "<num>"],
  [/\d{5,}/g, "<num>"],
];

/**
 * Removes paths, quoted strings, tokens, codes and the given secrets from
 * free text, keeping words, error class names and short numbers.
 *
 * @param text The text (a crash message or stack).
 * @param options Extra literal secrets to hide.
 * @returns The scrubbed text (also with control characters other than
 *   newline and tab removed, cut to 16 KiB before scrubbing).
 *
 * @example
 * ```ts
 * import { scrubText } from "./scrub.ts";
 * console.log(scrubText(`cannot open "/home/ada/notes.txt" (code 482913)`));
 * // cannot open <str> (code <num>)
 * ```
 */
export function scrubText(text: string, options: ScrubOptions = {}): string {
  // deno-lint-ignore no-control-regex
  let out = text.slice(0, MAX_INPUT_CHARS).replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "");
  const secrets = [...new Set(options.secrets ?? [])].filter((s) => s.length >= 3)
    .sort((a, b) => b.length - a.length);
  for (const secret of secrets) out = out.split(secret).join("<redacted>");
  for (const [pattern, replacement] of RULES) {
    out = out.replace(pattern, replacement as (m: string) => string);
  }
  return out;
}

/**
 * Validates and scrubs a crash report from an untrusted source (a frame
 * body, a file): every field is checked for type, scrubbed and cut to its
 * limit.
 *
 * @param input The parsed JSON object.
 * @param options Extra literal secrets to hide.
 * @returns The clean report, or undefined when the shape is wrong.
 *
 * @example
 * ```ts
 * import { sanitizeCrash } from "./scrub.ts";
 * const report = sanitizeCrash({ errorClass: "TypeError", message: "bad '/etc/x'", version: "1", os: "linux" });
 * console.log(report?.message); // bad <str>
 * ```
 */
export function sanitizeCrash(input: Record<string, unknown>, options: ScrubOptions = {}): CrashBody | undefined {
  const { errorClass, message, stack, version, os } = input;
  if (typeof errorClass !== "string" || typeof message !== "string") return undefined;
  if (typeof version !== "string" || typeof os !== "string") return undefined;
  if (stack !== undefined && typeof stack !== "string") return undefined;
  const label = (value: string, fallback: string) =>
    new RegExp(`^[A-Za-z0-9_.+$-]{1,${MAX_CRASH_LABEL_CHARS}}$`).test(value) ? value : fallback;
  const report: CrashBody = {
    errorClass: /^[A-Za-z_$][\w$]*$/.test(errorClass) ? label(errorClass, "Error") : "Error",
    message: scrubText(message, options).slice(0, MAX_CRASH_MESSAGE_CHARS),
    version: label(version, "unknown"),
    os: label(os, "unknown"),
  };
  if (stack) report.stack = scrubText(stack, options).slice(0, MAX_CRASH_STACK_CHARS);
  return report;
}
