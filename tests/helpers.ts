/**
 * Test helpers that cross processes: start the real relay and bridge as
 * `deno run` processes with their role's permission flags (the same list
 * `deno task relay` and the binary use), read their output, and build IDE
 * clients that connect with npm:ws.
 *
 * @module
 */
import WebSocket from "ws";
import { permissionFlags, roleFor } from "../cli/permissions.ts";
import { concatBytes } from "../shared/frame_codec.ts";
import { type ApprovalRequest, IdeClient, type IdeClientOptions, type WebSocketLike } from "../shared/ide_client.ts";

/** The repository root. */
export const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const MAIN = `${ROOT}/main.ts`;

/** Whether every system component is required (CI): a skip then fails. */
export const REQUIRE_ALL = Deno.env.get("CODER1_REQUIRE_ALL") === "1";

/**
 * Whether a system program is installed. When it is not, prints why the
 * tests that need it are skipped; under CODER1_REQUIRE_ALL=1 it returns true
 * anyway so those tests run and fail loudly.
 */
export function haveProgram(program: string, why: string): boolean {
  const found = Deno.env.get("PATH")?.split(":").some((dir) => {
    try {
      return Deno.statSync(`${dir}/${program}`).isFile;
    } catch {
      return false;
    }
  }) ?? false;
  if (!found) {
    console.log(
      `SKIP ${why}: ${program} is not installed${REQUIRE_ALL ? " (CODER1_REQUIRE_ALL=1: failing instead)" : ""}`,
    );
  }
  return found || REQUIRE_ALL;
}

/** Collects a process stream as text and waits for patterns in it. */
export class OutputWatcher {
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

  /** Resolves with the first match of `pattern` (searching all text so far). */
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

/** A coder1 process started by a test. */
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
  /** Resolves on exit. */
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
 * Starts `coder1 <args>` with the role's permission flags, scoped as
 * tools/launch.ts scopes them.
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

/** The full argv (deno first) that runs `coder1 <args>` with its role's scoped flags. */
export function coder1Argv(args: string[], options: Pick<SpawnOptions, "env" | "cwd" | "flags">): string[] {
  const cwd = options.cwd ?? ROOT;
  const env = { ...Deno.env.toObject(), ...options.env };
  const { role, scope } = roleFor(args, { env: (n) => env[n], cwd });
  return [Deno.execPath(), "run", ...permissionFlags(role, scope), ...(options.flags ?? []), MAIN, ...args];
}

/** A temp directory tree for one test: HOME, data and config homes. */
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

/** Makes a temp HOME with XDG data and config homes inside. */
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

/** A free loopback TCP port (bound and released, for restarts on the same port). */
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

/** Starts `coder1 relay serve` and waits until it listens. */
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

/** Starts `coder1 bridge start` with the code typed on stdin (or the given flags). */
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

/** A WebSocket factory for Deno tests: npm:ws, which can send Cookie and Origin. */
export function wsFactory(extra: WebSocket.ClientOptions = {}): IdeClientOptions["webSocket"] {
  return (url, headers) =>
    new WebSocket(url, { headers, perMessageDeflate: false, ...extra }) as unknown as WebSocketLike;
}

/** An IDE client for `relayUrl` using npm:ws. */
export function ideClient(relayUrl: string, options: Partial<IdeClientOptions> = {}): IdeClient {
  return new IdeClient({ relayUrl, webSocket: wsFactory(), ...options });
}

/** Decodes collected byte chunks. */
export function text(chunks: Uint8Array[]): string {
  return new TextDecoder().decode(concatBytes(chunks));
}

/** Runs a command through an IDE client and collects stdout and stderr. */
export async function runCollect(
  ide: IdeClient,
  command: string,
  options: { cwd?: string; timeoutMs?: number } = {},
): Promise<{ stdout: string; stderr: string; code: number | null; signal: string | null; timedOut?: boolean }> {
  const out: Uint8Array[] = [], err: Uint8Array[] = [];
  const cmd = ide.run(command, { ...options, onStdout: (b) => out.push(b), onStderr: (b) => err.push(b) });
  const result = await cmd.exited;
  return { stdout: text(out), stderr: text(err), code: result.code, signal: result.signal, timedOut: result.timedOut };
}

/** Resolves with the IDE's next approval request (or the pending one). */
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
 * @returns The SAS.
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

/** Pairs a fresh IDE session with a bridge process; returns both, connected and approved. */
export async function pairedSetup(
  dirs: TestDirs,
  relayUrl: string,
  bridgeArgs: string[] = [],
): Promise<{ ide: IdeClient; bridge: Coder1Process }> {
  const ide = ideClient(relayUrl);
  await ide.createSession();
  const { code } = await ide.requestPairingCode();
  await ide.connect();
  const bridge = startBridgeProcess(dirs, relayUrl, { code, args: bridgeArgs });
  await approveBridge(ide, bridge);
  await bridge.stdout.waitFor(/Bridge connected/);
  return { ide, bridge };
}

/** A bare protocol-level socket for tests that speak frames directly. */
export class RawSocket {
  /** The npm:ws socket. */
  readonly ws: WebSocket;
  /** Resolves once open (rejects on an HTTP refusal). */
  readonly opened: Promise<void>;
  /** Resolves with the close code and reason. */
  readonly closed: Promise<{ code: number; reason: string }>;
  #frames: Uint8Array[] = [];
  #waiting: ((f: Uint8Array) => void)[] = [];

  /**
   * @param url Full ws(s) URL.
   * @param headers Headers such as Cookie and Origin.
   * @param options Extra npm:ws options (e.g. `ca`).
   */
  constructor(url: string, headers: Record<string, string> = {}, options: WebSocket.ClientOptions = {}) {
    this.ws = new WebSocket(url, { headers, perMessageDeflate: false, ...options });
    this.ws.binaryType = "arraybuffer";
    const closed = Promise.withResolvers<{ code: number; reason: string }>();
    const opened = Promise.withResolvers<void>();
    this.closed = closed.promise;
    this.opened = opened.promise;
    this.opened.catch(() => {});
    this.ws.on("open", () => opened.resolve());
    this.ws.on("unexpected-response", (_req, res) => {
      opened.reject(new Error(`HTTP ${res.statusCode}`));
      closed.resolve({ code: res.statusCode ?? 0, reason: "http" });
      this.ws.terminate();
    });
    this.ws.on("error", (e) => opened.reject(e));
    this.ws.on("message", (data: ArrayBuffer) => {
      const bytes = new Uint8Array(data);
      const w = this.#waiting.shift();
      if (w) w(bytes);
      else this.#frames.push(bytes);
    });
    this.ws.on("close", (code, reason) => closed.resolve({ code, reason: new TextDecoder().decode(reason) }));
  }

  /** The next binary message. */
  next(timeoutMs = 5_000): Promise<Uint8Array> {
    const f = this.#frames.shift();
    if (f) return Promise.resolve(f);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no frame in time")), timeoutMs);
      this.#waiting.push((b) => {
        clearTimeout(timer);
        resolve(b);
      });
    });
  }

  /** Sends raw data. */
  send(data: Uint8Array | string): void {
    this.ws.send(data);
  }

  /** Closes the socket. */
  close(): void {
    this.ws.close();
  }
}

/** Runs `program` to its end with `stdin`; returns its exit code and stdout followed by stderr. */
export async function runProgram(
  program: string,
  args: string[],
  cwd: string,
  stdin = "",
): Promise<{ code: number; out: string }> {
  const child = new Deno.Command(program, { args, cwd, stdin: "piped", stdout: "piped", stderr: "piped" }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(stdin)).catch(() => {});
  await writer.close().catch(() => {});
  const result = await child.output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: result.code, out: decode(result.stdout) + decode(result.stderr) };
}

/**
 * Makes a throwaway CA (ca.pem, ca.key) and a server certificate it signed
 * for 127.0.0.1 and localhost (server.pem, server.key) in `dir`, with openssl.
 */
export async function makeTestCertificates(dir: string): Promise<void> {
  const steps: string[][] = [
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-days",
      "2",
      "-subj",
      "/CN=coder1 test CA",
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ],
    [
      "req",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-subj",
      "/CN=127.0.0.1",
      "-keyout",
      "server.key",
      "-out",
      "server.csr",
    ],
    [
      "x509",
      "-req",
      "-in",
      "server.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-days",
      "2",
      "-out",
      "server.pem",
      "-extfile",
      "ext.cnf",
    ],
  ]; // deno-fmt-ignore
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
  );
  for (const args of steps) {
    const { code, out } = await runProgram("openssl", args, dir);
    if (code !== 0) throw new Error(`openssl ${args.join(" ")} failed:\n${out}`);
  }
}
