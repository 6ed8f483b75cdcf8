/**
 * The IDE client: everything a web IDE needs to drive a bridge through a
 * relay: create a browser session, request a pairing code, open the IDE
 * socket, run the end-to-end handshake with the bridge (short authentication
 * string, approval, pinned keys), run commands, stream their output, send
 * stdin and signals, and learn their exit status, and open, attach to and
 * type into terminals on the bridge. Every command and terminal byte is sealed
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
import { type Clock, systemClock, type Timers } from "./clock.ts";
import { E2eError } from "./e2e_session.ts";
import { decodeBridgeStatus, decodeFlow } from "./frame_bodies.ts";
import { bodyBytes, decodeFrame, encodeFrame, type FrameInit } from "./frame_codec.ts";
import { type BridgeCredentialInfo, IdeApi } from "./ide_api.ts";
import { IdeClientError } from "./ide_client_error.ts";
import { type ApprovalRequest, type E2eState, type FirstPairingLock, IdeE2e } from "./ide_e2e.ts";
import { MemoryPinStore, type PinStore } from "./pin_store.ts";
import {
  type BridgeStatusBody,
  CloseCode,
  type E2eInfoBody,
  type Frame,
  FrameType,
  HEARTBEAT_TIMEOUT_MS,
  type TerminalInfo,
  type TerminalSupport,
  WS_SUBPROTOCOL,
} from "./protocol.ts";
import { type RemoteCommand, RemoteCommands, type RunOptions, type SealedSender } from "./remote_commands.ts";
import { type RemoteTerminal, RemoteTerminals, type TerminalSize } from "./remote_terminals.ts";
import { FlowGate } from "./stream.ts";

export { IdeClientError } from "./ide_client_error.ts";
export type { BridgeCredentialInfo } from "./ide_api.ts";
export type { ApprovalRequest, E2eState } from "./ide_e2e.ts";
export { MemoryPinStore, type PinStore } from "./pin_store.ts";
export { type CommandResult, RemoteCommand, type RunOptions } from "./remote_commands.ts";
export type { FirstPairingLock } from "./ide_e2e.ts";
export {
  RemoteTerminal,
  type TerminalResult,
  type TerminalSize,
  type TerminalSnapshot,
  type TerminalState,
} from "./remote_terminals.ts";
export type { TerminalInfo, TerminalSupport } from "./protocol.ts";

/** How often the watchdog checks that the relay was heard from within {@linkcode HEARTBEAT_TIMEOUT_MS}. */
const WATCHDOG_INTERVAL_MS = 5_000;

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
   * `bridge-lost`. Default `BRIDGE_RESUME_TIMEOUT_MS` (shared/protocol.ts).
   */
  resumeTimeoutMs?: number;
  /**
   * Time and timers for the heartbeat watchdog, the handshake backoff, the
   * resume timeout and {@linkcode IdeClient.waitForBridge} (default: the real
   * ones, {@linkcode systemClock}). Tests pass a `ManualClock`
   * (shared/clock.ts) and fire the timers by advancing it.
   */
  clock?: Clock & Timers;
  /**
   * Hide the rhythm of typing from the relay (default true): while the user
   * types into a terminal, its input leaves at a fixed interval
   * (`KEYSTROKE_INTERVAL_MS`, 20 ms) in padded frames, with chaff when no key
   * was typed, for 1 to 3 s after the last keystroke, as OpenSSH's
   * ObscureKeystrokeTiming does. It costs up to one interval of latency per
   * keystroke and about 50 small frames a second while typing; it applies with
   * bridges that take `term.keys` (docs/PROTOCOL.md, "Keystroke timing").
   * {@linkcode IdeClient.setObscureKeystrokes} changes it later.
   */
  obscureKeystrokes?: boolean;
  /**
   * One first pairing at a time among the clients of one browser session
   * (a page's tabs take a Web Lock): see {@linkcode IdeE2eOptions.firstPairingLock}.
   */
  firstPairingLock?: FirstPairingLock;
}

/**
 * Talks to one relay on behalf of one browser session. It owns the IDE
 * socket, the heartbeat watchdog and the one dispatch of incoming frames,
 * and wires the parts: the HTTP API (shared/ide_api.ts), the end-to-end
 * session (shared/ide_e2e.ts), the commands on their lossless stream
 * (shared/remote_commands.ts) and the terminals on the same stream
 * (shared/remote_terminals.ts).
 */
export class IdeClient {
  #api: IdeApi;
  #e2e: IdeE2e;
  #commands: RemoteCommands;
  #terminals: RemoteTerminals;
  #pins: PinStore;
  #clock: Clock & Timers;
  #openSocket: WebSocketFactory;
  #origin: string;
  #socket?: WebSocketLike;
  #unwatch?: () => void;
  /** Frames of the current socket, handled one after another (sealed ones open in order). */
  #queue: Promise<void> = Promise.resolve();
  #flow = new FlowGate();
  #statusListeners = new Set<(status: BridgeStatusBody) => void>();
  #closeListeners = new Set<(error: IdeClientError) => void>();
  #stateListeners = new Set<(state: E2eState, detail?: string) => void>();
  #approvalListeners = new Set<(request: ApprovalRequest) => void>();
  /** The latest bridge status from the relay. */
  bridge?: BridgeStatusBody;

  /** @param options Relay URL, WebSocket factory, fetch, origin, identity, pins and clock. */
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
    this.#clock = options.clock ?? systemClock;
    this.#pins = options.pins ?? new MemoryPinStore();
    this.#e2e = new IdeE2e({
      identity: options.identity,
      pins: this.#pins,
      timers: this.#clock,
      send: (frame) => this.#sendRaw(frame),
      sendSealed: (frame) => this.#sendSealed(frame),
      onTrusted: () => this.#commands.requestResume(this.#sealedSender()),
      revoke: (bridgeId) => this.revokeBridge(bridgeId),
      onState: (state, detail) => {
        for (const fn of this.#stateListeners) fn(state, detail);
      },
      onApproval: (request) => {
        for (const fn of this.#approvalListeners) fn(request);
      },
      firstPairingLock: options.firstPairingLock,
    });
    this.#commands = new RemoteCommands({
      timers: this.#clock,
      resumeTimeoutMs: options.resumeTimeoutMs,
      onResumed: () => this.#e2e.resumed(),
      onStreamFrame: (frame) => this.#terminals.receive(frame),
      onStreamReset: () => this.#terminals.streamReset(),
    });
    this.#terminals = new RemoteTerminals({
      push: (frame) => this.#commands.push(frame),
      clock: this.#clock,
      // Only a bridge that said so takes term.keys; an older one would skip it and end the session (gap in `s`).
      keysAccepted: () => this.state === "ready" && this.#e2e.bridgeInfo?.termKeys === true,
      signalAccepted: () => this.#e2e.bridgeInfo?.termSignal === true,
      obscureKeystrokes: options.obscureKeystrokes,
    });
  }

  /** Where the end-to-end link stands. */
  get state(): E2eState {
    return this.#e2e.state;
  }

  /** The pending approval request, while {@linkcode state} is `approval`. */
  get approval(): ApprovalRequest | undefined {
    return this.#e2e.approval;
  }

  /** Bridge name, OS and version from the last sealed `e2e.info`. */
  get bridgeInfo(): E2eInfoBody | undefined {
    return this.#e2e.bridgeInfo;
  }

  /** Outside browsers: the session cookie, to share the session with another client (a second tab). */
  get sessionCookie(): string | undefined {
    return this.#api.sessionCookie;
  }

  /**
   * The session's routing key from the relay (after `createSession` or
   * `ensureSession`); {@linkcode connect} puts it in the socket URL as `?r=`.
   */
  get routingKey(): string | undefined {
    return this.#api.routingKey;
  }

  /** The IDE's identity key pair (made in memory on first use when none was given). */
  identity(): Promise<CryptoKeyPair> {
    return this.#e2e.identity();
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

  /**
   * Requests this session's pairing code: the live one again while there is
   * one, a new one (retiring it) with `replace`.
   */
  requestPairingCode(
    options: { replace?: boolean } = {},
  ): Promise<{ code: string; expiresAt: number; reused: boolean }> {
    return this.#api.requestPairingCode(options);
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

  /**
   * Revokes every bridge credential this session was issued, connected or not,
   * and forgets their pins.
   *
   * @returns The bridge ids revoked.
   */
  async revokeAllBridges(): Promise<string[]> {
    const revoked = await this.#api.revokeAllBridges();
    for (const bridgeId of revoked) await this.#pins.delete(bridgeId);
    return revoked;
  }

  /** The bridge credentials issued to this session, newest first (`GET /api/bridges`). */
  listBridges(): Promise<BridgeCredentialInfo[]> {
    return this.#api.listBridges();
  }

  /**
   * Opens the IDE socket; resolves with the first bridge status. A socket it
   * replaces counts as lost: its keys are forgotten and commands wait for the
   * new one.
   */
  connect(): Promise<BridgeStatusBody> {
    if (this.#socket) this.#lost();
    const headers: Record<string, string> = { Origin: this.#origin };
    const cookie = this.#api.sessionCookie;
    if (cookie) headers.Cookie = cookie;
    // `?r=`: behind several relay instances, the balancer places the socket by it (docs/OPERATIONS.md).
    const key = this.#api.routingKey;
    const url = `${this.#api.base.replace(/^http/, "ws")}/ws/ide${key ? `?r=${key}` : ""}`;
    const socket = this.#openSocket(url, headers, [WS_SUBPROTOCOL]);
    // Bytes, not Blobs. npm:ws already delivers Buffers (Uint8Arrays): asking it
    // for ArrayBuffers would copy every message.
    if (socket.binaryType !== "nodebuffer") socket.binaryType = "arraybuffer";
    this.#socket = socket;
    this.#queue = Promise.resolve();
    const first = Promise.withResolvers<BridgeStatusBody>();
    let lastSeen = this.#clock.now();
    const unwatch = this.#watch(socket, () => lastSeen);
    this.#unwatch = unwatch;
    socket.onmessage = (event) => {
      lastSeen = this.#clock.now();
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
        this.#e2e.stop(error.message);
        socket.close(CloseCode.E2eFailure, "e2e-failure");
      });
    };
    socket.onclose = (event) => {
      unwatch();
      const error = new IdeClientError(`IDE socket closed (${event.code}${event.reason ? `: ${event.reason}` : ""})`, {
        status: event.code,
        reason: event.code === CloseCode.E2eFailure ? "e2e-failure" : "relay-lost",
      });
      first.reject(error);
      // Commands wait for the relay and the bridge to come back (connect() again).
      if (this.#socket === socket) this.#lost(error.message);
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
      const cancel = this.#clock.after(timeoutMs, () => {
        off();
        reject(new IdeClientError("No approved bridge connected in time", { status: 0, reason: "timeout" }));
      });
      const off = this.onStateChange((state, detail) => {
        if (state !== "ready" && state !== "refused" && state !== "rejected") return;
        cancel();
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
    return this.#commands.run(command, options, this.#refusal());
  }

  /** Commands started and not yet ended. */
  get pendingCommands(): number {
    return this.#commands.size;
  }

  /**
   * Whether the bridge runs terminals, from its last `e2e.info`: `available`,
   * `disabled` (`--no-terminal`), `unsupported-os`; undefined before the
   * bridge said, or when it predates terminals.
   */
  get terminalSupport(): TerminalSupport | undefined {
    return this.#e2e.bridgeInfo?.terminals;
  }

  /**
   * Opens a terminal on the bridge: the user's login shell in a
   * pseudo-terminal of `size`, in the bridge's directory. It runs until its
   * shell ends or it is closed, whatever happens to this client (for the
   * bridge's linger time once nobody is attached).
   *
   * @param size Columns (2 to `MAX_TERMINAL_COLS`) and rows (1 to `MAX_TERMINAL_ROWS`).
   * @returns The terminal; it fails at once (`no-bridge`, `not-approved`,
   *   `disabled`, `unsupported-os`, `unsupported-bridge`) unless the bridge is
   *   ready and runs terminals.
   * @throws {RangeError} For a size out of range.
   */
  openTerminal(size: TerminalSize): RemoteTerminal {
    return this.#terminals.open(size, this.#terminalRefusal());
  }

  /**
   * Attaches to a terminal running on the bridge (one from
   * {@linkcode listTerminals}, say after a reload): its screen as a snapshot,
   * then its output. The terminal takes this client's size. For a terminal
   * this client has already, it is that same object, repainted.
   *
   * @param id The terminal's id.
   * @param size This client's columns and rows.
   * @returns The terminal; it fails at once as {@linkcode openTerminal}'s does,
   *   or with `unknown-terminal` when the bridge has no such terminal.
   * @throws {RangeError} For a size out of range or a malformed id.
   */
  attachTerminal(id: string, size: TerminalSize): RemoteTerminal {
    return this.#terminals.attach(id, size, this.#terminalRefusal());
  }

  /** Every terminal the bridge keeps (running, or exited and attached somewhere), oldest first. */
  listTerminals(): Promise<TerminalInfo[]> {
    return this.#terminals.list(this.#terminalRefusal());
  }

  /** Whether keystroke timing is hidden when the bridge allows it (the setting; default true). */
  get obscureKeystrokes(): boolean {
    return this.#terminals.obscureKeystrokes;
  }

  /**
   * Whether typing into terminals is paced now: {@linkcode obscureKeystrokes}
   * is on, the bridge takes `term.keys` (an older one does not: input then goes
   * unpaced) and the bridge is ready.
   */
  get keystrokesObscured(): boolean {
    return this.#terminals.pacing;
  }

  /** Frames sent for terminal input so far: padded keystroke frames, chaff, and unpadded sends (pastes, or unpaced). */
  get keystrokeStats(): { keys: number; chaff: number; bulk: number } {
    return { ...this.#terminals.keystrokeStats };
  }

  /**
   * Turns keystroke timing obfuscation on or off for every terminal of this
   * client, at once (off: what waits for the next tick goes out now).
   *
   * @param on Whether to pace typing; see {@linkcode IdeClientOptions.obscureKeystrokes}.
   */
  setObscureKeystrokes(on: boolean): void {
    this.#terminals.setObscureKeystrokes(on);
  }

  #terminalRefusal(): IdeClientError | undefined {
    const refusal = this.#refusal();
    if (refusal) return refusal;
    const support = this.terminalSupport;
    if (support === "available") return undefined;
    if (support === undefined) {
      return new IdeClientError("The bridge predates terminals: update it", {
        status: 0,
        reason: "unsupported-bridge",
      });
    }
    return new IdeClientError(
      support === "disabled"
        ? "The bridge was started with --no-terminal: it runs one-shot commands only"
        : "The bridge's OS has no terminals coder1 can use (one-shot commands work)",
      { status: 0, reason: support },
    );
  }

  /** Why nothing can run now, if so: no bridge, or one not approved and keyed yet. */
  #refusal(): IdeClientError | undefined {
    if (this.state === "ready") return undefined;
    return this.bridge?.state === "connected"
      ? new IdeClientError("The bridge is not approved and keyed yet", { status: 0, reason: "not-approved" })
      : new IdeClientError("No bridge is connected", { status: 0, reason: "no-bridge" });
  }

  /**
   * Closes the IDE socket. The bridge is told the stream is over (its
   * commands are hung up now rather than after the linger time; its terminals
   * run on, detached) and pending commands and terminals fail with reason
   * `closed`.
   */
  close(): void {
    this.#unwatch?.();
    const socket = this.#socket;
    const finish = () => socket?.close(1000, "IDE closing");
    if (this.state === "ready") this.#sendSealed({ t: FrameType.StreamClose }).finally(finish);
    else finish();
    this.#commands.close();
    this.#terminals.close();
  }

  /**
   * Every frame the IDE socket receives, in order: one switch. Control frames
   * from the relay are handled here; sealed frames are opened first, then go
   * to the end-to-end session or to the commands. Types an IDE never receives
   * (sent by IDEs, or to bridges only) are skipped: they can only come from a
   * buggy relay, and skipping them costs nothing.
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
        return this.#onStatus(decodeBridgeStatus(frame.body), first);
      case FrameType.E2eReply:
        return await this.#e2e.onReply(frame);
      case FrameType.E2eInfo:
        return await this.#e2e.onInfo(await this.#e2e.open(frame));
      case FrameType.StreamResume: {
        const plaintext = await this.#e2e.open(frame);
        if (this.state === "ready") throw new E2eError("Cannot accept stream.resume: stream already resumed");
        return this.#commands.resume(plaintext, this.#sealedSender());
      }
      case FrameType.StreamAck:
      case FrameType.CmdStdout:
      case FrameType.CmdStderr:
      case FrameType.CmdExit:
      case FrameType.CmdError:
      case FrameType.TermList:
      case FrameType.TermSnapshot:
      case FrameType.TermOutput:
      case FrameType.TermTitle:
      case FrameType.TermExit:
      case FrameType.TermError: {
        const plaintext = await this.#e2e.open(frame);
        if (this.state !== "ready") throw new E2eError(`Cannot accept ${frame.t}: bridge not approved`);
        return this.#commands.receive({ ...frame, body: plaintext });
      }
      default:
        return;
    }
  }

  #onStatus(status: BridgeStatusBody, first: PromiseWithResolvers<BridgeStatusBody>): void {
    this.bridge = status;
    first.resolve(status);
    // Running commands wait for the stream to resume on the new keys.
    this.#commands.suspend();
    // Every bridge connection gets fresh keys: a new handshake.
    this.#e2e.restart(status.state === "connected" && status.bridgeId ? status.bridgeId : undefined);
    for (const fn of this.#statusListeners) fn(status);
  }

  /** The socket is gone: forget its keys; commands wait for the bridge to be back. */
  #lost(detail?: string): void {
    this.#e2e.stop(detail);
    this.#flow.resume();
    this.#commands.suspend();
  }

  /**
   * Closes `socket` once the relay has been silent for longer than
   * {@linkcode HEARTBEAT_TIMEOUT_MS} (it pings every 15 s).
   *
   * @returns Stops watching.
   */
  #watch(socket: WebSocketLike, lastSeen: () => number): () => void {
    let cancel = () => {};
    const check = () => {
      if (this.#clock.now() - lastSeen() > HEARTBEAT_TIMEOUT_MS) {
        socket.close(CloseCode.HeartbeatTimeout, "no heartbeat from the relay");
      } else cancel = this.#clock.after(WATCHDOG_INTERVAL_MS, check);
    };
    cancel = this.#clock.after(WATCHDOG_INTERVAL_MS, check);
    return () => cancel();
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
    const session = this.#e2e.session, socket = this.#socket;
    if (!session || !socket) return;
    const sealed = session.seal({ t: frame.t, id: frame.id, q: frame.q, body: bodyBytes(frame.body) });
    await this.#flow.send(async () => {
      const bytes = await sealed;
      if (this.#e2e.session === session && socket.readyState === 1) socket.send(bytes);
    });
  }

  /** A sender on the keys agreed now: once they are replaced it sends nothing (the stream resends). */
  #sealedSender(): SealedSender {
    const session = this.#e2e.session;
    return (frame) => this.#e2e.session === session ? this.#sendSealed(frame) : Promise.resolve();
  }
}
