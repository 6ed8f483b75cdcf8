/**
 * Revoking a token this machine no longer wants at its relay
 * (`POST /api/bridge/logout`): on `bridge logout`, before `--pair` replaces
 * it, and when the user refuses a pairing at the bridge. A relay that cannot
 * be reached keeps the token on a pending list in credentials.json, retried
 * at the next start or logout.
 *
 * @module
 */
import type { CredentialStore } from "./credentials.ts";
import { relayFetch } from "./relay_choice.ts";

/** How long one revocation request may take. */
const REVOKE_TIMEOUT_MS = 10_000;

/** How a revocation ended. */
export type RevokeOutcome =
  | { kind: "revoked" }
  /** The relay no longer accepted the token (revoked, expired or unknown): nothing left to do. */
  | { kind: "dead" }
  /** The relay could not be reached, or answered with an error: try again later. */
  | { kind: "failed"; why: string };

/**
 * Asks the relay to revoke `token` (its whole credential line).
 *
 * @param relay The relay's http URL.
 * @param token The token.
 * @param ca Extra CA certificate (PEM) to trust.
 * @returns What happened.
 */
export async function revokeAtRelay(relay: string, token: string, ca?: string): Promise<RevokeOutcome> {
  let res: Response;
  try {
    res = await relayFetch(ca)(`${relay}/api/bridge/logout`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(REVOKE_TIMEOUT_MS),
    });
    await res.body?.cancel();
  } catch (error) {
    return { kind: "failed", why: `cannot reach ${relay}: ${(error as Error).message}` };
  }
  if (res.ok) return { kind: "revoked" };
  if (res.status === 401) return { kind: "dead" };
  return { kind: "failed", why: `the relay answered ${res.status}` };
}

/**
 * Revokes `token`, or puts it on the pending list when the relay cannot be
 * reached, and says which.
 *
 * @param store The credential store (for the pending list).
 * @param relay The relay's http URL.
 * @param token The token to revoke.
 * @param options CA, and where to print what happened.
 * @returns What happened.
 */
export async function revokeOrKeepPending(
  store: CredentialStore,
  relay: string,
  token: string,
  options: { ca?: string; warn: (message: string) => void; now: number },
): Promise<RevokeOutcome> {
  const outcome = await revokeAtRelay(relay, token, options.ca);
  if (outcome.kind === "failed") {
    await store.addPending(relay, token, options.now);
    options.warn(
      `coder1: could not revoke the old token at the relay (${outcome.why}); it is kept and revoked at the next ` +
        "`coder1 bridge start` or `coder1 bridge logout`, or Forget it in the IDE's bridge list now.",
    );
  }
  return outcome;
}

/**
 * Retries the pending revocations for `relay`.
 *
 * @returns How many are still pending.
 */
export async function retryPending(
  store: CredentialStore,
  relay: string,
  options: { ca?: string; warn: (message: string) => void },
): Promise<number> {
  let left = 0;
  for (const pending of await store.pending(relay)) {
    const outcome = await revokeAtRelay(relay, pending.token, options.ca);
    if (outcome.kind === "failed") left++;
    else await store.donePending(pending.token);
  }
  if (left > 0) {
    options.warn(`coder1: ${left} old token(s) could not be revoked at the relay yet; retrying at the next start.`);
  }
  return left;
}
