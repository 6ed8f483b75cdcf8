/**
 * coder1's entry point: parse the command line, dispatch, print usage.
 * The work lives in relay/ and bridge/.
 *
 * @module
 */
import { parseFlags, usage, UsageError } from "./cli/args.ts";
import { COMMANDS, GROUPS, groupUsage, TOP_USAGE } from "./cli/specs.ts";

/**
 * Runs coder1 with `args` and returns the exit code.
 *
 * @param args Command-line arguments.
 * @returns 0 on success, 1 on failure, 2 on a usage error.
 */
export async function main(args: string[]): Promise<number> {
  const [first, second] = args;
  if (first === undefined) {
    console.log(TOP_USAGE);
    return 2;
  }
  if (HELP_WORDS.has(first)) return _help(args.slice(1));
  if (first === "--version" || first === "-V" || first === "version") {
    const { versionInfo, versionLine } = await import("./cli/version_text.ts");
    console.log(versionLine(await versionInfo()));
    return 0;
  }
  // `coder1 bridge --help`, `coder1 bridge help [start]`: the same as `coder1 help bridge [start]`.
  if (GROUPS.has(first) && (second === undefined || HELP_WORDS.has(second))) {
    if (second === undefined) {
      return _usageError(new UsageError(`"coder1 ${first}" needs a command`), groupUsage(first));
    }
    return _help([first, ...args.slice(2)]);
  }
  // One-word commands (`doctor`) take their flags right after the name.
  const name = COMMANDS[first] ? first : `${first} ${second ?? ""}`.trim();
  const spec = COMMANDS[name];
  if (!spec) {
    const group = Object.keys(COMMANDS).filter((c) => c.startsWith(`${first} `));
    const hint = group.length ? `; try: ${group.map((c) => `coder1 ${c}`).join(", ")}` : "";
    return _usageError(new UsageError(`unknown command "${name}"${hint}`));
  }
  const rest = args.slice(name.split(" ").length);
  try {
    const flags = parseFlags(spec, rest);
    if (flags.help) {
      console.log(usage(spec));
      return 0;
    }
    switch (name) {
      case "relay serve":
        return await (await import("./relay/serve_command.ts")).relayServe(flags);
      case "relay telemetry":
        return await (await import("./relay/telemetry_command.ts")).relayTelemetry(flags);
      case "bridge start":
        return await (await import("./bridge/start_command.ts")).bridgeStart(flags);
      case "doctor":
        return await (await import("./cli/doctor_command.ts")).doctor(flags);
      case "bridge status":
        return await (await import("./bridge/account_commands.ts")).bridgeStatus(flags);
      default:
        return await (await import("./bridge/account_commands.ts")).bridgeLogout(flags);
    }
  } catch (error) {
    if (error instanceof UsageError) return _usageError(error);
    if (error instanceof Deno.errors.NotCapable) {
      console.error(`coder1: not permitted: ${error.message}`);
      return 1;
    }
    console.error(`coder1: ${(error as Error).message ?? error}`);
    return 1;
  }
}

/** `help`, `--help` and `-h`, wherever help may be asked for. */
const HELP_WORDS = new Set(["help", "--help", "-h"]);

/** Prints help on a command, a group (`bridge`) or everything; exit 0, or 2 for an unknown topic. */
function _help(words: string[]): number {
  const topic = words.filter((w) => !HELP_WORDS.has(w)).join(" ");
  if (!topic) console.log(TOP_USAGE);
  else if (COMMANDS[topic]) console.log(usage(COMMANDS[topic]));
  else if (GROUPS.has(topic)) console.log(groupUsage(topic));
  else {
    const group = words[0] !== undefined && GROUPS.has(words[0]) ? groupUsage(words[0]) : undefined;
    return _usageError(new UsageError(`no help on "${topic}": unknown command`), group);
  }
  return 0;
}

function _usageError(error: UsageError, text?: string): number {
  console.error(`coder1: ${error.message}`);
  console.error("");
  console.error(text ?? (error.spec ? usage(error.spec) : TOP_USAGE));
  return 2;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
