/**
 * The relay's HTTP API as the IDE uses it: browser sessions, pairing codes
 * and bridge revocation. In browsers the session cookie is HttpOnly and the
 * browser sends it; in Deno this keeps the cookie itself. Refusals become
 * {@linkcode IdeClientError}s carrying the HTTP status, the API's `error`
 * string as reason, and `Retry-After` for 429.
 *
 * @module
 */
import { isRoutingKey } from "./frame_bodies.ts";
import { IdeClientError } from "./ide_client_error.ts";
import { SESSION_COOKIE } from "./protocol.ts";

/** One bridge credential of this session, as `GET /api/bridges` lists it. */
export interface BridgeCredentialInfo {
  /** The bridge id. */
  bridgeId: string;
  /** When it was paired (ms since the epoch). */
  issuedAt: number;
  /** The client address that paired it. */
  issuedFrom: string;
  /** Its last login, if any. */
  lastSeen?: number;
  /** The address of its last login. */
  lastAddress?: string;
  /** The coder1 version it reported. */
  version?: string;
  /** When its current token expires. */
  expiresAt: number;
  /** Whether the user approved it. */
  approved: boolean;
  /** Whether it is connected now. */
  connected: boolean;
  /** When it was revoked, if it was. */
  revokedAt?: number;
  /** Why: `user`, `logout`, `replaced`, or `reuse` (an old token was presented again: possible theft). */
  revokedReason?: "user" | "logout" | "replaced" | "reuse";
}

/** Options for {@linkcode IdeApi}. */
export interface IdeApiOptions {
  /** fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /** Outside browsers: a session cookie from another client of the same session (a second tab). */
  sessionCookie?: string;
}

/**
 * Calls the relay's HTTP API for one browser session.
 *
 * @example
 * ```ts ignore
 * import { IdeApi } from "./ide_api.ts";
 * const api = new IdeApi("http://127.0.0.1:8787");
 * await api.createSession();
 * console.log((await api.requestPairingCode()).code); // e.g. "123456"
 * ```
 */
export class IdeApi {
  /** The relay's base URL, without a trailing slash. */
  readonly base: string;
  #fetch: typeof fetch;
  #cookie?: string;
  #routingKey?: string;

  /**
   * @param relayUrl The relay's base URL, e.g. `https://relay.example`.
   * @param options fetch and a shared session cookie.
   */
  constructor(relayUrl: string, options: IdeApiOptions = {}) {
    this.base = relayUrl.replace(/\/$/, "");
    this.#fetch = options.fetch ?? ((input, init) => fetch(input, init));
    this.#cookie = options.sessionCookie;
  }

  /** Outside browsers: the session cookie (`name=value`), once there is one. */
  get sessionCookie(): string | undefined {
    return this.#cookie;
  }

  /**
   * The session's routing key, once the relay gave one (`POST /api/sessions`,
   * `GET /api/session`): the IDE socket carries it as `?r=` so that a load
   * balancer in front of several relay instances places it with its bridge.
   */
  get routingKey(): string | undefined {
    return this.#routingKey;
  }

  /**
   * Creates a browser session (`POST /api/sessions`) and keeps its cookie.
   *
   * @returns When the session expires (ms since the epoch).
   */
  async createSession(): Promise<{ expiresAt: number }> {
    const res = await this.#call("POST", "/api/sessions");
    const setCookie = (res.headers as Headers & { getSetCookie?: () => string[] }).getSetCookie?.() ?? [];
    for (const line of setCookie) {
      // `__Host-coder1_session` over HTTPS, `coder1_session` over plain HTTP.
      const m = new RegExp(`^((?:__Host-)?${SESSION_COOKIE})=([^;]+)`).exec(line);
      if (m) this.#cookie = `${m[1]}=${m[2]}`;
    }
    const body = await res.json();
    this.#keepRoutingKey(body);
    return { expiresAt: body.expiresAt };
  }

  /**
   * Keeps a valid session (`GET /api/session`, a reloaded page), creates one otherwise.
   *
   * @returns Whether a new session was created.
   */
  async ensureSession(): Promise<boolean> {
    try {
      this.#keepRoutingKey(await (await this.#call("GET", "/api/session")).json().catch(() => ({})));
      return false;
    } catch (error) {
      if (!(error instanceof IdeClientError) || error.status !== 401) throw error;
    }
    await this.createSession();
    return true;
  }

  /**
   * Requests this session's pairing code (`POST /api/pairing-codes`). While
   * the session's code is live the relay gives the same one again (one
   * pairing in flight per session, every tab shows it); with `replace` it
   * retires it and issues a new one.
   *
   * @param options `replace`: a new code even while one is live (counts against the rate limit).
   * @returns The code, when it expires, and whether it is the live one given again.
   */
  async requestPairingCode(
    options: { replace?: boolean } = {},
  ): Promise<{ code: string; expiresAt: number; reused: boolean }> {
    const body = options.replace ? { replace: true } : undefined;
    const issued = await (await this.#call("POST", "/api/pairing-codes", body)).json();
    return { code: issued.code, expiresAt: issued.expiresAt, reused: issued.reused === true };
  }

  /**
   * Revokes a bridge of this session (`POST /api/bridge/revoke`), connected or
   * not: its token stops working at once and a live connection is closed.
   *
   * @param bridgeId The bridge (default: the one connected to the session, as the relay knows it).
   */
  async revokeBridge(bridgeId?: string): Promise<void> {
    await this.#call("POST", "/api/bridge/revoke", bridgeId ? { bridgeId } : {});
  }

  /**
   * Revokes every bridge credential of this session (`POST /api/bridge/revoke` with `{"all": true}`).
   *
   * @returns The bridge ids revoked.
   */
  async revokeAllBridges(): Promise<string[]> {
    return (await (await this.#call("POST", "/api/bridge/revoke", { all: true })).json()).bridgeIds;
  }

  /**
   * The bridge credentials issued to this session, newest first (`GET /api/bridges`).
   *
   * @returns One entry per credential, revoked ones included until they expire.
   */
  async listBridges(): Promise<BridgeCredentialInfo[]> {
    return (await (await this.#call("GET", "/api/bridges")).json()).bridges;
  }

  // A relay without clustering support sends none; a malformed one is not put in a URL.
  #keepRoutingKey(body: { routingKey?: unknown } | null): void {
    this.#routingKey = isRoutingKey(body?.routingKey) ? body.routingKey : undefined;
  }

  async #call(method: string, path: string, json?: Record<string, unknown>): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.#cookie) headers.cookie = this.#cookie;
    if (json) headers["content-type"] = "application/json";
    const res = await this.#fetch(`${this.base}${path}`, {
      method,
      headers,
      credentials: "include",
      body: json ? JSON.stringify(json) : undefined,
    });
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
