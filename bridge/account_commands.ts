/**
 * `coder1 bridge status` and `coder1 bridge logout`.
 *
 * @module
 */
import type { FlagValues } from "../cli/args.ts";
import { defaultConfigDir } from "../cli/paths.ts";
import { dropUnusedPermissions } from "../cli/permissions.ts";
import { BRIDGE_LOGOUT, BRIDGE_STATUS } from "../cli/specs.ts";
import { fingerprint, fromBase64Url } from "../shared/e2e_crypto.ts";
import { CredentialStore } from "./credentials.ts";
import { loadIdentityKey } from "./identity_key.ts";
import { relayFetch, resolveRelay } from "./relay_choice.ts";
import { retryPending, revokeAtRelay } from "./token_revocation.ts";

const TIMEOUT_MS = 10_000;

/**
 * Prints relay reachability, pairing and token expiry. Exit 0 when the relay
 * is reachable and accepts the stored token, 1 otherwise.
 *
 * @param flags Parsed {@linkcode BRIDGE_STATUS} flags.
 * @returns The exit code.
 */
export async function bridgeStatus(flags: FlagValues): Promise<number> {
  await dropUnusedPermissions("bridge");
  const store = new CredentialStore(defaultConfigDir());
  const { relay, ca } = await resolveRelay(flags, store, BRIDGE_STATUS);
  const get = relayFetch(ca);
  console.log(`Relay:   ${relay.http}`);
  let reachable = false;
  try {
    const res = await get(`${relay.http}/healthz`, { signal: AbortSignal.timeout(TIMEOUT_MS) });
    const body = await res.json();
    reachable = res.ok;
    console.log(`         ${res.ok ? `reachable (coder1 relay ${body.version})` : `answered ${res.status}`}`);
  } catch (error) {
    console.log(`         unreachable: ${(error as Error).message}`);
  }
  const credential = await store.get(relay.http);
  if (!credential) {
    console.log("Paired:  no (run coder1 bridge start to pair)");
    const note = await store.note(relay.http);
    if (note) {
      console.log(`         the relay refused the last token (${new Date(note.at).toISOString()}): ${note.reason}`);
    }
    const pending = (await store.pending(relay.http)).length;
    if (pending > 0) {
      console.log(`         ${pending} old token(s) still to revoke at the relay (retried at the next start)`);
    }
    return 1;
  }
  const days = Math.floor((credential.expiresAt - Date.now()) / 86_400_000);
  console.log(`Paired:  yes, bridge ${credential.bridgeId} since ${new Date(credential.pairedAt).toISOString()}`);
  console.log(
    `Token:   expires ${new Date(credential.expiresAt).toISOString()} (${days < 0 ? "expired" : `in ${days} days`})`,
  );
  console.log(`Bridge:  identity ${(await loadIdentityKey(store.dir)).fingerprint} (the IDE shows it when approving)`);
  console.log(
    credential.pinnedIde
      ? `IDE:     approved; pinned IDE identity ${await fingerprint(fromBase64Url(credential.pinnedIde))}`
      : "IDE:     not approved yet (the IDE confirms the pairing when the bridge next connects)",
  );
  if (!reachable) return 1;
  const res = await get(`${relay.http}/api/bridge`, {
    headers: { authorization: `Bearer ${credential.token}` },
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  const body = await res.json().catch(() => ({}));
  if (res.ok) {
    console.log(`         accepted by the relay; bridge ${body.connected ? "connected now" : "not connected now"}`);
    return 0;
  }
  if (body.error === "credential-reused") {
    console.log(`         REVOKED by the relay: ${body.message ?? "an old token was presented again"}`);
    console.log(
      "         Someone else may hold a copy of this machine's token. Pair again: coder1 bridge start --pair",
    );
    await store.setNote(relay.http, { at: Date.now(), reason: body.message ?? "credential reused" });
    return 1;
  }
  console.log("         rejected by the relay (revoked or expired): pair again with coder1 bridge start --pair");
  return 1;
}

/**
 * Revokes the stored token at the relay, then deletes it locally. When the
 * relay cannot be reached the token is kept so the revocation can be retried.
 *
 * @param flags Parsed {@linkcode BRIDGE_LOGOUT} flags.
 * @returns The exit code.
 */
export async function bridgeLogout(flags: FlagValues): Promise<number> {
  await dropUnusedPermissions("bridge");
  const store = new CredentialStore(defaultConfigDir());
  const { relay, ca } = await resolveRelay(flags, store, BRIDGE_LOGOUT);
  const left = await retryPending(store, relay.http, { ca, warn: (m) => console.error(m) });
  const credential = await store.get(relay.http);
  if (!credential) {
    console.log(`Not paired with ${relay.http}; nothing to log out.`);
    return left > 0 ? 1 : 0;
  }
  const outcome = await revokeAtRelay(relay.http, credential.token, ca);
  if (outcome.kind === "failed") {
    console.error(`coder1: could not revoke the token at the relay: ${outcome.why}`);
    console.error(
      "The token is kept so the revocation can be retried: run coder1 bridge logout again once the relay is reachable, or Forget this bridge in the IDE's bridge list.",
    );
    return 1;
  }
  await store.delete(relay.http);
  console.log(
    outcome.kind === "revoked"
      ? `Logged out: the relay revoked this machine's token and it was deleted.`
      : "The relay had already stopped accepting this token; deleted it locally.",
  );
  return 0;
}
