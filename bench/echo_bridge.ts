/**
 * Bench-only bridge: the real bridge link (bridge/relay_link.ts, with its
 * end-to-end gate, sealing and heartbeats) and the real command manager, but
 * a runner that spawns nothing: every command is an in-memory process that
 * echoes its stdin to its stdout. So an IDE's `cmd.stdin` frame comes back as
 * `cmd.stdout`, and the round trip measures the relay and the two ends, not
 * a child process. It is not part of the shipped CLI.
 *
 * It reuses a pairing made by the real bridge: the token, the pinned IDE key
 * and the identity key in `$XDG_CONFIG_HOME/coder1`, so it reconnects without
 * a SAS. Run it with the bridge role's permission flags (bench/bench.ts does):
 *
 * ```sh
 * deno run <bridge flags> bench/echo_bridge.ts --relay http://127.0.0.1:PORT
 * ```
 *
 * @module
 */
import { defaultConfigDir } from "../cli/paths.ts";
import { fromBase64Url } from "../shared/e2e_crypto.ts";
import { parseRelayUrl } from "../shared/relay_url.ts";
import { VERSION } from "../shared/version.ts";
import { CommandManager } from "../bridge/command_manager.ts";
import { CredentialStore } from "../bridge/credentials.ts";
import { loadIdentityKey } from "../bridge/identity_key.ts";
import { runRelayLink } from "../bridge/relay_link.ts";
import type { CommandRunner, ProcessExit, RunningProcess } from "../bridge/shell_runner.ts";

/** A runner whose processes echo stdin to stdout and exit 0 when stdin ends. */
export class EchoRunner implements CommandRunner {
  /** Starts an echo process; the command line is ignored. */
  spawn(_command: string, _options: { cwd: string }): RunningProcess {
    const exit = Promise.withResolvers<ProcessExit>();
    let out!: ReadableStreamDefaultController<Uint8Array>;
    const stdout = new ReadableStream<Uint8Array>({ start: (c) => void (out = c) });
    const end = (result: ProcessExit) => {
      try {
        out.close();
      } catch {
        // Already closed.
      }
      exit.resolve(result);
    };
    return {
      pid: 0,
      stdout,
      stderr: new ReadableStream({ start: (c) => c.close() }),
      stdin: new WritableStream({
        write: (chunk) => out.enqueue(chunk.slice()),
        close: () => end({ code: 0, signal: null }),
      }),
      exited: exit.promise,
      kill: (signal) => end({ code: null, signal }),
    };
  }
}

if (import.meta.main) {
  const at = Deno.args.indexOf("--relay");
  if (at < 0 || !Deno.args[at + 1]) {
    console.error("usage: echo_bridge.ts --relay URL");
    Deno.exit(2);
  }
  const relay = parseRelayUrl(Deno.args[at + 1]);
  const store = new CredentialStore(defaultConfigDir());
  const stored = await store.get(relay.http);
  if (!stored?.pinnedIde) {
    console.error(`echo bridge: no approved pairing for ${relay.http}; pair the real bridge first`);
    Deno.exit(1);
  }
  const pinned = fromBase64Url(stored.pinnedIde);
  const identity = await loadIdentityKey(store.dir);
  const abort = new AbortController();
  Deno.addSignalListener("SIGTERM", () => abort.abort());
  Deno.addSignalListener("SIGINT", () => abort.abort());
  const refuse = () => {
    console.error("echo bridge: a first pairing was asked for; it only reuses an approved one");
    abort.abort();
  };
  const exit = await runRelayLink({
    relay,
    identity: { name: "echo-bridge", version: VERSION, os: Deno.build.os },
    auth: { token: stored.token },
    e2e: {
      identity: identity.keyPair,
      pinned: () => pinned,
      onApproved: () => Promise.resolve(),
      onRejected: refuse,
      onApprovalNeeded: () => (refuse(), false),
      askSas: () => Promise.resolve(undefined),
      onMismatch: refuse,
      onUnpinnedHello: () => false,
      onRefused: (print) => console.error(`echo bridge: refused IDE ${print}`),
    },
    commands: (send) => new CommandManager({ runner: new EchoRunner(), root: Deno.cwd(), maxCommands: 8, send }),
    onAuthenticated: (_ok, first) => console.log(first ? "Echo bridge connected" : "Echo bridge reconnected"),
    print: () => {},
    debug: () => {},
    signal: abort.signal,
  });
  if (exit.message) console.error(`echo bridge: ${exit.message}`);
  Deno.exit(exit.code);
}
