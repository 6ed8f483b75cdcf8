/**
 * Bridge credentials as lines the user can see and take back: pairing issues a
 * line (bridge id, when, from where), each login rotates its token and
 * records when and from where it was seen, and presenting a token the line has
 * rotated away revokes the whole line (refresh-token rotation with reuse
 * detection, RFC 9700 section 4.14.2). Token logins are rate-limited per
 * address and per credential. The reasoning is in SECURITY.md ("Bridge
 * credentials").
 *
 * Grace rule, for a bridge that crashed after the relay sent it a new token
 * and before it stored it: the token the line replaced last is accepted once
 * more when its successor was never presented and no connection of the line
 * is open. Anything older, or that token while the line is connected or after
 * its successor was used, is reuse.
 *
 * The lines live in the state store (relay/store.ts): the credentials file
 * through MemoryStore, or Redis shared by several relay instances. A login
 * writes its rotation with a compare-and-set on the token it read, so two
 * instances logging in with one token at the same moment cannot both rotate
 * it: the one that loses treats it as reuse. A revocation is published as an
 * event, and every instance (this one included, from the same subscription)
 * closes its connections of that line.
 *
 * @module
 */
import type { Clock } from "../shared/clock.ts";
import { Coder1Error } from "../shared/errors.ts";
import {
  CloseCode,
  LOGIN_RATE_WINDOW_MS,
  LOGINS_PER_ADDRESS_PER_WINDOW,
  LOGINS_PER_CREDENTIAL_PER_WINDOW,
} from "../shared/protocol.ts";
import type { CredentialRecord, RevokeReason } from "./credential_ledger.ts";
import type { RelayMetrics } from "./metrics.ts";
import type { Pairing } from "./pairing.ts";
import type { RelayEvent, RelayStore } from "./store.ts";
import type { BridgeClaims, TokenService } from "./token_service.ts";

/** What a bridge says about itself at login. */
export interface LoginInfo {
  /** Its coder1 version. */
  version: string;
  /** Whether it stores rotated tokens (`auth.rotate`). */
  rotate: boolean;
}

/** A successful pairing or login. */
export interface Authenticated {
  /** The browser session the bridge belongs to. */
  sid: string;
  /** The bridge id. */
  bridgeId: string;
  /** The token id now current. */
  jti: string;
  /** When that token expires. */
  expiresAt: number;
  /** The new token, when one was issued (pairing, or rotation). */
  token?: string;
  /** Whether the user approved this bridge in the IDE. */
  approved: boolean;
}

/** What the page's bridge list shows of one credential. */
export interface CredentialView {
  /** The bridge id. */
  bridgeId: string;
  /** When it was paired. */
  issuedAt: number;
  /** From which address it was paired. */
  issuedFrom: string;
  /** Last login, if any. */
  lastSeen?: number;
  /** Address of the last login. */
  lastAddress?: string;
  /** The bridge version it reported. */
  version?: string;
  /** When its current token expires. */
  expiresAt: number;
  /** Whether the user approved it. */
  approved: boolean;
  /** Whether it is connected now. */
  connected: boolean;
  /** When it was revoked, if it was. */
  revokedAt?: number;
  /** Why: `user` (the page), `logout` (the bridge), `replaced` (re-paired), `reuse` (theft detected). */
  revokedReason?: RevokeReason;
}

/** Throws when a bridge may not take its session's place now (the hub's takeover rule). */
export type Admit = (sid: string, bridgeId: string, approved: boolean) => void;

/** Called when a line is revoked, so its live connection is closed. */
export type RevokeListener = (bridgeId: string, reason: RevokeReason) => void;

/** Close reason sent to a bridge whose line was revoked for reuse. */
export const REUSE_MESSAGE =
  "an old token of this bridge was presented again (possible theft), so the relay revoked all of its tokens; pair again";

/** Attempts at a compare-and-set write that is not a login's (approval, revocation) before writing anyway. */
const WRITE_ATTEMPTS = 3;

/** Issues, rotates, checks and revokes bridge credentials. */
export class BridgeCredentials {
  #tokens: TokenService;
  #store: RelayStore;
  #pairing: Pairing;
  #clock: Clock;
  #metrics?: RelayMetrics;
  #listeners: RevokeListener[] = [];
  /** Which lines have an open connection on this instance (the hub answers). */
  #isLive: (bridgeId: string) => boolean = () => false;
  #unsubscribe: () => void;

  /** @param deps Token service, store (credential lines, rate windows, revocations, events), pairing, clock, metrics. */
  constructor(deps: {
    tokens: TokenService;
    store: RelayStore;
    pairing: Pairing;
    clock: Clock;
    metrics?: RelayMetrics;
  }) {
    this.#tokens = deps.tokens;
    this.#store = deps.store;
    this.#pairing = deps.pairing;
    this.#clock = deps.clock;
    this.#metrics = deps.metrics;
    // Revocations made here come back through the store like those of other instances.
    this.#unsubscribe = this.#store.subscribe((event) => this.#onEvent(event));
  }

  /** Stops listening to the store's events (the relay shuts down). */
  close(): void {
    this.#unsubscribe();
  }

  /**
   * Connects the hub: `isLive` says whether a line has an open connection on
   * this instance (with a shared store, other instances' presence counts too),
   * `onRevoke` closes it when the line is revoked on any instance.
   */
  attach(isLive: (bridgeId: string) => boolean, onRevoke: RevokeListener): void {
    this.#isLive = isLive;
    this.#listeners.push(onRevoke);
  }

  /**
   * Redeems a pairing code and issues a new line.
   *
   * @param admit Refuses (throws) before anything is issued when the bridge may not join its session now.
   * @throws {Coder1Error} 4401 / 4429 from {@linkcode Pairing.redeem}, or what `admit` throws.
   */
  async pair(code: string, address: string, info: LoginInfo, admit?: Admit): Promise<Authenticated> {
    const sid = await this.#pairing.redeem(code, address);
    const bridgeId = crypto.randomUUID();
    admit?.(sid, bridgeId, false);
    const issued = await this.#tokens.issueBridgeToken(bridgeId, sid);
    const now = this.#clock.now();
    await this.#store.putCredential({
      bridgeId,
      sid,
      issuedAt: now,
      issuedFrom: address,
      lastSeen: now,
      lastAddress: address,
      version: info.version,
      jti: issued.jti,
      jtiUsed: false,
      rotating: info.rotate,
      expiresAt: issued.expiresAt,
      approved: false,
    });
    return { sid, bridgeId, jti: issued.jti, expiresAt: issued.expiresAt, token: issued.token, approved: false };
  }

  /**
   * A bridge logs in with its token: rate limits, signature and claims,
   * the line's state, then (when the bridge asks for it) rotation.
   *
   * @param admit Refuses (throws) before the token rotates when the bridge may not join its session now.
   * @throws {Coder1Error} 4429 past a login limit; 4401 for a bad, revoked or reused token; what `admit` throws.
   */
  async login(token: string, address: string, info: LoginInfo, admit?: Admit): Promise<Authenticated> {
    const now = this.#clock.now();
    const byAddress = await this.#store.hit(
      `login:a:${address}`,
      LOGINS_PER_ADDRESS_PER_WINDOW,
      LOGIN_RATE_WINDOW_MS,
      now,
    );
    if (!byAddress.allowed) throw this.#limited("too many token logins from this address", byAddress.retryAfterMs);
    const claims = await this.#tokens.verifyBridgeToken(token);
    const byCredential = await this.#store.hit(
      `login:c:${claims.sub}`,
      LOGINS_PER_CREDENTIAL_PER_WINDOW,
      LOGIN_RATE_WINDOW_MS,
      now,
    );
    if (!byCredential.allowed) {
      throw this.#limited("too many logins with this bridge's token", byCredential.retryAfterMs);
    }
    const record = await this.#store.getCredential(claims.sub) ?? await this.#adopt(claims, address);
    // What the line held when read: the write below happens only if nobody changed it meanwhile.
    const readJti = record.jti;
    if (record.revokedAt !== undefined) throw _refused(record);
    if (record.sid !== claims.sid) throw _authError("token does not match its bridge's record");
    if (claims.jti !== record.jti) {
      const grace = claims.jti === record.prevJti && !record.jtiUsed && !(await this.#connected(record.bridgeId));
      if (!grace) {
        await this.#revokeLine(record, "reuse");
        throw _authError(REUSE_MESSAGE);
      }
      // The successor never reached the bridge's disk: it is dead from now on.
      await this.#store.revoke(record.jti, record.expiresAt);
      record.jti = claims.jti;
      record.expiresAt = claims.expiresAt;
    } else if (record.rotating && !info.rotate) {
      throw _authError("this bridge's token rotates; the bridge must store new tokens (update it)");
    }
    admit?.(record.sid, record.bridgeId, record.approved);
    record.lastSeen = now;
    record.lastAddress = address;
    record.version = info.version;
    let issuedToken: string | undefined;
    if (info.rotate) {
      const issued = await this.#tokens.issueBridgeToken(record.bridgeId, record.sid);
      record.prevJti = claims.jti;
      record.jti = issued.jti;
      record.expiresAt = issued.expiresAt;
      record.jtiUsed = false;
      record.rotating = true;
      issuedToken = issued.token;
    } else record.jtiUsed = true;
    if (!(await this.#store.putCredential(record, readJti))) {
      // Another login (on this instance or another) changed the line since it was read: two
      // connections presented one token at the same moment. Only one can hold it: reuse.
      const current = await this.#store.getCredential(record.bridgeId);
      if (current && current.revokedAt === undefined) await this.#revokeLine(current, "reuse");
      throw _authError(REUSE_MESSAGE);
    }
    return {
      sid: record.sid,
      bridgeId: record.bridgeId,
      jti: record.jti,
      expiresAt: record.expiresAt,
      token: issuedToken,
      approved: record.approved,
    };
  }

  /**
   * Checks a token without logging in and without rotating anything
   * (`GET /api/bridge`, `coder1 doctor`): the current token, or the one it
   * replaced while the grace rule would still accept it.
   *
   * @throws {Coder1Error} 401 with the reason (`credential-reused` for a line revoked for reuse).
   */
  async verify(token: string): Promise<{ claims: BridgeClaims; record: CredentialRecord }> {
    let claims: BridgeClaims;
    try {
      claims = await this.#tokens.verifyBridgeToken(token);
    } catch (error) {
      // A revoked token (signature and claims were good) of a line revoked for reuse: say so.
      const sub = /token revoked/.test((error as Error).message) ? _unverifiedSub(token) : undefined;
      const record = sub ? await this.#store.getCredential(sub) : undefined;
      if (record?.revokedReason === "reuse") throw _refused(record);
      throw error;
    }
    const record = await this.#store.getCredential(claims.sub) ?? await this.#adopt(claims, "unknown");
    if (record.revokedAt !== undefined) throw _refused(record);
    const current = claims.jti === record.jti || (claims.jti === record.prevJti && !record.jtiUsed);
    if (!current) throw _authError("this token was replaced by a newer one (rotated)");
    return { claims, record };
  }

  /** The line of `bridgeId`, if the relay knows it. */
  get(bridgeId: string): Promise<CredentialRecord | undefined> {
    return this.#store.getCredential(bridgeId);
  }

  /**
   * The user approved the bridge connected on line `bridgeId` (the IDE
   * forwarded `e2e.approve` or `stream.resume`). The hub does not wait for
   * it, so it never rejects: with the store unreachable the line stays
   * unapproved in the store (the connection is approved in the hub), which
   * only means the next takeover of its session asks again.
   */
  async markApproved(bridgeId: string): Promise<void> {
    try {
      for (let attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
        const record = await this.#store.getCredential(bridgeId);
        if (!record || record.approved || record.revokedAt !== undefined) return;
        record.approved = true;
        // Not over a rotation that happened meanwhile: that would bring its old token back.
        if (await this.#store.putCredential(record, record.jti)) return;
      }
    } catch {
      // Store unreachable: see above.
    }
  }

  /**
   * The credentials issued to browser session `sid`, newest first.
   *
   * @param sid The browser session.
   */
  async list(sid: string): Promise<CredentialView[]> {
    const lines = await this.#store.listCredentials(sid);
    const connected = await Promise.all(
      lines.map((r) => r.revokedAt === undefined ? this.#connected(r.bridgeId) : false),
    );
    return lines.map((r, i) => {
      const view: CredentialView = {
        bridgeId: r.bridgeId,
        issuedAt: r.issuedAt,
        issuedFrom: r.issuedFrom,
        expiresAt: r.expiresAt,
        approved: r.approved,
        connected: connected[i],
      };
      if (r.lastSeen !== undefined) view.lastSeen = r.lastSeen;
      if (r.lastAddress !== undefined) view.lastAddress = r.lastAddress;
      if (r.version !== undefined) view.version = r.version;
      if (r.revokedAt !== undefined) view.revokedAt = r.revokedAt;
      if (r.revokedReason !== undefined) view.revokedReason = r.revokedReason;
      return view;
    });
  }

  /**
   * Revokes credentials of session `sid`: one (`bridgeId`) or all of them.
   *
   * @returns The bridge ids revoked now (empty when `bridgeId` is not this session's).
   */
  async revokeForSession(sid: string, which: { bridgeId: string } | { all: true }): Promise<string[]> {
    const lines = "all" in which
      ? await this.#store.listCredentials(sid)
      : [await this.#store.getCredential(which.bridgeId)].filter((r): r is CredentialRecord => r?.sid === sid);
    const revoked: string[] = [];
    for (const record of lines) {
      if (record.revokedAt === undefined) await this.#revokeLine(record, "user");
      revoked.push(record.bridgeId);
    }
    return revoked;
  }

  /**
   * Revokes the line of `bridgeId` (bridge logout, or a re-pairing replacing it).
   *
   * @param reason `logout` or `replaced`.
   */
  async revoke(bridgeId: string, reason: RevokeReason): Promise<void> {
    const record = await this.#store.getCredential(bridgeId);
    if (record && record.revokedAt === undefined) await this.#revokeLine(record, reason);
  }

  async #revokeLine(line: CredentialRecord, reason: RevokeReason): Promise<void> {
    let record = line;
    for (let attempt = 1;; attempt++) {
      // Revoked first, closed second: a reconnect with any token of the line already fails.
      await this.#store.revoke(record.jti, record.expiresAt);
      if (record.prevJti) await this.#store.revoke(record.prevJti, record.expiresAt);
      const readJti = record.jti;
      record.revokedAt = this.#clock.now();
      record.revokedReason = reason;
      // A login that rotated the line meanwhile issued a token not revoked above: read it and revoke that too.
      if (await this.#store.putCredential(record, attempt < WRITE_ATTEMPTS ? readJti : undefined)) break;
      const current = await this.#store.getCredential(record.bridgeId);
      if (!current || current.revokedAt !== undefined) break;
      record = current;
    }
    try {
      await this.#store.publish({ kind: "revoked", bridgeId: record.bridgeId, reason });
    } catch (error) {
      // The line is revoked (no reconnect succeeds); this instance at least closes its connection now.
      this.#kick(record.bridgeId, reason);
      throw error;
    }
  }

  #onEvent(event: RelayEvent): void {
    if (event.kind === "revoked") this.#kick(event.bridgeId, event.reason);
  }

  #kick(bridgeId: string, reason: RevokeReason): void {
    for (const listener of this.#listeners) listener(bridgeId, reason);
  }

  /**
   * Whether line `bridgeId` has an open connection: here (the hub), or, with
   * a store shared by several instances, on another one (its presence).
   */
  async #connected(bridgeId: string): Promise<boolean> {
    if (this.#isLive(bridgeId)) return true;
    return this.#store.shared && await this.#store.isPresent(bridgeId, this.#clock.now());
  }

  /** A valid token from before the relay kept records: its line starts now. */
  async #adopt(claims: BridgeClaims, address: string): Promise<CredentialRecord> {
    const now = this.#clock.now();
    const record: CredentialRecord = {
      bridgeId: claims.sub,
      sid: claims.sid,
      issuedAt: now,
      issuedFrom: address,
      jti: claims.jti,
      jtiUsed: false,
      rotating: false,
      expiresAt: claims.expiresAt,
      approved: false,
    };
    await this.#store.putCredential(record);
    return record;
  }

  #limited(why: string, retryAfterMs: number): Coder1Error {
    this.#metrics?.rateLimited("token_login");
    const retryAfterSeconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
    return new Coder1Error(`Cannot log in: ${why}; retry in ${retryAfterSeconds}s`, {
      status: 429,
      closeCode: CloseCode.RateLimited,
      retryAfterSeconds,
      reason: "rate-limited",
    });
  }
}

function _refused(record: CredentialRecord): Coder1Error {
  if (record.revokedReason === "reuse") {
    return new Coder1Error(`Cannot authenticate: ${REUSE_MESSAGE}`, {
      status: 401,
      closeCode: CloseCode.AuthFailed,
      reason: "credential-reused",
    });
  }
  return _authError("token revoked");
}

function _authError(why: string): Coder1Error {
  return new Coder1Error(`Cannot authenticate: ${why}`, {
    status: 401,
    closeCode: CloseCode.AuthFailed,
    reason: "unauthorized",
  });
}

/** The `sub` of a token whose signature failed to verify (only to look up a line's reuse flag). */
function _unverifiedSub(token: string): string | undefined {
  try {
    const part = token.split(".")[1];
    if (!part || part.length > 4096) return undefined;
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const sub = JSON.parse(json).sub;
    return typeof sub === "string" ? sub : undefined;
  } catch {
    return undefined;
  }
}
