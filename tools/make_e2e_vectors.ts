/**
 * Writes shared/e2e_vectors.json: known-answer vectors for the end-to-end
 * handshake and the sealed frames, so another build (the browser bundle, or a
 * port to another language) can check it computes exactly what
 * shared/e2e_crypto.ts and shared/e2e_session.ts compute. The checks live in
 * shared/e2e_vectors_test.ts.
 *
 *     deno run --allow-write=shared/e2e_vectors.json tools/make_e2e_vectors.ts [--force]
 *
 * Run it deliberately, from the repository root, and only to add vectors or
 * after a deliberate protocol change. The key material (two Ed25519 identities,
 * two X25519 ephemerals, the pairing id) is generated once and then read back
 * from the existing file, and everything else is deterministic (Ed25519
 * signatures, AES-GCM with counter nonces), so a re-run must reproduce the file
 * byte for byte. If it would not, the tool lists what changed and writes
 * nothing unless given `--force`: a changed signature, key or ciphertext
 * means the crypto changed, which breaks every peer built against the old
 * vectors. Reading the old file is a module import, so no read permission is
 * needed.
 *
 * @module
 */
import {
  commitment,
  deriveSessionKeys,
  type E2eRole,
  fingerprint,
  frameAad,
  fromBase64Url,
  nonceFor,
  sasFromBytes,
  sealBody,
  signTranscript,
  toBase64Url,
  transcript,
  verifyTranscript,
} from "../shared/e2e_crypto.ts";
import { E2eChannel, IdeHandshake } from "../shared/e2e_session.ts";
import { decodeFrame, encodeFrame, withChannel } from "../shared/frame_codec.ts";
import { type E2eInfoBody, type FrameHeader, PROTOCOL_VERSION } from "../shared/protocol.ts";

/** Where the vectors live, next to the modules they test. */
const VECTORS_URL = new URL("../shared/e2e_vectors.json", import.meta.url);

const subtle = globalThis.crypto.subtle;
const te = new TextEncoder();

/** An OKP private key as a JWK: `x` is the raw public key, `d` the private scalar/seed (both base64url). */
export interface OkpJwk {
  kty: "OKP";
  crv: "Ed25519" | "X25519";
  x: string;
  d: string;
}

/** The fixed inputs: everything random that the vectors are computed from. */
export interface VectorSeed {
  /** The pairing id (a bridge id: a UUID the relay assigned). */
  pairingId: string;
  /** The four private keys. */
  keys: { ideIdentity: OkpJwk; bridgeIdentity: OkpJwk; ideEphemeral: OkpJwk; bridgeEphemeral: OkpJwk };
}

/** Which way a frame travels; the sender seals with that direction's key. */
export type Direction = "ide->bridge" | "bridge->ide";

/** A frame to seal: what the sender hands to `E2eChannel.seal`. */
interface _FrameSpec {
  name: string;
  direction: Direction;
  t: string;
  c?: number;
  id?: string;
  text?: string;
  hex?: string;
  /** An `e2e.info` body without its signature: the bridge's transcript signature is added as `signature`. */
  info?: Omit<E2eInfoBody, "signature">;
}

/**
 * The frames sealed, in seal order per direction, so `s` counts 0, 1, 2, ...
 * in each: the first sealed frame each way of a first pairing, then a command.
 */
const FRAME_SPECS: readonly _FrameSpec[] = [
  { name: "ide approves the bridge (empty body)", direction: "ide->bridge", t: "e2e.approve", text: "" },
  {
    name: "ide starts a command",
    direction: "ide->bridge",
    t: "cmd.start",
    id: "a1",
    text: '{"command":"echo hi","cwd":"src"}',
  },
  { name: "ide sends binary stdin", direction: "ide->bridge", t: "cmd.stdin", id: "a1", hex: "000102037f80c3fffe0a" },
  {
    name: "bridge sends its info and signature (c set by the bridge)",
    direction: "bridge->ide",
    t: "e2e.info",
    c: 5,
    info: { name: "build-box", os: "linux", version: "0.1.0", approval: "needed" },
  },
  {
    name: "bridge sends stdout (non-ASCII UTF-8)",
    direction: "bridge->ide",
    t: "cmd.stdout",
    c: 5,
    id: "a1",
    text: "hi h\u00e9llo \u2713\n",
  },
  { name: "bridge sends binary stderr", direction: "bridge->ide", t: "cmd.stderr", c: 5, id: "a1", hex: "ff00fe" },
  {
    name: "bridge reports the exit",
    direction: "bridge->ide",
    t: "cmd.exit",
    c: 5,
    id: "a1",
    text: '{"code":0,"signal":null,"durationMs":12}',
  },
];

/** Frames as the relay delivers them: same sealed body, only the channel changed (`c` is not authenticated). */
const RELAYED: readonly { name: string; from: string; c: number | undefined }[] = [
  { name: "ide starts a command, as the bridge receives it (relay stamped c=4)", from: "ide starts a command", c: 4 },
  {
    name: "bridge sends stdout, as the IDE receives it (relay removed c)",
    from: "bridge sends stdout (non-ASCII UTF-8)",
    c: undefined,
  },
];

/** Frames that must not open: each changes one thing in a good frame. */
const BAD: readonly {
  name: string;
  from: string;
  direction?: Direction;
  change: string;
  edit: (f: { t: string; c?: number; id?: string; s: number; body: Uint8Array }) => void;
}[] = [
  {
    name: "flipped ciphertext bit",
    from: "ide sends binary stdin",
    change: "lowest bit of the first body byte (ciphertext) flipped",
    edit: (f) => void (f.body[0] ^= 0x01),
  },
  {
    name: "flipped tag bit",
    from: "ide sends binary stdin",
    change: "highest bit of the last body byte (GCM tag) flipped",
    edit: (f) => void (f.body[f.body.length - 1] ^= 0x80),
  },
  {
    name: "truncated body",
    from: "ide sends binary stdin",
    change: "last body byte removed",
    edit: (f) => void (f.body = f.body.subarray(0, f.body.length - 1)),
  },
  {
    name: "wrong s",
    from: "ide sends binary stdin",
    change: "header s raised by one (the sealed body replayed under the counter the receiver expects next)",
    edit: (f) => void (f.s += 1),
  },
  {
    name: "altered header t",
    from: "ide sends binary stdin",
    change: "header t cmd.stdin -> cmd.start",
    edit: (f) => void (f.t = "cmd.start"),
  },
  {
    name: "altered header id",
    from: "bridge reports the exit",
    change: "header id a1 -> a2",
    edit: (f) => void (f.id = "a2"),
  },
  {
    name: "reflected to its sender",
    from: "ide approves the bridge (empty body)",
    direction: "bridge->ide",
    change: "unchanged ide->bridge frame handed back to the IDE, which opens it with the bridge->ide key",
    edit: () => {},
  },
];

/** What every field of the file means. */
const DESCRIPTION: Record<string, string> = {
  "": "Known-answer vectors for the coder1 end-to-end handshake and sealed frames (shared/e2e_crypto.ts, " +
    "shared/e2e_session.ts), checked by shared/e2e_vectors_test.ts and written by tools/make_e2e_vectors.ts. " +
    "Hex is lowercase; base64url has no padding; every key and value below is fixed, and all outputs are " +
    "deterministic (Ed25519 signatures, AES-GCM with counter nonces).",
  protocolVersion: "PROTOCOL_VERSION: the v of every frame header and the one-byte version field of the transcript.",
  pairingId: "The pairing id both sides bind (the bridge id the relay assigned); in the hello, the commitment " +
    "and the transcript.",
  keys: "The four private keys as JWKs (kty OKP; x = raw public key, d = private key, base64url). " +
    "ideIdentity and bridgeIdentity are Ed25519 identity keys; ideEphemeral and bridgeEphemeral are the X25519 " +
    "ephemeral keys of this one handshake. Import with WebCrypto importKey('jwk', ...).",
  "handshake.hello": "Body of e2e.hello (IDE -> bridge, cleartext JSON): the pairing id and the IDE's commitment " +
    "to the keys it reveals later (base64url of the 32-byte commitment below). It carries no key.",
  "handshake.reply": "Body of e2e.reply (bridge -> IDE, cleartext JSON): bridge identity and ephemeral public keys " +
    "(base64url of the raw 32 bytes). No signature: the bridge signs once the IDE has revealed its keys, and sends " +
    "its signature (= signatures.bridge) sealed, as the signature field of its first e2e.info (see frames).",
  "handshake.confirm": "Body of e2e.confirm (IDE -> bridge, cleartext JSON): the IDE reveals its identity and " +
    "ephemeral public keys (base64url of the raw 32 bytes; the bridge refuses them unless they reproduce " +
    "hello.commitment) and signs the transcript (signature = signatures.ide).",
  commitmentInput: "Hex of the bytes commitment() hashes: each of these parts as a u16 big-endian length then its " +
    "bytes: the UTF-8 label 'coder1 e2e commitment', one byte protocolVersion, the UTF-8 pairingId, then the raw " +
    "IDE identity and IDE ephemeral public keys.",
  commitment: "Hex of SHA-256(commitmentInput): the IDE's commitment to its keys, sent before it sees the " +
    "bridge's, so a relay in the middle must pick its own keys before it can know the IDE's. hello.commitment " +
    "is its base64url.",
  transcript: "Hex of transcript(): each of these parts as a u16 big-endian length then its bytes: the UTF-8 label " +
    "'coder1 e2e transcript', one byte protocolVersion, the UTF-8 pairingId, then the raw IDE identity, IDE " +
    "ephemeral, bridge identity and bridge ephemeral public keys.",
  transcriptHash: "Hex of SHA-256(transcript).",
  sharedSecret: "Hex of the 32-byte X25519 shared secret (same from either side).",
  "keyMaterial.ideToBridge": "Hex of bytes 0..31 of HKDF-SHA-256(ikm = sharedSecret, salt = transcriptHash, " +
    "info = 'coder1 e2e keys', 64 bytes): the AES-256-GCM key for IDE -> bridge frames.",
  "keyMaterial.bridgeToIde":
    "Hex of bytes 32..63 of the same HKDF output: the AES-256-GCM key for bridge -> IDE frames.",
  "keyMaterial.sasBytes": "Hex of HKDF-SHA-256(ikm = sharedSecret, salt = transcriptHash, info = 'coder1 e2e sas', " +
    "8 bytes).",
  sas: "The short authentication string: sasBytes as a big-endian unsigned 64-bit integer modulo 1000000, " +
    "zero-padded to six digits, shown as 'ddd ddd'. Both sides display it.",
  "signedMessages.ide": "Hex of what the IDE signs: UTF-8 'coder1 e2e ide signature' followed by transcriptHash.",
  "signedMessages.bridge": "Hex of what the bridge signs: UTF-8 'coder1 e2e bridge signature' followed by " +
    "transcriptHash.",
  "signatures.ide": "Ed25519 signature (base64url, 64 bytes) of signedMessages.ide with keys.ideIdentity.",
  "signatures.bridge": "Ed25519 signature (base64url, 64 bytes) of signedMessages.bridge with keys.bridgeIdentity; " +
    "the bridge sends it as the signature field of its sealed e2e.info body, and the IDE trusts nothing on the " +
    "channel before it verifies.",
  "fingerprints.ide": "fingerprint() of the raw IDE identity public key: the first 16 bytes of its SHA-256 as " +
    "lowercase hex in groups of four, space-separated.",
  "fingerprints.bridge": "fingerprint() of the raw bridge identity public key.",
  frames: "Sealed frames that must open. They were sealed in this order, each direction by its own E2eChannel, " +
    "so s counts up from 0 in each direction; entries with sameSealedBodyAs are relayed copies of an earlier frame. " +
    "The bridge's first frame is its e2e.info, whose JSON body carries signatures.bridge as signature.",
  "frames[].name": "What the frame is.",
  "frames[].direction":
    "'ide->bridge' (sealed with keyMaterial.ideToBridge) or 'bridge->ide' (keyMaterial.bridgeToIde).",
  "frames[].header": "The cleartext header fields besides v: t (type), c (channel; only when present), id (command " +
    "id; only when present), s (the per-direction counter).",
  "frames[].bodyText": "The plaintext body as UTF-8 text (present when the plaintext is text).",
  "frames[].bodyHex": "The plaintext body as hex (present instead of bodyText for binary plaintext).",
  "frames[].aad": "The AES-GCM associated data as UTF-8 text: JSON.stringify([v, t, id ?? null, s]). The channel c " +
    "is not part of it: the relay stamps or removes c, so a frame opens whatever its c.",
  "frames[].nonce": "Hex of the 12-byte AES-GCM nonce: four zero bytes, then s as a big-endian u64.",
  "frames[].sealedBody": "Hex of the frame body: AES-256-GCM ciphertext followed by the 16-byte tag.",
  "frames[].frame": "Hex of the whole encoded frame (u16 big-endian header length, header JSON with keys in the " +
    "order v, t, c, id, s, then sealedBody), as E2eChannel.seal returns it.",
  "frames[].sameSealedBodyAs": "On a relayed copy: the name of the frame it was taken from. Only c differs, and " +
    "the copy opens with the same key and counter.",
  badFrames: "Frames that must not open. The receiver uses the key of `direction` and has already opened every " +
    "earlier frame of that direction (from `frames`, excluding relayed copies), so it expects header.s.",
  "badFrames[].name": "What is wrong.",
  "badFrames[].basedOn": "The name of the good frame it was made from.",
  "badFrames[].direction": "Whose key the receiver opens it with (the direction it is presented as travelling).",
  "badFrames[].change": "The one change made to the good frame.",
  "badFrames[].frame": "Hex of the whole encoded frame.",
};

/**
 * Computes the vectors document for the given fixed inputs.
 *
 * @param seed The pairing id and private keys.
 * @returns The document to write (plain JSON data).
 */
export async function makeE2eVectors(seed: VectorSeed): Promise<Record<string, unknown>> {
  const { keys, pairingId } = seed;
  const ideSign = await _importPrivate(keys.ideIdentity, "Ed25519", ["sign"]);
  const bridgeSign = await _importPrivate(keys.bridgeIdentity, "Ed25519", ["sign"]);
  const ideDh = await _importPrivate(keys.ideEphemeral, "X25519", ["deriveBits"]);
  const bridgeDh = await _importPrivate(keys.bridgeEphemeral, "X25519", ["deriveBits"]);
  const pub = {
    ideIdentity: fromBase64Url(keys.ideIdentity.x),
    ideEphemeral: fromBase64Url(keys.ideEphemeral.x),
    bridgeIdentity: fromBase64Url(keys.bridgeIdentity.x),
    bridgeEphemeral: fromBase64Url(keys.bridgeEphemeral.x),
  };

  const commitmentInput = _lengthPrefixed([
    te.encode("coder1 e2e commitment"),
    new Uint8Array([PROTOCOL_VERSION]),
    te.encode(pairingId),
    pub.ideIdentity,
    pub.ideEphemeral,
  ]);
  const commit = await commitment({ pairingId, ideIdentity: pub.ideIdentity, ideEphemeral: pub.ideEphemeral });
  _same(
    _hex(new Uint8Array(await subtle.digest("SHA-256", commitmentInput as BufferSource))),
    _hex(commit),
    "commitment from its spelled-out input",
  );

  const t = transcript({ pairingId, ...pub });
  const ideKeys = await deriveSessionKeys("ide", ideDh, pub.bridgeEphemeral, t);
  const bridgeKeys = await deriveSessionKeys("bridge", bridgeDh, pub.ideEphemeral, t);
  _same(ideKeys.sas, bridgeKeys.sas, "SAS of both sides");
  _same(_hex(ideKeys.transcriptHash), _hex(bridgeKeys.transcriptHash), "transcript hash of both sides");
  const transcriptHash = ideKeys.transcriptHash;

  // The intermediate values, spelled out for implementers; checked below
  // against what deriveSessionKeys produced (same SAS, same ciphertexts).
  const peer = await subtle.importKey("raw", pub.bridgeEphemeral as BufferSource, { name: "X25519" }, false, []);
  const sharedSecret = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: peer }, ideDh, 256));
  const ikm = await subtle.importKey("raw", sharedSecret as BufferSource, "HKDF", false, ["deriveBits"]);
  const hkdf = async (info: string, bits: number) =>
    new Uint8Array(
      await subtle.deriveBits(
        { name: "HKDF", hash: "SHA-256", salt: transcriptHash as BufferSource, info: te.encode(info) },
        ikm,
        bits,
      ),
    );
  const okm = await hkdf("coder1 e2e keys", 512);
  const sasBytes = await hkdf("coder1 e2e sas", 64);
  _same(sasFromBytes(sasBytes), ideKeys.sas, "SAS from the spelled-out HKDF");
  const rawKey = {
    "ide->bridge": await _aesKey(okm.subarray(0, 32)),
    "bridge->ide": await _aesKey(okm.subarray(32, 64)),
  };

  const ideSignature = await signTranscript("ide", ideSign, transcriptHash);
  const bridgeSignature = await signTranscript("bridge", bridgeSign, transcriptHash);
  if (!await verifyTranscript("ide", pub.ideIdentity, transcriptHash, ideSignature)) _fail("IDE signature");
  if (!await verifyTranscript("bridge", pub.bridgeIdentity, transcriptHash, bridgeSignature)) _fail("bridge signature");
  // What the IDE runs on the signature from e2e.info.
  await IdeHandshake.verifyBridge(new E2eChannel(ideKeys, pub.bridgeIdentity), toBase64Url(bridgeSignature))
    .catch(() => _fail("bridge signature (IdeHandshake.verifyBridge)"));

  const senders = {
    "ide->bridge": new E2eChannel(ideKeys, pub.bridgeIdentity),
    "bridge->ide": new E2eChannel(bridgeKeys, pub.ideIdentity),
  };
  const receivers = {
    "ide->bridge": new E2eChannel(bridgeKeys, pub.ideIdentity),
    "bridge->ide": new E2eChannel(ideKeys, pub.bridgeIdentity),
  };
  const frames: Record<string, unknown>[] = [];
  const sealed = new Map<string, { direction: Direction; bytes: Uint8Array }>();
  for (const spec of FRAME_SPECS) {
    const text = spec.info !== undefined
      ? JSON.stringify({ ...spec.info, signature: toBase64Url(bridgeSignature) } satisfies E2eInfoBody)
      : spec.text;
    const plaintext = spec.hex !== undefined ? _fromHex(spec.hex) : te.encode(text ?? "");
    const bytes = await senders[spec.direction].seal({ t: spec.t, c: spec.c, id: spec.id, body: plaintext });
    const frame = decodeFrame(bytes);
    const s = frame.s!;
    // The same frame from the primitives and the raw HKDF key: E2eChannel adds nothing unstated.
    const aad = frameAad({ v: PROTOCOL_VERSION, t: spec.t, id: spec.id, s });
    const direct = await sealBody(rawKey[spec.direction], s, aad, plaintext);
    _same(_hex(encodeFrame({ t: spec.t, c: spec.c, id: spec.id, s, body: direct })), _hex(bytes), spec.name);
    _same(_hex(await receivers[spec.direction].open(frame)), _hex(plaintext), `${spec.name} opened`);
    sealed.set(spec.name, { direction: spec.direction, bytes });
    frames.push(_frameVector(spec.name, spec.direction, bytes, plaintext, spec.hex !== undefined));
  }
  for (const r of RELAYED) {
    const from = sealed.get(r.from)!;
    const bytes = withChannel(decodeFrame(from.bytes), r.c);
    const plaintext = await _openAt(rawKey[from.direction], decodeFrame(bytes));
    const binary = FRAME_SPECS.find((f) => f.name === r.from)!.hex !== undefined;
    frames.push({ ..._frameVector(r.name, from.direction, bytes, plaintext, binary), sameSealedBodyAs: r.from });
  }

  const badFrames: Record<string, unknown>[] = [];
  for (const bad of BAD) {
    const from = sealed.get(bad.from)!;
    const f = decodeFrame(from.bytes);
    const edited = { t: f.t, c: f.c, id: f.id, s: f.s!, body: f.body.slice() };
    bad.edit(edited);
    const bytes = encodeFrame(edited);
    const direction = bad.direction ?? from.direction;
    const opened = await _openAt(rawKey[direction], decodeFrame(bytes)).then(() => true, () => false);
    if (opened) _fail(`bad frame "${bad.name}" opens`);
    badFrames.push({ name: bad.name, basedOn: bad.from, direction, change: bad.change, frame: _hex(bytes) });
  }

  return {
    description: DESCRIPTION,
    protocolVersion: PROTOCOL_VERSION,
    pairingId,
    keys,
    handshake: {
      hello: { pairingId, commitment: toBase64Url(commit) },
      reply: { identity: keys.bridgeIdentity.x, ephemeral: keys.bridgeEphemeral.x },
      confirm: {
        identity: keys.ideIdentity.x,
        ephemeral: keys.ideEphemeral.x,
        signature: toBase64Url(ideSignature),
      },
    },
    commitmentInput: _hex(commitmentInput),
    commitment: _hex(commit),
    transcript: _hex(t),
    transcriptHash: _hex(transcriptHash),
    sharedSecret: _hex(sharedSecret),
    keyMaterial: {
      ideToBridge: _hex(okm.subarray(0, 32)),
      bridgeToIde: _hex(okm.subarray(32, 64)),
      sasBytes: _hex(sasBytes),
    },
    sas: ideKeys.sas,
    signedMessages: {
      ide: _hex(_signedMessage("ide", transcriptHash)),
      bridge: _hex(_signedMessage("bridge", transcriptHash)),
    },
    signatures: { ide: toBase64Url(ideSignature), bridge: toBase64Url(bridgeSignature) },
    fingerprints: { ide: await fingerprint(pub.ideIdentity), bridge: await fingerprint(pub.bridgeIdentity) },
    frames,
    badFrames,
  };
}

/**
 * Makes fresh key material and a pairing id (only when there is no file yet).
 *
 * @returns A new seed.
 */
export async function newVectorSeed(): Promise<VectorSeed> {
  const make = async (name: "Ed25519" | "X25519") => {
    const usages: KeyUsage[] = name === "Ed25519" ? ["sign", "verify"] : ["deriveBits"];
    const pair = await subtle.generateKey({ name }, true, usages) as CryptoKeyPair;
    const jwk = await subtle.exportKey("jwk", pair.privateKey);
    return { kty: "OKP", crv: name, x: jwk.x!, d: jwk.d! } satisfies OkpJwk;
  };
  return {
    pairingId: crypto.randomUUID(),
    keys: {
      ideIdentity: await make("Ed25519"),
      bridgeIdentity: await make("Ed25519"),
      ideEphemeral: await make("X25519"),
      bridgeEphemeral: await make("X25519"),
    },
  };
}

function _frameVector(name: string, direction: Direction, bytes: Uint8Array, plaintext: Uint8Array, binary: boolean) {
  const f = decodeFrame(bytes);
  const header: Omit<FrameHeader, "v"> = { t: f.t };
  if (f.c !== undefined) header.c = f.c;
  if (f.id !== undefined) header.id = f.id;
  header.s = f.s;
  return {
    name,
    direction,
    header,
    ...(binary
      ? { bodyHex: _hex(plaintext) }
      : { bodyText: new TextDecoder("utf-8", { fatal: true }).decode(plaintext) }),
    aad: new TextDecoder().decode(frameAad(f as FrameHeader & { s: number })),
    nonce: _hex(nonceFor(f.s!)),
    sealedBody: _hex(f.body),
    frame: _hex(bytes),
  };
}

async function _openAt(key: CryptoKey, f: { v: number; t: string; id?: string; s?: number; body: Uint8Array }) {
  const aad = frameAad({ v: f.v, t: f.t, id: f.id, s: f.s! });
  return new Uint8Array(
    await subtle.decrypt(
      { name: "AES-GCM", iv: nonceFor(f.s!) as BufferSource, additionalData: aad as BufferSource },
      key,
      f.body as BufferSource,
    ),
  );
}

/** Each part as a u16 big-endian length then its bytes (as the transcript and the commitment are built). */
function _lengthPrefixed(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + 2 + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    new DataView(out.buffer).setUint16(at, p.byteLength);
    out.set(p, at + 2);
    at += 2 + p.byteLength;
  }
  return out;
}

function _signedMessage(role: E2eRole, transcriptHash: Uint8Array): Uint8Array {
  const label = te.encode(`coder1 e2e ${role} signature`);
  const out = new Uint8Array(label.byteLength + transcriptHash.byteLength);
  out.set(label);
  out.set(transcriptHash, label.byteLength);
  return out;
}

async function _importPrivate(jwk: OkpJwk, name: "Ed25519" | "X25519", usages: KeyUsage[]): Promise<CryptoKey> {
  return await subtle.importKey("jwk", { ...jwk }, { name }, false, usages);
}

async function _aesKey(bytes: Uint8Array): Promise<CryptoKey> {
  return await subtle.importKey("raw", bytes as BufferSource, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

function _hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function _fromHex(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
}

function _same(a: string, b: string, what: string): void {
  if (a !== b) _fail(`${what}: ${a} != ${b}`);
}

function _fail(what: string): never {
  throw new Error(`Cannot make vectors: ${what} is inconsistent`);
}

/** The paths where two JSON values differ (at most `limit`). */
function _diff(a: unknown, b: unknown, path = "", out: string[] = [], limit = 20): string[] {
  if (out.length >= limit) return out;
  if (typeof a === "object" && a !== null && typeof b === "object" && b !== null) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) {
      _diff(
        (a as Record<string, unknown>)[k],
        (b as Record<string, unknown>)[k],
        `${path}${path ? "." : ""}${k}`,
        out,
        limit,
      );
    }
  } else if (a !== b) {
    out.push(path || "(root)");
  }
  return out;
}

async function _readExisting(): Promise<Record<string, unknown> | undefined> {
  try {
    // A literal specifier: the import is part of the module graph, so it needs no read permission.
    return (await import("../shared/e2e_vectors.json", { with: { type: "json" } })).default;
  } catch (err) {
    if (err instanceof TypeError && /not found/i.test(err.message)) return undefined;
    throw err;
  }
}

async function _main(): Promise<void> {
  const force = Deno.args.includes("--force");
  const existing = await _readExisting();
  const seed = existing ? existing as unknown as VectorSeed : await newVectorSeed();
  const doc = await makeE2eVectors({ pairingId: seed.pairingId, keys: seed.keys });
  const text = JSON.stringify(doc, null, 2) + "\n";
  if (existing) {
    const changed = _diff(existing, doc);
    if (changed.length === 0) {
      console.log(`${VECTORS_URL.pathname}: unchanged`);
      return;
    }
    console.error(`Regenerating with the stored keys changes: ${changed.join(", ")}`);
    if (!force) {
      console.error(
        "Cannot write vectors: a change to keys, signatures or ciphertexts means the crypto changed (a bug, or a " +
          "protocol change every peer must make). Re-run with --force if it is deliberate.",
      );
      Deno.exit(1);
    }
  }
  await Deno.writeTextFile(VECTORS_URL, text);
  console.log(`${VECTORS_URL.pathname}: written (${existing ? "stored" : "new"} keys)`);
}

if (import.meta.main) await _main();
