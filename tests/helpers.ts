/**
 * Test-only helpers: skipping tests whose system program is missing (failing
 * instead under CODER1_REQUIRE_ALL=1), pairing a fresh IDE with a bridge
 * process, running commands through an IDE, bare protocol sockets, and
 * throwaway certificates.
 *
 * The process harness (starting the relay and bridge with their role's
 * permission flags, watching output, IDE clients and approval) lives in
 * tools/harness.ts, which bench/ uses too; it is re-exported here so tests
 * import one module.
 *
 * @module
 */
import WebSocket from "ws";
import { bridgeCredentialHeaders } from "../shared/bridge_credential.ts";
import { concatBytes, decodeFrame, parseJsonObject } from "../shared/frame_codec.ts";
import type { IdeClient } from "../shared/ide_client.ts";
import { FrameType, WS_SUBPROTOCOL } from "../shared/protocol.ts";
import { approveBridge, type Coder1Process, ideClient, startBridgeProcess, type TestDirs } from "../tools/harness.ts";

export {
  approveBridge,
  coder1Argv,
  type Coder1Process,
  freePort,
  ideClient,
  makeTestDirs,
  nextApproval,
  OutputWatcher,
  type RelayProcess,
  ROOT,
  spawnCoder1,
  type SpawnOptions,
  startBridgeProcess,
  startRelayProcess,
  type TestDirs,
  wsFactory,
} from "../tools/harness.ts";

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

/**
 * A raw bridge socket that presents `auth` in its upgrade request, as the
 * bridge does (shared/bridge_credential.ts). A refusal closes it with the
 * HTTP status (401, 429, ...) as the code.
 *
 * @param relayUrl The relay's http(s) URL.
 * @param auth The pairing code or token (version defaults to `0.0.0-test`).
 * @param headers More headers.
 * @param options More npm:ws options (e.g. `ca`, `localAddress`).
 * @returns The socket.
 */
export function bridgeSocket(
  relayUrl: string,
  auth: { code?: string; token?: string; version?: string; telemetry?: boolean; rotate?: boolean },
  headers: Record<string, string> = {},
  options: WebSocket.ClientOptions = {},
): RawSocket {
  const credential = bridgeCredentialHeaders({ version: "0.0.0-test", ...auth });
  return new RawSocket(`${relayUrl.replace(/^http/, "ws")}/ws/bridge`, { ...credential, ...headers }, options);
}

/**
 * Logs a raw bridge in: `auth.ok`'s body, or how it ended (a refusal's HTTP
 * status, or a close code).
 */
export async function bridgeLogin(
  relayUrl: string,
  auth: { code?: string; token?: string; version?: string; telemetry?: boolean; rotate?: boolean },
  headers: Record<string, string> = {},
  options: WebSocket.ClientOptions = {},
): Promise<{ ok?: Record<string, unknown>; close?: { code: number; reason: string }; socket: RawSocket }> {
  const socket = bridgeSocket(relayUrl, auth, headers, options);
  const result = await Promise.race([
    // A refusal rejects `opened`; `closed` says how.
    socket.opened.then(() => socket.next(), () => new Promise<never>(() => {})).then((b) => ({
      frame: decodeFrame(b),
    })),
    socket.closed.then((close) => ({ close })),
  ]);
  if ("close" in result) return { close: result.close, socket };
  if (result.frame.t !== FrameType.AuthOk) throw new Error(`expected auth.ok, got ${result.frame.t}`);
  return { ok: parseJsonObject(result.frame.body, result.frame.t), socket };
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
   * @param protocols Subprotocols to ask for (default: this protocol version's; `[]` plays an older client).
   */
  constructor(
    url: string,
    headers: Record<string, string> = {},
    options: WebSocket.ClientOptions = {},
    protocols: string[] = [WS_SUBPROTOCOL],
  ) {
    this.ws = new WebSocket(url, protocols, { headers, perMessageDeflate: false, ...options });
    this.ws.binaryType = "arraybuffer";
    const closed = Promise.withResolvers<{ code: number; reason: string }>();
    const opened = Promise.withResolvers<void>();
    this.closed = closed.promise;
    this.opened = opened.promise;
    this.opened.catch(() => {});
    this.ws.on("open", () => opened.resolve());
    // A refused upgrade "closes" with the HTTP status as its code and the JSON error's message as its reason.
    this.ws.on("unexpected-response", (_req, res) => {
      opened.reject(new Error(`HTTP ${res.statusCode}`));
      const chunks: Uint8Array[] = [];
      res.on("data", (c: Uint8Array) => chunks.push(c));
      res.on("end", () => {
        let reason = "http";
        try {
          reason = JSON.parse(new TextDecoder().decode(concatBytes(chunks))).message ?? reason;
        } catch {
          // Not JSON.
        }
        closed.resolve({ code: res.statusCode ?? 0, reason });
        this.ws.terminate();
      });
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
