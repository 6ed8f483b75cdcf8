/**
 * coder1's entry point: parse the command line, dispatch, print usage.
 * The work lives in relay/ and bridge/.
 *
 * @module
 */
import { parseFlags, usage, UsageError } from "./cli/args.ts";
import { COMMANDS, TOP_USAGE } from "./cli/specs.ts";

/**
 * Runs coder1 with `args` and returns the exit code.
 *
 * @param args Command-line arguments.
 * @returns 0 on success, 1 on failure, 2 on a usage error.
 */
export async function main(args: string[]): Promise<number> {
  const [first, second] = args;
  if (first === undefined || first === "help" || first === "--help" || first === "-h") {
    const topic = args.slice(1).join(" ");
    if (first === "help" && topic) {
      const spec = COMMANDS[topic];
      if (!spec) return _usageError(new UsageError(`unknown command "${topic}"`));
      console.log(usage(spec));
      return 0;
    }
    console.log(TOP_USAGE);
    return first === undefined ? 2 : 0;
  }
  if (first === "--version" || first === "-V" || first === "version") {
    const { versionInfo, versionLine } = await import("./cli/version_text.ts");
    console.log(versionLine(await versionInfo()));
    return 0;
  }
  const name = `${first} ${second ?? ""}`.trim();
  const spec = COMMANDS[name];
  if (!spec) {
    const group = Object.keys(COMMANDS).filter((c) => c.startsWith(`${first} `));
    const hint = group.length ? `; try: ${group.map((c) => `coder1 ${c}`).join(", ")}` : "";
    return _usageError(new UsageError(`unknown command "${name}"${hint}`));
  }
  try {
    const flags = parseFlags(spec, args.slice(2));
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

function _usageError(error: UsageError): number {
  console.error(`coder1: ${error.message}`);
  console.error("");
  console.error(error.spec ? usage(error.spec) : TOP_USAGE);
  return 2;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
