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
 * Before anything is written, every value is computed twice: with the shared
 * modules (WebCrypto) and with `node:crypto` from the private keys alone
 * (X25519, HKDF, Ed25519, and AES-256-GCM reading each frame by the header
 * layout, not with the shared codec). The relayed copies must differ from
 * their originals in the route bytes only and still open; the bad frames must
 * differ in anything but the route and not open.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import {
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  hkdfSync,
  sign,
} from "node:crypto";
import {
  commitment,
  deriveSessionKeys,
  type E2eRole,
  fingerprint,
  fromBase64Url,
  nonceFor,
  openBody,
  sasFromBytes,
  sealBody,
  signTranscript,
  toBase64Url,
  transcript,
  verifyTranscript,
} from "../shared/e2e_crypto.ts";
import { E2eSession, IdeHandshake } from "../shared/e2e_session.ts";
import { decodeFrame, encodeFrame, type FrameInit, headerAad, routeFrame } from "../shared/frame_codec.ts";
import {
  type E2eInfoBody,
  FLAG_SEQ,
  FLAG_STREAM_SEQ,
  FRAME_TABLE,
  type FrameTypeName,
  HEADER_BYTES,
  PROTOCOL_VERSION,
  ROUTE_OFFSET,
} from "../shared/protocol.ts";

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

/** The header fields of a vector frame, as decoded (`r` and `q` only when present). */
interface _Header {
  t: FrameTypeName;
  r?: number;
  id?: string;
  s?: number;
  q?: number;
}

/** A frame to seal: what the sender hands to `E2eSession.seal`. */
interface _FrameSpec {
  name: string;
  direction: Direction;
  t: FrameTypeName;
  r?: number;
  id?: string;
  q?: number;
  text?: string;
  hex?: string;
  /** An `e2e.info` body without its signature: the bridge's transcript signature is added as `signature`. */
  info?: Omit<E2eInfoBody, "signature">;
}

/**
 * The frames sealed, in seal order per direction, so `s` counts 0, 1, 2, ...
 * in each: the first sealed frame each way of a first pairing, then a command
 * whose frames are numbered in its stream (`q` 1, 2, ... per direction).
 */
const FRAME_SPECS: readonly _FrameSpec[] = [
  { name: "ide approves the bridge (empty body)", direction: "ide->bridge", t: "e2e.approve", text: "" },
  {
    name: "ide starts a command",
    direction: "ide->bridge",
    t: "cmd.start",
    id: "a1",
    q: 1,
    text: '{"command":"echo hi","cwd":"src"}',
  },
  {
    name: "ide sends binary stdin",
    direction: "ide->bridge",
    t: "cmd.stdin",
    id: "a1",
    q: 2,
    hex: "000102037f80c3fffe0a",
  },
  {
    name: "bridge sends its info and signature (route set by the bridge)",
    direction: "bridge->ide",
    t: "e2e.info",
    r: 5,
    info: { name: "build-box", os: "linux", version: "0.1.0", approval: "needed" },
  },
  {
    name: "bridge sends stdout (non-ASCII UTF-8)",
    direction: "bridge->ide",
    t: "cmd.stdout",
    r: 5,
    id: "a1",
    q: 1,
    text: "hi h\u00e9llo \u2713\n",
  },
  {
    name: "bridge sends binary stderr",
    direction: "bridge->ide",
    t: "cmd.stderr",
    r: 5,
    id: "a1",
    q: 2,
    hex: "ff00fe",
  },
  {
    name: "bridge reports the exit",
    direction: "bridge->ide",
    t: "cmd.exit",
    r: 5,
    id: "a1",
    q: 3,
    text: '{"code":0,"signal":null,"durationMs":12}',
  },
];

/**
 * Frames as the relay delivers them: the same bytes with the route re-stamped
 * in place (`routeFrame`), which is all the relay may change.
 */
const RELAYED: readonly { name: string; from: string; route: number }[] = [
  {
    name: "ide starts a command, as the bridge receives it (the relay stamped route 4)",
    from: "ide starts a command",
    route: 4,
  },
  {
    name: "bridge sends stdout, as the IDE receives it (the relay cleared route 5 to 0)",
    from: "bridge sends stdout (non-ASCII UTF-8)",
    route: 0,
  },
  {
    name: "ide sends binary stdin, stamped with route 0xfedcba98 (every route byte changed)",
    from: "ide sends binary stdin",
    route: 0xfedcba98,
  },
];

/** Fields of a good frame that a bad one edits before it is encoded again. */
type _Editable = Omit<_Header, "t"> & { t: FrameTypeName; body: Uint8Array };

/**
 * Frames that must not open: each changes one thing in a good frame, and
 * together they change every header field but the route.
 */
const BAD: readonly {
  name: string;
  from: string;
  direction?: Direction;
  change: string;
  edit: (f: _Editable) => void;
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
    name: "altered type",
    from: "ide sends binary stdin",
    change: "type cmd.stdin (0x41) -> cmd.start (0x40), header byte 1",
    edit: (f) => void (f.t = "cmd.start"),
  },
  {
    name: "altered flags",
    from: "ide approves the bridge (empty body)",
    change: "flags 0x01 -> 0x00, header byte 2: the s-present bit cleared on a frame whose s is 0, so no other " +
      "byte changes (the receiver, expecting counter 0, tries it)",
    edit: (f) => void (f.s = undefined),
  },
  {
    name: "altered id",
    from: "bridge reports the exit",
    change: "id a1 -> a2, the last header byte",
    edit: (f) => void (f.id = "a2"),
  },
  {
    name: "wrong s",
    from: "ide sends binary stdin",
    change: "s 2 -> 3, header byte 15 (the sealed body replayed under the counter the receiver expects next)",
    edit: (f) => void (f.s = f.s! + 1),
  },
  {
    name: "altered q",
    from: "ide sends binary stdin",
    change: "q 2 -> 3, header byte 23 (a stream frame renumbered)",
    edit: (f) => void (f.q = f.q! + 1),
  },
  {
    name: "q removed",
    from: "ide sends binary stdin",
    change: "q-present flag cleared and q zeroed, header bytes 2 and 23 (a stream frame passed off as unnumbered)",
    edit: (f) => void (f.q = undefined),
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
  protocolVersion: "PROTOCOL_VERSION: byte 0 of every frame header and the one-byte version field of the " +
    "commitment input and the transcript.",
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
    "the bridge sends it as the signature field of its sealed e2e.info body, and the IDE trusts nothing in the " +
    "session before it verifies.",
  "fingerprints.ide": "fingerprint() of the raw IDE identity public key: the first 16 bytes of its SHA-256 as " +
    "lowercase hex in groups of four, space-separated.",
  "fingerprints.bridge": "fingerprint() of the raw bridge identity public key.",
  frames: "Sealed frames that must open. They were sealed in this order, each direction by its own E2eSession, " +
    "so s counts up from 0 in each direction; entries with sameSealedBodyAs are relayed copies of an earlier frame. " +
    "The bridge's first frame is its e2e.info, whose JSON body carries signatures.bridge as signature.",
  "frames[].name": "What the frame is.",
  "frames[].direction":
    "'ide->bridge' (sealed with keyMaterial.ideToBridge) or 'bridge->ide' (keyMaterial.bridgeToIde).",
  "frames[].header": "The header fields, decoded: t (the type's name; its one-byte code is in FRAME_TABLE, " +
    "shared/protocol.ts), r (the route; only when not 0), id (command id; only when present), s (the " +
    "per-direction counter), q (the stream sequence number; only on stream frames, cmd.*).",
  "frames[].bodyText": "The plaintext body as UTF-8 text (present when the plaintext is text).",
  "frames[].bodyHex": "The plaintext body as hex (present instead of bodyText for binary plaintext).",
  "frames[].aad": "Hex of the AES-GCM associated data: the frame's header with the route zeroed. The header is " +
    "24 fixed bytes, all integers big-endian: byte 0 the version, byte 1 the type code, byte 2 the flags (bit 0: " +
    "s present, bit 1: q present), byte 3 the id length L, bytes 4..7 the route (u32; zero here), bytes 8..15 s " +
    "(u64), bytes 16..23 q (u64; 0 when absent); then the L id bytes (ASCII). The route is the one header field " +
    "not authenticated: the relay re-stamps it in place, so a frame opens whatever its route, while a change to " +
    "any other header byte makes it fail.",
  "frames[].nonce": "Hex of the 12-byte AES-GCM nonce: four zero bytes, then s as a big-endian u64 (header bytes " +
    "8..15).",
  "frames[].sealedBody": "Hex of the frame body: AES-256-GCM ciphertext followed by the 16-byte tag.",
  "frames[].frame": "Hex of the whole encoded frame (one binary WebSocket message): the header as in aad but with " +
    "the route in bytes 4..7, then sealedBody. For an original, what E2eSession.seal returns.",
  "frames[].sameSealedBodyAs": "On a relayed copy: the name of the frame it was taken from. The relay re-stamped " +
    "the route in place (routeFrame in shared/frame_codec.ts); nothing else differs, and the copy opens with the " +
    "same key and counter to the same plaintext.",
  "frames[].changedHeaderBytes": "On a relayed copy: the offsets of the bytes that differ from the frame it was " +
    "taken from, all within the route (4..7).",
  badFrames: "Frames that must not open. Each still decodes as a well-formed frame, so it is the AES-GCM tag, not " +
    "the decoder, that refuses it. The receiver uses the key of `direction` and has already opened every earlier " +
    "frame of that direction (from `frames`, excluding relayed copies), so it expects the counter in header bytes " +
    "8..15. Between them they change the body, the key, and every header field but the route: type, flags, id, s " +
    "and q.",
  "badFrames[].name": "What is wrong.",
  "badFrames[].basedOn": "The name of the good frame it was made from.",
  "badFrames[].direction": "Whose key the receiver opens it with (the direction it is presented as travelling).",
  "badFrames[].change": "The one change made to the good frame.",
  "badFrames[].header": "The header fields of the bad frame, decoded (as in frames[].header; s is absent when its " +
    "flag is cleared).",
  "badFrames[].changedHeaderBytes": "The offsets of the header bytes that differ from the good frame: empty when " +
    "only the body or the key changed; never a route byte.",
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
  await IdeHandshake.verifyBridge(new E2eSession(ideKeys, pub.bridgeIdentity), toBase64Url(bridgeSignature))
    .catch(() => _fail("bridge signature (IdeHandshake.verifyBridge)"));

  const senders = {
    "ide->bridge": new E2eSession(ideKeys, pub.bridgeIdentity),
    "bridge->ide": new E2eSession(bridgeKeys, pub.ideIdentity),
  };
  const receivers = {
    "ide->bridge": new E2eSession(bridgeKeys, pub.ideIdentity),
    "bridge->ide": new E2eSession(ideKeys, pub.bridgeIdentity),
  };

  // node:crypto, a second implementation, from the private keys alone: it
  // must agree on the secret, the keys, the SAS bytes and the signatures,
  // and its AES-GCM opens every frame below.
  const node = _nodeKeyMaterial(seed, t);
  _same(node.sharedSecret, _hex(sharedSecret), "X25519 secret from node:crypto");
  _same(node.okm, _hex(okm), "HKDF key material from node:crypto");
  _same(node.sasBytes, _hex(sasBytes), "SAS bytes from node:crypto");
  _same(
    _nodeSign(keys.ideIdentity, _signedMessage("ide", transcriptHash)),
    _hex(ideSignature),
    "IDE signature from node:crypto",
  );
  _same(
    _nodeSign(keys.bridgeIdentity, _signedMessage("bridge", transcriptHash)),
    _hex(bridgeSignature),
    "bridge signature from node:crypto",
  );
  const nodeKey = {
    "ide->bridge": Buffer.from(node.okm, "hex").subarray(0, 32),
    "bridge->ide": Buffer.from(node.okm, "hex").subarray(32, 64),
  };
  const frames: Record<string, unknown>[] = [];
  const sealed = new Map<string, { direction: Direction; bytes: Uint8Array; plaintext: Uint8Array }>();
  for (const spec of FRAME_SPECS) {
    const text = spec.info !== undefined
      ? JSON.stringify({ ...spec.info, signature: toBase64Url(bridgeSignature) } satisfies E2eInfoBody)
      : spec.text;
    const plaintext = spec.hex !== undefined ? _fromHex(spec.hex) : te.encode(text ?? "");
    const bytes = await senders[spec.direction].seal({ t: spec.t, r: spec.r, id: spec.id, q: spec.q, body: plaintext });
    const frame = decodeFrame(bytes);
    const s = frame.s!;
    // The same frame from the primitives, the raw HKDF key and the header
    // spelled out from its layout: E2eSession adds nothing unstated.
    const aad = _layoutAad({ t: spec.t, id: spec.id, s, q: spec.q });
    _same(_hex(headerAad(frame.header)), _hex(aad), `${spec.name}: associated data`);
    const direct = await sealBody(rawKey[spec.direction], s, aad, plaintext);
    const init: FrameInit = { t: spec.t, r: spec.r, id: spec.id, s, q: spec.q, body: direct };
    _same(_hex(encodeFrame(init)), _hex(bytes), spec.name);
    _same(_hex(await receivers[spec.direction].open(frame)), _hex(plaintext), `${spec.name} opened`);
    _same(_hex(_nodeOpen(nodeKey[spec.direction], bytes)), _hex(plaintext), `${spec.name} opened by node:crypto`);
    sealed.set(spec.name, { direction: spec.direction, bytes, plaintext });
    frames.push(_frameVector(spec.name, spec.direction, bytes, plaintext, spec.hex !== undefined));
  }
  for (const r of RELAYED) {
    const from = sealed.get(r.from)!;
    const bytes = from.bytes.slice();
    routeFrame(bytes, r.route);
    const changed = _changedHeaderBytes(from.bytes, bytes);
    if (changed.length === 0 || changed.some((i) => !_isRouteByte(i))) _fail(`relayed copy "${r.name}"`);
    const frame = decodeFrame(bytes);
    const opened = await openBody(rawKey[from.direction], frame.s!, _layoutAad(frame), frame.body);
    _same(_hex(opened), _hex(from.plaintext), `${r.name} opened`);
    _same(_hex(_nodeOpen(nodeKey[from.direction], bytes)), _hex(from.plaintext), `${r.name} opened by node:crypto`);
    const binary = FRAME_SPECS.find((f) => f.name === r.from)!.hex !== undefined;
    frames.push({
      ..._frameVector(r.name, from.direction, bytes, opened, binary),
      sameSealedBodyAs: r.from,
      changedHeaderBytes: changed,
    });
  }

  const badFrames: Record<string, unknown>[] = [];
  for (const bad of BAD) {
    const from = sealed.get(bad.from)!;
    const f = decodeFrame(from.bytes);
    const edited: _Editable = { t: f.t, r: f.r, id: f.id, s: f.s, q: f.q, body: f.body.slice() };
    bad.edit(edited);
    const bytes = encodeFrame(edited);
    const frame = decodeFrame(bytes);
    const changed = _changedHeaderBytes(from.bytes, bytes);
    if (changed.some(_isRouteByte)) _fail(`bad frame "${bad.name}" changes the route`);
    const direction = bad.direction ?? from.direction;
    const opened = await openBody(rawKey[direction], frame.s ?? 0, _layoutAad(frame), frame.body)
      .then(() => true, () => false);
    if (opened) _fail(`bad frame "${bad.name}" opens`);
    if (_opens(() => _nodeOpen(nodeKey[direction], bytes))) _fail(`bad frame "${bad.name}" opens with node:crypto`);
    badFrames.push({
      name: bad.name,
      basedOn: bad.from,
      direction,
      change: bad.change,
      header: _headerOf(frame),
      changedHeaderBytes: changed,
      frame: _hex(bytes),
    });
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
  return {
    name,
    direction,
    header: _headerOf(f),
    ...(binary
      ? { bodyHex: _hex(plaintext) }
      : { bodyText: new TextDecoder("utf-8", { fatal: true }).decode(plaintext) }),
    aad: _hex(headerAad(f.header)),
    nonce: _hex(nonceFor(f.s!)),
    sealedBody: _hex(f.body),
    frame: _hex(bytes),
  };
}

/** The decoded header fields in the file's order (t, r, id, s, q), absent ones left out. */
function _headerOf(f: _Header): _Header {
  const header: _Header = { t: f.t };
  if (f.r !== undefined) header.r = f.r;
  if (f.id !== undefined) header.id = f.id;
  if (f.s !== undefined) header.s = f.s;
  if (f.q !== undefined) header.q = f.q;
  return header;
}

/**
 * The associated data spelled out from the header layout (`HEADER_BYTES` in
 * shared/protocol.ts) and the fields, not copied from a frame: the route
 * bytes are zero whatever the route.
 */
function _layoutAad(h: _Header): Uint8Array {
  const id = te.encode(h.id ?? "");
  const out = new Uint8Array(HEADER_BYTES + id.byteLength);
  const view = new DataView(out.buffer);
  out[0] = PROTOCOL_VERSION;
  out[1] = FRAME_TABLE[h.t].code;
  out[2] = (h.s !== undefined ? FLAG_SEQ : 0) | (h.q !== undefined ? FLAG_STREAM_SEQ : 0);
  out[3] = id.byteLength;
  view.setBigUint64(8, BigInt(h.s ?? 0));
  view.setBigUint64(16, BigInt(h.q ?? 0));
  out.set(id, HEADER_BYTES);
  return out;
}

/** X25519 and HKDF-SHA-256 with node:crypto, from the JWKs and the transcript (hex results). */
function _nodeKeyMaterial(seed: VectorSeed, transcriptBytes: Uint8Array) {
  const privateKey = createPrivateKey({ key: { ...seed.keys.ideEphemeral }, format: "jwk" });
  const { kty, crv, x } = seed.keys.bridgeEphemeral;
  const publicKey = createPublicKey({ key: { kty, crv, x }, format: "jwk" });
  const shared = diffieHellman({ privateKey, publicKey });
  const hash = createHash("sha256").update(transcriptBytes).digest();
  return {
    sharedSecret: shared.toString("hex"),
    okm: Buffer.from(hkdfSync("sha256", shared, hash, "coder1 e2e keys", 64)).toString("hex"),
    sasBytes: Buffer.from(hkdfSync("sha256", shared, hash, "coder1 e2e sas", 8)).toString("hex"),
  };
}

/** An Ed25519 signature with node:crypto (deterministic, so it must equal WebCrypto's), as hex. */
function _nodeSign(jwk: OkpJwk, message: Uint8Array): string {
  return sign(null, message, createPrivateKey({ key: { ...jwk }, format: "jwk" })).toString("hex");
}

/**
 * Opens a frame with node:crypto, a second AES-GCM implementation, reading
 * the message by the documented layout rather than with the shared codec:
 * the id length from byte 3, the nonce from the `s` bytes, the associated
 * data as the header with the route bytes zeroed.
 */
function _nodeOpen(key: Uint8Array, message: Uint8Array): Uint8Array {
  const bytes = Buffer.from(message);
  const headerLength = HEADER_BYTES + bytes[3];
  const aad = Buffer.from(bytes.subarray(0, headerLength));
  aad.fill(0, ROUTE_OFFSET, ROUTE_OFFSET + 4);
  const nonce = Buffer.alloc(12);
  bytes.copy(nonce, 4, 8, 16);
  const body = bytes.subarray(headerLength);
  if (body.length < 16) throw new Error("Cannot open: shorter than a tag");
  const decipher = createDecipheriv("aes-256-gcm", key, nonce, { authTagLength: 16 });
  decipher.setAAD(aad);
  decipher.setAuthTag(body.subarray(body.length - 16));
  return new Uint8Array(Buffer.concat([decipher.update(body.subarray(0, body.length - 16)), decipher.final()]));
}

function _opens(open: () => unknown): boolean {
  try {
    open();
    return true;
  } catch {
    return false;
  }
}

/** Offsets within the (longer) header where two messages differ. */
function _changedHeaderBytes(a: Uint8Array, b: Uint8Array): number[] {
  const end = HEADER_BYTES + Math.max(a[3], b[3]);
  const changed: number[] = [];
  for (let i = 0; i < end; i++) if (a[i] !== b[i]) changed.push(i);
  return changed;
}

function _isRouteByte(offset: number): boolean {
  return offset >= ROUTE_OFFSET && offset < ROUTE_OFFSET + 4;
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
