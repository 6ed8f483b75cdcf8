/**
 * The relay's HTTP surface: the IDE-facing API (`/api/...`), the two WebSocket
 * endpoints, and for operators `/healthz`, `/readyz` and `/metrics`. docs/HTTP_API.md documents every route; web IDEs
 * integrate against these names.
 *
 * @module
 */
import { decodeBridgeCredential } from "../shared/bridge_credential.ts";
import type { Clock } from "../shared/clock.ts";
import { Coder1Error, errorResponse } from "../shared/errors.ts";
import {
  PROTOCOL_VERSION,
  SECURE_SESSION_COOKIE,
  SESSION_COOKIE,
  SESSIONS_PER_ADDRESS_PER_WINDOW,
  WS_SUBPROTOCOL,
} from "../shared/protocol.ts";
import { VERSION } from "../shared/version.ts";
import type { BridgeCredentials } from "./bridge_credentials.ts";
import type { ConnectionLimits } from "./conn_limits.ts";
import type { RelayHandler, RelayServeInfo } from "./http_server.ts";
import { type Hub, outdatedReason } from "./hub.ts";
import type { Logger } from "./logger.ts";
import { METRICS_CONTENT_TYPE, type RelayMetrics } from "./metrics.ts";
import type { Pairing } from "./pairing.ts";
import { routingKey } from "./routing_key.ts";
import type { RelayStore } from "./store.ts";
import type { TokenService } from "./token_service.ts";
import { WEB_ASSETS } from "./web_assets.ts";

/** The sliding window for {@linkcode SESSIONS_PER_ADDRESS_PER_WINDOW} (`POST /api/sessions`). */
const SESSION_WINDOW_MS = 60_000;
/** `POST /api/bridge/verify` calls one client address may make per {@linkcode VERIFY_WINDOW_MS}. */
const VERIFY_PER_ADDRESS = 30;
/** The sliding window for {@linkcode VERIFY_PER_ADDRESS}. */
const VERIFY_WINDOW_MS = 60_000;
/** How long a browser may reuse a CORS preflight answer (`Access-Control-Max-Age`). */
const CORS_MAX_AGE_SECONDS = 600;
/** How long a browser keeps to HTTPS once told so (`Strict-Transport-Security`, one year). */
const HSTS_MAX_AGE_SECONDS = 31_536_000;
/** Longest `bridgeId` `POST /api/bridge/revoke` reads (ids are UUIDs, 36 characters). */
const MAX_BRIDGE_ID_LENGTH = 128;
/** Random bytes in a browser session id (128 bits). */
const SESSION_ID_BYTES = 16;

/** What the handler needs. */
export interface HttpApiDeps {
  hub: Hub;
  pairing: Pairing;
  tokens: TokenService;
  /** Bridge credential lines: list, verify, revoke. */
  credentials: BridgeCredentials;
  store: RelayStore;
  clock: Clock;
  log: Logger;
  /** Origins allowed to open `/ws/ide` and call the API from a browser. */
  allowedOrigins: ReadonlySet<string>;
  /** Whether cookies get the Secure attribute (and the session cookie the `__Host-` name). */
  secureCookies: boolean;
  /** The client address to rate-limit by. */
  addressOf(request: Request, info: Deno.ServeHandlerInfo): string;
  /**
   * The relay's own host names (lower case, no port: `localhost`, the bound
   * name, the `--public-url` host). `/metrics` answers only requests whose
   * `Host` is one of them or an IP address: a DNS-rebinding page reaches the
   * relay under the attacker's name. Absent: any Host.
   */
  hostNames?: ReadonlySet<string>;
  /** What `GET /metrics` renders (absent: 404). */
  metrics?: RelayMetrics;
  /** When set, `GET /metrics` needs `Authorization: Bearer <this>`. */
  metricsToken?: string;
  /** Whether the relay accepts connections now (`GET /readyz`); default always. */
  ready?: () => boolean;
  /** The cap on open WebSocket connections per client address (absent: no cap). */
  connections?: ConnectionLimits;
}

/**
 * Builds the request handler.
 *
 * @param deps Services the routes use.
 * @returns A handler for relay/http_server.ts.
 */
export function createHttpHandler(deps: HttpApiDeps): RelayHandler {
  const json = (body: unknown, status = 200, headers: HeadersInit = {}) =>
    Response.json(body, { status, headers: { "cache-control": "no-store", ...headers } });

  // Over HTTPS only the __Host- cookie counts: a sibling subdomain can set a
  // plain `coder1_session` for this host, never a `__Host-` one.
  const cookieName = deps.secureCookies ? SECURE_SESSION_COOKIE : SESSION_COOKIE;
  const requireSession = async (request: Request): Promise<string> => {
    const value = _cookie(request, cookieName);
    if (!value) throw new Coder1Error("Cannot continue: no browser session", { status: 401, reason: "no-session" });
    try {
      return await deps.tokens.verifySession(value);
    } catch {
      throw new Coder1Error("Cannot continue: browser session invalid or expired", {
        status: 401,
        reason: "no-session",
      });
    }
  };

  const requireBridge = async (request: Request) => {
    const auth = request.headers.get("authorization") ?? "";
    const m = /^Bearer (\S+)$/.exec(auth);
    if (!m) throw new Coder1Error("Cannot continue: bearer token missing", { status: 401, reason: "unauthorized" });
    // A plain check: nothing rotates, nothing counts as a login.
    return (await deps.credentials.verify(m[1])).claims;
  };

  // A browser request from a foreign origin must not act on a session.
  const checkOrigin = (request: Request, required: boolean) => {
    const origin = request.headers.get("origin");
    if (origin === null ? required : !deps.allowedOrigins.has(origin)) {
      throw new Coder1Error("Cannot continue: origin not allowed", { status: 403, reason: "bad-origin" });
    }
  };

  const cors = (request: Request): Record<string, string> => {
    const origin = request.headers.get("origin");
    return origin && deps.allowedOrigins.has(origin)
      ? {
        "access-control-allow-origin": origin,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "Retry-After",
        vary: "Origin",
      }
      : {};
  };

  // Every socket holds a slot of its address from the upgrade to its close,
  // authenticated or not; past the cap the upgrade is refused before it happens.
  // The socket opens only once the handler returns the upgrade's response
  // (relay/http_server.ts): a bridge's credential is checked before that.
  const upgrade = (request: Request, info: RelayServeInfo, protocol?: string) => {
    const limits = deps.connections;
    const release = limits ? limits.acquire(deps.addressOf(request, info)) : () => {};
    if (!release) {
      deps.metrics?.rateLimited("socket_open");
      throw new Coder1Error(
        `Cannot open socket: ${limits!.perAddress} connections from this address are open already`,
        { status: 429, reason: "too-many-sockets" },
      );
    }
    try {
      const upgraded = info.upgrade!(protocol);
      upgraded.socket.addEventListener("close", release);
      return upgraded;
    } catch (error) {
      release();
      throw error;
    }
  };

  const routes: Record<string, (request: Request, info: RelayServeInfo) => Promise<Response> | Response> = {
    "GET /healthz": () => json({ status: "ok", version: VERSION }),

    "GET /readyz": () =>
      deps.ready?.() === false ? json({ status: "stopping" }, 503) : json({ status: "ready", version: VERSION }),

    "GET /metrics": (request) => {
      if (!deps.metrics) throw new Coder1Error("Cannot find /metrics", { status: 404, reason: "not-found" });
      // A DNS-rebinding page reaches the relay under the attacker's host name: refused.
      if (deps.hostNames && !_hostAllowed(request.headers.get("host"), deps.hostNames)) {
        throw new Coder1Error("Cannot show metrics: Host is not one of this relay's names", {
          status: 421,
          reason: "bad-host",
        });
      }
      if (deps.metricsToken !== undefined && !_bearerMatches(request, deps.metricsToken)) {
        throw new Coder1Error("Cannot show metrics: bearer token missing or wrong", {
          status: 401,
          reason: "unauthorized",
        });
      }
      return new Response(deps.metrics.render(), {
        headers: { "content-type": METRICS_CONTENT_TYPE, "cache-control": "no-store" },
      });
    },

    ...Object.fromEntries(
      Object.keys(WEB_ASSETS).map((path) => [`GET ${path}`, (request: Request) => _asset(request, path, deps)]),
    ),

    "POST /api/sessions": async (request, info) => {
      checkOrigin(request, false);
      const address = deps.addressOf(request, info);
      const rate = await deps.store.hit(
        `session:a:${address}`,
        SESSIONS_PER_ADDRESS_PER_WINDOW,
        SESSION_WINDOW_MS,
        deps.clock.now(),
      );
      if (!rate.allowed) {
        deps.metrics?.rateLimited("session_create");
        const retryAfterSeconds = Math.ceil(rate.retryAfterMs / 1000);
        throw new Coder1Error(`Cannot create session: too many from this address; retry in ${retryAfterSeconds}s`, {
          status: 429,
          retryAfterSeconds,
          reason: "rate-limited",
        });
      }
      const sid = _randomId();
      const { value, expiresAt } = await deps.tokens.issueSession(sid);
      const maxAge = Math.floor((expiresAt - deps.clock.now()) / 1000);
      const cookie = `${cookieName}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAge}` +
        (deps.secureCookies ? "; Secure" : "");
      deps.log.info("session.create", {});
      return json({ expiresAt, routingKey: routingKey(sid) }, 201, { "set-cookie": cookie, ...cors(request) });
    },

    "GET /api/session": async (request) => {
      const sid = await requireSession(request);
      return json({ ok: true, routingKey: routingKey(sid) }, 200, cors(request));
    },

    "POST /api/pairing-codes": async (request, info) => {
      checkOrigin(request, false);
      const sid = await requireSession(request);
      // `{"replace": true}`: the user asked for a new code (anything else reuses a live one).
      const body = await request.json().catch(() => ({}));
      const replace = typeof body === "object" && body !== null && body.replace === true;
      const issued = await deps.pairing.issue(sid, deps.addressOf(request, info), { replace });
      deps.log.info(issued.reused ? "code.reuse" : "code.issue", {});
      return json(issued, issued.reused ? 200 : 201, cors(request));
    },

    "GET /api/bridge": async (request) => {
      const claims = await requireBridge(request);
      return json({
        bridgeId: claims.sub,
        expiresAt: claims.expiresAt,
        connected: deps.hub.bridgeConnected(claims.sid),
      });
    },

    // Read-only, for `coder1 doctor`: says whether a stored token would be
    // accepted, and if not why, without logging in (which would replace the
    // running bridge's connection) and without revoking or rotating anything.
    "POST /api/bridge/verify": async (request, info) => {
      const address = deps.addressOf(request, info);
      const rate = await deps.store.hit(
        `verify:a:${address}`,
        VERIFY_PER_ADDRESS,
        VERIFY_WINDOW_MS,
        deps.clock.now(),
      );
      if (!rate.allowed) {
        deps.metrics?.rateLimited("bridge_verify");
        const retryAfterSeconds = Math.ceil(rate.retryAfterMs / 1000);
        throw new Coder1Error(`Cannot verify: too many checks from this address; retry in ${retryAfterSeconds}s`, {
          status: 429,
          retryAfterSeconds,
          reason: "rate-limited",
        });
      }
      try {
        const claims = await requireBridge(request);
        return json({ valid: true, bridgeId: claims.sub, expiresAt: claims.expiresAt });
      } catch (error) {
        if (!(error instanceof Coder1Error) || error.status !== 401) throw error;
        // token_service.ts names the cause in its message: the revocation list, jose's expiry code, or anything else.
        const reason = /revoked/.test(error.message)
          ? "revoked"
          : /ERR_JWT_EXPIRED/.test(error.message)
          ? "expired"
          : "invalid";
        return json({ valid: false, error: "unauthorized", reason, message: error.message }, 401);
      }
    },

    "POST /api/bridge/logout": async (request) => {
      const claims = await requireBridge(request);
      // The whole line: its current token and the one it replaced; a live connection is closed with 4410.
      await deps.credentials.revoke(claims.sub, "logout");
      await deps.store.revoke(claims.jti, claims.expiresAt);
      deps.log.info("bridge.revoke", { bridgeId: claims.sub });
      return json({ revoked: true });
    },

    "GET /api/bridges": async (request) => {
      checkOrigin(request, false);
      const sid = await requireSession(request);
      return json({ bridges: await deps.credentials.list(sid) }, 200, cors(request));
    },

    "POST /api/bridge/revoke": async (request) => {
      checkOrigin(request, false);
      const sid = await requireSession(request);
      const body = await _revokeBody(request);
      let which: { bridgeId: string } | { all: true };
      if (body.all === true && body.bridgeId === undefined) which = { all: true };
      else if (body.all !== undefined) {
        throw new Coder1Error('Cannot revoke: "all" must be true, without "bridgeId"', {
          status: 400,
          reason: "bad-request",
        });
      } else if (typeof body.bridgeId === "string" && body.bridgeId.length <= MAX_BRIDGE_ID_LENGTH) {
        which = { bridgeId: body.bridgeId };
      } else if (body.bridgeId !== undefined) {
        throw new Coder1Error("Cannot revoke: bridgeId must be a bridge id string", {
          status: 400,
          reason: "bad-request",
        });
      } else {
        const connected = deps.hub.sessionBridge(sid);
        if (!connected) {
          throw new Coder1Error("Cannot revoke: no bridge is connected to this session; name one with bridgeId", {
            status: 404,
            reason: "no-bridge",
          });
        }
        which = { bridgeId: connected.bridgeId };
      }
      // Connected or not: the line is revoked (reconnects fail), then its connection is closed with 4410.
      const revoked = await deps.credentials.revokeForSession(sid, which);
      if ("bridgeId" in which && revoked.length === 0) {
        throw new Coder1Error("Cannot revoke: this session has no bridge with that id", {
          status: 404,
          reason: "no-bridge",
        });
      }
      for (const bridgeId of revoked) deps.log.info("bridge.revoke", { bridgeId });
      const answer = "bridgeId" in which
        ? { revoked: true, bridgeId: which.bridgeId }
        : { revoked: true, bridgeIds: revoked };
      return json(answer, 200, cors(request));
    },

    "GET /ws/ide": async (request, info) => {
      checkOrigin(request, true);
      const sid = await requireSession(request);
      _requireUpgrade(request, info);
      // A client of this version asks for the subprotocol; an older one gets
      // the upgrade anyway, then a 4426 close saying what to update. A newer
      // client gets its own subprotocol back, so that it stays connected
      // long enough to read the 4426 reason instead of failing the handshake.
      const offer = _subprotocolOffer(request);
      const { socket, response } = upgrade(request, info, offer.protocol);
      // One of several instances: the socket may go through a mesh link to its session's home (relay/mesh.ts).
      if (offer.version === PROTOCOL_VERSION) await deps.hub.placeIde(socket, sid);
      else deps.hub.acceptOutdated(socket, "ide", offer.version);
      return response;
    },

    "GET /ws/bridge": async (request, info) => {
      // Bridges never send Origin; browsers always do. A page the user visits
      // must not spend their address's redemption budget or socket slots.
      if (request.headers.has("origin")) {
        throw new Coder1Error("Cannot open a bridge socket from a web page", { status: 403, reason: "bad-origin" });
      }
      _requireUpgrade(request, info);
      const offer = _subprotocolOffer(request);
      if (offer.version !== PROTOCOL_VERSION) {
        // No socket for a bridge that cannot authenticate the way this relay expects: a 426 that says what to update.
        throw new Coder1Error(outdatedReason("bridge", offer.version), { status: 426, reason: "unsupported-version" });
      }
      // Cheap checks first: a refused upgrade must not spend a pairing code.
      const credential = decodeBridgeCredential(request.headers);
      const address = deps.addressOf(request, info);
      const { socket, response } = upgrade(request, info, offer.protocol);
      // A refusal here (401, 429) closes the unopened socket, which frees its slot.
      const login = await deps.hub.authenticateBridge(credential, address);
      await deps.hub.placeBridge(socket, login);
      return response;
    },
  };
  const paths = new Set(Object.keys(routes).map((k) => k.split(" ")[1]));

  return async (request, info) => {
    const url = new URL(request.url);
    try {
      if (request.method === "OPTIONS" && url.pathname.startsWith("/api/")) {
        const headers = cors(request);
        if (!headers["access-control-allow-origin"]) {
          throw new Coder1Error("Cannot continue: origin not allowed", { status: 403, reason: "bad-origin" });
        }
        return new Response(null, {
          status: 204,
          headers: {
            ...headers,
            "access-control-allow-methods": "GET, POST",
            "access-control-allow-headers": "content-type, authorization",
            "access-control-max-age": String(CORS_MAX_AGE_SECONDS),
          },
        });
      }
      const route = routes[`${request.method} ${url.pathname}`];
      if (route) return await route(request, info);
      if (paths.has(url.pathname)) {
        throw new Coder1Error(`Cannot ${request.method} ${url.pathname}`, {
          status: 405,
          reason: "method-not-allowed",
        });
      }
      throw new Coder1Error(`Cannot find ${url.pathname}`, { status: 404, reason: "not-found" });
    } catch (error) {
      if (!(error instanceof Coder1Error)) deps.log.error("http.error", { path: url.pathname, error: String(error) });
      const response = errorResponse(error);
      if (url.pathname === "/ws/bridge" || url.pathname === "/ws/ide") {
        deps.metrics?.upgradeRefused(url.pathname === "/ws/bridge" ? "bridge" : "ide", response.status);
      }
      // A cross-origin IDE must be able to read why (a 429 and its Retry-After, say).
      for (const [k, v] of Object.entries(cors(request))) response.headers.set(k, v);
      return response;
    }
  };
}

/**
 * The web IDE's security headers: scripts only from this origin (no inline
 * script, no eval), styles from this origin plus inline styles (xterm.js
 * writes its measured cell sizes into <style> elements at run time; styles
 * cannot run code), sockets and fetches only to this origin, no framing, no
 * referrer.
 */
export function webSecurityHeaders(secure: boolean): Record<string, string> {
  return {
    "content-security-policy": [
      "default-src 'self'",
      "script-src 'self'",
      "style-src 'self' 'unsafe-inline'",
      "img-src 'self' data:",
      "font-src 'self'",
      "connect-src 'self'",
      "object-src 'none'",
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'",
    ].join("; "),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), usb=(), payment=()",
    ...(secure ? { "strict-transport-security": `max-age=${HSTS_MAX_AGE_SECONDS}` } : {}),
  };
}

function _asset(request: Request, path: string, deps: HttpApiDeps): Response {
  const asset = WEB_ASSETS[path];
  const headers: Record<string, string> = {
    ...webSecurityHeaders(deps.secureCookies),
    "content-type": asset.type,
    etag: asset.etag,
    // The page itself is revalidated; assets change with the relay version anyway.
    "cache-control": "no-cache",
  };
  if (request.headers.get("if-none-match") === asset.etag) return new Response(null, { status: 304, headers });
  return new Response(asset.body, { headers });
}

/** Compares the bearer token in constant time (for equal lengths). */
function _bearerMatches(request: Request, expected: string): boolean {
  const m = /^Bearer (\S+)$/.exec(request.headers.get("authorization") ?? "");
  if (!m) return false;
  const a = new TextEncoder().encode(m[1]), b = new TextEncoder().encode(expected);
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** Whether a `Host` header names this relay: an IP address (any port) or one of `names`. */
function _hostAllowed(host: string | null, names: ReadonlySet<string>): boolean {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::\d{1,5})?$/.exec(host ?? "");
  if (!m) return false;
  const name = m[1].toLowerCase().replace(/\.$/, "");
  return name.startsWith("[") || /^\d{1,3}(\.\d{1,3}){3}$/.test(name) || names.has(name);
}

function _requireUpgrade(request: Request, info: RelayServeInfo): void {
  if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    throw new Coder1Error("Cannot continue: WebSocket upgrade expected", { status: 426, reason: "upgrade-required" });
  }
  // The client's mistakes, said with a 400: a bad key or version, or an upgrade
  // without `Connection: Upgrade` (then it is no upgrade request and has no socket to give).
  const key = request.headers.get("sec-websocket-key") ?? "";
  const connection = (request.headers.get("connection") ?? "").toLowerCase().split(",").map((t) => t.trim());
  if (
    !/^[A-Za-z0-9+/]{22}==$/.test(key) || request.headers.get("sec-websocket-version") !== "13" ||
    !connection.includes("upgrade") || !info.upgrade
  ) {
    throw new Coder1Error(
      "Cannot upgrade: a WebSocket upgrade needs Connection: Upgrade, Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
      { status: 400, reason: "bad-upgrade" },
    );
  }
}

/**
 * Which coder1 protocol the client asked for (`Sec-WebSocket-Protocol:
 * coder1.vN`, several allowed): this relay's version when offered, else the
 * highest one offered, else none (clients before protocol 4 offered none).
 * `protocol` is the subprotocol to select in the answer.
 */
function _subprotocolOffer(request: Request): { version?: number; protocol?: string } {
  // Browsers separate offers with ", ", npm:ws with ",".
  const offered = (request.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim());
  if (offered.includes(WS_SUBPROTOCOL)) return { version: PROTOCOL_VERSION, protocol: WS_SUBPROTOCOL };
  let best: { version?: number; protocol?: string } = {};
  for (const p of offered) {
    const m = /^coder1\.v([1-9][0-9]{0,3})$/.exec(p);
    if (m && Number(m[1]) > (best.version ?? 0)) best = { version: Number(m[1]), protocol: p };
  }
  return best;
}

/**
 * The value of cookie `name`. Two cookies of that name (one planted by a
 * sibling subdomain, say) are refused rather than guessed between: 400
 * `ambiguous-cookie`.
 */
function _cookie(request: Request, name: string): string | undefined {
  const header = request.headers.get("cookie");
  if (!header) return undefined;
  let found: string | undefined;
  for (const part of header.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k !== name) continue;
    if (found !== undefined) {
      throw new Coder1Error(
        `Cannot continue: the request carries two ${name} cookies; clear this site's cookies and reload`,
        { status: 400, reason: "ambiguous-cookie" },
      );
    }
    found = v.join("=");
  }
  return found;
}

/** The optional body of `POST /api/bridge/revoke`: `{}`, `{"bridgeId": "..."}` or `{"all": true}`. */
async function _revokeBody(request: Request): Promise<{ bridgeId?: unknown; all?: unknown }> {
  const text = await request.text();
  if (text.trim() === "") return {};
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new Coder1Error("Cannot revoke: the body must be a JSON object", { status: 400, reason: "bad-request" });
  }
  return body as { bridgeId?: unknown; all?: unknown };
}

function _randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(SESSION_ID_BYTES));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
