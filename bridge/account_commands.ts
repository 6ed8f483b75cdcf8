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
  const credential = await store.get(relay.http);
  if (!credential) {
    console.log(`Not paired with ${relay.http}; nothing to log out.`);
    return 0;
  }
  let res: Response;
  try {
    res = await relayFetch(ca)(`${relay.http}/api/bridge/logout`, {
      method: "POST",
      headers: { authorization: `Bearer ${credential.token}` },
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    await res.body?.cancel();
  } catch (error) {
    console.error(`coder1: cannot reach ${relay.http} to revoke the token: ${(error as Error).message}`);
    console.error("The token is kept so the revocation can be retried once the relay is reachable.");
    return 1;
  }
  if (res.ok || res.status === 401) {
    await store.delete(relay.http);
    console.log(
      res.ok
        ? `Logged out: the relay revoked this machine's token and it was deleted.`
        : "The relay had already stopped accepting this token; deleted it locally.",
    );
    return 0;
  }
  console.error(`coder1: the relay answered ${res.status}; the token is kept, try again later.`);
  return 1;
}
