/**
 * Signs and verifies the relay's two kinds of token with one Ed25519 key:
 * bridge session JWTs (audience `coder1-bridge`) and browser session values
 * (audience `coder1-ide`, kept in an HttpOnly cookie). Verification pins the
 * algorithm to EdDSA and checks issuer, audience, expiry and revocation.
 *
 * @module
 */
import * as jose from "jose";
import type { Clock } from "../shared/clock.ts";
import { Coder1Error } from "../shared/errors.ts";
import { BRIDGE_TOKEN_TTL_MS, BROWSER_SESSION_TTL_MS, CloseCode } from "../shared/protocol.ts";
import type { RelayStore } from "./store.ts";

/** Longest token or session cookie value verified; longer ones are refused unparsed (401). */
const MAX_TOKEN_LENGTH = 4096;
/** Clock skew allowed when checking a token's `exp`, in seconds. */
const CLOCK_TOLERANCE_SECONDS = 5;

/** Issuer claim of every token this relay signs. */
export const TOKEN_ISSUER = "coder1-relay";
/** Audience of bridge session JWTs. */
export const BRIDGE_AUDIENCE = "coder1-bridge";
/** Audience of browser session values. */
export const IDE_AUDIENCE = "coder1-ide";

/** The claims of a verified bridge token. */
export interface BridgeClaims {
  /** Bridge id. */
  sub: string;
  /** The browser session the bridge is bound to. */
  sid: string;
  /** Token id (for revocation). */
  jti: string;
  /** Expiry, ms since the epoch. */
  expiresAt: number;
}

/** A key pair as jose uses it. */
interface SigningKey {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  kid: string;
}

/**
 * Loads the signing key from `file`, creating it (mode 0600) when missing.
 * Accepts an Ed25519 private JWK or a PKCS#8 PEM.
 *
 * @param file Path of the key file.
 * @param options `create`: create the file when missing (false for --jwt-key-file).
 * @returns The key pair.
 */
export async function loadSigningKey(file: string, options: { create: boolean }): Promise<SigningKey> {
  let text: string | undefined;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound) || !options.create) {
      throw new Error(`Cannot read JWT signing key ${file}: ${(error as Error).message}`);
    }
  }
  if (text === undefined) {
    const pair = await jose.generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
    const jwk = await jose.exportJWK(pair.privateKey);
    jwk.kid = await jose.calculateJwkThumbprint(jwk);
    try {
      await Deno.writeTextFile(file, JSON.stringify(jwk) + "\n", { mode: 0o600, createNew: true });
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
      // Another process won the race: use its key.
      return loadSigningKey(file, { create: false });
    }
    text = JSON.stringify(jwk);
  }
  return await _parseKey(text, file);
}

async function _parseKey(text: string, file: string): Promise<SigningKey> {
  let privateKey: CryptoKey;
  let publicJwk: jose.JWK;
  if (text.includes("-----BEGIN PRIVATE KEY-----")) {
    privateKey = await jose.importPKCS8(text, "EdDSA", { extractable: true }) as CryptoKey;
    const full = await jose.exportJWK(privateKey);
    publicJwk = { kty: full.kty, crv: full.crv, x: full.x };
  } else {
    let jwk: jose.JWK;
    try {
      jwk = JSON.parse(text);
    } catch {
      throw new Error(`Cannot read JWT signing key ${file}: neither JSON (JWK) nor PKCS#8 PEM`);
    }
    if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.d !== "string") {
      throw new Error(`Cannot read JWT signing key ${file}: not an Ed25519 private key`);
    }
    privateKey = await jose.importJWK(jwk, "EdDSA") as CryptoKey;
    publicJwk = { kty: jwk.kty, crv: jwk.crv, x: jwk.x };
  }
  const publicKey = await jose.importJWK(publicJwk, "EdDSA") as CryptoKey;
  const kid = await jose.calculateJwkThumbprint(publicJwk);
  return { privateKey, publicKey, kid };
}

/** Signs and verifies tokens. */
export class TokenService {
  #key: SigningKey;
  #clock: Clock;
  #store: RelayStore;

  /**
   * @param key The signing key pair.
   * @param deps The clock and the store holding revocations.
   */
  constructor(key: SigningKey, deps: { clock: Clock; store: RelayStore }) {
    this.#key = key;
    this.#clock = deps.clock;
    this.#store = deps.store;
  }

  /** Signs a bridge session JWT for `bridgeId`, bound to browser session `sid`. */
  async issueBridgeToken(bridgeId: string, sid: string): Promise<{ token: string; expiresAt: number; jti: string }> {
    const nowSec = Math.floor(this.#clock.now() / 1000);
    const expSec = nowSec + Math.floor(BRIDGE_TOKEN_TTL_MS / 1000);
    const jti = crypto.randomUUID();
    const token = await new jose.SignJWT({ sid })
      .setProtectedHeader({ alg: "EdDSA", typ: "JWT", kid: this.#key.kid })
      .setIssuer(TOKEN_ISSUER)
      .setAudience(BRIDGE_AUDIENCE)
      .setSubject(bridgeId)
      .setIssuedAt(nowSec)
      .setExpirationTime(expSec)
      .setJti(jti)
      .sign(this.#key.privateKey);
    return { token, expiresAt: expSec * 1000, jti };
  }

  /**
   * Verifies a bridge token: signature (EdDSA only), issuer, audience, expiry,
   * required claims and revocation.
   *
   * @throws {Coder1Error} status 401 / close 4401 when anything is off.
   */
  async verifyBridgeToken(token: string): Promise<BridgeClaims> {
    const payload = await this.#verify(token, BRIDGE_AUDIENCE);
    const { sub, sid, jti, exp } = payload;
    if (typeof sub !== "string" || typeof sid !== "string" || typeof jti !== "string" || typeof exp !== "number") {
      throw _authError("token lacks required claims");
    }
    if (await this.#store.isRevoked(jti)) throw _authError("token revoked");
    return { sub, sid, jti, expiresAt: exp * 1000 };
  }

  /** Signs the value of a browser session cookie. */
  async issueSession(sid: string): Promise<{ value: string; expiresAt: number }> {
    const nowSec = Math.floor(this.#clock.now() / 1000);
    const expSec = nowSec + Math.floor(BROWSER_SESSION_TTL_MS / 1000);
    const value = await new jose.SignJWT({})
      .setProtectedHeader({ alg: "EdDSA", kid: this.#key.kid })
      .setIssuer(TOKEN_ISSUER)
      .setAudience(IDE_AUDIENCE)
      .setSubject(sid)
      .setIssuedAt(nowSec)
      .setExpirationTime(expSec)
      .sign(this.#key.privateKey);
    return { value, expiresAt: expSec * 1000 };
  }

  /** Verifies a browser session value and returns the session id. */
  async verifySession(value: string): Promise<string> {
    const payload = await this.#verify(value, IDE_AUDIENCE);
    if (typeof payload.sub !== "string") throw _authError("session lacks its id");
    return payload.sub;
  }

  async #verify(token: string, audience: string): Promise<jose.JWTPayload> {
    if (token.length > MAX_TOKEN_LENGTH) throw _authError("token too long");
    try {
      const { payload } = await jose.jwtVerify(token, this.#key.publicKey, {
        algorithms: ["EdDSA"],
        issuer: TOKEN_ISSUER,
        audience,
        requiredClaims: ["exp", "iat"],
        currentDate: new Date(this.#clock.now()),
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
      });
      return payload;
    } catch (error) {
      if (error instanceof Coder1Error) throw error;
      throw _authError((error as { code?: string }).code ?? "invalid token");
    }
  }
}

function _authError(why: string): Coder1Error {
  return new Coder1Error(`Cannot authenticate: ${why}`, {
    status: 401,
    closeCode: CloseCode.AuthFailed,
    reason: "unauthorized",
  });
}
