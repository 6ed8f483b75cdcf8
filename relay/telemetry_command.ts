/**
 * `coder1 relay telemetry`: prints everything the relay's telemetry file
 * holds, so operators and auditors see exactly what is kept. It reads the
 * file read-only; the relay may be running.
 *
 * @module
 */
import type { FlagValues } from "../cli/args.ts";
import { defaultDataDir } from "../cli/paths.ts";
import { dropUnusedPermissions } from "../cli/permissions.ts";
import { readTelemetry, TELEMETRY_FILE, type TelemetryDump } from "./telemetry.ts";

const UNIT_MS: Record<string, number> = { m: 60_000, h: 60 * 60_000, d: 24 * 60 * 60_000 };

/**
 * Parses an age such as `30m`, `12h` or `7d`.
 *
 * @param age The age (the flag's check has validated its shape).
 * @returns Milliseconds.
 *
 * @example
 * ```ts
 * import { parseAge } from "./telemetry_command.ts";
 * console.log(parseAge("7d")); // 604800000
 * ```
 */
export function parseAge(age: string): number {
  const m = /^(\d+)([mhd])$/.exec(age);
  if (!m) throw new RangeError(`Cannot read age "${age}": use a number and m, h or d`);
  return Number(m[1]) * UNIT_MS[m[2]];
}

/**
 * Runs the command.
 *
 * @param flags Parsed `relay telemetry` flags.
 * @returns The exit code.
 */
export async function relayTelemetry(flags: FlagValues): Promise<number> {
  await dropUnusedPermissions("relay");
  const dataDir = (flags["data-dir"] as string | undefined) ?? defaultDataDir();
  const file = `${dataDir}/${TELEMETRY_FILE}`;
  const since = typeof flags.since === "string" ? Date.now() - parseAge(flags.since) : undefined;
  let dump: TelemetryDump;
  try {
    dump = readTelemetry(file, { since });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    if (flags.json) console.log(JSON.stringify({ file, stored: false }));
    else {
      console.log(`No telemetry file at ${file}: nothing is stored.`);
      console.log("(The relay has not run with this data dir, or it runs with CODER1_TELEMETRY=false.)");
    }
    return 0;
  }
  if (flags.json) {
    console.log(JSON.stringify({ stored: true, ...dump }, null, 2));
    return 0;
  }
  console.log(formatTelemetry(dump));
  return 0;
}

/**
 * Renders a dump as text tables.
 *
 * @param dump What {@linkcode readTelemetry} returned.
 * @returns The text.
 */
export function formatTelemetry(dump: TelemetryDump): string {
  const out: string[] = [];
  const range = dump.since === undefined ? "everything stored" : `since ${new Date(dump.since).toISOString()}`;
  out.push(`Telemetry in ${dump.file} (kept ${dump.retentionDays} days; showing ${range}).`);
  out.push("Besides its signing key and revocation list, this is all the relay keeps on disk.");
  out.push("");
  out.push(`Connection events: ${dump.connections.length}`);
  out.push(..._table(
    ["TIME", "BRIDGE", "VERSION", "EVENT"],
    dump.connections.map((c) => [c.at, c.bridgeId, c.bridgeVersion, c.event]),
  ));
  out.push("");
  out.push(`Command counts per bridge per day (UTC): ${dump.commandCounts.length}`);
  out.push(..._table(
    ["DAY", "BRIDGE", "STARTED", "ENDED"],
    dump.commandCounts.map((c) => [c.day, c.bridgeId, String(c.started), String(c.ended)]),
  ));
  out.push("");
  out.push(`Crash reports: ${dump.crashes.length}`);
  for (const c of dump.crashes) {
    out.push(`  ${c.at}  ${c.errorClass}  version ${c.version}  ${c.os}`);
    out.push(`    message: ${c.message}`);
    if (c.stack) out.push(...c.stack.split("\n").map((l) => `    | ${l}`));
  }
  return out.join("\n");
}

function _table(head: string[], rows: string[][]): string[] {
  if (rows.length === 0) return ["  (none)"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => "  " + cells.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  return [line(head), ...rows.map(line)];
}
