/**
 * End-to-end crypto between the IDE and the bridge, on WebCrypto only
 * (X25519, Ed25519, HKDF-SHA-256, AES-256-GCM), so the same module runs in
 * Deno and in browsers. No primitive is written by hand here: this module
 * only arranges WebCrypto calls. The design and its reasoning are in
 * docs/E2E.md and SECURITY.md.
 *
 * - Transcript: protocol version, pairing id (the bridge id), and both sides'
 *   identity (Ed25519) and ephemeral (X25519) public keys, length-prefixed.
 * - Keys: HKDF-SHA-256 over the X25519 secret, salted with SHA-256 of the
 *   transcript: one AES-256-GCM key per direction, and a 6-digit SAS.
 * - Signatures: each side signs its role label and the transcript hash with
 *   its identity key.
 * - Frames: AES-256-GCM with a 96-bit nonce from a per-direction counter (the
 *   frame's `s`), and the frame's binary header with the route zeroed as
 *   associated data (the relay may re-stamp the route, nothing else).
 *
 * @module
 */
import { PROTOCOL_VERSION } from "./protocol.ts";

const te = new TextEncoder();
const subtle = globalThis.crypto.subtle;

/** Label that starts every transcript. */
const TRANSCRIPT_LABEL = "coder1 e2e transcript";
/** HKDF info for the two direction keys (64 bytes: IDE->bridge, then bridge->IDE). */
const KEYS_INFO = "coder1 e2e keys";
/** HKDF info for the short authentication string. */
const SAS_INFO = "coder1 e2e sas";

/** Which side of the exchange a party is. */
export type E2eRole = "ide" | "bridge";

/** Public halves exchanged in the handshake (raw 32-byte keys). */
export interface TranscriptInput {
  /** The pairing id both sides bind to (the bridge id the relay assigned). */
  pairingId: string;
  /** IDE identity public key (Ed25519, raw). */
  ideIdentity: Uint8Array;
  /** IDE ephemeral public key (X25519, raw). */
  ideEphemeral: Uint8Array;
  /** Bridge identity public key (Ed25519, raw). */
  bridgeIdentity: Uint8Array;
  /** Bridge ephemeral public key (X25519, raw). */
  bridgeEphemeral: Uint8Array;
}

/** What a finished key exchange yields. */
export interface SessionKeys {
  /** AES-256-GCM key for frames this side sends. */
  send: CryptoKey;
  /** AES-256-GCM key for frames this side receives. */
  receive: CryptoKey;
  /** The 6-digit short authentication string, e.g. "123 456". */
  sas: string;
  /** SHA-256 of the transcript. */
  transcriptHash: Uint8Array;
  /**
   * The raw bytes of `send` and `receive`, kept only where a synchronous
   * AEAD is in use ({@linkcode useSyncAead}: the Deno processes, never a
   * browser, whose keys stay non-extractable).
   */
  raw?: { send: Uint8Array; receive: Uint8Array };
}

/**
 * AES-256-GCM done on the calling thread, for small bodies
 * ({@linkcode SYNC_AEAD_MAX_BYTES}). WebCrypto answers every call on another
 * thread: about 25 µs of work for a keystroke, but 100 µs or more of latency
 * when the process was idle, paid four times on a keystroke's way to the
 * program and its echo's way back. Same algorithm, nonce and associated
 * data, so either side may use either path.
 */
export interface SyncAead {
  /** Ciphertext followed by the 16-byte tag. */
  seal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  /** The plaintext; throws when the tag does not verify. */
  open(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array;
}

/** Bodies up to this size use the {@linkcode SyncAead} when there is one (larger ones go faster through WebCrypto). */
export const SYNC_AEAD_MAX_BYTES = 1024;

let _syncAead: SyncAead | undefined;

/**
 * Seals and opens small bodies with `aead` in sessions derived from now on
 * (the bridge and Deno IDE clients pass shared/node_aead.ts); `undefined`
 * goes back to WebCrypto alone.
 */
export function useSyncAead(aead: SyncAead | undefined): void {
  _syncAead = aead;
}

/** The synchronous AEAD in use, if any. */
export function syncAead(): SyncAead | undefined {
  return _syncAead;
}

/**
 * Creates an Ed25519 identity key pair. In browsers keep `extractable` false
 * and store the pair in IndexedDB; the public half can always be exported.
 *
 * @param extractable Whether the private key may be exported (to a file).
 * @returns The key pair.
 */
export async function generateIdentity(extractable = false): Promise<CryptoKeyPair> {
  return await subtle.generateKey({ name: "Ed25519" }, extractable, ["sign", "verify"]) as CryptoKeyPair;
}

/** Creates a fresh X25519 key pair for one connection. */
export async function generateEphemeral(): Promise<CryptoKeyPair> {
  return await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]) as CryptoKeyPair;
}

/** Exports a public key as its raw 32 bytes. */
export async function rawPublicKey(key: CryptoKey): Promise<Uint8Array> {
  return new Uint8Array(await subtle.exportKey("raw", key));
}

/**
 * A short fingerprint of an identity public key, for people to compare:
 * the first 16 bytes of its SHA-256 as hex in groups of four.
 *
 * @param publicKey The raw public key.
 * @returns e.g. `"1a2b 3c4d ..."`.
 */
export async function fingerprint(publicKey: Uint8Array): Promise<string> {
  const hash = new Uint8Array(await subtle.digest("SHA-256", publicKey as BufferSource)).subarray(0, 16);
  return [...hash].map((b) => b.toString(16).padStart(2, "0")).join("").match(/.{4}/g)!.join(" ");
}

/**
 * Builds the handshake transcript: a label, the protocol version, the pairing
 * id and the four public keys, each length-prefixed so no two inputs encode
 * the same.
 *
 * @param input The values to bind.
 * @returns The transcript bytes.
 */
export function transcript(input: TranscriptInput): Uint8Array {
  const parts = [
    te.encode(TRANSCRIPT_LABEL),
    new Uint8Array([PROTOCOL_VERSION]),
    te.encode(input.pairingId),
    input.ideIdentity,
    input.ideEphemeral,
    input.bridgeIdentity,
    input.bridgeEphemeral,
  ];
  for (const key of parts.slice(3)) {
    if (key.byteLength !== 32) {
      throw new RangeError(`Cannot build transcript: a public key is ${key.byteLength} bytes, not 32`);
    }
  }
  return _lengthPrefixed(parts);
}

/** Label that starts every commitment. */
const COMMITMENT_LABEL = "coder1 e2e commitment";

/**
 * The IDE's commitment to its public keys, sent in `e2e.hello` before it sees
 * the bridge's: SHA-256 over a label, the protocol version, the pairing id and
 * the IDE's identity and ephemeral keys (length-prefixed as in
 * {@linkcode transcript}). Because the IDE is bound to its keys before the
 * other side picks its own, a relay in the middle gets one guess at making
 * the two SAS values equal, not as many as it can compute.
 *
 * @param input Pairing id and the IDE's two public keys.
 * @returns The 32-byte commitment.
 */
export async function commitment(
  input: Pick<TranscriptInput, "pairingId" | "ideIdentity" | "ideEphemeral">,
): Promise<Uint8Array> {
  const bytes = _lengthPrefixed([
    te.encode(COMMITMENT_LABEL),
    new Uint8Array([PROTOCOL_VERSION]),
    te.encode(input.pairingId),
    input.ideIdentity,
    input.ideEphemeral,
  ]);
  return new Uint8Array(await subtle.digest("SHA-256", bytes as BufferSource));
}

function _lengthPrefixed(parts: Uint8Array[]): Uint8Array {
  for (const p of parts) {
    if (p.byteLength > 0xffff) throw new RangeError(`Cannot encode: a part is ${p.byteLength} bytes`);
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + 2 + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out[at] = p.byteLength >> 8;
    out[at + 1] = p.byteLength & 0xff;
    out.set(p, at + 2);
    at += 2 + p.byteLength;
  }
  return out;
}

/**
 * Derives the direction keys and the SAS from this side's ephemeral private
 * key, the peer's ephemeral public key and the transcript.
 *
 * @param role Which side is calling (picks send/receive keys).
 * @param ephemeral This side's X25519 private key.
 * @param peerEphemeral The peer's X25519 public key (raw).
 * @param transcriptBytes From {@linkcode transcript}.
 * @returns Keys, SAS and transcript hash.
 */
export async function deriveSessionKeys(
  role: E2eRole,
  ephemeral: CryptoKey,
  peerEphemeral: Uint8Array,
  transcriptBytes: Uint8Array,
): Promise<SessionKeys> {
  const peer = await subtle.importKey("raw", peerEphemeral as BufferSource, { name: "X25519" }, false, []);
  // WebCrypto refuses small-order peer keys (an all-zero shared secret).
  const shared = await subtle.deriveBits({ name: "X25519", public: peer }, ephemeral, 256);
  const transcriptHash = new Uint8Array(await subtle.digest("SHA-256", transcriptBytes as BufferSource));
  const ikm = await subtle.importKey("raw", shared, "HKDF", false, ["deriveBits"]);
  const hkdf = (info: string, bits: number) =>
    subtle.deriveBits(
      { name: "HKDF", hash: "SHA-256", salt: transcriptHash as BufferSource, info: te.encode(info) },
      ikm,
      bits,
    );
  const keyBytes = new Uint8Array(await hkdf(KEYS_INFO, 512));
  const sasBytes = new Uint8Array(await hkdf(SAS_INFO, 64));
  const aes = (bytes: Uint8Array) =>
    subtle.importKey("raw", bytes as BufferSource, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
  const ideToBridge = await aes(keyBytes.subarray(0, 32));
  const bridgeToIde = await aes(keyBytes.subarray(32, 64));
  const keys: SessionKeys = {
    send: role === "ide" ? ideToBridge : bridgeToIde,
    receive: role === "ide" ? bridgeToIde : ideToBridge,
    sas: sasFromBytes(sasBytes),
    transcriptHash,
  };
  if (_syncAead) {
    const ideToBridgeRaw = keyBytes.slice(0, 32);
    const bridgeToIdeRaw = keyBytes.slice(32, 64);
    keys.raw = role === "ide"
      ? { send: ideToBridgeRaw, receive: bridgeToIdeRaw }
      : { send: bridgeToIdeRaw, receive: ideToBridgeRaw };
  }
  keyBytes.fill(0);
  return keys;
}

/**
 * Turns 8 HKDF bytes into six digits: a 64-bit number modulo 10^6 (bias below
 * 2^-44), shown as two groups of three.
 *
 * @param bytes At least 8 bytes.
 * @returns e.g. `"042 917"`.
 */
export function sasFromBytes(bytes: Uint8Array): string {
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0) % 1_000_000n;
  const digits = n.toString().padStart(6, "0");
  return `${digits.slice(0, 3)} ${digits.slice(3)}`;
}

/** What each side signs: its role and the transcript hash, so a signature cannot be reflected. */
function _signedMessage(role: E2eRole, transcriptHash: Uint8Array): Uint8Array {
  const label = te.encode(`coder1 e2e ${role} signature`);
  const out = new Uint8Array(label.byteLength + transcriptHash.byteLength);
  out.set(label);
  out.set(transcriptHash, label.byteLength);
  return out;
}

/**
 * Signs the transcript hash as `role` with an Ed25519 identity key.
 *
 * @param role The signer's role.
 * @param identity The signer's private key.
 * @param transcriptHash SHA-256 of the transcript.
 * @returns The 64-byte signature.
 */
export async function signTranscript(
  role: E2eRole,
  identity: CryptoKey,
  transcriptHash: Uint8Array,
): Promise<Uint8Array> {
  return new Uint8Array(
    await subtle.sign({ name: "Ed25519" }, identity, _signedMessage(role, transcriptHash) as BufferSource),
  );
}

/**
 * Verifies a peer's transcript signature against its raw identity key.
 *
 * @returns Whether the signature is valid.
 */
export async function verifyTranscript(
  role: E2eRole,
  identityPublic: Uint8Array,
  transcriptHash: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  try {
    const key = await subtle.importKey("raw", identityPublic as BufferSource, { name: "Ed25519" }, false, ["verify"]);
    return await subtle.verify(
      { name: "Ed25519" },
      key,
      signature as BufferSource,
      _signedMessage(role, transcriptHash) as BufferSource,
    );
  } catch {
    return false;
  }
}

/** The 12-byte AES-GCM nonce for frame counter `seq`: four zero bytes, then the counter big-endian. */
export function nonceFor(seq: number): Uint8Array {
  if (!Number.isSafeInteger(seq) || seq < 0) throw new RangeError(`Cannot make nonce: bad counter ${seq}`);
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setBigUint64(4, BigInt(seq));
  return nonce;
}

/** Encrypts a frame body. */
export async function sealBody(
  key: CryptoKey,
  seq: number,
  aad: Uint8Array,
  plaintext: Uint8Array,
): Promise<Uint8Array> {
  return new Uint8Array(
    await subtle.encrypt(
      { name: "AES-GCM", iv: nonceFor(seq) as BufferSource, additionalData: aad as BufferSource },
      key,
      plaintext as BufferSource,
    ),
  );
}

/** Decrypts a frame body; throws when the tag does not verify. */
export async function openBody(key: CryptoKey, seq: number, aad: Uint8Array, sealed: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(
    await subtle.decrypt(
      { name: "AES-GCM", iv: nonceFor(seq) as BufferSource, additionalData: aad as BufferSource },
      key,
      sealed as BufferSource,
    ),
  );
}

/** Base64url without padding (handshake bodies carry keys this way). */
export function toBase64Url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Decodes canonical base64url (no padding); throws TypeError on anything else. */
export function fromBase64Url(text: string): Uint8Array {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) throw new TypeError("Cannot decode: not base64url");
  let b: string;
  try {
    b = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4));
  } catch {
    throw new TypeError("Cannot decode: not base64url");
  }
  const bytes = Uint8Array.from(b, (c) => c.charCodeAt(0));
  // One encoding per value: "AB" and "AA" must not both decode to [0].
  if (toBase64Url(bytes) !== text) throw new TypeError("Cannot decode: not canonical base64url");
  return bytes;
}
