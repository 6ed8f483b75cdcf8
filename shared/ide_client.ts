/**
 * The IDE client: everything a web IDE needs to drive a bridge through a
 * relay: create a browser session, request a pairing code, open the IDE
 * socket, run the end-to-end handshake with the bridge (short authentication
 * string, approval, pinned keys), run commands, stream their output, send
 * stdin and signals, and learn their exit status. Every command byte is sealed
 * end to end (shared/e2e_session.ts); the relay sees only frame headers. It
 * uses only `fetch`, a WebSocket and WebCrypto, so the same module runs in
 * Deno and in browsers.
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
 *   webSocket: (url, headers, protocols) => new WebSocket(url, protocols, { headers }),
 * });
 * await ide.createSession();
 * const { code } = await ide.requestPairingCode();
 * console.log(`run: coder1 bridge start --code ${code}`);
 * await ide.connect();
 * // First pairing: compare the SAS with the one the bridge prints, then approve.
 * ide.onApprovalRequest((request) => {
 *   console.log(`${request.name} (${request.os}) shows ${request.sas}?`);
 *   request.approve();
 * });
 * await ide.waitForBridge();
 * const cmd = ide.run("echo hello", { onStdout: (b) => console.log(new TextDecoder().decode(b)) });
 * console.log(await cmd.exited); // { code: 0, signal: null, durationMs: 3 }
 * ```
 *
 * @module
 */
import { fingerprint, fromBase64Url, generateIdentity, toBase64Url } from "./e2e_crypto.ts";
import { E2eError, type E2eSession, IdeHandshake } from "./e2e_session.ts";
import {
  decodeBridgeStatus,
  decodeCmdError,
  decodeCmdExit,
  decodeE2eInfo,
  decodeFlow,
  decodeStreamAck,
  decodeStreamResume,
} from "./frame_bodies.ts";
import { bodyBytes, decodeFrame, encodeFrame, type FrameInit, parseJsonObject } from "./frame_codec.ts";
import {
  BRIDGE_RESUME_TIMEOUT_MS,
  type BridgeStatusBody,
  CloseCode,
  type CmdExitBody,
  type CmdStartBody,
  type CommandSignal,
  type E2eInfoBody,
  type Frame,
  FrameType,
  HEARTBEAT_TIMEOUT_MS,
  SEALED_TO_IDE,
  type StreamAckBody,
  type StreamResumeBody,
  WS_SUBPROTOCOL,
} from "./protocol.ts";
import { FlowGate, type StreamFrame, StreamReceiver, StreamSender } from "./stream.ts";
import { IdeApi } from "./ide_api.ts";
import { IdeClientError } from "./ide_client_error.ts";
import { MemoryPinStore, type PinStore } from "./pin_store.ts";

export { IdeClientError } from "./ide_client_error.ts";
export { MemoryPinStore, type PinStore } from "./pin_store.ts";

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

/**
 * Opens a WebSocket asking for `protocols` (the coder1 subprotocol);
 * `headers` matter outside browsers (Cookie, Origin).
 */
export type WebSocketFactory = (url: string, headers: Record<string, string>, protocols: string[]) => WebSocketLike;

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
  /**
   * The IDE's long-term Ed25519 identity key pair. Browsers keep a
   * non-extractable pair in IndexedDB; without one the client makes an
   * in-memory pair (which bridges then know only for this client's lifetime).
   */
  identity?: CryptoKeyPair;
  /** Where approved bridge identity keys are pinned (default: in memory). */
  pins?: PinStore;
  /** Outside browsers: a session cookie from another client of the same session (a second tab). */
  sessionCookie?: string;
  /**
   * How long commands stay pending while no bridge is reachable (the bridge,
   * the relay or this socket is away); after it they fail with reason
   * `bridge-lost`. Default {@linkcode BRIDGE_RESUME_TIMEOUT_MS}.
   */
  resumeTimeoutMs?: number;
}

/**
 * Where the end-to-end link to the bridge stands:
 * `disconnected` (no bridge), `handshaking` (keys being agreed),
 * `approval` (first pairing: the user must compare the SAS and approve),
 * `confirming` (approved here; waiting for the user at the bridge to confirm
 * the same SAS there), `ready` (commands may run), `refused` (the bridge's or the IDE's identity
 * key is not the pinned one; nothing runs), `rejected` (the user rejected it).
 */
export type E2eState =
  | "disconnected"
  | "handshaking"
  | "approval"
  | "confirming"
  | "ready"
  | "refused"
  | "rejected";

/** What the IDE shows the user to approve a first pairing. */
export interface ApprovalRequest {
  /** The bridge id (the pairing id). */
  bridgeId: string;
  /** The short authentication string, e.g. "123 456"; the bridge prints the same. */
  sas: string;
  /** Bridge name, OS and version (sent sealed by the bridge). */
  name: string;
  os: string;
  version: string;
  /** Fingerprint of the bridge's identity key. */
  fingerprint: string;
  /**
   * Approve: pin the bridge's key and tell the bridge. Commands may run once
   * the user at the bridge has confirmed the same SAS there (state `ready`).
   */
  approve(): Promise<void>;
  /** Reject: end the pairing and revoke the bridge's token at the relay. */
  reject(): Promise<void>;
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
  /**
   * The bridge became unreachable while the command runs (bridge, relay or
   * network away): the command stays pending, and its output resumes without
   * loss when the bridge is back, or it fails with `bridge-lost` after
   * {@linkcode IdeClientOptions.resumeTimeoutMs}.
   */
  onSuspended?: () => void;
  /** The bridge is reachable again; missed output follows. */
  onResumed?: () => void;
}

/** A command running on the bridge. */
export class RemoteCommand {
  /** The command id (unique per IDE socket). */
  readonly id: string;
  /** Resolves with the exit status; rejects with {@linkcode IdeClientError} if it could not run or the bridge was lost. */
  readonly exited: Promise<CommandResult>;
  #send: (frame: FrameInit) => Promise<void>;
  #settle: PromiseWithResolvers<CommandResult>;
  /** @internal */
  readonly options: RunOptions;

  /** @internal Created by {@linkcode IdeClient.run}. */
  constructor(id: string, options: RunOptions, send: (frame: FrameInit) => Promise<void>) {
    this.id = id;
    this.options = options;
    this.#send = send;
    this.#settle = Promise.withResolvers<CommandResult>();
    this.exited = this.#settle.promise;
    this.exited.catch(() => {}); // Callers that never await still see no unhandled rejection.
  }

  /**
   * Writes to the command's stdin. Awaiting the result keeps a writer within
   * the send window (the bridge acknowledges what it received).
   */
  write(data: string | Uint8Array): Promise<void> {
    return this.#send({
      t: FrameType.CmdStdin,
      id: this.id,
      body: typeof data === "string" ? new TextEncoder().encode(data) : data,
    });
  }

  /** Closes the command's stdin (end of input). */
  closeStdin(): Promise<void> {
    return this.#send({ t: FrameType.CmdEof, id: this.id });
  }

  /** Sends a signal to the command's process group (`SIGINT` is Ctrl-C). */
  signal(signal: CommandSignal = "SIGINT"): Promise<void> {
    return this.#send({ t: FrameType.CmdSignal, id: this.id, body: { signal } });
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
  #api: IdeApi;
  #openSocket: WebSocketFactory;
  #origin: string;
  #socket?: WebSocketLike;
  #commands = new Map<string, RemoteCommand>();
  #statusListeners = new Set<(status: BridgeStatusBody) => void>();
  #closeListeners = new Set<(error: IdeClientError) => void>();
  #stateListeners = new Set<(state: E2eState, detail?: string) => void>();
  #approvalListeners = new Set<(request: ApprovalRequest) => void>();
  #nextId = 1;
  #watchdog?: ReturnType<typeof setInterval>;
  #lastSeen = 0;
  #identity?: Promise<CryptoKeyPair>;
  #pins: PinStore;
  #queue: Promise<void> = Promise.resolve();
  #handshake?: IdeHandshake;
  #session?: E2eSession;
  #bridgeKey?: Uint8Array;
  #bridgeVerified = false;
  #abandoned = 0;
  #epoch = 0;
  /** This client's stream: commands and their output, numbered and kept across reconnects. */
  #streamId = toBase64Url(crypto.getRandomValues(new Uint8Array(16)));
  #sender = new StreamSender();
  #receiver = new StreamReceiver();
  #flow = new FlowGate();
  #resumeTimeoutMs: number;
  #resumeTimer?: ReturnType<typeof setTimeout>;
  #suspended = false;
  /** The latest bridge status from the relay. */
  bridge?: BridgeStatusBody;
  /** Where the end-to-end link stands. */
  state: E2eState = "disconnected";
  /** The pending approval request, while {@linkcode state} is `approval`. */
  approval?: ApprovalRequest;
  /** Bridge name, OS and version from the last sealed `e2e.info`. */
  bridgeInfo?: E2eInfoBody;

  /** @param options Relay URL, WebSocket factory, fetch, origin, identity and pins. */
  constructor(options: IdeClientOptions = {}) {
    const fallback = (globalThis as { location?: { origin: string } }).location?.origin;
    const base = options.relayUrl ?? fallback;
    if (!base) throw new TypeError("Cannot create IdeClient: relayUrl is required outside a browser page");
    this.#api = new IdeApi(base, { fetch: options.fetch, sessionCookie: options.sessionCookie });
    this.#openSocket = options.webSocket ??
      ((url, _headers, protocols) =>
        new (globalThis as unknown as { WebSocket: new (u: string, p: string[]) => WebSocketLike }).WebSocket(
          url,
          protocols,
        ));
    this.#origin = options.origin ?? new URL(this.#api.base).origin;
    if (options.identity) this.#identity = Promise.resolve(options.identity);
    this.#resumeTimeoutMs = options.resumeTimeoutMs ?? BRIDGE_RESUME_TIMEOUT_MS;
    this.#pins = options.pins ?? new MemoryPinStore();
  }

  /** Outside browsers: the session cookie, to share the session with another client (a second tab). */
  get sessionCookie(): string | undefined {
    return this.#api.sessionCookie;
  }

  /** The IDE's identity key pair (made in memory on first use when none was given). */
  identity(): Promise<CryptoKeyPair> {
    this.#identity ??= generateIdentity(false);
    return this.#identity;
  }

  /** Creates a browser session (sets the session cookie). */
  createSession(): Promise<{ expiresAt: number }> {
    return this.#api.createSession();
  }

  /**
   * Makes sure a browser session exists: keeps a valid one (a reloaded page),
   * creates one otherwise.
   *
   * @returns Whether a new session was created.
   */
  ensureSession(): Promise<boolean> {
    return this.#api.ensureSession();
  }

  /** Requests a pairing code for this session (retires the previous one). */
  requestPairingCode(): Promise<{ code: string; expiresAt: number }> {
    return this.#api.requestPairingCode();
  }

  /**
   * Revokes the bridge connected to this session at the relay (its token
   * stops working at once) and forgets its pinned key.
   *
   * @param bridgeId The bridge to revoke (default: the connected one).
   */
  async revokeBridge(bridgeId = this.bridge?.bridgeId): Promise<void> {
    await this.#api.revokeBridge(bridgeId);
    if (bridgeId) await this.#pins.delete(bridgeId);
  }

  /** Opens the IDE socket; resolves with the first bridge status. */
  connect(): Promise<BridgeStatusBody> {
    const headers: Record<string, string> = { Origin: this.#origin };
    const cookie = this.#api.sessionCookie;
    if (cookie) headers.Cookie = cookie;
    const socket = this.#openSocket(`${this.#api.base.replace(/^http/, "ws")}/ws/ide`, headers, [WS_SUBPROTOCOL]);
    socket.binaryType = "arraybuffer";
    this.#socket = socket;
    this.#queue = Promise.resolve();
    const first = Promise.withResolvers<BridgeStatusBody>();
    this.#lastSeen = Date.now();
    this.#watchdog = setInterval(() => {
      if (Date.now() - this.#lastSeen > HEARTBEAT_TIMEOUT_MS) socket.close(4000, "no heartbeat from the relay");
    }, 5_000);
    socket.onmessage = (event) => {
      this.#lastSeen = Date.now();
      let frame: Frame | undefined;
      try {
        frame = decodeFrame(event.data, { skipUnknown: true });
      } catch {
        return; // A relay bug must not break the page; skip the frame.
      }
      // A type this version does not know (a newer relay or bridge): skipped, never opened.
      if (!frame) return;
      // One queue keeps frames in order while sealed ones are opened.
      this.#queue = this.#queue.then(() => this.#onFrame(socket, frame, first)).catch((error) => {
        if (!(error instanceof E2eError) || this.#socket !== socket) return;
        // Altered, replayed, reordered or forged: trust nothing more on this socket.
        this.#setState("disconnected", error.message);
        socket.close(CloseCode.E2eFailure, "e2e-failure");
      });
    };
    socket.onclose = (event) => {
      clearInterval(this.#watchdog);
      const error = new IdeClientError(`IDE socket closed (${event.code}${event.reason ? `: ${event.reason}` : ""})`, {
        status: event.code,
        reason: event.code === CloseCode.E2eFailure ? "e2e-failure" : "relay-lost",
      });
      first.reject(error);
      if (this.#socket === socket) {
        this.#resetE2e();
        this.#setState("disconnected", error.message);
        this.#flow.resume();
        // Commands wait for the relay and the bridge to come back (connect() again).
        this.#suspend();
      }
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

  /** Calls `listener` on every end-to-end state change (with a reason for failures). */
  onStateChange(listener: (state: E2eState, detail?: string) => void): () => void {
    this.#stateListeners.add(listener);
    return () => this.#stateListeners.delete(listener);
  }

  /**
   * Calls `listener` when a bridge awaits approval (first pairing). Show the
   * user the SAS, name, OS and version, and call `approve()` only if the
   * bridge printed the same SAS.
   */
  onApprovalRequest(listener: (request: ApprovalRequest) => void): () => void {
    this.#approvalListeners.add(listener);
    if (this.approval) listener(this.approval);
    return () => this.#approvalListeners.delete(listener);
  }

  /** Resolves once an approved bridge is connected with agreed keys (at once if it is). */
  waitForBridge(timeoutMs = 60_000): Promise<BridgeStatusBody> {
    if (this.state === "ready" && this.bridge) return Promise.resolve(this.bridge);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new IdeClientError("No approved bridge connected in time", { status: 0, reason: "timeout" }));
      }, timeoutMs);
      const off = this.onStateChange((state, detail) => {
        if (state !== "ready" && state !== "refused" && state !== "rejected") return;
        clearTimeout(timer);
        off();
        if (state === "ready") resolve(this.bridge!);
        else reject(new IdeClientError(`Bridge not usable: ${detail ?? state}`, { status: 0, reason: state }));
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
    const cmd = new RemoteCommand(id, options, (frame) => this.#push(frame));
    if (this.state !== "ready") {
      const reason = this.bridge?.state === "connected" ? "not-approved" : "no-bridge";
      cmd.reject(
        new IdeClientError(
          reason === "no-bridge" ? "No bridge is connected" : "The bridge is not approved and keyed yet",
          { status: 0, reason },
        ),
      );
      return cmd;
    }
    this.#commands.set(id, cmd);
    const body: CmdStartBody = { command };
    if (options.cwd !== undefined) body.cwd = options.cwd;
    if (options.timeoutMs !== undefined) body.timeoutMs = options.timeoutMs;
    void this.#push({ t: FrameType.CmdStart, id, body });
    return cmd;
  }

  /** Commands started and not yet ended. */
  get pendingCommands(): number {
    return this.#commands.size;
  }

  /**
   * Closes the IDE socket. The bridge is told the stream is over (its
   * commands are hung up now rather than after the linger time) and pending
   * commands fail with reason `closed`.
   */
  close(): void {
    clearInterval(this.#watchdog);
    clearTimeout(this.#resumeTimer);
    const socket = this.#socket;
    const finish = () => socket?.close(1000, "IDE closing");
    if (this.state === "ready") this.#sendSealed({ t: FrameType.StreamClose }).finally(finish);
    else finish();
    this.#failAll("closed", "the IDE client was closed");
  }

  /**
   * Every frame the IDE socket receives, in order: one switch. Control frames
   * from the relay are handled here; sealed frames are opened first. Types an
   * IDE never receives (sent by IDEs, or to bridges only) are skipped: they can
   * only come from a buggy relay, and skipping them costs nothing.
   */
  async #onFrame(socket: WebSocketLike, frame: Frame, first: PromiseWithResolvers<BridgeStatusBody>): Promise<void> {
    if (this.#socket !== socket) return;
    switch (frame.t) {
      case FrameType.Ping:
        return this.#sendRaw({ t: FrameType.Pong });
      case FrameType.Flow:
        if (decodeFlow(frame.body).paused) this.#flow.pause();
        else this.#flow.resume();
        return;
      case FrameType.BridgeStatus:
        return this.#onStatus(socket, decodeBridgeStatus(frame.body), first);
      case FrameType.E2eReply:
        return await this.#onReply(frame);
      case FrameType.E2eInfo:
      case FrameType.StreamResume:
      case FrameType.StreamAck:
      case FrameType.CmdStdout:
      case FrameType.CmdStderr:
      case FrameType.CmdExit:
      case FrameType.CmdError:
        return await this.#onSealed(frame);
      default:
        return;
    }
  }

  #onStatus(socket: WebSocketLike, status: BridgeStatusBody, first: PromiseWithResolvers<BridgeStatusBody>): void {
    this.bridge = status;
    first.resolve(status);
    // A handshake cut short before the bridge proved itself counts against the next one.
    if (this.#handshake || (this.#session && !this.#bridgeVerified)) this.#abandoned++;
    this.#resetE2e();
    // Running commands wait for the stream to resume on the new keys.
    this.#suspend();
    if (status.state === "connected" && status.bridgeId) {
      // Every bridge connection gets fresh keys: a new handshake.
      this.#setState("handshaking");
      this.#startHandshake(socket, status.bridgeId);
    } else this.#setState("disconnected");
    for (const fn of this.#statusListeners) fn(status);
  }

  async #onSealed(frame: Frame): Promise<void> {
    if (!SEALED_TO_IDE.has(frame.t)) return;
    if (!this.#session) throw new E2eError(`Cannot accept ${frame.t}: no keys agreed`);
    const plaintext = await this.#session.open(frame);
    if (frame.t === FrameType.E2eInfo) return await this.#onInfo(plaintext);
    if (frame.t === FrameType.StreamResume) return this.#onResume(plaintext);
    if (this.state !== "ready") throw new E2eError(`Cannot accept ${frame.t}: bridge not approved`);
    if (frame.t === FrameType.StreamAck) return this.#sender.ack(decodeStreamAck(plaintext, _e2eFail).received);
    if (!this.#receiver.accept({ t: frame.t, q: frame.q, body: plaintext })) return; // A resent duplicate.
    this.#onCommandFrame({ ...frame, body: plaintext });
  }

  /** Keys agreed and the bridge trusts this IDE: pick up the stream where it stopped. */
  #resumeStream(): void {
    const body: StreamResumeBody = { stream: this.#streamId, received: this.#receiver.received };
    this.#sendSealed({ t: FrameType.StreamResume, body }).catch(() => {});
  }

  /** The bridge's answer to `stream.resume`: resend what it missed; then commands may run. */
  #onResume(plaintext: Uint8Array): void {
    const body = decodeStreamResume(plaintext, _e2eFail);
    if (body.stream !== this.#streamId) {
      throw new E2eError("Cannot accept stream.resume: not this client's stream");
    }
    if (this.state === "ready") throw new E2eError("Cannot accept stream.resume: stream already resumed");
    if (!body.known && (this.#sender.nextSeq > 1 || this.#receiver.received > 0)) {
      // The bridge has no record of this stream: it restarted (or kept it past
      // its linger time). What ran there is gone; say so, and start afresh.
      this.#failAll("bridge-lost", "the bridge restarted; the command's outcome is unknown");
      this.#sender.reset();
      this.#receiver.reset();
    }
    const channel = this.#session!;
    this.#receiver.setAckSender((received) => {
      const ack: StreamAckBody = { received };
      if (this.#session === channel) this.#sendSealed({ t: FrameType.StreamAck, body: ack }).catch(() => {});
    });
    this.#sender.attach(
      (f: StreamFrame) => this.#session === channel ? this.#sendSealed(f) : Promise.resolve(),
      body.known ? body.received : 0,
    );
    clearTimeout(this.#resumeTimer);
    this.#resumeTimer = undefined;
    this.#setState("ready");
    if (this.#suspended) {
      this.#suspended = false;
      for (const cmd of this.#commands.values()) cmd.options.onResumed?.();
    }
  }

  /** Numbers a command frame into the stream (sent now, or resent after a reconnect). */
  #push(frame: FrameInit): Promise<void> {
    return this.#sender.push({ t: frame.t, id: frame.id, body: bodyBytes(frame.body) });
  }

  /** No bridge reachable: commands wait, for {@linkcode IdeClientOptions.resumeTimeoutMs} at most. */
  #suspend(): void {
    this.#sender.detach();
    this.#receiver.setAckSender(undefined);
    if (this.#commands.size === 0) return;
    if (!this.#suspended) {
      this.#suspended = true;
      for (const cmd of this.#commands.values()) cmd.options.onSuspended?.();
    }
    this.#resumeTimer ??= setTimeout(() => {
      this.#resumeTimer = undefined;
      if (this.state === "ready") return;
      this.#suspended = false;
      this.#failAll(
        "bridge-lost",
        `the bridge was unreachable for ${
          Math.round(this.#resumeTimeoutMs / 1000)
        } s; the command's outcome is unknown`,
      );
      this.#sender.reset();
      this.#receiver.reset();
      // A bridge that still has the stream must not run anything more of it.
      this.#streamId = toBase64Url(crypto.getRandomValues(new Uint8Array(16)));
    }, this.#resumeTimeoutMs);
  }

  /**
   * Sends a hello, at once normally. After handshakes abandoned before the
   * bridge proved itself, each next one waits twice as long (up to a
   * minute): a relay restarting handshakes to search for equal SAS values on
   * both sides gets a handful of tries, not a million.
   */
  #startHandshake(socket: WebSocketLike, bridgeId: string): void {
    const epoch = ++this.#epoch;
    const delay = this.#abandoned === 0 ? 0 : Math.min(60_000, 500 * 2 ** (this.#abandoned - 1));
    const go = async () => {
      const { handshake, hello } = await IdeHandshake.start(await this.identity(), bridgeId);
      if (epoch !== this.#epoch || this.#socket !== socket) return;
      this.#handshake = handshake;
      this.#sendRaw({ t: FrameType.E2eHello, body: hello });
    };
    if (delay === 0) this.#queue = this.#queue.then(go);
    else setTimeout(() => (this.#queue = this.#queue.then(go).catch(() => {})), delay);
  }

  async #onReply(frame: Frame): Promise<void> {
    const handshake = this.#handshake;
    if (!handshake) throw new E2eError("Cannot accept e2e.reply: no handshake in progress");
    this.#handshake = undefined;
    const { session: channel, confirm } = await handshake.finish(parseJsonObject(frame.body, frame.t, _e2eFail));
    const bridgeId = this.bridge!.bridgeId!;
    const pinned = await this.#pins.get(bridgeId);
    if (pinned !== undefined && pinned !== toBase64Url(channel.peerIdentity)) {
      this.#abandoned++;
      // The relay (or someone) presents another key for an approved bridge: refuse.
      const seen = await fingerprint(channel.peerIdentity);
      const expected = await fingerprint(fromBase64Url(pinned));
      this.#setState("refused", `bridge ${bridgeId} presented identity ${seen}, not the approved ${expected}`);
      return;
    }
    this.#session = channel;
    this.#bridgeKey = channel.peerIdentity;
    this.#sendRaw({ t: FrameType.E2eConfirm, body: confirm });
  }

  async #onInfo(plaintext: Uint8Array): Promise<void> {
    const info = decodeE2eInfo(plaintext, _e2eFail);
    if (!this.#bridgeVerified) {
      // The bridge's transcript signature: until it verifies, nothing from this channel is trusted.
      await IdeHandshake.verifyBridge(this.#session!, info.signature);
      this.#bridgeVerified = true;
      this.#abandoned = 0;
    }
    this.bridgeInfo = info;
    if (info.approval === "refused") {
      this.#setState("refused", "the bridge trusts another IDE identity; pair again with coder1 bridge start --pair");
      return;
    }
    const bridgeId = this.bridge!.bridgeId!;
    const key = toBase64Url(this.#bridgeKey!);
    if (info.approval === "pinned" && (await this.#pins.get(bridgeId)) === key) {
      // Ready once the stream is resumed (the bridge answers stream.resume).
      if (this.state !== "ready") this.#resumeStream();
      return;
    }
    const channel = this.#session!;
    let settled = false;
    const request: ApprovalRequest = {
      bridgeId,
      sas: channel.sas,
      name: String(info.name),
      os: String(info.os),
      version: String(info.version),
      fingerprint: await fingerprint(this.#bridgeKey!),
      approve: async () => {
        if (settled || this.#session !== channel) throw new TypeError("Cannot approve: this request is over");
        settled = true;
        await this.#pins.set(bridgeId, key);
        this.approval = undefined;
        await this.#sendSealed({ t: FrameType.E2eApprove });
        // The bridge answers with e2e.info "pinned" once its user confirmed too.
        if (this.state === "approval") this.#setState("confirming");
      },
      reject: async () => {
        if (settled || this.#session !== channel) throw new TypeError("Cannot reject: this request is over");
        settled = true;
        this.approval = undefined;
        await this.#sendSealed({ t: FrameType.E2eReject });
        this.#setState("rejected", "rejected by the user");
        await this.revokeBridge(bridgeId).catch(() => {});
      },
    };
    this.approval = request;
    this.#setState("approval");
    for (const fn of this.#approvalListeners) fn(request);
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
        cmd.resolve(decodeCmdExit(frame.body, _e2eFail));
        break;
      case FrameType.CmdError: {
        this.#commands.delete(cmd.id);
        const body = decodeCmdError(frame.body, _e2eFail);
        cmd.reject(new IdeClientError(body.message, { status: 0, reason: body.reason }));
        break;
      }
    }
  }

  #setState(state: E2eState, detail?: string): void {
    if (this.state === state && detail === undefined) return;
    this.state = state;
    for (const fn of this.#stateListeners) fn(state, detail);
  }

  #resetE2e(): void {
    this.#handshake = undefined;
    this.#session = undefined;
    this.#bridgeKey = undefined;
    this.#bridgeVerified = false;
    this.approval = undefined;
  }

  /** Sends a cleartext frame (heartbeats and the handshake). */
  #sendRaw(frame: FrameInit): void {
    const socket = this.#socket;
    if (!socket || socket.readyState !== 1) return;
    socket.send(encodeFrame(frame));
  }

  /**
   * Seals a frame for the bridge; frames go out in call order, held back
   * while the relay says the bridge is behind (`flow`). Dropped without keys.
   */
  async #sendSealed(frame: FrameInit & { q?: number }): Promise<void> {
    const channel = this.#session, socket = this.#socket;
    if (!channel || !socket) return;
    const sealed = channel.seal({ t: frame.t, id: frame.id, q: frame.q, body: bodyBytes(frame.body) });
    await this.#flow.send(async () => {
      const bytes = await sealed;
      if (this.#session === channel && socket.readyState === 1) socket.send(bytes);
    });
  }

  #failAll(reason: string, message: string): void {
    for (const cmd of this.#commands.values()) cmd.reject(new IdeClientError(message, { status: 0, reason }));
    this.#commands.clear();
  }
}

/** A sealed body that opened but does not parse: the bridge's fault (or a bug); trust nothing more. */
function _e2eFail(message: string): E2eError {
  return new E2eError(`Cannot read ${message}`);
}
