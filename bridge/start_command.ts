/**
 * `coder1 bridge start`: pick the relay, get a pairing code (flag, prompt or
 * stdin) unless a stored token will do, connect, and run the IDE's commands
 * until SIGINT/SIGTERM.
 *
 * @module
 */
import { type FlagValues, UsageError } from "../cli/args.ts";
import { defaultConfigDir } from "../cli/paths.ts";
import { dropUnusedPermissions } from "../cli/permissions.ts";
import { BRIDGE_START } from "../cli/specs.ts";
import { DEFAULT_MAX_COMMANDS } from "../shared/protocol.ts";
import { VERSION } from "../shared/version.ts";
import { CommandManager } from "./command_manager.ts";
import { CredentialStore } from "./credentials.ts";
import { resolveRelay } from "./relay_choice.ts";
import { runRelayLink } from "./relay_link.ts";
import { ShellRunner } from "./shell_runner.ts";

/**
 * Runs the bridge.
 *
 * @param flags Parsed {@linkcode BRIDGE_START} flags.
 * @returns The exit code.
 */
export async function bridgeStart(flags: FlagValues): Promise<number> {
  await dropUnusedPermissions("bridge");
  const asRoot = Deno.build.os !== "windows" && Deno.uid() === 0;
  if (asRoot && !flags["allow-root"]) {
    console.error("coder1: refusing to run the bridge as root: the IDE's commands would run as root.");
    console.error("Run it as your own user, or pass --allow-root if you really mean it.");
    return 1;
  }
  const store = new CredentialStore(defaultConfigDir());
  const { relay, ca } = await resolveRelay(flags, store, BRIDGE_START);
  const root = _resolveRoot((flags.cwd as string | undefined) ?? Deno.cwd());
  const verbose = Boolean(flags.verbose);
  const say = (m: string) => console.log(m);

  if (asRoot) console.error("Warning: running as root (--allow-root): commands from the IDE run as root.");

  const stored = flags.pair ? undefined : await store.get(relay.http);
  let auth: { code: string } | { token: string };
  if (typeof flags.code === "string") auth = { code: flags.code.replace(/\s/g, "") };
  else if (stored && stored.expiresAt > Date.now()) auth = { token: stored.token };
  else {
    const code = await _askCode();
    if (code === undefined) {
      console.error("coder1: no pairing code: pass --code, or type the 6 digits the IDE shows on stdin.");
      return 1;
    }
    if (!/^\d{6}$/.test(code)) {
      console.error(`coder1: "${code}" is not a pairing code: it has 6 digits, as the IDE shows them.`);
      return 1;
    }
    auth = { code };
  }

  const runner = new ShellRunner();
  if (!flags["no-banner"]) {
    say(`coder1 bridge ${VERSION}`);
    say(`  Relay:    ${relay.http}`);
    say(`  Commands: run in ${root} with ${runner.shell}`);
    say(
      `  ${
        "code" in auth
          ? "Pairing with the code from the IDE"
          : "Using the token stored for this relay (pair again with --pair)"
      }`,
    );
  }

  const abort = new AbortController();
  const stop = () => abort.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  try {
    const exit = await runRelayLink({
      relay,
      ca,
      identity: { name: (flags.name as string | undefined) ?? _hostname(), version: VERSION, os: Deno.build.os },
      auth,
      commands: (send) =>
        new CommandManager({
          runner,
          root,
          maxCommands: Number(flags["max-commands"] ?? DEFAULT_MAX_COMMANDS),
          defaultTimeoutMs: flags["command-timeout"] ? Number(flags["command-timeout"]) * 1000 : undefined,
          send,
          onEvent: verbose ? (m) => console.error(m) : undefined,
        }),
      onAuthenticated: async (ok, first) => {
        if (ok.token) {
          await store.put(relay.http, {
            token: ok.token,
            bridgeId: ok.bridgeId,
            expiresAt: ok.expiresAt,
            pairedAt: Date.now(),
          });
        }
        if (first) {
          say(
            `Bridge connected (bridge ${ok.bridgeId.slice(0, 8)}, token valid until ${
              new Date(ok.expiresAt).toISOString().slice(0, 10)
            })`,
          );
          say("Waiting for commands from the IDE. Press Ctrl-C to stop.");
        } else say("Bridge reconnected");
      },
      print: (m) => {
        if (verbose || m.startsWith("Connection")) console.error(m);
        else if (m.startsWith("Connecting")) say(m);
      },
      debug: verbose ? (m) => console.error(m) : () => {},
      signal: abort.signal,
    });
    if (exit.dropToken) await store.delete(relay.http);
    if (exit.message) console.error(`coder1: ${exit.message}`);
    else say("Bridge stopped.");
    return exit.code;
  } finally {
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
  }
}

function _resolveRoot(dir: string): string {
  try {
    const real = Deno.realPathSync(dir);
    if (Deno.statSync(real).isDirectory) return real;
  } catch {
    // Reported below.
  }
  throw new UsageError(`--cwd ${dir} is not a directory`, BRIDGE_START);
}

function _hostname(): string {
  try {
    return Deno.hostname().slice(0, 64) || "bridge";
  } catch {
    return "bridge";
  }
}

/** Reads the code: a prompt on a terminal, else the first line of stdin. */
async function _askCode(): Promise<string | undefined> {
  const tty = Deno.stdin.isTerminal();
  if (tty) await Deno.stdout.write(new TextEncoder().encode("Enter the 6-digit pairing code from the IDE: "));
  const reader = Deno.stdin.readable.getReader();
  const decoder = new TextDecoder();
  let line = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      line += decoder.decode(value, { stream: true });
      const nl = line.indexOf("\n");
      if (nl !== -1) {
        line = line.slice(0, nl);
        break;
      }
      if (line.length > 256) break;
    }
  } finally {
    reader.releaseLock();
  }
  const code = line.replace(/\s/g, "");
  return code === "" ? undefined : code;
}
