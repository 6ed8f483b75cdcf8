/**
 * The relay's switchboard: which IDE sockets and which bridge belong to each
 * browser session, and the forwarding between them. Every frame from a socket
 * goes through one dispatch per role; the relay reads headers and its own
 * control bodies, never end-to-end bodies.
 *
 * @module
 */
import { type Clock, systemClock } from "../shared/clock.ts";
import { closeWithError, Coder1Error } from "../shared/errors.ts";
import { badFrame } from "../shared/frame_bodies.ts";
import {
  asBytes,
  decodeFrame,
  encodeFrame,
  parseJsonObject,
  peekRoute,
  peekType,
  routeFrame,
} from "../shared/frame_codec.ts";
import {
  type AuthBody,
  type AuthOkBody,
  BRIDGE_SENDS,
  type BridgeStatusBody,
  CloseCode,
  END_TO_END,
  type FlowBody,
  type Frame,
  FrameType,
  type FrameTypeName,
  HEARTBEAT_INTERVAL_MS,
  HEARTBEAT_TIMEOUT_MS,
  IDE_SENDS,
  LEASE_RENEW_MS,
  LEASE_TTL_MS,
  MAX_BUFFERED_BYTES,
  MAX_CRASH_REPORTS_PER_CONNECTION,
  PROTOCOL_VERSION,
  RECEIVER_STUCK_MS,
} from "../shared/protocol.ts";
import { sanitizeCrash } from "../shared/scrub.ts";
import { FlowWatch } from "./flow_control.ts";
import type { Logger } from "./logger.ts";
import type { RelayMetrics } from "./metrics.ts";
import type { BridgeCredentials } from "./bridge_credentials.ts";
import type { RevokeReason } from "./credential_ledger.ts";
import { type MeshLinks, MeshUnreachable } from "./mesh.ts";
import type { Lease, RelayStore } from "./store.ts";
import { routingKey } from "./routing_key.ts";
import { NO_TELEMETRY, type TelemetryRecorder } from "./telemetry.ts";

/** The 4409 reason when a connection with the same credential replaced this one. */
export const SAME_CREDENTIAL_TOOK_OVER = "another connection with this bridge's credential took over";

/**
 * How long a login whose socket never opened (the pairing code was redeemed,
 * then the upgrade failed) is kept for a retry with the same code from the
 * same address.
 */
export const UNCLAIMED_LOGIN_MS = 60_000;

/** A bridge whose credential was accepted before its upgrade ({@linkcode Hub.authenticateBridge}). */
export interface BridgeLogin {
  /** Its browser session. */
  sid: string;
  /** Its id. */
  bridgeId: string;
  /** Its token's id. */
  jti: string;
  /** Its token's expiry (ms since the epoch). */
  expiresAt: number;
  /** A fresh token (a pairing code was redeemed, or the token rotated), sent in `auth.ok`. */
  token?: string;
  /** Whether the user approved this credential (the takeover rule reads it). */
  approved: boolean;
  /** The pairing code redeemed for it, if any. */
  code?: string;
  /** The bridge's version. */
  version: string;
  /** False when the bridge said telemetry is off: nothing about it is recorded. */
  telemetry: boolean;
  /** The client address it came from. */
  address: string;
}

/**
 * How many times a socket's placement is tried when the lease keeps changing
 * under it (a home refuses with `stale-lease`, a takeover loses a race).
 */
const PLACE_ATTEMPTS = 3;

/** What a hub on one of several relay instances needs (docs/OPERATIONS.md, "Running several relays"). */
export interface HubCluster {
  /** This instance's id: its advertise URL. */
  instance: string;
  /** The shared store: leases, presence, events. */
  store: RelayStore;
  /** Links to other instances for sockets whose session lives there (relay/mesh.ts). */
  mesh: MeshLinks;
}

/** Timing knobs; tests shrink them. */
export interface HubTimings {
  /** Ping interval. */
  heartbeatIntervalMs: number;
  /** Silence after which a socket is dropped. */
  heartbeatTimeoutMs: number;
  /** A receiver whose send buffer has not shrunk for this long is closed (4508). */
  receiverStuckMs: number;
}

/** Default timings from protocol.ts. */
export const DEFAULT_TIMINGS: HubTimings = {
  heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
  heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
  receiverStuckMs: RECEIVER_STUCK_MS,
};

interface Peer {
  socket: WebSocket;
  lastSeen: number;
  /** Keeps tapped frames in order (only with a {@linkcode FrameTap}). */
  tapChain?: Promise<void>;
  /** Since when its send buffer has not shrunk (stuck-receiver check). */
  stuckSince?: number;
  /** Its send buffer at the last check. */
  lastBuffered?: number;
}

interface IdePeer extends Peer {
  route: number;
  sid: string;
}

interface BridgePeer extends Peer {
  address: string;
  authed: boolean;
  bridgeId?: string;
  sid?: string;
  jti?: string;
  expiresAt?: number;
  /** The user approved this bridge (its credential line) in the IDE. */
  approved?: boolean;
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
 * the route stamp, and says what to deliver instead: an array of messages
 * for the destination (the same bytes, nothing, or forged ones), or
 * `{ forward, back }` to also answer the sender. Recording and
 * man-in-the-middle tests play a malicious relay with it; `coder1 relay
 * serve` never sets it.
 */
export type FrameTap = (
  direction: TapDirection,
  bytes: Uint8Array,
  route: number,
) => TapResult | Promise<TapResult>;

/** What a {@linkcode FrameTap} delivers. */
export type TapResult = Uint8Array[] | { forward?: Uint8Array[]; back?: Uint8Array[] };

/** Routes frames between IDE sockets and bridges. */
export class Hub {
  #rooms = new Map<string, SessionRoom>();
  #bridges = new Set<BridgePeer>();
  /** Logins by pairing code whose socket never opened ({@linkcode UNCLAIMED_LOGIN_MS}). */
  #unclaimed = new Map<string, { login: BridgeLogin; until: number }>();
  // Routes start at a random point so that numbers from before a relay restart
  // are not handed out again to different IDE sockets. They stay below 2^32
  // (a u32 in the header) and never 0 (no route).
  #nextRoute = 1 + (crypto.getRandomValues(new Uint32Array(1))[0] >>> 2);
  #credentials: BridgeCredentials;
  #log: Logger;
  #clock: Clock;
  #timings: HubTimings;
  #heartbeat?: ReturnType<typeof setInterval>;
  #flow: FlowWatch<Peer>;
  #tap?: FrameTap;
  #metrics?: RelayMetrics;
  #telemetry: TelemetryRecorder;
  #cluster?: HubCluster;
  /** Several instances: the lease epoch held for each session this instance is the home of. */
  #leases = new Map<string, number>();
  #renewer?: ReturnType<typeof setInterval>;
  #renewing = false;
  /** Leases claimed for a socket whose room never came (its upgrade failed), seen at the last renewal round. */
  #roomless = new Set<string>();
  /** Frames forwarded from IDE sockets to bridges (tests read it). */
  readonly counters = { framesToBridge: 0 };

  /**
   * @param deps Credentials, logger, clock, timings, metrics, telemetry, (several instances) the
   * cluster, and (tests only) a frame tap.
   */
  constructor(
    deps: {
      credentials: BridgeCredentials;
      log: Logger;
      clock?: Clock;
      timings?: Partial<HubTimings>;
      tap?: FrameTap;
      metrics?: RelayMetrics;
      telemetry?: TelemetryRecorder;
      cluster?: HubCluster;
    },
  ) {
    this.#cluster = deps.cluster;
    this.#tap = deps.tap;
    this.#metrics = deps.metrics;
    this.#telemetry = deps.telemetry ?? NO_TELEMETRY;
    this.#credentials = deps.credentials;
    this.#credentials.attach(
      (bridgeId) => this.#liveBridge(bridgeId) !== undefined,
      (bridgeId, reason) => this.#kickBridge(bridgeId, reason),
    );
    this.#log = deps.log;
    this.#clock = deps.clock ?? systemClock;
    this.#timings = { ...DEFAULT_TIMINGS, ...deps.timings };
    this.#flow = new FlowWatch<Peer>({
      pause: (receiver) => this.#tellSenders(receiver, true),
      resume: (receiver) => this.#tellSenders(receiver, false),
    });
  }

  /**
   * Starts the heartbeat timer (and, on one of several instances, lease
   * renewals). A revoke on any instance reaches {@linkcode #kickBridge}
   * through the credential service, which subscribes to the store's events.
   */
  start(): void {
    this.#heartbeat = setInterval(() => this.beat(), this.#timings.heartbeatIntervalMs);
    if (!this.#cluster) return;
    this.#renewer = setInterval(() => void this.renewLeases(), LEASE_RENEW_MS);
  }

  /** Stops the heartbeat and closes every socket with `code` (several instances: gives the leases up). */
  stop(code: number = CloseCode.GoingAway, reason = "relay shutting down"): void {
    clearInterval(this.#heartbeat);
    this.#flow.clear();
    for (const peer of this.#allPeers()) _close(peer.socket, code, reason);
    if (!this.#cluster) return;
    clearInterval(this.#renewer);
    this.#cluster.mesh.stop(code, reason);
    // The clients reconnect elsewhere at once: whoever they reach claims the session without waiting for the TTL.
    for (const [sid, epoch] of this.#leases) this.#releaseLease(sid, epoch);
    this.#leases.clear();
  }

  /**
   * Adopts a freshly upgraded IDE socket of session `sid`, where its session
   * lives: here ({@linkcode acceptIde}), or, on one of several instances
   * whose session's home is another instance, through a mesh link to it.
   * Resolves once the socket may open; rejects with the answer to give
   * instead ({@linkcode Coder1Error}: the home's refusal, 503 when the store
   * is unreachable).
   */
  placeIde(socket: WebSocket, sid: string): Promise<void> {
    if (!this.#cluster) {
      this.acceptIde(socket, sid);
      return Promise.resolve();
    }
    const mesh = this.#cluster.mesh;
    return this.#place(sid, (home) => mesh.open(socket, home, sid), () => this.acceptIde(socket, sid));
  }

  /** {@linkcode placeIde} for a bridge whose credential {@linkcode authenticateBridge} accepted. */
  placeBridge(socket: WebSocket, login: BridgeLogin): Promise<void> {
    if (!this.#cluster) {
      this.acceptBridge(socket, login);
      return Promise.resolve();
    }
    const mesh = this.#cluster.mesh;
    const forward = async (home: Lease) => {
      let opened = false;
      const onOpen = () => {
        opened = true;
      };
      const onClose = () => {
        // As for a local socket: a redeemed code whose socket never opened stays usable a little longer.
        if (!opened && login.code !== undefined) {
          this.#unclaimed.set(login.code, { login, until: this.#clock.now() + UNCLAIMED_LOGIN_MS });
        }
      };
      await mesh.open(socket, home, login.sid, login);
      socket.addEventListener("open", onOpen);
      socket.addEventListener("close", onClose);
    };
    return this.#place(login.sid, forward, () => this.acceptBridge(socket, login));
  }

  /**
   * A mesh link from another instance for session `sid` at lease `epoch`,
   * which this instance holds (relay/mesh.ts checked): records the lease, and
   * for a bridge runs the admit rule here, where the session's bridge is.
   *
   * @throws {Coder1Error} 409 `session-taken` ({@linkcode authenticateBridge}'s rule).
   */
  checkForwarded(sid: string, epoch: number, login?: BridgeLogin): void {
    this.#leases.set(sid, epoch);
    if (login) this.#admit(sid, login.bridgeId, login.approved);
  }

  /**
   * Where a socket of session `sid` goes: claims the lease; ours, the socket
   * joins a room here (`local`); held by another instance, `forward` links
   * it there; that instance unreachable, the lease is taken over and the
   * socket stays here.
   */
  async #place(sid: string, forward: (home: Lease) => Promise<void>, local: () => void): Promise<void> {
    const { store, instance } = this.#cluster!;
    for (let attempt = 0; attempt < PLACE_ATTEMPTS; attempt++) {
      const lease = await _storeCall(() => store.claimLease(sid, instance, LEASE_TTL_MS, this.#clock.now()));
      if (lease.instance === instance) {
        this.#leases.set(sid, lease.epoch);
        return local();
      }
      try {
        return await forward(lease);
      } catch (error) {
        if (error instanceof Coder1Error && error.reason === "stale-lease") continue;
        if (!(error instanceof MeshUnreachable)) throw error;
        const taken = await _storeCall(() =>
          store.takeOverLease(sid, instance, lease.epoch, LEASE_TTL_MS, this.#clock.now())
        );
        if (!taken) continue;
        this.#metrics?.leaseMoved("takeover");
        this.#log.warn("lease.takeover", { home: lease.instance, epoch: taken.epoch, why: error.message });
        this.#leases.set(sid, taken.epoch);
        return local();
      }
    }
    throw new Coder1Error("Cannot connect: this session's home relay instance keeps changing; retry", {
      status: 503,
      retryAfterSeconds: 1,
      reason: "placement-failed",
    });
  }

  /**
   * One renewal round (every {@linkcode LEASE_RENEW_MS}; tests call it): each
   * session with a room here renews its lease, and its bridge's presence. A
   * lease taken over meanwhile (another instance holds it now) closes the
   * room's sockets with 4412; a store that does not answer is no loss: the
   * room goes on and the next round tries again.
   */
  async renewLeases(): Promise<void> {
    const cluster = this.#cluster;
    if (!cluster || this.#renewing) return;
    this.#renewing = true;
    const roomless = new Set<string>();
    for (const [sid, epoch] of this.#leases) {
      if (this.#rooms.has(sid)) continue;
      if (!this.#roomless.has(sid)) roomless.add(sid);
      else {
        this.#leases.delete(sid);
        this.#releaseLease(sid, epoch);
      }
    }
    this.#roomless = roomless;
    try {
      await Promise.all([...this.#rooms].map(([sid, room]) => this.#renew(cluster, sid, room)));
    } finally {
      this.#renewing = false;
    }
  }

  async #renew({ store, instance }: HubCluster, sid: string, room: SessionRoom): Promise<void> {
    const now = this.#clock.now();
    try {
      const epoch = this.#leases.get(sid);
      let ours = epoch !== undefined && await store.renewLease(sid, instance, epoch, LEASE_TTL_MS, now);
      if (!ours) {
        // Lapsed or released under a live room (a pause, a race with the room emptying): claim it again if free.
        const lease = await store.claimLease(sid, instance, LEASE_TTL_MS, now);
        ours = lease.instance === instance;
        if (ours) this.#leases.set(sid, lease.epoch);
        else {
          this.#leases.delete(sid);
          this.#metrics?.leaseMoved("lost");
          this.#log.warn("lease.lost", { home: lease.instance, epoch: lease.epoch });
          this.#closeRoom(room, CloseCode.SessionMoved, "session moved to another relay instance; reconnecting");
          return;
        }
      }
      const bridge = room.bridge;
      if (bridge?.bridgeId) {
        await store.setPresence(bridge.bridgeId, instance, 3 * LEASE_RENEW_MS, now);
        // A revocation event this instance missed (its Redis subscription was down): the line says so.
        const line = await this.#credentials.get(bridge.bridgeId);
        if (line?.revokedAt !== undefined) this.#kickBridge(bridge.bridgeId, line.revokedReason ?? "user");
      }
    } catch (error) {
      this.#log.warn("lease.renew", { error: String(error) });
    }
  }

  #closeRoom(room: SessionRoom, code: number, reason: string): void {
    if (room.bridge) this.#closePeer(room.bridge, code, reason);
    for (const ide of room.ides.values()) this.#closePeer(ide, code, reason);
  }

  #releaseLease(sid: string, epoch: number): void {
    this.#cluster?.store.releaseLease(sid, this.#cluster.instance, epoch).catch(() => {});
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

  /** The authenticated connection of credential line `bridgeId`, if one is open. */
  #liveBridge(bridgeId: string): BridgePeer | undefined {
    for (const peer of this.#bridges) if (peer.authed && peer.bridgeId === bridgeId) return peer;
    return undefined;
  }

  /** Closes the connections of a revoked credential line with 4410 and why. */
  #kickBridge(bridgeId: string, reason: RevokeReason): void {
    const why = reason === "reuse"
      ? "token revoked: an old token of this bridge was presented again (possible theft); pair again"
      : reason === "replaced"
      ? "token revoked: this bridge was paired again"
      : "token revoked";
    for (const peer of this.#bridges) {
      if (peer.bridgeId === bridgeId) this.#closePeer(peer, CloseCode.Revoked, why);
    }
  }

  /**
   * The bridge connected to session `sid`: its id, token id and expiry (what
   * `POST /api/bridge/revoke` without a `bridgeId` revokes).
   */
  sessionBridge(sid: string): { bridgeId: string; jti: string; expiresAt: number } | undefined {
    const peer = this.#rooms.get(sid)?.bridge;
    if (!peer?.bridgeId || !peer.jti || peer.expiresAt === undefined) return undefined;
    return { bridgeId: peer.bridgeId, jti: peer.jti, expiresAt: peer.expiresAt };
  }

  /**
   * Adopts a socket whose client speaks another protocol version (it did not
   * ask for {@linkcode WS_SUBPROTOCOL}): it is closed with 4426 and a reason
   * that says which side to update (clients print close reasons).
   *
   * @param socket The upgraded socket.
   * @param role Which endpoint it opened.
   * @param offered The newer version it asked for, if any (none: older than 4).
   */
  acceptOutdated(socket: WebSocket, role: "ide" | "bridge", offered?: number): void {
    const reason = outdatedReason(role, offered);
    socket.onopen = () => _close(socket, CloseCode.UnsupportedVersion, reason);
    socket.onmessage = () => {};
    socket.onclose = (event) => this.#metrics?.socketClosed(role, event.code);
    socket.onerror = () => {};
  }

  /** Adopts a freshly upgraded IDE socket of session `sid`. */
  acceptIde(socket: WebSocket, sid: string): void {
    // npm:ws sockets (relay/http_server.ts) deliver Uint8Arrays already; a DOM-style socket gets ArrayBuffers.
    if (socket.binaryType === "blob") socket.binaryType = "arraybuffer";
    const peer: IdePeer = { socket, sid, route: this.#nextRoute++, lastSeen: this.#clock.now() };
    if (this.#nextRoute > 0xffffffff) this.#nextRoute = 1;
    socket.onopen = () => {
      const room = this.#room(sid);
      room.ides.set(peer.route, peer);
      this.#log.info("ide.open", { route: peer.route });
      this.#sendStatus(room, peer);
      if (room.bridge) this.#send(room.bridge, encodeFrame({ t: FrameType.IdeOpen, r: peer.route }));
      // The bridge is behind on reading: this socket waits like the others.
      if (room.bridge && this.#flow.isCongested(room.bridge)) this.#send(peer, _flow(true));
    };
    socket.onmessage = (event) => {
      peer.lastSeen = this.#clock.now();
      try {
        this.#onIdeFrame(peer, asBytes(event.data));
      } catch (error) {
        this.#fail(peer, error);
      }
    };
    socket.onclose = (event) => {
      this.#metrics?.socketClosed("ide", event.code);
      this.#flow.forget(peer);
      const room = this.#rooms.get(sid);
      if (!room || room.ides.get(peer.route) !== peer) return;
      room.ides.delete(peer.route);
      this.#log.info("ide.close", { route: peer.route });
      if (room.bridge) this.#send(room.bridge, encodeFrame({ t: FrameType.IdeClose, r: peer.route }));
      this.#dropRoomIfEmpty(sid, room);
    };
    socket.onerror = () => {};
  }

  /**
   * Checks a bridge's credential, before its WebSocket exists: redeems a
   * pairing code (and issues a token) or verifies a token. Throws a
   * {@linkcode Coder1Error} with the HTTP status to refuse the upgrade with
   * (401 wrong, expired or used code, bad or revoked token; 429 too many
   * attempts, with `retryAfterSeconds`).
   *
   * A code redeemed here whose socket then never opens (the upgrade failed,
   * the bridge left) is not lost: for {@linkcode UNCLAIMED_LOGIN_MS} the same
   * code from the same address gets this login again.
   *
   * @param credential The pairing code or token, the bridge's version and telemetry choice.
   * @param address The client address (rate limits count it).
   * @returns Who the bridge is, for {@linkcode acceptBridge}.
   */
  async authenticateBridge(credential: AuthBody, address: string): Promise<BridgeLogin> {
    const telemetry = credential.telemetry !== false;
    const { version } = credential;
    // Credentials (relay/bridge_credentials.ts) pair, log in, rotate and detect reuse;
    // the hub only decides who holds the session's place.
    const admit = (sid: string, bridgeId: string, approved: boolean) => this.#admit(sid, bridgeId, approved);
    if (credential.code !== undefined) {
      const kept = this.#unclaimed.get(credential.code);
      if (kept && kept.login.address === address && this.#clock.now() < kept.until) {
        admit(kept.login.sid, kept.login.bridgeId, kept.login.approved);
        this.#unclaimed.delete(credential.code);
        return { ...kept.login, version, telemetry };
      }
    }
    const info = { version, rotate: credential.rotate === true };
    const who = credential.code !== undefined
      ? await this.#credentials.pair(credential.code, address, info, admit)
      : await this.#credentials.login(credential.token!, address, info, admit);
    const { sid, bridgeId, jti, expiresAt, token, approved } = who;
    if (credential.code !== undefined) this.#log.info("bridge.paired", { bridgeId });
    return { sid, bridgeId, jti, expiresAt, token, approved, code: credential.code, version, telemetry, address };
  }

  /**
   * Adopts a bridge socket whose credential
   * {@linkcode authenticateBridge} accepted: once it opens, it becomes its
   * session's bridge (replacing the previous connection) and gets `auth.ok`.
   */
  acceptBridge(socket: WebSocket, login: BridgeLogin): void {
    const address = login.address;
    if (socket.binaryType === "blob") socket.binaryType = "arraybuffer";
    const peer: BridgePeer = { socket, address, authed: false, lastSeen: this.#clock.now() };
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.#bridges.add(peer);
      this.#login(peer, login);
    };
    socket.onmessage = (event) => {
      peer.lastSeen = this.#clock.now();
      if (socket.readyState !== WebSocket.OPEN) return;
      try {
        this.#onBridgeFrame(peer, asBytes(event.data));
      } catch (error) {
        this.#fail(peer, error);
      }
    };
    socket.onclose = (event) => {
      if (!opened) {
        // Refused or gone before the upgrade completed: a redeemed code stays usable a little longer.
        if (login.code !== undefined) {
          this.#unclaimed.set(login.code, { login, until: this.#clock.now() + UNCLAIMED_LOGIN_MS });
        }
        return;
      }
      this.#metrics?.socketClosed("bridge", event.code);
      if (peer.authed && peer.telemetry) this.#telemetry.connection(peer.bridgeId!, peer.version!, "disconnect");
      this.#bridges.delete(peer);
      // Its IDE sockets were paused waiting for it: they may go on.
      this.#flow.release(peer);
      if (!peer.sid) return;
      const room = this.#rooms.get(peer.sid);
      if (!room || room.bridge !== peer) return;
      room.bridge = undefined;
      this.#log.info("bridge.disconnect", { bridgeId: peer.bridgeId });
      if (this.#cluster) this.#cluster.store.clearPresence(peer.bridgeId!, this.#cluster.instance).catch(() => {});
      for (const ide of room.ides.values()) this.#sendStatus(room, ide, peer);
      this.#dropRoomIfEmpty(peer.sid, room);
    };
    socket.onerror = () => {};
  }

  /** The bridge's socket is open: it becomes its session's bridge and learns who it is (`auth.ok`). */
  #login(peer: BridgePeer, login: BridgeLogin): void {
    const { sid, bridgeId, jti, expiresAt, token, approved, version, telemetry } = login;
    Object.assign(peer, { authed: true, sid, bridgeId, jti, expiresAt, approved, version, telemetry });
    const room = this.#room(sid);
    const previous = room.bridge;
    room.bridge = peer;
    if (previous) {
      // The reason says which: a bridge whose own token took over elsewhere checks for a copy (bridge/relay_link.ts).
      this.#closePeer(
        previous,
        CloseCode.Replaced,
        previous.bridgeId === bridgeId ? SAME_CREDENTIAL_TOOK_OVER : "another bridge of this session took over",
      );
    }
    const ok: AuthOkBody = { bridgeId, expiresAt, routingKey: routingKey(sid) };
    if (token) ok.token = token;
    if (telemetry && this.#telemetry.enabled) ok.crashReports = true;
    this.#send(peer, encodeFrame({ t: FrameType.AuthOk, body: ok }));
    if (telemetry) this.#telemetry.connection(bridgeId, version, "connect");
    this.#log.info("bridge.connect", { bridgeId, version });
    if (this.#cluster) {
      const { store, instance } = this.#cluster;
      store.setPresence(bridgeId, instance, 3 * LEASE_RENEW_MS, this.#clock.now()).catch(() => {});
    }
    for (const ide of room.ides.values()) this.#sendStatus(room, ide);
  }

  /**
   * The takeover rule: a newcomer the user has not approved never makes an
   * approved bridge of another credential leave (it is refused with 4411);
   * the same credential reconnecting, or an approved one, takes the place.
   */
  #admit(sid: string, bridgeId: string, approved: boolean): void {
    const incumbent = this.#rooms.get(sid)?.bridge;
    if (!incumbent || incumbent.bridgeId === bridgeId || !incumbent.approved || approved) return;
    throw new Coder1Error(
      "Cannot connect: an approved bridge is connected to this IDE session; stop it or Forget it in the IDE first",
      { status: 409, closeCode: CloseCode.SessionTaken, reason: "session-taken" },
    );
  }

  /**
   * Every frame from an authenticated bridge. The default forwards end-to-end
   * types to the IDE socket named by the route, reading only the fixed header;
   * a type bridges may not send closes the socket with 4400 (the relay must
   * know who may send what: unknown codes were refused by the prefix check).
   */
  #onBridgeFrame(peer: BridgePeer, bytes: Uint8Array): void {
    const type = peekType(bytes);
    switch (type) {
      case FrameType.Pong:
        return;
      case FrameType.Auth:
        // A bridge from before credentials moved into the upgrade request (it got in with a header, somehow).
        throw _badFrame("auth is no longer a frame: the credential goes in the upgrade request; update the bridge");
      case FrameType.Crash:
        return this.#onCrash(peer, decodeFrame(bytes));
      case FrameType.CmdExit:
      case FrameType.CmdError:
        // Counted from the header type alone; the body is sealed.
        this.#metrics?.commandEnded(type === FrameType.CmdExit ? "exit" : "error");
        if (peer.telemetry) this.#telemetry.commandEnded(peer.bridgeId!);
        break;
      default:
        if (!BRIDGE_FORWARDS.has(type)) throw _badFrame(`bridges may not send ${type}`);
    }
    const route = peekRoute(bytes);
    if (route === 0) throw _badFrame(`${type} needs a route`);
    const ide = this.#rooms.get(peer.sid!)?.ides.get(route);
    // The IDE socket may have left; its frames have nowhere to go.
    if (!ide) return;
    // The IDE needs no route: cleared in place.
    routeFrame(bytes, 0);
    this.#metrics?.relayed("bridge_to_ide", bytes.byteLength);
    this.#forward(peer, ide, bytes, "bridge-to-ide", route);
  }

  /** A crash report: scrubbed again and kept, unless telemetry is off or the cap is reached. */
  #onCrash(peer: BridgePeer, frame: Frame): void {
    const report = sanitizeCrash(parseJsonObject(frame.body, frame.t));
    if (!report) throw _badFrame("crash body malformed");
    peer.crashes = (peer.crashes ?? 0) + 1;
    if (!peer.telemetry || !this.#telemetry.enabled || peer.crashes > MAX_CRASH_REPORTS_PER_CONNECTION) {
      this.#metrics?.crashReport("dropped");
      return;
    }
    this.#telemetry.crash(report, peer.bridgeId);
    this.#metrics?.crashReport("stored");
  }

  /**
   * Every frame from an IDE socket. The default forwards end-to-end types to
   * the session's bridge with this socket's route stamped in place; a type
   * IDE sockets may not send closes the socket with 4400.
   */
  #onIdeFrame(peer: IdePeer, bytes: Uint8Array): void {
    const type = routeFrame(bytes, peer.route);
    switch (type) {
      case FrameType.Pong:
        return;
      case FrameType.CmdStart:
        // Counted from the header type alone; the body is sealed.
        break;
      default:
        if (!IDE_FORWARDS.has(type)) throw _badFrame(`IDE sockets may not send ${type}`);
    }
    const bridge = this.#rooms.get(peer.sid)?.bridge;
    // No bridge: the IDE knows from bridge.status and tells its user.
    if (!bridge) return;
    if ((type === FrameType.E2eApprove || type === FrameType.StreamResume) && !bridge.approved) {
      // The user approved it (first pairing) or the IDE trusts its pinned key (reconnect).
      bridge.approved = true;
      this.#credentials.markApproved(bridge.bridgeId!);
    }
    if (type === FrameType.CmdStart) {
      this.#metrics?.commandStarted();
      if (bridge.telemetry) this.#telemetry.commandStarted(bridge.bridgeId!);
    }
    this.counters.framesToBridge++;
    this.#metrics?.relayed("ide_to_bridge", bytes.byteLength);
    this.#forward(peer, bridge, bytes, "ide-to-bridge", peer.route);
  }

  #forward(from: Peer, to: Peer, bytes: Uint8Array, direction: TapDirection, route: number): void {
    const tap = this.#tap;
    if (!tap) {
      if (to.socket.bufferedAmount > MAX_BUFFERED_BYTES) {
        // Its receiver is far behind and it was told to pause: honest peers stop
        // within their stream window, well below this. Protect the relay.
        this.#closePeer(from, CloseCode.IgnoredPause, "kept sending while paused");
        return;
      }
      this.#send(to, bytes);
      this.#flow.check(to);
      return;
    }
    from.tapChain = (from.tapChain ?? Promise.resolve()).then(async () => {
      const result = await tap(direction, bytes, route);
      const { forward = [], back = [] } = Array.isArray(result) ? { forward: result } : result;
      for (const out of forward) this.#send(to, out);
      // Answers to a bridge keep the sender's route; answers to an IDE carry none.
      for (const out of back) this.#send(from, out);
    }).catch((error) => this.#log.error("tap.error", { error: String(error) }));
  }

  /**
   * Pushback: a congested IDE socket pauses the bridge for its route; a
   * congested bridge pauses every IDE socket of its session.
   */
  #tellSenders(receiver: Peer, paused: boolean): void {
    if ("route" in receiver) {
      const ide = receiver as IdePeer;
      const bridge = this.#rooms.get(ide.sid)?.bridge;
      if (bridge) this.#send(bridge, encodeFrame({ t: FrameType.Flow, r: ide.route, body: { paused } }));
      return;
    }
    const sid = (receiver as BridgePeer).sid;
    const room = sid === undefined ? undefined : this.#rooms.get(sid);
    for (const ide of room?.ides.values() ?? []) this.#send(ide, _flow(paused));
  }

  #sendStatus(room: SessionRoom, ide: IdePeer, last?: BridgePeer): void {
    const b = room.bridge ?? last;
    const body: BridgeStatusBody = { state: room.bridge ? "connected" : "disconnected", route: ide.route };
    if (b?.bridgeId) body.bridgeId = b.bridgeId;
    if (b?.version) body.version = b.version;
    this.#send(ide, encodeFrame({ t: FrameType.BridgeStatus, body }));
  }

  #send(peer: Peer, bytes: Uint8Array): void {
    if (peer.socket.readyState !== WebSocket.OPEN) return;
    peer.socket.send(bytes);
  }

  /**
   * One heartbeat round: drops peers silent for the heartbeat timeout and
   * receivers stuck for the stuck-receiver limit, and pings the rest.
   * {@linkcode start} runs it every heartbeat interval; tests call it after
   * moving the clock.
   */
  beat(): void {
    const now = this.#clock.now();
    for (const [code, kept] of this.#unclaimed) if (now >= kept.until) this.#unclaimed.delete(code);
    this.#cluster?.mesh.beat(this.#timings.heartbeatTimeoutMs);
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
    closeWithError(peer.socket, error);
  }

  #closePeer(peer: Peer, code: number, reason: string): void {
    _close(peer.socket, code, reason);
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
    if (room.bridge || room.ides.size > 0) return;
    this.#rooms.delete(sid);
    const epoch = this.#leases.get(sid);
    if (epoch === undefined) return;
    this.#leases.delete(sid);
    this.#releaseLease(sid, epoch);
  }
}

/**
 * What a client of another protocol version is told (close 4426, or for a
 * bridge the 426 answer): which side to update.
 *
 * @param role Which endpoint it opened.
 * @param offered The newer version it asked for, if any (none: older than 4).
 * @returns The reason text.
 */
export function outdatedReason(role: "ide" | "bridge", offered?: number): string {
  const client = role === "bridge" ? "bridge" : "page";
  return offered !== undefined && offered > PROTOCOL_VERSION
    ? `update the relay: it speaks protocol ${PROTOCOL_VERSION}, this ${client} ${offered}`
    : role === "bridge"
    ? `update the bridge: relay speaks protocol ${PROTOCOL_VERSION}`
    : `reload the page: relay speaks protocol ${PROTOCOL_VERSION}`;
}

/** End-to-end types an IDE socket sends that the relay forwards to the bridge. */
const IDE_FORWARDS: ReadonlySet<FrameTypeName> = new Set([...IDE_SENDS].filter((t) => END_TO_END.has(t)));
/** End-to-end types a bridge sends that the relay forwards to an IDE socket. */
const BRIDGE_FORWARDS: ReadonlySet<FrameTypeName> = new Set([...BRIDGE_SENDS].filter((t) => END_TO_END.has(t)));

/** A store call on a socket's way in: a store that does not answer refuses the socket with 503, clearly. */
async function _storeCall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw new Coder1Error(
      `Cannot connect: the relay's shared state store is unreachable (${String(error)}); retry shortly`,
      { status: 503, retryAfterSeconds: 1, reason: "state-store-unavailable" },
    );
  }
}

function _flow(paused: boolean): Uint8Array {
  const body: FlowBody = { paused };
  return encodeFrame({ t: FrameType.Flow, body });
}

function _badFrame(what: string): Coder1Error {
  return badFrame(what);
}

function _close(socket: WebSocket, code: number, reason: string): void {
  try {
    socket.close(code, reason);
  } catch {
    // Already closing.
  }
}
