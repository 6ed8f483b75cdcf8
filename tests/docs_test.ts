/**
 * The docs' tables, checked against the code so that they cannot drift (the
 * way tests/deploy_test.ts pins the Dockerfile to cli/permissions.ts):
 *
 * - the frame-type table of docs/PROTOCOL.md is `FRAME_TABLE`, row for row
 *   (name, code, senders, kind, sealed, stream, body), with no extra rows;
 * - every close-code table in the docs (a table whose columns start with Code
 *   and Name) is `CloseCode`, row for row, with no extra rows;
 * - the constants tables of docs/PROTOCOL.md (columns Constant and Value) hold
 *   every exported number of shared/protocol.ts but `PROTOCOL_VERSION`, with
 *   its value, and nothing that is not an export;
 * - the other-limits table (columns Name, Where and Value) matches the
 *   constants in the files it names;
 * - `PROTOCOL_VERSION` and `WS_SUBPROTOCOL` are stated with their values;
 * - SECURITY.md's permission table (net, env, sys, run, ffi) and compiled flags
 *   are those of cli/permissions.ts;
 * - every relative link in README.md, SECURITY.md and docs/*.md reaches an
 *   existing file and, for a Markdown file, an existing heading or anchor.
 *
 * Values are written as an exact number and a unit (docs/PROTOCOL.md,
 * "Limits"); {@linkcode parseValue} reads them.
 */
import assert from "node:assert/strict";
import { compileFlags, ENV_NAMES, permissionFlags, SYS_APIS } from "../cli/permissions.ts";
import * as protocol from "../shared/protocol.ts";
import { CloseCode, FRAME_TABLE, type FrameSpec, PROTOCOL_VERSION, WS_SUBPROTOCOL } from "../shared/protocol.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const PROTOCOL_DOC = "docs/PROTOCOL.md";

/** One table row: its cells (backticks kept) and where it is. */
interface Row {
  line: number;
  cells: string[];
}

/** One Markdown table and the heading it sits under. */
interface Table {
  doc: string;
  line: number;
  /** The nearest heading above the table. */
  heading: string;
  header: string[];
  rows: Row[];
}

/** What the checks need of a Markdown file. */
interface Doc {
  path: string;
  text: string;
  tables: Table[];
  /** Heading slugs (GitHub's rules) and explicit `<a id>` anchors. */
  anchors: Set<string>;
  /** Relative links: target as written, and the line. */
  links: { target: string; line: number }[];
}

/** Every Markdown file whose links and tables are checked. */
const DOC_PATHS = [
  "README.md",
  "SECURITY.md",
  ...[...Deno.readDirSync(`${ROOT}/docs`)].filter((e) => e.isFile && e.name.endsWith(".md")).map((e) =>
    `docs/${e.name}`
  ).sort(),
];

const _docs = new Map<string, Doc>();

/** Reads and parses a Markdown file (relative to the repository root), once. */
function doc(path: string): Doc {
  let parsed = _docs.get(path);
  if (!parsed) {
    parsed = parseMarkdown(path, Deno.readTextFileSync(`${ROOT}/${path}`));
    _docs.set(path, parsed);
  }
  return parsed;
}

/**
 * Parses the parts of Markdown the checks use: headings, tables and relative
 * links, outside fenced code blocks.
 */
function parseMarkdown(path: string, text: string): Doc {
  const lines = text.split("\n");
  const tables: Table[] = [];
  const anchors = new Set<string>();
  const slugCount = new Map<string, number>();
  const links: Doc["links"] = [];
  let heading = "";
  let fenced = false;
  const scanLinks = (line: string, at: number) => {
    for (const m of line.replace(/`[^`]*`/g, "").matchAll(/\]\(([^)\s]+)\)/g)) {
      if (!/^[a-z]+:/i.test(m[1])) links.push({ target: m[1], line: at + 1 });
    }
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (/^\s*```/.test(line)) {
      fenced = !fenced;
      continue;
    }
    if (fenced) continue;
    for (const m of line.matchAll(/<a\s+(?:id|name)="([^"]+)"/g)) anchors.add(m[1]);
    const h = /^(#{1,6})\s+(.*?)\s*$/.exec(line);
    if (h) {
      heading = h[2];
      // GitHub numbers repeated slugs: x, x-1, x-2, ...
      const base = slugify(heading);
      const n = slugCount.get(base) ?? 0;
      slugCount.set(base, n + 1);
      anchors.add(n === 0 ? base : `${base}-${n}`);
      continue;
    }
    scanLinks(line, i);
    if (line.startsWith("|") && i + 1 < lines.length && /^\|(\s*:?-+:?\s*\|)+\s*$/.test(lines[i + 1])) {
      const table: Table = { doc: path, line: i + 1, heading, header: splitRow(line), rows: [] };
      i += 2;
      for (; i < lines.length && lines[i].startsWith("|"); i++) {
        table.rows.push({ line: i + 1, cells: splitRow(lines[i]) });
        scanLinks(lines[i], i);
      }
      i--;
      tables.push(table);
    }
  }
  return { path, text, tables, anchors, links };
}

/** The cells of a table row; `\|` is a literal bar. */
function splitRow(line: string): string[] {
  const cells: string[] = [];
  let cell = "";
  for (let i = 0; i < line.length; i++) {
    if (line[i] === "\\" && line[i + 1] === "|") {
      cell += "|";
      i++;
    } else if (line[i] === "|") {
      cells.push(cell.trim());
      cell = "";
    } else cell += line[i];
  }
  cells.push(cell.trim());
  return cells.slice(1, -1);
}

/** A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens. */
function slugify(heading: string): string {
  return heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, "$1")
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, "")
    .replace(/ /g, "-");
}

/** A cell without its backticks. */
function plain(cell: string): string {
  return cell.replace(/`/g, "").trim();
}

/** Tables of `d` whose header starts with `columns`. */
function tablesWith(d: Doc, columns: string[]): Table[] {
  return d.tables.filter((t) => columns.every((c, i) => t.header[i] === c));
}

/** Fails with every problem, one per line, or passes when there are none. */
function report(what: string, problems: string[]): void {
  assert.ok(problems.length === 0, `${what}:\n  ${problems.join("\n  ")}`);
}

const SIZE_UNITS: Record<string, number> = { B: 1, byte: 1, bytes: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };
const TIME_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  min: 60_000,
  h: 3_600_000,
  day: 86_400_000,
  days: 86_400_000,
};
const VALUE = new RegExp(
  String.raw`^(0x[0-9a-fA-F]+|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)` +
    String.raw`(?:\s+(${[...Object.keys(SIZE_UNITS), ...Object.keys(TIME_UNITS)].join("|")}))?(?=$|[\s(,;])`,
);

/**
 * Reads a value cell: an exact number (digits, optionally with `,` between
 * thousands, or `0x` hex), then an optional unit, then anything (a note).
 * Constants named `*_MS` need a time unit (the value is in milliseconds),
 * `*_SECONDS` a time unit (in seconds), `*_BYTES` a size unit; any other
 * constant is a count (no unit) or a size.
 *
 * @param cell The table cell.
 * @param name The constant's name, which says what unit it is in.
 * @returns The value in the constant's own unit, or a message saying why not.
 */
function parseValue(cell: string, name: string): number | string {
  const m = VALUE.exec(cell.trim());
  if (!m) return `"${cell}" does not start with a number (and unit) in the documented format`;
  const number = Number(m[1].replace(/,/g, ""));
  const unit = m[2];
  const isTime = unit !== undefined && unit in TIME_UNITS;
  const isSize = unit !== undefined && unit in SIZE_UNITS;
  if (name.endsWith("_MS")) {
    return isTime ? number * TIME_UNITS[unit] : `"${cell}" needs a time unit (ms, s, min, h, days)`;
  }
  if (name.endsWith("_SECONDS")) {
    return isTime ? number * TIME_UNITS[unit] / 1000 : `"${cell}" needs a time unit (ms, s, min, h, days)`;
  }
  if (name.endsWith("_BYTES")) return isSize ? number * SIZE_UNITS[unit] : `"${cell}" needs a size unit (B, KiB, MiB)`;
  if (isTime) return `"${cell}" has a time unit, but ${name} is not named *_MS or *_SECONDS`;
  return isSize ? number * SIZE_UNITS[unit] : number;
}

/**
 * Evaluates the numeric literal expression a constant is declared with:
 * numbers (with `_` separators), `+ - * / **` and parentheses.
 */
function evaluate(expression: string): number | undefined {
  const tokens = [...expression.matchAll(/\s*(\d[\d_]*(?:\.\d+)?|\*\*|[-+*/()])\s*/gy)].map((m) => m[1]);
  if (tokens.join("").replace(/\s/g, "") !== expression.replace(/\s/g, "")) return undefined;
  let at = 0;
  const peek = () => tokens[at];
  const primary = (): number => {
    const t = tokens[at++];
    if (t === "(") {
      const v = sum();
      if (tokens[at++] !== ")") throw new SyntaxError("Cannot evaluate: unbalanced parentheses");
      return v;
    }
    if (t === "-") return -primary();
    if (t === undefined || !/^\d/.test(t)) throw new SyntaxError(`Cannot evaluate: unexpected ${t}`);
    return Number(t.replace(/_/g, ""));
  };
  const power = (): number => {
    const base = primary();
    if (peek() !== "**") return base;
    at++;
    return base ** power();
  };
  const product = (): number => {
    let v = power();
    while (peek() === "*" || peek() === "/") v = tokens[at++] === "*" ? v * power() : v / power();
    return v;
  };
  const sum = (): number => {
    let v = product();
    while (peek() === "+" || peek() === "-") v = tokens[at++] === "+" ? v + product() : v - product();
    return v;
  };
  try {
    const v = sum();
    return at === tokens.length ? v : undefined;
  } catch {
    return undefined;
  }
}

const YES_NO: Record<string, boolean> = { yes: true, no: false };

Deno.test("docs: the value format of the constants tables is read exactly", () => {
  assert.equal(parseValue("1 MiB", "MAX_FRAME_BYTES"), 1_048_576);
  assert.equal(parseValue("1,048,576 B (1 MiB)", "MAX_FRAME_BYTES"), 1_048_576);
  assert.equal(parseValue("5 min", "CODE_TTL_MS"), 300_000);
  assert.equal(parseValue("30 days", "BRIDGE_TOKEN_TTL_MS"), 2_592_000_000);
  assert.equal(parseValue("2,147,483,647 ms (about 24.8 days)", "MAX_COMMAND_TIMEOUT_MS"), 2 ** 31 - 1);
  assert.equal(parseValue("5 s", "CLOCK_TOLERANCE_SECONDS"), 5);
  assert.equal(parseValue("0x02", "FLAG_STREAM_SEQ"), 2);
  assert.equal(parseValue("65,536", "MAX_COMMAND_LENGTH"), 65_536);
  assert.equal(parseValue("64 characters", "MAX_ID_LENGTH"), 64);
  assert.equal(typeof parseValue("45000", "HEARTBEAT_TIMEOUT_MS"), "string", "a time without a unit");
  assert.equal(typeof parseValue("8 KiB", "AUTH_DEADLINE_MS"), "string", "a size for a time");
  assert.equal(typeof parseValue("5 s", "MAX_ID_LENGTH"), "string", "a time for a count");
  assert.equal(typeof parseValue("1.048.576", "MAX_FRAME_BYTES"), "string", "dots between thousands");
  assert.equal(typeof parseValue("about 1 MiB", "MAX_FRAME_BYTES"), "string", "a value must come first");
  assert.equal(evaluate("30 * 24 * 60 * 60_000"), 2_592_000_000);
  assert.equal(evaluate("2 ** 31 - 1"), 2_147_483_647);
  assert.equal(evaluate("24 + 64"), 88);
  assert.equal(evaluate("FOO * 2"), undefined);
});

Deno.test("docs: the frame-type table in docs/PROTOCOL.md is FRAME_TABLE, row for row", () => {
  const d = doc(PROTOCOL_DOC);
  const tables = tablesWith(d, ["Name", "Code", "Sender", "Kind", "Sealed", "Stream", "Body"]);
  assert.equal(tables.length, 1, `${PROTOCOL_DOC} must have one frame-type table (Name | Code | Sender | ...)`);
  const [table] = tables;
  const where = (row: Row) => `${PROTOCOL_DOC}:${row.line}`;
  const specs: Record<string, FrameSpec> = FRAME_TABLE;
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const row of table.rows) {
    const [name, code, sender, kind, sealed, stream, body] = row.cells.map(plain);
    const spec = specs[name];
    if (seen.has(name)) problems.push(`${where(row)}: \`${name}\` has two rows`);
    seen.add(name);
    if (!spec) {
      problems.push(`${where(row)}: \`${name}\` is not in FRAME_TABLE (remove the row, or add the type)`);
      continue;
    }
    const differs = (field: string, docValue: string, codeValue: string) => {
      if (docValue !== codeValue) {
        problems.push(
          `${where(row)}: \`${name}\` ${field}: the doc says "${docValue}", FRAME_TABLE has "${codeValue}"`,
        );
      }
    };
    const hex = (n: number) => `0x${n.toString(16).padStart(2, "0")}`;
    differs("code", Number.isInteger(Number(code)) ? hex(Number(code)) : code, hex(spec.code));
    const senders = sender.split(/\s*,\s*/).map((s) => s.toLowerCase()).sort().join(", ");
    differs("sender", senders, [...spec.from].sort().join(", "));
    differs("kind", kind, spec.kind);
    differs("sealed", String(YES_NO[sealed] ?? sealed), String(spec.sealed));
    differs("stream", String(YES_NO[stream] ?? stream), String(spec.stream));
    differs("body", body, spec.body);
  }
  for (const [name, spec] of Object.entries(specs)) {
    if (!seen.has(name)) {
      problems.push(`${PROTOCOL_DOC}:${table.line}: no row for \`${name}\` (code 0x${spec.code.toString(16)})`);
    }
  }
  report("The frame-type table does not match FRAME_TABLE in shared/protocol.ts", problems);
});

Deno.test("docs: every close-code table is CloseCode, row for row", () => {
  const codes: Record<string, number> = CloseCode;
  const problems: string[] = [];
  let found = 0;
  for (const path of DOC_PATHS) {
    for (const table of tablesWith(doc(path), ["Code", "Name"])) {
      found++;
      const seen = new Map<string, number>();
      for (const row of table.rows) {
        const where = `${path}:${row.line}`;
        const code = Number(plain(row.cells[0]));
        const name = plain(row.cells[1]);
        if (seen.has(name)) problems.push(`${where}: \`${name}\` has two rows`);
        seen.set(name, code);
        if (!(name in codes)) {
          problems.push(
            `${where}: ${row.cells[0]} \`${name}\` is not in CloseCode (standard codes go in another table)`,
          );
        } else if (codes[name] !== code) {
          problems.push(`${where}: \`${name}\` is ${row.cells[0]} in the doc, ${codes[name]} in CloseCode`);
        }
      }
      for (const [name, code] of Object.entries(codes)) {
        if (!seen.has(name)) problems.push(`${path}:${table.line}: no row for ${code} \`${name}\``);
      }
    }
  }
  assert.ok(
    tablesWith(doc(PROTOCOL_DOC), ["Code", "Name"]).some((t) => t.heading === "Close codes"),
    `${PROTOCOL_DOC} must have a close-code table (Code | Name | ...) under "Close codes"`,
  );
  assert.ok(found > 0);
  report("A close-code table does not match CloseCode in shared/protocol.ts", problems);
});

Deno.test("docs: the constants tables hold every number of shared/protocol.ts with its value", () => {
  const d = doc(PROTOCOL_DOC);
  const exports: Record<string, unknown> = protocol;
  const tables = tablesWith(d, ["Constant", "Value"]);
  assert.ok(tables.some((t) => t.heading === "Limits"), `${PROTOCOL_DOC} must have a limits table under "Limits"`);
  const problems: string[] = [];
  const documented = new Map<string, string>();
  for (const table of tables) {
    for (const row of table.rows) {
      const where = `${PROTOCOL_DOC}:${row.line}`;
      const name = plain(row.cells[0]);
      const cell = row.cells[1];
      if (documented.has(name)) problems.push(`${where}: ${name} is documented twice (also ${documented.get(name)})`);
      documented.set(name, where);
      if (!(name in exports)) {
        problems.push(`${where}: ${name} is not exported by shared/protocol.ts (remove the row, or export it)`);
        continue;
      }
      const value = exports[name];
      if (typeof value === "string") {
        const literal = /`([^`]*)`/.exec(cell)?.[1];
        if (literal !== value) problems.push(`${where}: ${name}: the doc says ${cell}, the code has "${value}"`);
      } else if (typeof value === "number") {
        const parsed = parseValue(cell, name);
        if (typeof parsed === "string") problems.push(`${where}: ${name}: ${parsed}`);
        else if (parsed !== value) {
          problems.push(`${where}: ${name}: the doc says "${cell}" (${parsed}), shared/protocol.ts has ${value}`);
        }
      } else problems.push(`${where}: ${name} is neither a number nor a string`);
    }
  }
  for (const [name, value] of Object.entries(exports)) {
    if (typeof value !== "number" || name === "PROTOCOL_VERSION" || documented.has(name)) continue;
    problems.push(`${PROTOCOL_DOC}: ${name} (${value}) is missing from the limits table (section "Limits")`);
  }
  report("The constants tables do not match shared/protocol.ts", problems);
});

Deno.test("docs: the other limits match the constants in the files they name", () => {
  const problems: string[] = [];
  const tables = tablesWith(doc(PROTOCOL_DOC), ["Name", "Where", "Value"]);
  assert.ok(tables.length > 0, `${PROTOCOL_DOC} must have an other-limits table (Name | Where | Value | ...)`);
  for (const row of tables.flatMap((t) => t.rows)) {
    const where = `${PROTOCOL_DOC}:${row.line}`;
    const name = plain(row.cells[0]);
    const file = plain(row.cells[1]);
    if (!/^[A-Z][A-Z0-9_]*$/.test(name)) continue; // A flag or a field, not a constant.
    let source: string;
    try {
      source = Deno.readTextFileSync(`${ROOT}/${file}`);
    } catch {
      problems.push(`${where}: ${name}: cannot read ${file}`);
      continue;
    }
    const declaration = new RegExp(String.raw`^\s*(?:export\s+)?const\s+${name}\s*(?::[^=]+)?=\s*([^;\n]+);`, "m")
      .exec(source);
    if (!declaration) {
      problems.push(`${where}: ${name} is not declared in ${file}`);
      continue;
    }
    const value = evaluate(declaration[1]);
    const parsed = parseValue(row.cells[2], name);
    if (value === undefined) problems.push(`${where}: ${name} = ${declaration[1]} in ${file} is not a plain number`);
    else if (typeof parsed === "string") problems.push(`${where}: ${name}: ${parsed}`);
    else if (parsed !== value) {
      problems.push(`${where}: ${name}: the doc says "${row.cells[2]}" (${parsed}), ${file} has ${value}`);
    }
  }
  report("The other-limits table does not match the code", problems);
});

Deno.test("docs: PROTOCOL_VERSION and WS_SUBPROTOCOL are stated with their values", () => {
  const d = doc(PROTOCOL_DOC);
  const title = /^# .*version (\d+)\s*$/m.exec(d.text);
  assert.equal(Number(title?.[1]), PROTOCOL_VERSION, `${PROTOCOL_DOC}'s title must name protocol ${PROTOCOL_VERSION}`);
  assert.ok(d.text.includes("`PROTOCOL_VERSION`"), `${PROTOCOL_DOC} must name PROTOCOL_VERSION`);
  assert.ok(
    new RegExp(String.raw`\x60PROTOCOL_VERSION\x60 = \*\*${PROTOCOL_VERSION}\*\*`).test(d.text),
    `${PROTOCOL_DOC} must say \`PROTOCOL_VERSION\` = **${PROTOCOL_VERSION}**`,
  );
  assert.ok(
    d.text.includes(`\`WS_SUBPROTOCOL\` = \`${WS_SUBPROTOCOL}\``),
    `${PROTOCOL_DOC} must say \`WS_SUBPROTOCOL\` = \`${WS_SUBPROTOCOL}\``,
  );
  const stale = [...d.text.matchAll(/coder1\.v(\d+)/g)].filter((m) => Number(m[1]) !== PROTOCOL_VERSION);
  assert.deepEqual(stale.map((m) => m[0]), [], `${PROTOCOL_DOC} names another subprotocol`);
  const e2e = doc("docs/E2E.md");
  assert.equal(Number(/^# .*protocol (\d+)/m.exec(e2e.text)?.[1]), PROTOCOL_VERSION, "docs/E2E.md's title");
});

Deno.test("docs: SECURITY.md's permission table and compiled flags are those of cli/permissions.ts", () => {
  const d = doc("SECURITY.md");
  const [table] = tablesWith(d, ["Permission", "`relay serve`"]);
  assert.ok(table, "SECURITY.md must have the permission table (Permission | `relay serve` | `bridge start` ...)");
  const problems: string[] = [];
  const roles = ["relay", "bridge"] as const;
  const names = (cell: string) => [...cell.matchAll(/`([A-Za-z_][A-Za-z0-9_]*)`/g)].map((m) => m[1]).sort();
  const row = (permission: string) => table.rows.find((r) => r.cells[0] === permission);
  for (const [column, role] of roles.entries()) {
    const flags = permissionFlags(role);
    const at = (permission: string) => {
      const found = row(permission);
      if (!found) problems.push(`SECURITY.md:${table.line}: no ${permission} row`);
      return found ? { line: found.line, cell: found.cells[column + 1] } : undefined;
    };
    for (const [permission, expected] of [["env", ENV_NAMES[role]], ["sys", SYS_APIS[role]]] as const) {
      const cell = at(permission);
      if (cell && names(cell.cell).join(",") !== [...expected].sort().join(",")) {
        problems.push(
          `SECURITY.md:${cell.line}: ${permission} for the ${role} says ${names(cell.cell).join(", ") || "none"}; ` +
            `cli/permissions.ts grants ${expected.join(", ") || "none"}`,
        );
      }
    }
    for (const permission of ["net", "run", "ffi"]) {
      const cell = at(permission);
      const granted = flags.includes(`--allow-${permission}`);
      if (cell && cell.cell.includes(`--allow-${permission}`) !== granted) {
        problems.push(`SECURITY.md:${cell.line}: ${permission} for the ${role}: cli/permissions.ts grants ${granted}`);
      }
    }
  }
  const block = /```\n(--allow-net[^`]*)```/.exec(d.text)?.[1].trim().split(/\s+/);
  assert.ok(block, "SECURITY.md must show the compiled binary's flags in a code block");
  if (block.join(" ") !== compileFlags().join(" ")) {
    problems.push(
      `SECURITY.md: the compiled flags are "${block.join(" ")}", compileFlags() gives "${compileFlags().join(" ")}"`,
    );
  }
  report("SECURITY.md's permissions do not match cli/permissions.ts", problems);
});

Deno.test("docs: every relative link in README.md, SECURITY.md and docs/ reaches a file and a heading", () => {
  const problems: string[] = [];
  for (const path of DOC_PATHS) {
    const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/") + 1) : "";
    for (const { target, line } of doc(path).links) {
      const [file, anchor] = target.split("#", 2);
      const resolved = file === "" ? path : new URL(file, `file:///${dir}`).pathname.slice(1);
      const where = `${path}:${line}: (${target})`;
      let isFile = false;
      try {
        isFile = Deno.statSync(`${ROOT}/${resolved}`).isFile;
      } catch {
        problems.push(`${where} ${resolved} does not exist`);
        continue;
      }
      if (anchor === undefined || !isFile || !resolved.endsWith(".md")) continue;
      if (!doc(resolved).anchors.has(anchor)) problems.push(`${where} ${resolved} has no heading or anchor #${anchor}`);
    }
  }
  report("Broken links in the docs", problems);
});
