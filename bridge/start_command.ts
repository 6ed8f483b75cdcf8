/**
 * `coder1 bridge start`: pick the relay, get a pairing code (flag, prompt or
 * stdin) unless a stored token will do, connect, and run the IDE's commands
 * and terminals until SIGINT/SIGTERM.
 *
 * @module
 */
import { type FlagValues, parseDuration, UsageError } from "../cli/args.ts";
import { defaultConfigDir } from "../cli/paths.ts";
import { dropUnusedPermissions } from "../cli/permissions.ts";
import { BRIDGE_START } from "../cli/specs.ts";
import { systemClock } from "../shared/clock.ts";
import { fromBase64Url } from "../shared/e2e_crypto.ts";
import { DEFAULT_MAX_COMMANDS, TERMINAL_LINGER_MS } from "../shared/protocol.ts";
import { VERSION } from "../shared/version.ts";
import { TELEMETRY_ENV, telemetryEnabled } from "../shared/telemetry_setting.ts";
import { CommandManager } from "./command_manager.ts";
import { CrashReports } from "./crash_report.ts";
import { CredentialStore } from "./credentials.ts";
import { retryPending, revokeOrKeepPending } from "./token_revocation.ts";
import { FirstPairing } from "./first_pairing.ts";
import { loadIdentityKey } from "./identity_key.ts";
import { LineReader } from "./stdin_lines.ts";
import { resolveRelay } from "./relay_choice.ts";
import { endLink, runRelayLink } from "./relay_link.ts";
import { OrphanGuard } from "./orphan_guard.ts";
import { createPtySpawner, type PtySupport } from "./pty_factory.ts";
import { ShellRunner } from "./shell_runner.ts";
import { TerminalManager } from "./terminal_manager.ts";

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
  const clock = systemClock;
  let telemetry: boolean;
  try {
    telemetry = telemetryEnabled(Deno.env.get(TELEMETRY_ENV));
  } catch (error) {
    throw new UsageError((error as Error).message, BRIDGE_START);
  }
  // Crash reports hide these besides paths, quotes and tokens (bridge/crash_report.ts).
  const home = Deno.env.get("HOME");
  const crashes = new CrashReports(store.dir, [home, home?.split("/").pop(), _hostname(), root]);
  if (telemetry) crashes.install();
  else crashes.discard();

  if (asRoot) console.error("Warning: running as root (--allow-root): commands from the IDE run as root.");

  const lines = new LineReader();
  const warn = (m: string) => console.error(m);
  // Tokens dropped earlier while the relay was unreachable: revoke them now.
  await retryPending(store, relay.http, { ca, warn });
  const previous = await store.get(relay.http);
  if (flags.pair && previous) {
    // A new pairing replaces the old credential: it must stop working, not linger for 30 days.
    const outcome = await revokeOrKeepPending(store, relay.http, previous.token, { ca, warn, now: clock.now() });
    await store.delete(relay.http);
    if (outcome.kind === "revoked") say("Revoked this machine's previous token at the relay.");
  }
  const stored = flags.pair ? undefined : previous;
  let auth: { code: string } | { token: string };
  if (typeof flags.code === "string") auth = { code: flags.code.replace(/\s/g, "") };
  else if (stored && stored.expiresAt > clock.now()) auth = { token: stored.token };
  else {
    const code = await _askCode(lines);
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

  // Ends the commands' (and terminals') process groups should this process die without cleaning up.
  const guard = OrphanGuard.start((m) => verbose && console.error(m));
  const runner = new ShellRunner(undefined, guard);
  const pty: PtySupport = flags["no-terminal"]
    ? { unavailable: { reason: "disabled", message: "the bridge was started with --no-terminal" } }
    : await createPtySpawner();
  const lingerMs = typeof flags["terminal-linger"] === "string"
    ? parseDuration(flags["terminal-linger"])
    : TERMINAL_LINGER_MS;
  if (!flags["no-banner"]) {
    say(`coder1 bridge ${VERSION}`);
    say(`  Relay:    ${relay.http}`);
    say(`  Commands: run in ${root} with ${runner.shell}`);
    say(
      pty.spawner
        ? `  Terminals: ${runner.shell} -l in ${root}; one nobody is attached to ends after ${
          _duration(lingerMs ?? TERMINAL_LINGER_MS)
        }`
        : `  Terminals: off (${pty.unavailable.message})`,
    );
    say(
      `  ${
        "code" in auth
          ? "Pairing with the code from the IDE"
          : "Using the token stored for this relay (pair again with --pair)"
      }`,
    );
  }

  say(
    telemetry
      ? `Telemetry: on (the relay keeps connection times, version, command counts and crash reports, never commands or output; turn it off with ${TELEMETRY_ENV}=false)`
      : `Telemetry: off (${TELEMETRY_ENV}=false): the relay is asked to keep nothing about this bridge, and no crash reports are sent`,
  );
  const identityKey = await loadIdentityKey(store.dir);
  const abort = new AbortController();
  const pairing = new FirstPairing({
    store,
    relay: relay.http,
    // The approved IDE's key; a new pairing (a code) starts without one.
    pinned: "code" in auth || !stored?.pinnedIde ? undefined : fromBase64Url(stored.pinnedIde),
    approvalTimeoutMs: flags["approval-timeout"] ? Number(flags["approval-timeout"]) * 1000 : undefined,
    end: (exit) => endLink(abort, exit),
    prompt: async (text) => void await Deno.stdout.write(new TextEncoder().encode(text)),
    readLine: () => lines.next(),
    say,
    warn: (m) => console.error(m),
    debug: verbose ? (m) => console.error(m) : undefined,
    clock,
  });

  const stop = () => abort.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  try {
    const exit = await runRelayLink({
      relay,
      ca,
      identity: { name: (flags.name as string | undefined) ?? _hostname(), version: VERSION, os: Deno.build.os },
      auth,
      routingKey: "token" in auth ? stored?.routingKey : undefined,
      storedToken: async () => (await store.get(relay.http))?.token,
      telemetry,
      crashReport: { take: () => crashes.take(), sent: () => crashes.discard() },
      e2e: { identity: identityKey.keyPair, ...pairing.callbacks() },
      commands: (send) =>
        new CommandManager({
          runner,
          root,
          maxCommands: Number(flags["max-commands"] ?? DEFAULT_MAX_COMMANDS),
          defaultTimeoutMs: flags["command-timeout"] ? Number(flags["command-timeout"]) * 1000 : undefined,
          send,
          onEvent: verbose ? (m) => console.error(m) : undefined,
        }),
      terminals: (send, connected) =>
        new TerminalManager({
          spawner: pty.spawner,
          unavailable: pty.unavailable,
          root,
          shell: runner.shell,
          send,
          connected,
          lingerMs,
          guard,
          clock,
          onEvent: verbose ? (m) => console.error(m) : undefined,
        }),
      onAuthenticated: async (ok, first) => {
        await pairing.saveCredential(ok);
        if (first) {
          say(
            `Bridge connected (bridge ${ok.bridgeId.slice(0, 8)}, token valid until ${
              new Date(ok.expiresAt).toISOString().slice(0, 10)
            })`,
          );
          say(
            pairing.pinned
              ? "Waiting for commands from the approved IDE. Press Ctrl-C to stop."
              : "Waiting for the IDE to confirm this pairing ...",
          );
        } else say("Bridge reconnected");
      },
      print: (m) => {
        if (verbose || m.startsWith("Connection")) console.error(m);
        else if (m.startsWith("Connecting")) say(m);
      },
      debug: verbose ? (m) => console.error(m) : () => {},
      clock,
      signal: abort.signal,
    });
    if (exit.dropToken) {
      const dropped = await store.get(relay.http);
      // Refused here (digits that do not match): the relay still accepts the token, so revoke it there.
      if (dropped && !exit.refusedByRelay) {
        await revokeOrKeepPending(store, relay.http, dropped.token, { ca, warn, now: clock.now() });
      }
      await store.delete(relay.http);
      if (exit.note) await store.setNote(relay.http, { at: clock.now(), reason: exit.note });
    }
    if (exit.message) console.error(`coder1: ${exit.message}`);
    else say("Bridge stopped.");
    return exit.code;
  } finally {
    await guard.stop();
    pairing.stop();
    lines.cancel();
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

/** `90 s`, `30 min`, `24 h`, `7 days`: the largest unit that divides it. */
function _duration(ms: number): string {
  if (ms % 86_400_000 === 0) return ms === 86_400_000 ? "1 day" : `${ms / 86_400_000} days`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`;
  if (ms % 60_000 === 0) return `${ms / 60_000} min`;
  return `${Math.round(ms / 1000)} s`;
}

function _hostname(): string {
  try {
    return Deno.hostname().slice(0, 64) || "bridge";
  } catch {
    return "bridge";
  }
}

/** Reads the code: a prompt on a terminal, else the first line of stdin. */
async function _askCode(lines: LineReader): Promise<string | undefined> {
  if (Deno.stdin.isTerminal()) {
    await Deno.stdout.write(new TextEncoder().encode("Enter the 6-digit pairing code from the IDE: "));
  }
  const code = (await lines.next())?.replace(/\s/g, "");
  return code ? code : undefined;
}
