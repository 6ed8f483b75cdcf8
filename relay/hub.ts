/**
 * The relay's switchboard: which IDE sockets and which bridge belong to each
 * browser session, and the forwarding between them. Every frame from a socket
 * goes through one dispatch per role; the relay reads headers and its own
 * control bodies, never end-to-end bodies.
 *
 * @module
 */
import { closeWithError, Coder1Error } from "../shared/errors.ts";
import { decodeFrame, encodeFrame, jsonBody, withChannel } from "../shared/frame_codec.ts";
import {
  AUTH_DEADLINE_MS,
  type AuthBody,
  type AuthOkBody,
  BRIDGE_TO_RELAY,
  type BridgeStatusBody,
  CloseCode,
  FLOW_HIGH_BYTES,
  FLOW_LOW_BYTES,
  type FlowBody,
  type Frame,
  FrameType,
  HEARTBEAT_INTERVAL_MS,
  HEARTBEAT_TIMEOUT_MS,
  IDE_TO_RELAY,
  MAX_BUFFERED_BYTES,
  MAX_CRASH_REPORTS_PER_CONNECTION,
} from "../shared/protocol.ts";
import { sanitizeCrash } from "../shared/scrub.ts";
import type { Logger } from "./logger.ts";
import type { RelayMetrics } from "./metrics.ts";
import type { Pairing } from "./pairing.ts";
import { NO_TELEMETRY, type TelemetryRecorder } from "./telemetry.ts";
import type { TokenService } from "./token_service.ts";

/** Timing knobs; tests shrink them. */
export interface HubTimings {
  /** Ping interval. */
  heartbeatIntervalMs: number;
  /** Silence after which a socket is dropped. */
  heartbeatTimeoutMs: number;
  /** Time a bridge socket has to send `auth`. */
  authDeadlineMs: number;
  /** A receiver whose send buffer has not shrunk for this long is closed (4508). */
  receiverStuckMs: number;
}

/** How often the hub checks whether paused senders may go on. */
const FLOW_POLL_MS = 10;

/** Default timings from protocol.ts. */
export const DEFAULT_TIMINGS: HubTimings = {
  heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
  heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
  authDeadlineMs: AUTH_DEADLINE_MS,
  receiverStuckMs: 60_000,
};

interface Peer {
  socket: WebSocket;
  lastSeen: number;
  /** Keeps tapped frames in order (only with a {@linkcode FrameTap}). */
  tapChain?: Promise<void>;
  /** This peer is a congested receiver: its senders were told to pause. */
  congested?: boolean;
  /** Since when its send buffer has not shrunk (stuck-receiver check). */
  stuckSince?: number;
  /** Its send buffer at the last check. */
  lastBuffered?: number;
}

interface IdePeer extends Peer {
  channel: number;
  sid: string;
}

interface BridgePeer extends Peer {
  address: string;
  authed: boolean;
  bridgeId?: string;
  sid?: string;
  jti?: string;
  expiresAt?: number;
  version?: string;
  /** False when the bridge said `telemetry: false`: nothing about it is recorded. */
  telemetry?: boolean;
  /** Crash reports taken on this connection. */
  crashes?: number;
}

interface SessionRoom {
  ides: Map<number, IdePeer>;
  bridge?: BridgePeer;
}

/** Which way a forwarded frame travels. */
export type TapDirection = "ide-to-bridge" | "bridge-to-ide";

/**
 * A test-only hook that sees every end-to-end frame the hub forwards, after
 * the channel stamp, and says what to deliver instead: an array of messages
 * for the destination (the same bytes, nothing, or forged ones), or
 * `{ forward, back }` to also answer the sender. Recording and
 * man-in-the-middle tests play a malicious relay with it; `coder1 relay
 * serve` never sets it.
 */
export type FrameTap = (
  direction: TapDirection,
  bytes: Uint8Array,
  channel: number,
) => TapResult | Promise<TapResult>;

/** What a {@linkcode FrameTap} delivers. */
export type TapResult = Uint8Array[] | { forward?: Uint8Array[]; back?: Uint8Array[] };

/** Counters of what the hub did, for tests and (later) metrics. */
export interface HubCounters {
  framesToBridge: number;
  framesToIde: number;
  closes: Record<string, number>;
}

/** Routes frames between IDE sockets and bridges. */
export class Hub {
  #rooms = new Map<string, SessionRoom>();
  #bridges = new Set<BridgePeer>();
  // Channel numbers start at a random point so that numbers from before a relay
  // restart are not handed out again to different IDE sockets.
  #nextChannel = 1 + (crypto.getRandomValues(new Uint32Array(1))[0] >>> 1);
  #pairing: Pairing;
  #tokens: TokenService;
  #log: Logger;
  #timings: HubTimings;
  #heartbeat?: ReturnType<typeof setInterval>;
  #flowTimer?: ReturnType<typeof setInterval>;
  /** Congested receivers and the room each is in. */
  #congested = new Map<Peer, SessionRoom>();
  #tap?: FrameTap;
  #metrics?: RelayMetrics;
  #telemetry: TelemetryRecorder;
  /** What the hub has done so far. */
  readonly counters: HubCounters = { framesToBridge: 0, framesToIde: 0, closes: {} };

  /** @param deps Pairing, tokens, logger, timings, metrics, telemetry and (tests only) a frame tap. */
  constructor(
    deps: {
      pairing: Pairing;
      tokens: TokenService;
      log: Logger;
      timings?: Partial<HubTimings>;
      tap?: FrameTap;
      metrics?: RelayMetrics;
      telemetry?: TelemetryRecorder;
    },
  ) {
    this.#tap = deps.tap;
    this.#metrics = deps.metrics;
    this.#telemetry = deps.telemetry ?? NO_TELEMETRY;
    this.#pairing = deps.pairing;
    this.#tokens = deps.tokens;
    this.#log = deps.log;
    this.#timings = { ...DEFAULT_TIMINGS, ...deps.timings };
  }

  /** Starts the heartbeat timer. */
  start(): void {
    this.#heartbeat = setInterval(() => this.#beat(), this.#timings.heartbeatIntervalMs);
  }

  /** Stops the heartbeat and closes every socket with `code`. */
  stop(code: number = CloseCode.GoingAway, reason = "relay shutting down"): void {
    clearInterval(this.#heartbeat);
    clearInterval(this.#flowTimer);
    this.#congested.clear();
    for (const peer of this.#allPeers()) _close(peer.socket, code, reason);
  }

  /** Number of connected (authenticated) bridges and IDE sockets. */
  get stats(): { bridges: number; ides: number } {
    let bridges = 0, ides = 0;
    for (const room of this.#rooms.values()) {
      if (room.bridge) bridges++;
      ides += room.ides.size;
    }
    return { bridges, ides };
  }

  /** Whether a bridge is connected for session `sid`. */
  bridgeConnected(sid: string): boolean {
    return this.#rooms.get(sid)?.bridge !== undefined;
  }

  /** Closes the live connection that authenticated with token `jti`, if any. */
  kickToken(jti: string): void {
    for (const peer of this.#bridges) {
      if (peer.jti === jti) this.#closePeer(peer, CloseCode.Revoked, "token revoked");
    }
  }

  /**
   * The bridge connected to session `sid`: its id, token id and expiry, so
   * the IDE can revoke it (revoke first, then {@linkcode kickToken}).
   */
  sessionBridge(sid: string): { bridgeId: string; jti: string; expiresAt: number } | undefined {
    const peer = this.#rooms.get(sid)?.bridge;
    if (!peer?.bridgeId || !peer.jti || peer.expiresAt === undefined) return undefined;
    return { bridgeId: peer.bridgeId, jti: peer.jti, expiresAt: peer.expiresAt };
  }

  /** Adopts a freshly upgraded IDE socket of session `sid`. */
  acceptIde(socket: WebSocket, sid: string): void {
    socket.binaryType = "arraybuffer";
    const peer: IdePeer = { socket, sid, channel: this.#nextChannel++, lastSeen: Date.now() };
    socket.onopen = () => {
      const room = this.#room(sid);
      room.ides.set(peer.channel, peer);
      this.#log.info("ide.open", { channel: peer.channel });
      this.#sendStatus(room, peer);
      if (room.bridge) this.#send(room.bridge, encodeFrame({ t: FrameType.IdeOpen, c: peer.channel }));
      // The bridge is behind on reading: this socket waits like the others.
      if (room.bridge?.congested) this.#send(peer, _flow(true));
    };
    socket.onmessage = (event) => {
      peer.lastSeen = Date.now();
      try {
        this.#onIdeFrame(peer, decodeFrame(event.data));
      } catch (error) {
        this.#fail(peer, error);
      }
    };
    socket.onclose = (event) => {
      this.#metrics?.socketClosed("ide", event.code);
      const room = this.#rooms.get(sid);
      this.#congested.delete(peer);
      if (!room || room.ides.get(peer.channel) !== peer) return;
      room.ides.delete(peer.channel);
      this.#log.info("ide.close", { channel: peer.channel });
      if (room.bridge) this.#send(room.bridge, encodeFrame({ t: FrameType.IdeClose, c: peer.channel }));
      this.#dropRoomIfEmpty(sid, room);
    };
    socket.onerror = () => {};
  }

  /** Adopts a freshly upgraded bridge socket from `address`. */
  acceptBridge(socket: WebSocket, address: string): void {
    socket.binaryType = "arraybuffer";
    const peer: BridgePeer = { socket, address, authed: false, lastSeen: Date.now() };
    this.#bridges.add(peer);
    const deadline = setTimeout(() => {
      if (!peer.authed) this.#closePeer(peer, CloseCode.AuthTimeout, "no auth frame in time");
    }, this.#timings.authDeadlineMs);
    // Frames are handled strictly in order: auth is asynchronous (signature
    // checks), and nothing may overtake it.
    let queue: Promise<void> = Promise.resolve();
    socket.onmessage = (event) => {
      peer.lastSeen = Date.now();
      queue = queue.then(async () => {
        if (socket.readyState !== WebSocket.OPEN) return;
        try {
          const frame = decodeFrame(event.data);
          if (!peer.authed) await this.#authenticate(peer, frame);
          else this.#onBridgeFrame(peer, frame);
        } catch (error) {
          this.#fail(peer, error);
        }
      });
    };
    socket.onclose = (event) => {
      clearTimeout(deadline);
      this.#metrics?.socketClosed("bridge", event.code);
      if (peer.authed && peer.telemetry) this.#telemetry.connection(peer.bridgeId!, peer.version!, "disconnect");
      this.#bridges.delete(peer);
      if (peer.congested && peer.sid) this.#releaseSenders(peer, this.#rooms.get(peer.sid));
      this.#congested.delete(peer);
      if (!peer.sid) return;
      const room = this.#rooms.get(peer.sid);
      if (!room || room.bridge !== peer) return;
      room.bridge = undefined;
      this.#log.info("bridge.disconnect", { bridgeId: peer.bridgeId });
      for (const ide of room.ides.values()) this.#sendStatus(room, ide, peer);
      this.#dropRoomIfEmpty(peer.sid, room);
    };
    socket.onerror = () => {};
  }

  async #authenticate(peer: BridgePeer, frame: Frame): Promise<void> {
    if (frame.t !== FrameType.Auth) throw _badFrame(`expected auth, got ${frame.t}`);
    const body = _parseAuth(jsonBody(frame));
    let sid: string, bridgeId: string, jti: string, expiresAt: number, token: string | undefined;
    if (body.code !== undefined) {
      sid = await this.#pairing.redeem(body.code, peer.address);
      bridgeId = crypto.randomUUID();
      const issued = await this.#tokens.issueBridgeToken(bridgeId, sid);
      ({ token, jti, expiresAt } = issued);
      this.#log.info("bridge.paired", { bridgeId });
    } else {
      const claims = await this.#tokens.verifyBridgeToken(body.token!);
      ({ sid, jti, expiresAt } = claims);
      bridgeId = claims.sub;
    }
    if (peer.socket.readyState !== WebSocket.OPEN) return;
    const telemetry = body.telemetry !== false;
    Object.assign(peer, { authed: true, sid, bridgeId, jti, expiresAt, version: body.version, telemetry });
    const room = this.#room(sid);
    const previous = room.bridge;
    room.bridge = peer;
    if (previous) {
      this.#closePeer(previous, CloseCode.Replaced, "another connection of this session's bridge took over");
    }
    const ok: AuthOkBody = { bridgeId, expiresAt, channels: [...room.ides.keys()] };
    if (token) ok.token = token;
    if (telemetry && this.#telemetry.enabled) ok.crashReports = true;
    this.#send(peer, encodeFrame({ t: FrameType.AuthOk, body: { ...ok } }));
    if (telemetry) this.#telemetry.connection(bridgeId, body.version, "connect");
    this.#log.info("bridge.connect", { bridgeId, version: body.version });
    for (const ide of room.ides.values()) this.#sendStatus(room, ide);
  }

  #onBridgeFrame(peer: BridgePeer, frame: Frame): void {
    if (!BRIDGE_TO_RELAY.has(frame.t)) throw _badFrame(`bridges may not send ${frame.t}`);
    if (frame.t === FrameType.Pong) return;
    if (frame.t === FrameType.Crash) return this.#onCrash(peer, frame);
    if (frame.c === undefined) throw _badFrame(`${frame.t} needs a channel`);
    // Counted from the header type alone; the body is sealed.
    if (frame.t === FrameType.CmdExit || frame.t === FrameType.CmdError) {
      this.#metrics?.commandEnded(frame.t === FrameType.CmdExit ? "exit" : "error");
      if (peer.telemetry) this.#telemetry.commandEnded(peer.bridgeId!);
    }
    const ide = this.#rooms.get(peer.sid!)?.ides.get(frame.c);
    // The IDE socket may have left; its frames have nowhere to go.
    if (!ide) return;
    this.counters.framesToIde++;
    const bytes = withChannel(frame, undefined);
    this.#metrics?.relayed("bridge_to_ide", bytes.byteLength);
    this.#forward(peer, ide, bytes, "bridge-to-ide", frame.c);
  }

  /** A crash report: scrubbed again and kept, unless telemetry is off or the cap is reached. */
  #onCrash(peer: BridgePeer, frame: Frame): void {
    const report = sanitizeCrash(jsonBody(frame));
    if (!report) throw _badFrame("crash body malformed");
    peer.crashes = (peer.crashes ?? 0) + 1;
    if (!peer.telemetry || !this.#telemetry.enabled || peer.crashes > MAX_CRASH_REPORTS_PER_CONNECTION) {
      this.#metrics?.crashReport("dropped");
      return;
    }
    this.#telemetry.crash(report);
    this.#metrics?.crashReport("stored");
  }

  #onIdeFrame(peer: IdePeer, frame: Frame): void {
    if (!IDE_TO_RELAY.has(frame.t)) throw _badFrame(`IDE sockets may not send ${frame.t}`);
    if (frame.t === FrameType.Pong) return;
    const bridge = this.#rooms.get(peer.sid)?.bridge;
    // No bridge: the IDE knows from bridge.status and tells its user.
    if (!bridge) return;
    this.counters.framesToBridge++;
    // Counted from the header type alone; the body is sealed.
    if (frame.t === FrameType.CmdStart) {
      this.#metrics?.commandStarted();
      if (bridge.telemetry) this.#telemetry.commandStarted(bridge.bridgeId!);
    }
    const bytes = withChannel(frame, peer.channel);
    this.#metrics?.relayed("ide_to_bridge", bytes.byteLength);
    this.#forward(peer, bridge, bytes, "ide-to-bridge", peer.channel);
  }

  #forward(from: Peer, to: Peer, bytes: Uint8Array, direction: TapDirection, channel: number): void {
    const tap = this.#tap;
    if (!tap) {
      if (to.socket.bufferedAmount > MAX_BUFFERED_BYTES) {
        // Its receiver is far behind and it was told to pause: honest peers stop
        // within their stream window, well below this. Protect the relay.
        this.#closePeer(from, CloseCode.IgnoredPause, "kept sending while paused");
        return;
      }
      this.#send(to, bytes);
      this.#checkCongestion(to, direction === "bridge-to-ide" ? channel : undefined);
      return;
    }
    from.tapChain = (from.tapChain ?? Promise.resolve()).then(async () => {
      const result = await tap(direction, bytes, channel);
      const { forward = [], back = [] } = Array.isArray(result) ? { forward: result } : result;
      for (const out of forward) this.#send(to, out);
      // Answers to a bridge keep the sender's channel; answers to an IDE carry none.
      for (const out of back) this.#send(from, out);
    }).catch((error) => this.#log.error("tap.error", { error: String(error) }));
  }

  #sendStatus(room: SessionRoom, ide: IdePeer, last?: BridgePeer): void {
    const b = room.bridge ?? last;
    const body: BridgeStatusBody = {
      state: room.bridge ? "connected" : "disconnected",
      channel: ide.channel,
      ...(b ? { bridgeId: b.bridgeId, version: b.version } : {}),
    };
    this.#send(ide, encodeFrame({ t: FrameType.BridgeStatus, body: { ...body } }));
  }

  #send(peer: Peer, bytes: Uint8Array): void {
    if (peer.socket.readyState !== WebSocket.OPEN) return;
    peer.socket.send(bytes);
  }

  /**
   * Pushback: when a receiver has more than {@linkcode FLOW_HIGH_BYTES} waiting
   * to be sent to it, its senders get `flow {paused: true}` (the bridge for
   * that IDE channel, or every IDE socket of the session for a bridge) and
   * hold their end-to-end frames back until it is down to
   * {@linkcode FLOW_LOW_BYTES}.
   */
  #checkCongestion(receiver: Peer, channel: number | undefined): void {
    if (receiver.congested || receiver.socket.bufferedAmount <= FLOW_HIGH_BYTES) return;
    const sid = channel === undefined ? (receiver as BridgePeer).sid : (receiver as IdePeer).sid;
    const room = sid === undefined ? undefined : this.#rooms.get(sid);
    if (!room) return;
    receiver.congested = true;
    this.#congested.set(receiver, room);
    if (channel !== undefined) {
      if (room.bridge) this.#send(room.bridge, encodeFrame({ t: FrameType.Flow, c: channel, body: _flowBody(true) }));
    } else {
      for (const ide of room.ides.values()) this.#send(ide, _flow(true));
    }
    this.#flowTimer ??= setInterval(() => this.#pollCongestion(), FLOW_POLL_MS);
  }

  #pollCongestion(): void {
    for (const [receiver, room] of this.#congested) {
      if (receiver.socket.readyState === WebSocket.OPEN && receiver.socket.bufferedAmount > FLOW_LOW_BYTES) continue;
      this.#releaseSenders(receiver, room);
    }
    if (this.#congested.size === 0) {
      clearInterval(this.#flowTimer);
      this.#flowTimer = undefined;
    }
  }

  #releaseSenders(receiver: Peer, room: SessionRoom | undefined): void {
    receiver.congested = false;
    this.#congested.delete(receiver);
    if (!room) return;
    if ("channel" in receiver) {
      const c = (receiver as IdePeer).channel;
      if (room.bridge) this.#send(room.bridge, encodeFrame({ t: FrameType.Flow, c, body: _flowBody(false) }));
    } else {
      for (const ide of room.ides.values()) this.#send(ide, _flow(false));
    }
  }

  #beat(): void {
    const now = Date.now();
    const ping = encodeFrame({ t: FrameType.Ping });
    for (const peer of this.#allPeers()) {
      const buffered = peer.socket.bufferedAmount;
      if (buffered === 0 || (peer.lastBuffered !== undefined && buffered < peer.lastBuffered)) {
        peer.stuckSince = undefined;
      } else peer.stuckSince ??= now;
      peer.lastBuffered = buffered;
      if (now - peer.lastSeen > this.#timings.heartbeatTimeoutMs) {
        this.#metrics?.heartbeatTimeout();
        this.#closePeer(peer, CloseCode.HeartbeatTimeout, "heartbeat timeout");
      } else if (peer.stuckSince !== undefined && now - peer.stuckSince > this.#timings.receiverStuckMs) {
        this.#closePeer(peer, CloseCode.SlowConsumer, "receiver stuck: nothing read for too long");
      } else if (!("authed" in peer) || peer.authed) {
        this.#send(peer, ping);
      }
    }
  }

  *#allPeers(): Iterable<Peer> {
    yield* this.#bridges;
    for (const room of this.#rooms.values()) yield* room.ides.values();
  }

  #fail(peer: Peer, error: unknown): void {
    if (!(error instanceof Coder1Error)) this.#log.error("socket.error", { error: String(error) });
    const code = error instanceof Coder1Error ? error.closeCode : 1011;
    this.#count(code);
    closeWithError(peer.socket, error);
  }

  #closePeer(peer: Peer, code: number, reason: string): void {
    this.#count(code);
    _close(peer.socket, code, reason);
  }

  #count(code: number): void {
    this.counters.closes[code] = (this.counters.closes[code] ?? 0) + 1;
  }

  #room(sid: string): SessionRoom {
    let room = this.#rooms.get(sid);
    if (!room) {
      room = { ides: new Map() };
      this.#rooms.set(sid, room);
    }
    return room;
  }

  #dropRoomIfEmpty(sid: string, room: SessionRoom): void {
    if (!room.bridge && room.ides.size === 0) this.#rooms.delete(sid);
  }
}

function _parseAuth(body: Record<string, unknown>): AuthBody {
  const { code, token, version, telemetry } = body;
  if ((code === undefined) === (token === undefined)) throw _badFrame("auth needs exactly one of code and token");
  if (code !== undefined && typeof code !== "string") throw _badFrame("auth code must be a string");
  if (token !== undefined && typeof token !== "string") throw _badFrame("auth token must be a string");
  if (telemetry !== undefined && typeof telemetry !== "boolean") throw _badFrame("auth telemetry must be a boolean");
  const text = (v: unknown, max: number, field: string) => {
    if (typeof v !== "string" || v.length === 0 || v.length > max) throw _badFrame(`auth ${field} missing or too long`);
    return v;
  };
  return {
    code: code as string | undefined,
    token: token as string | undefined,
    version: text(version, 32, "version"),
    ...(telemetry === false ? { telemetry: false } : {}),
  };
}

function _flowBody(paused: boolean): Record<string, unknown> {
  const body: FlowBody = { paused };
  return { ...body };
}

function _flow(paused: boolean): Uint8Array {
  return encodeFrame({ t: FrameType.Flow, body: _flowBody(paused) });
}

function _badFrame(what: string): Coder1Error {
  return new Coder1Error(`Cannot accept frame: ${what}`, { closeCode: CloseCode.BadFrame, reason: "bad-frame" });
}

function _close(socket: WebSocket, code: number, reason: string): void {
  try {
    socket.close(code, reason);
  } catch {
    // Already closing.
  }
}
