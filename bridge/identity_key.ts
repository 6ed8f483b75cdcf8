/**
 * The bridge's long-term Ed25519 identity key: created on first use in
 * `<config dir>/identity.jwk` (dir 0700, file 0600, never overwritten), loaded
 * on every later start. The IDE pins its public half when the user approves
 * the pairing, so losing the file means pairing again.
 *
 * @module
 */
import { fingerprint, generateIdentity, rawPublicKey } from "../shared/e2e_crypto.ts";

/** A loaded identity. */
export interface BridgeIdentityKey {
  /** The key pair (the private half is not extractable once loaded). */
  keyPair: CryptoKeyPair;
  /** The raw 32-byte public key. */
  publicKey: Uint8Array;
  /** Its fingerprint, for people to compare. */
  fingerprint: string;
  /** The file it lives in. */
  file: string;
}

/**
 * Loads the identity key from `dir`, creating it when absent.
 *
 * @param dir The bridge's config directory.
 * @returns The identity.
 * @throws {Error} When the file exists but is not an Ed25519 private JWK.
 *
 * @example
 * ```ts ignore
 * import { loadIdentityKey } from "./identity_key.ts";
 * const id = await loadIdentityKey(`${Deno.env.get("HOME")}/.config/coder1`);
 * console.log(id.fingerprint);
 * ```
 */
export async function loadIdentityKey(dir: string): Promise<BridgeIdentityKey> {
  const file = `${dir}/identity.jwk`;
  let text: string | undefined;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  if (text === undefined) {
    const pair = await generateIdentity(true);
    const jwk = await crypto.subtle.exportKey("jwk", pair.privateKey);
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    try {
      // createNew: two bridges starting at once must not overwrite each other's key.
      await Deno.writeTextFile(file, JSON.stringify({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, d: jwk.d }) + "\n", {
        mode: 0o600,
        createNew: true,
      });
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    }
    text = await Deno.readTextFile(file);
  }
  if (Deno.build.os !== "windows" && ((await Deno.stat(file)).mode ?? 0) & 0o077) await Deno.chmod(file, 0o600);
  let jwk: JsonWebKey;
  try {
    jwk = JSON.parse(text);
    if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.d !== "string" || typeof jwk.x !== "string") {
      throw new Error("not an Ed25519 private key");
    }
  } catch (error) {
    throw new Error(
      `Cannot load the bridge identity key ${file}: ${
        (error as Error).message
      }. Move it away to start over (you will pair again).`,
    );
  }
  const privateKey = await crypto.subtle.importKey("jwk", jwk, { name: "Ed25519" }, false, ["sign"]);
  const publicKey = await crypto.subtle.importKey(
    "jwk",
    { kty: "OKP", crv: "Ed25519", x: jwk.x },
    { name: "Ed25519" },
    true,
    [
      "verify",
    ],
  );
  const raw = await rawPublicKey(publicKey);
  return { keyPair: { privateKey, publicKey }, publicKey: raw, fingerprint: await fingerprint(raw), file };
}
