/**
 * The process harness that tests and benchmarks share: start the real relay
 * and bridge as `deno run` processes with their role's permission flags (the
 * same list `deno task relay` and the binary use, from cli/permissions.ts),
 * read their output, and pair an IDE client (npm:ws) with a bridge the way a
 * careful user does.
 *
 * bench/ and tests/ both import this module, so bench/ need not import
 * tests/ (tests/layering_test.ts checks that it does not). Skip logic and
 * test-only sockets stay in tests/helpers.ts.
 *
 * @example
 * ```ts ignore
 * import { approveBridge, ideClient, makeTestDirs, startBridgeProcess, startRelayProcess } from "./harness.ts";
 *
 * const dirs = await makeTestDirs();
 * const relay = await startRelayProcess(dirs);
 * const ide = ideClient(relay.url);
 * await ide.createSession();
 * const { code } = await ide.requestPairingCode();
 * await ide.connect();
 * const bridge = startBridgeProcess(dirs, relay.url, { code });
 * await approveBridge(ide, bridge);
 * ide.close();
 * await bridge.stop();
 * await relay.stop();
 * await dirs.cleanup();
 * ```
 *
 * @module
 */
import WebSocket from "ws";
import { permissionFlags, roleFor } from "../cli/permissions.ts";
import { useSyncAead } from "../shared/e2e_crypto.ts";
import { nodeAead } from "../shared/node_aead.ts";
import { type ApprovalRequest, IdeClient, type IdeClientOptions, type WebSocketLike } from "../shared/ide_client.ts";

/**
 * The repository root, without a trailing slash.
 *
 * @example
 * ```ts
 * import { ROOT } from "./harness.ts";
 * Deno.statSync(`${ROOT}/main.ts`);
 * ```
 */
export const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const MAIN = `${ROOT}/main.ts`;

/**
 * Collects a process stream as text and waits for patterns in it.
 *
 * @example
 * ```ts
 * import { OutputWatcher } from "./harness.ts";
 * const child = new Deno.Command("echo", { args: ["ready"], stdout: "piped" }).spawn();
 * const out = new OutputWatcher(child.stdout);
 * await out.waitFor(/ready/);
 * await child.status;
 * ```
 */
export class OutputWatcher {
  /** Everything read so far. */
  text = "";
  #waiters: { pattern: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  /** Resolves when the stream ends. */
  readonly done: Promise<void>;

  /** @param stream The stream to read. */
  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        this.text += chunk;
        this.#check();
      }
    })().catch(() => {});
  }

  /**
   * Waits for `pattern` in all text read so far and from now on.
   *
   * @param pattern What to wait for.
   * @param timeoutMs How long to wait before rejecting with the text read so far.
   * @returns The first match.
   */
  waitFor(pattern: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    const m = this.text.match(pattern);
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.resolve !== done);
        reject(new Error(`Timed out waiting for ${pattern} in:\n${this.text}`));
      }, timeoutMs);
      const done = (m: RegExpMatchArray) => {
        clearTimeout(timer);
        resolve(m);
      };
      this.#waiters.push({ pattern, resolve: done });
    });
  }

  #check(): void {
    this.#waiters = this.#waiters.filter((w) => {
      const m = this.text.match(w.pattern);
      if (m) w.resolve(m);
      return !m;
    });
  }
}

/** A coder1 process started by {@linkcode spawnCoder1}. */
export interface Coder1Process {
  /** The child process. */
  child: Deno.ChildProcess;
  /** Its stdout. */
  stdout: OutputWatcher;
  /** Its stderr. */
  stderr: OutputWatcher;
  /** Writes text to stdin (when it was kept open). */
  write(text: string): Promise<void>;
  /** Sends a signal (default SIGTERM) and waits for exit. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
  /** Resolves on exit, after stdout and stderr have been read to their end. */
  status: Promise<Deno.CommandStatus>;
}

/** Options for {@linkcode spawnCoder1}. */
export interface SpawnOptions {
  /** Environment overrides (HOME and XDG dirs should point at temp dirs). */
  env: Record<string, string>;
  /** Text written to stdin, then stdin is closed (default: closed at once) unless `keepStdin`. */
  stdin?: string;
  /** Keep stdin open after `stdin` for {@linkcode Coder1Process.write} (the bridge's SAS confirmation). */
  keepStdin?: boolean;
  /** Working directory. */
  cwd?: string;
  /** Extra deno flags, e.g. permission overrides in tests that probe them. */
  flags?: string[];
}

/**
 * Starts `coder1 <args>` from source with the role's permission flags, scoped
 * as tools/launch.ts scopes them.
 *
 * @param args The coder1 command line, e.g. `["relay", "serve"]`.
 * @param options Environment, stdin, working directory and extra deno flags.
 * @returns The running process with its output watched.
 *
 * @example
 * ```ts ignore
 * import { makeTestDirs, spawnCoder1 } from "./harness.ts";
 * const dirs = await makeTestDirs();
 * const proc = spawnCoder1(["--version"], { env: dirs.env });
 * await proc.status;
 * console.log(proc.stdout.text);
 * await dirs.cleanup();
 * ```
 */
export function spawnCoder1(args: string[], options: SpawnOptions): Coder1Process {
  const cwd = options.cwd ?? ROOT;
  const child = new Deno.Command(Deno.execPath(), {
    args: coder1Argv(args, options).slice(1),
    cwd,
    env: options.env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  let writing = (async () => {
    if (options.stdin !== undefined) await writer.write(new TextEncoder().encode(options.stdin));
    if (!options.keepStdin) await writer.close();
  })().catch(() => {});
  const stdout = new OutputWatcher(child.stdout);
  const stderr = new OutputWatcher(child.stderr);
  const status = child.status.then(async (s) => {
    await Promise.all([stdout.done, stderr.done]);
    return s;
  });
  return {
    child,
    stdout,
    stderr,
    status,
    write(text: string) {
      writing = writing.then(() => writer.write(new TextEncoder().encode(text))).catch(() => {});
      return writing;
    },
    async stop(signal: Deno.Signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch {
        // Already exited.
      }
      return await status;
    },
  };
}

/**
 * The full argv that runs `coder1 <args>` from source with its role's scoped
 * flags, for callers that start the process themselves (e.g. to time it).
 *
 * @param args The coder1 command line.
 * @param options The environment and working directory that scope the flags, and extra deno flags.
 * @returns The argv, the deno executable first.
 *
 * @example
 * ```ts
 * import { coder1Argv } from "./harness.ts";
 * const [deno, ...rest] = coder1Argv(["relay", "serve"], { env: {} });
 * console.log(deno, rest.includes("--allow-run"));
 * ```
 */
export function coder1Argv(args: string[], options: Pick<SpawnOptions, "env" | "cwd" | "flags">): string[] {
  const cwd = options.cwd ?? ROOT;
  const env = { ...Deno.env.toObject(), ...options.env };
  const { role, scope } = roleFor(args, { env: (n) => env[n], cwd });
  // CODER1_CPU_PROF=DIR: each process writes a V8 CPU profile there (for `deno task bench` profiling).
  const profileDir = Deno.env.get("CODER1_CPU_PROF");
  const profile = profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}/${args[0] ?? "coder1"}`] : [];
  return [Deno.execPath(), "run", ...permissionFlags(role, scope), ...profile, ...(options.flags ?? []), MAIN, ...args];
}

/** A temp directory tree for one run: HOME, data and config homes. */
export interface TestDirs {
  /** Root of the tree. */
  root: string;
  /** Environment pointing coder1 at the tree. */
  env: Record<string, string>;
  /** Removes the tree. */
  cleanup(): Promise<void>;
}

/** Deno's cache directory, so processes with a temp HOME still find cached npm packages. */
const DENO_DIR = Deno.env.get("DENO_DIR") ??
  JSON.parse(
    new TextDecoder().decode(new Deno.Command(Deno.execPath(), { args: ["info", "--json"] }).outputSync().stdout),
  )
    .denoDir as string;

/**
 * Makes a temp HOME with XDG data and config homes inside, and an environment
 * that points coder1 at them (and keeps Deno's cache).
 *
 * @returns The tree; call its `cleanup` when done.
 *
 * @example
 * ```ts
 * import { makeTestDirs } from "./harness.ts";
 * const dirs = await makeTestDirs();
 * console.log(dirs.env.HOME);
 * await dirs.cleanup();
 * ```
 */
export async function makeTestDirs(): Promise<TestDirs> {
  const root = await Deno.makeTempDir({ prefix: "coder1-test-" });
  const env = {
    HOME: `${root}/home`,
    XDG_DATA_HOME: `${root}/data`,
    XDG_CONFIG_HOME: `${root}/config`,
    SHELL: "/bin/sh",
    DENO_DIR,
    NO_COLOR: "1",
  };
  for (const d of Object.values(env)) if (d.startsWith(root)) await Deno.mkdir(d, { recursive: true });
  return { root, env, cleanup: () => Deno.remove(root, { recursive: true }).catch(() => {}) };
}

/**
 * A free loopback TCP port, bound and released: for restarting a process on
 * the same port. Prefer port 0 when nothing needs the number in advance.
 *
 * @returns The port number.
 *
 * @example
 * ```ts
 * import { freePort } from "./harness.ts";
 * const port = freePort();
 * Deno.listen({ hostname: "127.0.0.1", port }).close();
 * ```
 */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A relay process and its URL. */
export interface RelayProcess extends Coder1Process {
  /** e.g. http://127.0.0.1:PORT */
  url: string;
  /** The port. */
  port: number;
}

/**
 * Starts `coder1 relay serve` on loopback and waits until it listens.
 *
 * @param dirs The temp tree the relay keeps its data in.
 * @param extraArgs More `relay serve` flags.
 * @param port The port (default 0: any free one).
 * @returns The running relay and its URL; rejects with its stderr if it exits first.
 *
 * @example
 * ```ts ignore
 * import { makeTestDirs, startRelayProcess } from "./harness.ts";
 * const dirs = await makeTestDirs();
 * const relay = await startRelayProcess(dirs);
 * await (await fetch(`${relay.url}/healthz`)).body?.cancel();
 * await relay.stop();
 * await dirs.cleanup();
 * ```
 */
export async function startRelayProcess(
  dirs: TestDirs,
  extraArgs: string[] = [],
  port = 0,
): Promise<RelayProcess> {
  const proc = spawnCoder1(["relay", "serve", "--port", String(port), "--log-level", "warn", ...extraArgs], {
    env: dirs.env,
  });
  const m = await Promise.race([
    proc.stdout.waitFor(/listening on (\S+)/),
    proc.status.then((s) => {
      throw new Error(`relay exited (${s.code}) before listening:\n${proc.stderr.text}`);
    }),
  ]);
  return { ...proc, url: m[1], port: Number(new URL(m[1]).port) };
}

/**
 * Starts `coder1 bridge start` against `relayUrl`, with the pairing code typed
 * on stdin (stdin then stays open for the SAS confirmation) or the given flags.
 *
 * @param dirs The temp tree the bridge keeps its config in.
 * @param relayUrl The relay's URL.
 * @param options The pairing code, extra flags, working directory and environment overrides.
 * @returns The running bridge.
 *
 * @example
 * ```ts ignore
 * import { startBridgeProcess } from "./harness.ts";
 * const bridge = startBridgeProcess(dirs, relay.url, { code });
 * await bridge.stdout.waitFor(/Check that the IDE shows/);
 * ```
 */
export function startBridgeProcess(
  dirs: TestDirs,
  relayUrl: string,
  options: { code?: string; args?: string[]; cwd?: string; env?: Record<string, string> } = {},
): Coder1Process {
  return spawnCoder1(
    ["bridge", "start", "--relay", relayUrl, "--allow-root", "--no-banner", ...(options.args ?? [])],
    {
      env: { ...dirs.env, ...options.env },
      stdin: options.code !== undefined ? `${options.code}\n` : undefined,
      keepStdin: options.code !== undefined,
      cwd: options.cwd,
    },
  );
}

/**
 * A WebSocket factory for IDE clients in Deno: npm:ws, which can send Cookie
 * and Origin headers (Deno's WebSocket cannot).
 *
 * @param extra More npm:ws options (e.g. `ca` for a test CA).
 * @returns The factory for {@linkcode IdeClientOptions.webSocket}.
 *
 * @example
 * ```ts
 * import { IdeClient } from "../shared/ide_client.ts";
 * import { wsFactory } from "./harness.ts";
 * const ide = new IdeClient({ relayUrl: "http://127.0.0.1:8080", webSocket: wsFactory() });
 * console.log(ide.state);
 * ```
 */
export function wsFactory(extra: WebSocket.ClientOptions = {}): IdeClientOptions["webSocket"] {
  return (url, headers, protocols) =>
    new WebSocket(url, protocols, { headers, perMessageDeflate: false, ...extra }) as unknown as WebSocketLike;
}

/**
 * An IDE client for `relayUrl` that uses npm:ws.
 *
 * @param relayUrl The relay's URL.
 * @param options Overrides of the client's options.
 * @returns The client, not yet connected.
 *
 * @example
 * ```ts
 * import { ideClient } from "./harness.ts";
 * const ide = ideClient("http://127.0.0.1:8080");
 * console.log(ide.state);
 * ```
 */
export function ideClient(relayUrl: string, options: Partial<IdeClientOptions> = {}): IdeClient {
  // As a Deno program driving the bridge would: small bodies sealed on this thread (shared/node_aead.ts).
  useSyncAead(nodeAead);
  return new IdeClient({ relayUrl, webSocket: wsFactory(), ...options });
}

/**
 * Waits for the IDE's next approval request (or the pending one).
 *
 * @param ide The IDE client.
 * @param timeoutMs How long to wait before rejecting.
 * @returns The request, to check its SAS and approve or deny.
 *
 * @example
 * ```ts ignore
 * import { nextApproval } from "./harness.ts";
 * const request = await nextApproval(ide);
 * await request.approve();
 * ```
 */
export function nextApproval(ide: IdeClient, timeoutMs = 20_000): Promise<ApprovalRequest> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no approval request within ${timeoutMs} ms (state ${ide.state})`));
    }, timeoutMs);
    const off = ide.onApprovalRequest((request) => {
      clearTimeout(timer);
      queueMicrotask(() => off());
      resolve(request);
    });
  });
}

/**
 * Does what a careful user does on a first pairing: waits for the IDE's
 * approval request, checks that its SAS equals the one the bridge printed,
 * confirms at the bridge (types the digits) and approves in the IDE, and waits until
 * commands may run.
 *
 * @param ide The IDE client, connected with a pairing code the bridge redeems.
 * @param bridge The bridge process (stdin kept open).
 * @param timeoutMs How long each step may take.
 * @returns The SAS.
 *
 * @example
 * ```ts ignore
 * import { approveBridge, startBridgeProcess } from "./harness.ts";
 * const bridge = startBridgeProcess(dirs, relay.url, { code });
 * const sas = await approveBridge(ide, bridge);
 * ```
 */
export async function approveBridge(
  ide: IdeClient,
  bridge: Pick<Coder1Process, "stdout" | "stderr" | "status" | "write">,
  timeoutMs = 20_000,
): Promise<string> {
  const exited = bridge.status.then((s) => {
    throw new Error(`bridge exited (${s.code}):\n${bridge.stdout.text}\n${bridge.stderr.text}`);
  });
  const request = await Promise.race([nextApproval(ide, timeoutMs), exited]);
  const printed = (await bridge.stdout.waitFor(/Check that the IDE shows: (\d{3} \d{3})/, timeoutMs))[1];
  if (printed !== request.sas) throw new Error(`SAS differ: IDE ${request.sas}, bridge ${printed}`);
  await bridge.write(`${printed}\n`);
  await request.approve();
  await Promise.race([ide.waitForBridge(timeoutMs), exited]);
  await bridge.stdout.waitFor(/Approved in the IDE/, timeoutMs);
  return request.sas;
}
