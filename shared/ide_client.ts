/**
 * The IDE client: everything a web IDE needs to drive a bridge through a
 * relay: create a browser session, request a pairing code, open the IDE
 * socket, run commands, stream their output, send stdin and signals, and
 * learn their exit status. It uses only `fetch`, a WebSocket and
 * `TextEncoder`, so the same module runs in Deno and in browsers.
 *
 * In browsers the session cookie is HttpOnly and handled by the browser. In
 * Deno the client keeps the cookie itself and needs a WebSocket factory that
 * can send headers (Cookie, Origin), such as npm:ws.
 *
 * @example Runnable against a relay and a paired bridge (examples/ide_client_example.ts):
 * ```ts ignore
 * import WebSocket from "ws";
 * import { IdeClient } from "./ide_client.ts";
 *
 * const ide = new IdeClient({
 *   relayUrl: "http://127.0.0.1:8787",
 *   webSocket: (url, headers) => new WebSocket(url, { headers }),
 * });
 * await ide.createSession();
 * const { code } = await ide.requestPairingCode();
 * console.log(`run: coder1 bridge start --code ${code}`);
 * await ide.connect();
 * await ide.waitForBridge();
 * const cmd = ide.run("echo hello", { onStdout: (b) => console.log(new TextDecoder().decode(b)) });
 * console.log(await cmd.exited); // { code: 0, signal: null, durationMs: 3 }
 * ```
 *
 * @module
 */
import { decodeFrame, encodeFrame, type FrameInit, jsonBody } from "./frame_codec.ts";
import {
  type BridgeStatusBody,
  type CmdExitBody,
  type CmdStartBody,
  type CommandSignal,
  type Frame,
  FrameType,
  HEARTBEAT_TIMEOUT_MS,
  SESSION_COOKIE,
} from "./protocol.ts";

/** The WebSocket surface the client needs (browser WebSocket and npm:ws both fit). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** Opens a WebSocket; `headers` matter outside browsers (Cookie, Origin). */
export type WebSocketFactory = (url: string, headers: Record<string, string>) => WebSocketLike;

/** Options for {@linkcode IdeClient}. */
export interface IdeClientOptions {
  /** The relay's base URL, e.g. `https://relay.example` (default: the page's origin). */
  relayUrl?: string;
  /** Opens WebSockets (default: the global `WebSocket`, for browsers). */
  webSocket?: WebSocketFactory;
  /** fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /** Origin header to send outside browsers (default: the relay's origin). */
  origin?: string;
}

/** An API or socket failure, with the HTTP status or close code and a stable reason. */
export class IdeClientError extends Error {
  /** HTTP status (API calls) or WebSocket close code (sockets). */
  readonly status: number;
  /** Stable reason, e.g. `rate-limited`, `bridge-lost`, `busy`. */
  readonly reason: string;
  /** For 429: seconds until a retry may succeed. */
  readonly retryAfter?: number;
  /**
   * @param message What happened.
   * @param details Status, reason and retry hint.
   */
  constructor(message: string, details: { status: number; reason: string; retryAfter?: number }) {
    super(message);
    this.name = "IdeClientError";
    this.status = details.status;
    this.reason = details.reason;
    this.retryAfter = details.retryAfter;
  }
}

/** How a command ended. */
export type CommandResult = CmdExitBody;

/** Callbacks and settings for {@linkcode IdeClient.run}. */
export interface RunOptions {
  /** Directory relative to the bridge's root. */
  cwd?: string;
  /** Ask the bridge to kill the command after this long. */
  timeoutMs?: number;
  /** Receives stdout bytes as they arrive. */
  onStdout?: (bytes: Uint8Array) => void;
  /** Receives stderr bytes as they arrive. */
  onStderr?: (bytes: Uint8Array) => void;
}

/** A command running on the bridge. */
export class RemoteCommand {
  /** The command id (unique per IDE socket). */
  readonly id: string;
  /** Resolves with the exit status; rejects with {@linkcode IdeClientError} if it could not run or the bridge was lost. */
  readonly exited: Promise<CommandResult>;
  #send: (frame: FrameInit) => void;
  #settle: PromiseWithResolvers<CommandResult>;
  /** @internal */
  readonly options: RunOptions;

  /** @internal Created by {@linkcode IdeClient.run}. */
  constructor(id: string, options: RunOptions, send: (frame: FrameInit) => void) {
    this.id = id;
    this.options = options;
    this.#send = send;
    this.#settle = Promise.withResolvers<CommandResult>();
    this.exited = this.#settle.promise;
    this.exited.catch(() => {}); // Callers that never await still see no unhandled rejection.
  }

  /** Writes to the command's stdin. */
  write(data: string | Uint8Array): void {
    this.#send({
      t: FrameType.CmdStdin,
      id: this.id,
      body: typeof data === "string" ? new TextEncoder().encode(data) : data,
    });
  }

  /** Closes the command's stdin (end of input). */
  closeStdin(): void {
    this.#send({ t: FrameType.CmdEof, id: this.id });
  }

  /** Sends a signal to the command's process group (`SIGINT` is Ctrl-C). */
  signal(signal: CommandSignal = "SIGINT"): void {
    this.#send({ t: FrameType.CmdSignal, id: this.id, body: { signal } });
  }

  /** @internal */
  resolve(result: CommandResult): void {
    this.#settle.resolve(result);
  }

  /** @internal */
  reject(error: IdeClientError): void {
    this.#settle.reject(error);
  }
}

/** Talks to one relay on behalf of one browser session. */
export class IdeClient {
  #base: string;
  #fetch: typeof fetch;
  #openSocket: WebSocketFactory;
  #origin: string;
  #cookie?: string;
  #socket?: WebSocketLike;
  #commands = new Map<string, RemoteCommand>();
  #statusListeners = new Set<(status: BridgeStatusBody) => void>();
  #closeListeners = new Set<(error: IdeClientError) => void>();
  #nextId = 1;
  #watchdog?: ReturnType<typeof setInterval>;
  #lastSeen = 0;
  /** The latest bridge status from the relay. */
  bridge?: BridgeStatusBody;

  /** @param options Relay URL, WebSocket factory, fetch and origin. */
  constructor(options: IdeClientOptions = {}) {
    const fallback = (globalThis as { location?: { origin: string } }).location?.origin;
    const base = options.relayUrl ?? fallback;
    if (!base) throw new TypeError("Cannot create IdeClient: relayUrl is required outside a browser page");
    this.#base = base.replace(/\/$/, "");
    this.#fetch = options.fetch ?? ((input, init) => fetch(input, init));
    this.#openSocket = options.webSocket ??
      ((url) => new (globalThis as unknown as { WebSocket: new (u: string) => WebSocketLike }).WebSocket(url));
    this.#origin = options.origin ?? new URL(this.#base).origin;
  }

  /** Creates a browser session (sets the session cookie). */
  async createSession(): Promise<{ expiresAt: number }> {
    const res = await this.#api("POST", "/api/sessions");
    const setCookie = (res.headers as Headers & { getSetCookie?: () => string[] }).getSetCookie?.() ?? [];
    for (const line of setCookie) {
      const m = new RegExp(`^${SESSION_COOKIE}=([^;]+)`).exec(line);
      if (m) this.#cookie = `${SESSION_COOKIE}=${m[1]}`;
    }
    return await res.json();
  }

  /** Requests a pairing code for this session (retires the previous one). */
  async requestPairingCode(): Promise<{ code: string; expiresAt: number }> {
    return await (await this.#api("POST", "/api/pairing-codes")).json();
  }

  /** Opens the IDE socket; resolves with the first bridge status. */
  connect(): Promise<BridgeStatusBody> {
    const headers: Record<string, string> = { Origin: this.#origin };
    if (this.#cookie) headers.Cookie = this.#cookie;
    const socket = this.#openSocket(`${this.#base.replace(/^http/, "ws")}/ws/ide`, headers);
    socket.binaryType = "arraybuffer";
    this.#socket = socket;
    const first = Promise.withResolvers<BridgeStatusBody>();
    this.#lastSeen = Date.now();
    this.#watchdog = setInterval(() => {
      if (Date.now() - this.#lastSeen > HEARTBEAT_TIMEOUT_MS) socket.close(4000, "no heartbeat from the relay");
    }, 5_000);
    socket.onmessage = (event) => {
      this.#lastSeen = Date.now();
      let frame: Frame;
      try {
        frame = decodeFrame(event.data);
      } catch {
        return; // A relay bug must not break the page; skip the frame.
      }
      if (frame.t === FrameType.BridgeStatus) {
        this.bridge = jsonBody(frame) as unknown as BridgeStatusBody;
        if (this.bridge.state === "disconnected") this.#failAll("bridge-lost", "the bridge disconnected");
        first.resolve(this.bridge);
        for (const fn of this.#statusListeners) fn(this.bridge);
      } else if (frame.t === FrameType.Ping) {
        this.#send({ t: FrameType.Pong });
      } else {
        this.#onCommandFrame(frame);
      }
    };
    socket.onclose = (event) => {
      clearInterval(this.#watchdog);
      const error = new IdeClientError(`IDE socket closed (${event.code}${event.reason ? `: ${event.reason}` : ""})`, {
        status: event.code,
        reason: "relay-lost",
      });
      first.reject(error);
      this.#failAll("relay-lost", error.message);
      for (const fn of this.#closeListeners) fn(error);
    };
    socket.onerror = () => {};
    return first.promise;
  }

  /** Calls `listener` on every bridge status change; returns an unsubscribe function. */
  onBridgeStatus(listener: (status: BridgeStatusBody) => void): () => void {
    this.#statusListeners.add(listener);
    return () => this.#statusListeners.delete(listener);
  }

  /** Calls `listener` when the IDE socket closes; returns an unsubscribe function. */
  onClose(listener: (error: IdeClientError) => void): () => void {
    this.#closeListeners.add(listener);
    return () => this.#closeListeners.delete(listener);
  }

  /** Resolves once a bridge is connected (at once if it is). */
  waitForBridge(timeoutMs = 60_000): Promise<BridgeStatusBody> {
    if (this.bridge?.state === "connected") return Promise.resolve(this.bridge);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new IdeClientError("No bridge connected in time", { status: 0, reason: "timeout" }));
      }, timeoutMs);
      const off = this.onBridgeStatus((status) => {
        if (status.state !== "connected") return;
        clearTimeout(timer);
        off();
        resolve(status);
      });
    });
  }

  /**
   * Runs `command` on the bridge with the user's shell.
   *
   * @param command The command line.
   * @param options cwd, timeout and output callbacks.
   * @returns The running command.
   */
  run(command: string, options: RunOptions = {}): RemoteCommand {
    const id = `c${this.#nextId++}`;
    const cmd = new RemoteCommand(id, options, (frame) => this.#send(frame));
    this.#commands.set(id, cmd);
    if (this.bridge?.state !== "connected") {
      this.#commands.delete(id);
      cmd.reject(new IdeClientError("No bridge is connected", { status: 0, reason: "no-bridge" }));
      return cmd;
    }
    const body: CmdStartBody = { command };
    if (options.cwd !== undefined) body.cwd = options.cwd;
    if (options.timeoutMs !== undefined) body.timeoutMs = options.timeoutMs;
    this.#send({ t: FrameType.CmdStart, id, body: { ...body } });
    return cmd;
  }

  /** Closes the IDE socket. */
  close(): void {
    clearInterval(this.#watchdog);
    this.#socket?.close(1000, "IDE closing");
  }

  #onCommandFrame(frame: Frame): void {
    const cmd = frame.id === undefined ? undefined : this.#commands.get(frame.id);
    if (!cmd) return;
    switch (frame.t) {
      case FrameType.CmdStdout:
        cmd.options.onStdout?.(frame.body.slice());
        break;
      case FrameType.CmdStderr:
        cmd.options.onStderr?.(frame.body.slice());
        break;
      case FrameType.CmdExit:
        this.#commands.delete(cmd.id);
        cmd.resolve(jsonBody(frame) as unknown as CommandResult);
        break;
      case FrameType.CmdError: {
        this.#commands.delete(cmd.id);
        const body = jsonBody(frame);
        cmd.reject(new IdeClientError(String(body.message), { status: 0, reason: String(body.reason) }));
        break;
      }
    }
  }

  #send(frame: FrameInit): void {
    const socket = this.#socket;
    if (!socket || socket.readyState !== 1) return;
    socket.send(encodeFrame(frame));
  }

  #failAll(reason: string, message: string): void {
    for (const cmd of this.#commands.values()) cmd.reject(new IdeClientError(message, { status: 0, reason }));
    this.#commands.clear();
  }

  async #api(method: string, path: string): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.#cookie) headers.cookie = this.#cookie;
    const res = await this.#fetch(`${this.#base}${path}`, { method, headers, credentials: "include" });
    if (res.ok) return res;
    const body = await res.json().catch(() => ({}));
    const retry = res.headers.get("retry-after");
    throw new IdeClientError(body.message ?? `${method} ${path} failed with ${res.status}`, {
      status: res.status,
      reason: body.error ?? "http-error",
      retryAfter: retry ? Number(retry) : undefined,
    });
  }
}
