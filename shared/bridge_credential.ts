/**
 * How a bridge presents its credential: in the headers of its upgrade
 * request to `GET /ws/bridge`, so that the relay checks it before any
 * WebSocket exists (docs/PROTOCOL.md, "Bridge login"). One encoder for the
 * bridge and one decoder for the relay, both here so they cannot drift.
 *
 * @module
 */
import { Coder1Error } from "./errors.ts";
import { decodeAuth } from "./frame_bodies.ts";
import type { AuthBody } from "./protocol.ts";

/** `Authorization` scheme for a pairing code: `Authorization: Pairing-Code 482913`. */
export const PAIRING_CODE_SCHEME = "Pairing-Code";
/** Header with the bridge's version (the one thing about it the relay learns). */
export const BRIDGE_VERSION_HEADER = "Coder1-Bridge-Version";
/** Header saying `off` when the bridge runs with `CODER1_TELEMETRY=false`. */
export const BRIDGE_TELEMETRY_HEADER = "Coder1-Telemetry";
/** Header saying `on` when the bridge stores the new token each login brings (`auth.ok`): the relay rotates it. */
export const BRIDGE_ROTATE_HEADER = "Coder1-Rotate";

/**
 * The upgrade request headers that carry a bridge's credential: `Authorization:
 * Bearer <token>` or `Authorization: Pairing-Code <code>`, its version,
 * `Coder1-Telemetry: off` when telemetry is off, and `Coder1-Rotate: on` when
 * it takes a rotated token in `auth.ok`.
 *
 * @param auth The credential, version and telemetry choice.
 * @returns Headers for the upgrade request.
 *
 * @example
 * ```ts
 * import { bridgeCredentialHeaders } from "./bridge_credential.ts";
 * console.log(bridgeCredentialHeaders({ code: "482913", version: "0.3.0" }).Authorization); // Pairing-Code 482913
 * ```
 */
export function bridgeCredentialHeaders(auth: AuthBody): Record<string, string> {
  const headers: Record<string, string> = {
    Authorization: auth.code !== undefined ? `${PAIRING_CODE_SCHEME} ${auth.code}` : `Bearer ${auth.token}`,
    [BRIDGE_VERSION_HEADER]: auth.version,
  };
  if (auth.telemetry === false) headers[BRIDGE_TELEMETRY_HEADER] = "off";
  if (auth.rotate === true) headers[BRIDGE_ROTATE_HEADER] = "on";
  return headers;
}

/**
 * Reads a bridge's credential from its upgrade request; a missing or
 * malformed one is a 401 `unauthorized` (bad version or telemetry headers:
 * 400 `bad-credential`).
 *
 * @param headers The request headers.
 * @returns The credential, checked as an `auth` body would be.
 *
 * @example
 * ```ts
 * import { decodeBridgeCredential } from "./bridge_credential.ts";
 * const headers = new Headers({ authorization: "Bearer abc", "coder1-bridge-version": "0.3.0" });
 * console.log(decodeBridgeCredential(headers).token); // abc
 * ```
 */
export function decodeBridgeCredential(headers: Headers): AuthBody {
  const m = /^(Bearer|Pairing-Code) (\S+)$/i.exec(headers.get("authorization") ?? "");
  if (!m) {
    throw new Coder1Error(
      "Cannot connect bridge: no credential in the Authorization header (a bridge older than this relay? update it)",
      { status: 401, reason: "unauthorized" },
    );
  }
  const telemetry = headers.get(BRIDGE_TELEMETRY_HEADER);
  if (telemetry !== null && telemetry !== "off" && telemetry !== "on") {
    throw new Coder1Error(`Cannot connect bridge: ${BRIDGE_TELEMETRY_HEADER} must be on or off`, {
      status: 400,
      reason: "bad-credential",
    });
  }
  const rotate = headers.get(BRIDGE_ROTATE_HEADER);
  if (rotate !== null && rotate !== "on" && rotate !== "off") {
    throw new Coder1Error(`Cannot connect bridge: ${BRIDGE_ROTATE_HEADER} must be on or off`, {
      status: 400,
      reason: "bad-credential",
    });
  }
  const body = {
    [m[1].toLowerCase() === "bearer" ? "token" : "code"]: m[2],
    version: headers.get(BRIDGE_VERSION_HEADER) ?? undefined,
    ...(telemetry === "off" ? { telemetry: false } : {}),
    ...(rotate === "on" ? { rotate: true } : {}),
  };
  return decodeAuth(
    new TextEncoder().encode(JSON.stringify(body)),
    (what) => new Coder1Error(`Cannot connect bridge: ${what}`, { status: 400, reason: "bad-credential" }),
  );
}
