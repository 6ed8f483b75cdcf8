/**
 * Several relay instances: the mesh between them. A client socket that
 * arrives at an instance (X) which is not its session's home (Y, the holder
 * of the session's lease) is piped to Y over a mesh link: one WebSocket from
 * X to Y's `/mesh/ide` or `/mesh/bridge` per forwarded client socket, opened
 * before the client's upgrade is answered, so that Y's refusal (409
 * session-taken) becomes the client's answer. Frames cross it unchanged
 * (the home stamps routes and reads control frames as for its own sockets);
 * close codes and reasons pass through both ways; when one side's receiver
 * is behind, X stops reading the other side (TCP pushes back, and the home's
 * flow control sees its mesh socket's buffer grow).
 *
 * One link per forwarded socket, not one multiplexed link per pair of
 * instances: TCP gives each session its own flow control, nothing blocks
 * between sessions, and no framing is added; the extra connection exists only
 * for sockets the balancer put on the wrong instance, which the routing key
 * keeps rare (docs/OPERATIONS.md, "Running several relays").
 *
 * A link is authenticated with the mesh key (`--mesh-key-file`): header
 * `Coder1-Mesh-Auth: <instance>;<unix ms>;<nonce>;<HMAC-SHA256 hex>` over
 * those three, the path, the session, the lease epoch and the bridge login;
 * the time must be within {@linkcode MESH_AUTH_WINDOW_MS} and a nonce is
 * refused a second time for {@linkcode MESH_NONCE_TTL_MS}.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type http from "node:http";
import NodeWebSocket from "ws";
import type { Clock } from "../shared/clock.ts";
import { Coder1Error, errorResponse } from "../shared/errors.ts";
import {
  CloseCode,
  MAX_FRAME_BYTES,
  MESH_AUTH_WINDOW_MS,
  MESH_CONNECT_TIMEOUT_MS,
  MESH_NONCE_TTL_MS,
  MIN_MESH_KEY_BYTES,
} from "../shared/protocol.ts";
import type { RelayHandler } from "./http_server.ts";
import type { BridgeLogin, Hub } from "./hub.ts";
import type { Logger } from "./logger.ts";
import type { RelayMetrics } from "./metrics.ts";
import type { Lease, RelayStore } from "./store.ts";

/** The home's endpoint for forwarded IDE sockets. */
export const MESH_IDE_PATH = "/mesh/ide";
/** The home's endpoint for forwarded bridge sockets. */
export const MESH_BRIDGE_PATH = "/mesh/bridge";
/** `<instance>;<unix ms>;<nonce>;<hmac hex>`. */
export const MESH_AUTH_HEADER = "Coder1-Mesh-Auth";
/** The session id the link is for. */
export const MESH_SESSION_HEADER = "Coder1-Mesh-Session";
/** The lease epoch the forwarding instance saw. */
export const MESH_EPOCH_HEADER = "Coder1-Mesh-Epoch";
/** Bridges: base64url(JSON {@linkcode BridgeLogin}) as the forwarding instance authenticated it. */
export const MESH_LOGIN_HEADER = "Coder1-Mesh-Login";
/** The forwarding instance stops reading one side of a link when the other side has this much unsent ... */
export const MESH_HIGH_BYTES = 1024 * 1024;
/** ... and reads it again once that is written out (below this). */
export const MESH_LOW_BYTES = 256 * 1024;

/** Largest refusal body read from a home (its JSON error). */
const MAX_REFUSAL_BYTES = 8 * 1024;

/** What a verified `Coder1-Mesh-Auth` header says. */
export interface MeshClaims {
  /** The forwarding instance. */
  instance: string;
  /** The session. */
  sid: string;
  /** The lease epoch the forwarder saw. */
  epoch: number;
  /** Bridges: the login, as the forwarder authenticated it. */
  login?: BridgeLogin;
}

/**
 * Signs and checks mesh link headers with the shared mesh key.
 *
 * @example
 * ```ts
 * import { MeshAuth } from "./mesh.ts";
 * const auth = new MeshAuth(new Uint8Array(32).fill(7), { now: () => Date.now() });
 * const headers = auth.sign("http://10.0.0.1:8801", "/mesh/ide", "sid", 1);
 * console.log(auth.verify(new Headers(headers), "/mesh/ide").sid); // "sid"
 * ```
 */
export class MeshAuth {
  #key: Uint8Array;
  #clock: Clock;
  /** Nonces seen, with when they may be forgotten (insertion order is time order, near enough). */
  #nonces = new Map<string, number>();

  /**
   * @param key The mesh key (at least {@linkcode MIN_MESH_KEY_BYTES} bytes).
   * @param clock The clock the time window is checked against.
   */
  constructor(key: Uint8Array, clock: Clock) {
    if (key.byteLength < MIN_MESH_KEY_BYTES) {
      throw new RangeError(`Cannot use the mesh key: ${key.byteLength} bytes, at least ${MIN_MESH_KEY_BYTES} needed`);
    }
    this.#key = key;
    this.#clock = clock;
  }

  /**
   * The headers of a link from `instance` for session `sid` at lease `epoch`.
   *
   * @param instance The forwarding instance (its advertise URL).
   * @param path {@linkcode MESH_IDE_PATH} or {@linkcode MESH_BRIDGE_PATH}.
   * @param sid The session.
   * @param epoch The lease epoch.
   * @param login Bridges: the login to hand to the home.
   * @param time The time to sign (default now; tests sign old ones).
   * @returns The headers to send.
   */
  sign(
    instance: string,
    path: string,
    sid: string,
    epoch: number,
    login?: BridgeLogin,
    time: number = this.#clock.now(),
  ): Record<string, string> {
    const nonce = randomBytes(16).toString("hex");
    const loginValue = login ? Buffer.from(JSON.stringify(login)).toString("base64url") : "";
    const mac = this.#mac([instance, String(time), nonce, path, sid, String(epoch), loginValue]);
    const headers: Record<string, string> = {
      [MESH_AUTH_HEADER]: `${instance};${time};${nonce};${mac}`,
      [MESH_SESSION_HEADER]: sid,
      [MESH_EPOCH_HEADER]: String(epoch),
    };
    if (login) headers[MESH_LOGIN_HEADER] = loginValue;
    return headers;
  }

  /**
   * Checks a link's headers: the HMAC, the time window, and that the nonce
   * was not seen before (then it is remembered).
   *
   * @param headers The upgrade request's headers.
   * @param path The path it asked for.
   * @returns What the headers say.
   * @throws {Coder1Error} 401 `mesh-auth` when anything does not hold.
   */
  verify(headers: Headers, path: string): MeshClaims {
    const refuse = (why: string) =>
      new Coder1Error(`Cannot open mesh link: ${why}`, { status: 401, reason: "mesh-auth" });
    const parts = (headers.get(MESH_AUTH_HEADER) ?? "").split(";");
    const sid = headers.get(MESH_SESSION_HEADER) ?? "";
    const epochText = headers.get(MESH_EPOCH_HEADER) ?? "";
    const loginValue = headers.get(MESH_LOGIN_HEADER) ?? "";
    if (parts.length !== 4 || !/^\d{1,16}$/.test(parts[1]) || !/^[0-9a-f]{32}$/.test(parts[2])) {
      throw refuse("malformed auth header");
    }
    const [instance, timeText, nonce, mac] = parts;
    if (!/^[1-9]\d{0,15}$/.test(epochText) || sid === "") throw refuse("malformed session or epoch");
    const now = this.#clock.now();
    if (Math.abs(now - Number(timeText)) > MESH_AUTH_WINDOW_MS) throw refuse("time outside the window");
    const expected = Buffer.from(this.#mac([instance, timeText, nonce, path, sid, epochText, loginValue]), "hex");
    const given = /^[0-9a-f]{64}$/.test(mac) ? Buffer.from(mac, "hex") : Buffer.alloc(0);
    if (given.byteLength !== expected.byteLength || !timingSafeEqual(given, expected)) throw refuse("bad HMAC");
    this.#forgetOld(now);
    if (this.#nonces.has(nonce)) throw refuse("nonce seen before (replay)");
    this.#nonces.set(nonce, now + MESH_NONCE_TTL_MS);
    let login: BridgeLogin | undefined;
    if (loginValue) {
      try {
        login = JSON.parse(Buffer.from(loginValue, "base64url").toString("utf8")) as BridgeLogin;
      } catch {
        throw refuse("malformed login");
      }
      if (typeof login?.sid !== "string" || login.sid !== sid || typeof login.bridgeId !== "string") {
        throw refuse("login does not match the session");
      }
    }
    return { instance, sid, epoch: Number(epochText), login };
  }

  #mac(fields: string[]): string {
    return createHmac("sha256", this.#key).update(fields.join("\n")).digest("hex");
  }

  #forgetOld(now: number): void {
    for (const [nonce, until] of this.#nonces) {
      if (until > now) break;
      this.#nonces.delete(nonce);
    }
  }
}

/** The home did not answer: connection refused, TLS failure, or no answer within the connect timeout. */
export class MeshUnreachable extends Error {
  /** @param message What failed. */
  constructor(message: string) {
    super(message);
    this.name = "MeshUnreachable";
  }
}

/** One forwarded client socket and its link to the home. */
interface _Link {
  client: NodeWebSocket;
  home: NodeWebSocket;
  /** When the home last sent something (pings included). */
  lastFromHome: number;
}

/** What {@linkcode MeshLinks} needs. */
export interface MeshLinksOptions {
  /** Signs the links' headers. */
  auth: MeshAuth;
  /** This instance's id (its advertise URL). */
  instance: string;
  clock: Clock;
  log: Logger;
  metrics?: RelayMetrics;
  /** How long a home has to answer (default {@linkcode MESH_CONNECT_TIMEOUT_MS}). */
  connectTimeoutMs?: number;
}

/** The mesh links this instance opened for client sockets whose session lives elsewhere. */
export class MeshLinks {
  #links = new Set<_Link>();
  #options: MeshLinksOptions;

  /** @param options Key, identity, clock, logger, metrics. */
  constructor(options: MeshLinksOptions) {
    this.#options = options;
  }

  /** Number of open links (the `coder1_mesh_links` gauge). */
  get size(): number {
    return this.#links.size;
  }

  /**
   * Opens a link to the session's home for a client socket not yet open (its
   * upgrade is answered once this resolves) and pipes the two once the
   * client's socket opens.
   *
   * @param client The client's socket (relay/http_server.ts, npm:ws), not yet open.
   * @param home The session's lease as the store has it.
   * @param sid The session.
   * @param login Bridges: the login to hand over.
   * @throws {MeshUnreachable} when the home does not answer.
   * @throws {Coder1Error} the home's refusal: 409 `session-taken` as is, 409 `stale-lease` (place again), others as 502.
   */
  open(client: WebSocket, home: Lease, sid: string, login?: BridgeLogin): Promise<void> {
    const { auth, instance, log } = this.#options;
    const path = login ? MESH_BRIDGE_PATH : MESH_IDE_PATH;
    // The code stays with the instance that redeemed it (a retry after a failed upgrade comes back there).
    const handed = login ? { ...login, code: undefined } : undefined;
    const headers = auth.sign(instance, path, sid, home.epoch, handed);
    const ws = new NodeWebSocket(`${home.instance.replace(/^http/, "ws")}${path}`, {
      headers,
      handshakeTimeout: this.#options.connectTimeoutMs ?? MESH_CONNECT_TIMEOUT_MS,
      perMessageDeflate: false,
      maxPayload: MAX_FRAME_BYTES,
      followRedirects: false,
      ...(unmaskedLink(home.instance) ? { generateMask: _zeroMask } : {}),
    });
    ws.on("error", () => {});
    return new Promise<void>((resolve, reject) => {
      ws.once("open", () => {
        this.#pipe(client as unknown as NodeWebSocket, ws);
        resolve();
      });
      ws.once("unexpected-response", (req: http.ClientRequest, res: http.IncomingMessage) => {
        _readBody(res).then((body) => {
          req.destroy();
          reject(_refusal(res.statusCode ?? 502, body, home.instance, log));
        });
      });
      ws.once("error", (error: Error) => reject(new MeshUnreachable(`${home.instance}: ${error.message}`)));
    });
  }

  /**
   * Closes links whose home went silent for `timeoutMs` (the home pings every
   * client through its link, so silence means the link or the home is gone).
   *
   * @param timeoutMs The heartbeat timeout.
   */
  beat(timeoutMs: number): void {
    const now = this.#options.clock.now();
    for (const link of this.#links) {
      if (now - link.lastFromHome <= timeoutMs) continue;
      this.#options.metrics?.heartbeatTimeout();
      _close(link.client, CloseCode.HeartbeatTimeout, "heartbeat timeout: the session's relay instance went silent");
      link.home.terminate();
      this.#links.delete(link);
    }
  }

  /** Closes every link and its client with `code` (the relay is shutting down). */
  stop(code: number, reason: string): void {
    for (const link of this.#links) {
      _close(link.client, code, reason);
      _close(link.home, code, reason);
    }
    this.#links.clear();
  }

  #pipe(client: NodeWebSocket, home: NodeWebSocket): void {
    const metrics = this.#options.metrics;
    const link: _Link = { client, home, lastFromHome: this.#options.clock.now() };
    this.#links.add(link);
    // Nothing goes to the client before its socket opens: the home waits in TCP.
    home.pause();
    let homeClosed: { code: number; reason: string } | undefined;
    let clientOpen = false;
    const toClient = (code: number, reason: string) => {
      _close(
        client,
        _sendable(code) ? code : CloseCode.GoingAway,
        reason || "the session's relay instance went away; reconnect",
      );
    };
    client.on("open", () => {
      clientOpen = true;
      if (homeClosed) return toClient(homeClosed.code, homeClosed.reason);
      home.resume();
    });
    client.on("message", (data: Buffer, isBinary: boolean) => {
      metrics?.meshForwarded("to_home");
      _relay(data, isBinary, client, home);
    });
    home.on("message", (data: Buffer, isBinary: boolean) => {
      link.lastFromHome = this.#options.clock.now();
      metrics?.meshForwarded("from_home");
      _relay(data, isBinary, home, client);
    });
    client.on("close", (code: number, reason: Buffer) => {
      this.#links.delete(link);
      _close(home, _sendable(code) ? code : CloseCode.GoingAway, reason.toString() || "client went away");
    });
    home.on("close", (code: number, reason: Buffer) => {
      this.#links.delete(link);
      if (clientOpen) toClient(code, reason.toString());
      else homeClosed = { code, reason: reason.toString() };
    });
  }
}

/**
 * The handler of one instance of several: `/mesh/ide` and `/mesh/bridge`
 * (links from other instances), `/readyz` answering 503 while the shared
 * store is unreachable, everything else to `api`.
 *
 * @param api The relay's routes (relay/http_api.ts).
 * @param deps The hub, the store, this instance's id, the mesh key, the clock and logger, and readiness.
 * @returns The handler.
 */
export function clusterHandler(
  api: RelayHandler,
  deps: {
    hub: Hub;
    store: RelayStore;
    instance: string;
    auth: MeshAuth;
    clock: Clock;
    log: Logger;
    ready: () => boolean;
  },
): RelayHandler {
  const accept: RelayHandler = async (request, info) => {
    const path = new URL(request.url).pathname;
    if (request.method !== "GET" || request.headers.get("upgrade")?.toLowerCase() !== "websocket" || !info.upgrade) {
      throw new Coder1Error("Cannot open mesh link: WebSocket upgrade expected", {
        status: 426,
        reason: "upgrade-required",
      });
    }
    const claims = deps.auth.verify(request.headers, path);
    if ((path === MESH_BRIDGE_PATH) !== (claims.login !== undefined)) {
      throw new Coder1Error("Cannot open mesh link: a bridge link carries a login, an IDE link none", {
        status: 400,
        reason: "bad-request",
      });
    }
    const lease = await deps.store.lease(claims.sid, deps.clock.now()).catch((error) => {
      throw new Coder1Error(`Cannot open mesh link: the shared state store is unreachable (${String(error)})`, {
        status: 503,
        reason: "state-store-unavailable",
      });
    });
    if (lease?.instance !== deps.instance || lease.epoch !== claims.epoch) {
      throw new Coder1Error("Cannot open mesh link: this instance does not hold the session's lease at that epoch", {
        status: 409,
        reason: "stale-lease",
      });
    }
    // The admit rule runs here, where the session's bridge is: 409 session-taken before any socket.
    deps.hub.checkForwarded(claims.sid, claims.epoch, claims.login);
    const { socket, response } = info.upgrade();
    if (claims.login) deps.hub.acceptBridge(socket, claims.login);
    else deps.hub.acceptIde(socket, claims.sid);
    deps.log.info("mesh.accept", { from: claims.instance, role: claims.login ? "bridge" : "ide" });
    return response;
  };
  return async (request, info) => {
    const path = new URL(request.url).pathname;
    if (path === MESH_IDE_PATH || path === MESH_BRIDGE_PATH) {
      try {
        return await accept(request, info);
      } catch (error) {
        if (!(error instanceof Coder1Error)) deps.log.error("mesh.error", { error: String(error) });
        else deps.log.warn("mesh.refused", { reason: error.reason, why: error.message });
        return errorResponse(error);
      }
    }
    if (path === "/readyz" && request.method === "GET" && deps.ready() && !(await deps.store.ping())) {
      return Response.json({ status: "unavailable", ready: false, redis: "unreachable" }, {
        status: 503,
        headers: { "cache-control": "no-store" },
      });
    }
    return api(request, info);
  };
}

/**
 * Whether mesh frames to `instance` may go unmasked (an all-zero masking key,
 * which npm:ws skips on both ends): over TLS or loopback, where no
 * intermediary that does not speak WebSocket sees them (RFC 6455 section
 * 10.3), as the bridge does (bridge/relay_link.ts). Masking and unmasking in
 * JavaScript, byte by byte, cost both instances CPU on every forwarded byte.
 */
export function unmaskedLink(instance: string): boolean {
  const url = new URL(instance);
  if (url.protocol === "https:") return true;
  const host = url.hostname.replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function _zeroMask(mask: Uint8Array): void {
  mask.fill(0);
}

/** Sends one message on, and stops reading its source while the destination has too much unsent. */
function _relay(data: Buffer, isBinary: boolean, from: NodeWebSocket, to: NodeWebSocket): void {
  if (to.readyState !== NodeWebSocket.OPEN) return;
  if (to.bufferedAmount + data.byteLength <= MESH_HIGH_BYTES) return to.send(data, { binary: isBinary });
  // Over the mark: pause the source until this message is written out (and everything before it).
  from.pause();
  to.send(data, { binary: isBinary }, () => {
    if (to.bufferedAmount <= MESH_LOW_BYTES || to.readyState !== NodeWebSocket.OPEN) from.resume();
    else _whenDrained(to, () => from.resume());
  });
}

/** Calls `fn` once `ws`'s unsent bytes are below {@linkcode MESH_LOW_BYTES}. */
function _whenDrained(ws: NodeWebSocket, fn: () => void): void {
  const check = () => {
    if (ws.bufferedAmount <= MESH_LOW_BYTES || ws.readyState !== NodeWebSocket.OPEN) fn();
    else setTimeout(check, 5);
  };
  setTimeout(check, 5);
}

/** A home's refusal as the client's answer. */
function _refusal(status: number, body: string, home: string, log: Logger): Coder1Error {
  let error = "", message = "";
  try {
    const parsed = JSON.parse(body);
    error = typeof parsed.error === "string" ? parsed.error : "";
    message = typeof parsed.message === "string" ? parsed.message : "";
  } catch {
    // Not JSON: not a coder1 relay's answer.
  }
  if (status === 409 && (error === "session-taken" || error === "stale-lease")) {
    return new Coder1Error(message, { status, reason: error });
  }
  // A 401 here is about the mesh key, never the client's credential: it must not read it as one.
  log.error("mesh.refused", { home, status, error });
  return new Coder1Error(
    `Cannot connect: the session's relay instance refused the link (${status}${error ? ` ${error}` : ""})`,
    { status: 502, reason: "mesh-refused" },
  );
}

function _readBody(res: http.IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on("data", (chunk: Buffer) => {
      size += chunk.byteLength;
      if (size <= MAX_REFUSAL_BYTES) chunks.push(chunk);
    });
    res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    res.on("error", () => resolve(Buffer.concat(chunks).toString("utf8")));
  });
}

/** Whether a close code may be sent in a close frame (1005 and 1006 are only ever observed). */
function _sendable(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
    (code >= 3000 && code <= 4999);
}

function _close(ws: NodeWebSocket, code: number, reason: string): void {
  // A client socket not open yet has no connection to close: its upgrade is refused or dropped instead.
  if (ws.readyState !== NodeWebSocket.OPEN) return;
  try {
    ws.close(code, reason);
  } catch {
    // Already closing.
  }
}
