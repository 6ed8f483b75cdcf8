/**
 * Checks the known-answer vectors in e2e_vectors.json twice: with the shared
 * modules (WebCrypto, the code the IDE and the bridge run) and with
 * `node:crypto` (a separate implementation path: X25519, HKDF, AES-256-GCM,
 * SHA-256 and Ed25519 written against the Node API), so a change to either
 * the modules or the file shows up here.
 */
import assert from "node:assert/strict";
import {
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  hkdfSync,
  type KeyObject,
  sign,
  verify,
} from "node:crypto";
import { Buffer } from "node:buffer";
import vectors from "./e2e_vectors.json" with { type: "json" };
import { makeE2eVectors, type VectorSeed } from "../tools/make_e2e_vectors.ts";
import {
  commitment,
  deriveSessionKeys,
  type E2eRole,
  fingerprint,
  fromBase64Url,
  nonceFor,
  openBody,
  sasFromBytes,
  type SessionKeys,
  signTranscript,
  toBase64Url,
  transcript,
  verifyTranscript,
} from "./e2e_crypto.ts";
import { BridgeHandshake, E2eError, E2eSession, IdeHandshake } from "./e2e_session.ts";
import { decodeFrame, encodeFrame, headerAad, routeFrame } from "./frame_codec.ts";
import { type FrameTypeName, HEADER_BYTES, PROTOCOL_VERSION, ROUTE_OFFSET } from "./protocol.ts";

type Direction = "ide->bridge" | "bridge->ide";
/** The decoded header of a vector frame. */
interface VectorHeader {
  t: FrameTypeName;
  r?: number;
  id?: string;
  s?: number;
  q?: number;
}
interface FrameVector {
  name: string;
  direction: Direction;
  header: VectorHeader & { s: number };
  bodyText?: string;
  bodyHex?: string;
  aad: string;
  nonce: string;
  sealedBody: string;
  frame: string;
  sameSealedBodyAs?: string;
  changedHeaderBytes?: number[];
}
interface BadFrameVector {
  name: string;
  basedOn: string;
  direction: Direction;
  change: string;
  header: VectorHeader;
  changedHeaderBytes: number[];
  frame: string;
}
type Jwk = typeof vectors.keys.ideIdentity;

const te = new TextEncoder();
const subtle = globalThis.crypto.subtle;
const frames = vectors.frames as unknown as FrameVector[];
const badFrames = vectors.badFrames as unknown as BadFrameVector[];
/** Header offsets of the route, the one field the relay may change. */
const ROUTE_BYTES = [ROUTE_OFFSET, ROUTE_OFFSET + 1, ROUTE_OFFSET + 2, ROUTE_OFFSET + 3];
/** The frames as sealed, in order per direction (relayed copies left out). */
const sealedInOrder = frames.filter((f) => f.sameSealedBodyAs === undefined);

const pub = {
  ideIdentity: fromBase64Url(vectors.keys.ideIdentity.x),
  ideEphemeral: fromBase64Url(vectors.keys.ideEphemeral.x),
  bridgeIdentity: fromBase64Url(vectors.keys.bridgeIdentity.x),
  bridgeEphemeral: fromBase64Url(vectors.keys.bridgeEphemeral.x),
};

// ---- The shared modules (WebCrypto) ---------------------------------------

async function importPrivate(jwk: Jwk, usages: KeyUsage[]): Promise<CryptoKey> {
  return await subtle.importKey("jwk", { ...jwk }, { name: jwk.crv }, false, usages);
}

/** Both sides' session keys, derived from the fixed ephemerals. */
async function sessionKeys(): Promise<Record<E2eRole, SessionKeys>> {
  const t = transcript({ pairingId: vectors.pairingId, ...pub });
  return {
    ide: await deriveSessionKeys(
      "ide",
      await importPrivate(vectors.keys.ideEphemeral, ["deriveBits"]),
      pub.bridgeEphemeral,
      t,
    ),
    bridge: await deriveSessionKeys(
      "bridge",
      await importPrivate(vectors.keys.bridgeEphemeral, ["deriveBits"]),
      pub.ideEphemeral,
      t,
    ),
  };
}

/** A session that receives frames travelling in `direction`. */
function receiver(keys: Record<E2eRole, SessionKeys>, direction: Direction): E2eSession {
  return direction === "ide->bridge"
    ? new E2eSession(keys.bridge, pub.ideIdentity)
    : new E2eSession(keys.ide, pub.bridgeIdentity);
}

/** A fresh receiver that has opened every good frame of `direction` before counter `s`. */
async function receiverAt(keys: Record<E2eRole, SessionKeys>, direction: Direction, s: number): Promise<E2eSession> {
  const session = receiver(keys, direction);
  for (const f of sealedInOrder.filter((f) => f.direction === direction && f.header.s < s)) {
    await session.open(decodeFrame(hex(f.frame)));
  }
  return session;
}

/** Offsets within the (longer) header where two messages differ. */
function changedHeaderBytes(a: Uint8Array, b: Uint8Array): number[] {
  const changed: number[] = [];
  for (let i = 0; i < HEADER_BYTES + Math.max(a[3], b[3]); i++) if (a[i] !== b[i]) changed.push(i);
  return changed;
}

/** Which header field a byte offset belongs to (the layout at `HEADER_BYTES` in protocol.ts). */
function headerField(offset: number): string {
  if (offset < 4) return ["version", "type", "flags", "id length"][offset];
  if (offset < 8) return "route";
  if (offset < 16) return "s";
  return offset < HEADER_BYTES ? "q" : "id";
}

function plaintextOf(f: FrameVector): Uint8Array {
  return f.bodyHex !== undefined ? hex(f.bodyHex) : te.encode(f.bodyText ?? "");
}

/**
 * Runs `fn` with WebCrypto's X25519 key generation returning the given pairs
 * in turn, so the handshake classes (which make their own ephemerals) can be
 * checked against the fixed vectors.
 */
async function withEphemerals<T>(pairs: CryptoKeyPair[], fn: () => Promise<T>): Promise<T> {
  const original = subtle.generateKey;
  const queue = [...pairs];
  const patched = (algorithm: AlgorithmIdentifier, extractable: boolean, usages: KeyUsage[]) => {
    const name = typeof algorithm === "string" ? algorithm : algorithm.name;
    if (name === "X25519") {
      const next = queue.shift();
      if (!next) throw new Error("Cannot generate key: no fixed ephemeral left");
      return Promise.resolve(next);
    }
    return original.call(subtle, algorithm, extractable, usages);
  };
  Object.defineProperty(subtle, "generateKey", { value: patched, configurable: true, writable: true });
  try {
    return await fn();
  } finally {
    delete (subtle as unknown as Record<string, unknown>).generateKey;
    assert.equal(subtle.generateKey, original);
  }
}

async function ephemeralPair(jwk: Jwk): Promise<CryptoKeyPair> {
  const { d: _d, ...publicJwk } = jwk;
  return {
    privateKey: await importPrivate(jwk, ["deriveBits"]),
    publicKey: await subtle.importKey("jwk", publicJwk, { name: "X25519" }, true, []),
  };
}

async function identityPair(jwk: Jwk): Promise<CryptoKeyPair> {
  const { d: _d, ...publicJwk } = jwk;
  return {
    privateKey: await importPrivate(jwk, ["sign"]),
    publicKey: await subtle.importKey("jwk", publicJwk, { name: "Ed25519" }, true, ["verify"]),
  };
}

Deno.test("vectors: the file is what the tool makes from its keys (a re-run changes nothing)", async () => {
  const remade = await makeE2eVectors({ pairingId: vectors.pairingId, keys: vectors.keys as VectorSeed["keys"] });
  assert.deepEqual(JSON.parse(JSON.stringify(remade)), vectors);
});

Deno.test("vectors: every field is described", () => {
  const described = new Set(Object.keys(vectors.description));
  const undescribed: string[] = [];
  const walk = (value: unknown, path: string) => {
    if (path === "description" || described.has(path)) return;
    if (Array.isArray(value)) value.forEach((item) => walk(item, `${path}[]`));
    else if (typeof value === "object" && value !== null) {
      for (const [k, v] of Object.entries(value)) walk(v, path ? `${path}.${k}` : k);
    } else undescribed.push(path);
  };
  walk(vectors, "");
  assert.deepEqual([...new Set(undescribed)], []);
});

Deno.test("vectors: commitment() reproduces the commitment in the hello", async () => {
  const commit = await commitment({
    pairingId: vectors.pairingId,
    ideIdentity: pub.ideIdentity,
    ideEphemeral: pub.ideEphemeral,
  });
  assert.equal(toHex(commit), vectors.commitment);
  assert.equal(toBase64Url(commit), vectors.handshake.hello.commitment);
  assert.equal(
    toHex(new Uint8Array(await subtle.digest("SHA-256", hex(vectors.commitmentInput) as BufferSource))),
    vectors.commitment,
  );
  // It binds each input: another pairing id or another key gives another commitment.
  const otherKey = pub.ideEphemeral.slice();
  otherKey[31] ^= 1;
  for (
    const changed of [
      { pairingId: `${vectors.pairingId}x`, ideIdentity: pub.ideIdentity, ideEphemeral: pub.ideEphemeral },
      { pairingId: vectors.pairingId, ideIdentity: pub.ideIdentity, ideEphemeral: otherKey },
      { pairingId: vectors.pairingId, ideIdentity: pub.ideEphemeral, ideEphemeral: pub.ideIdentity },
    ]
  ) {
    assert.notEqual(toHex(await commitment(changed)), vectors.commitment);
  }
});

Deno.test("vectors: transcript, hash, SAS and fingerprints match the shared modules", async () => {
  assert.equal(vectors.protocolVersion, PROTOCOL_VERSION);
  const t = transcript({ pairingId: vectors.pairingId, ...pub });
  assert.equal(toHex(t), vectors.transcript);
  const keys = await sessionKeys();
  for (const role of ["ide", "bridge"] as const) {
    assert.equal(toHex(keys[role].transcriptHash), vectors.transcriptHash, role);
    assert.equal(keys[role].sas, vectors.sas, role);
  }
  assert.equal(sasFromBytes(hex(vectors.keyMaterial.sasBytes)), vectors.sas);
  assert.equal(await fingerprint(pub.ideIdentity), vectors.fingerprints.ide);
  assert.equal(await fingerprint(pub.bridgeIdentity), vectors.fingerprints.bridge);
});

Deno.test("vectors: signatures are reproduced exactly and verify only for their role", async () => {
  const hash = hex(vectors.transcriptHash);
  const ide = await signTranscript("ide", await importPrivate(vectors.keys.ideIdentity, ["sign"]), hash);
  const bridge = await signTranscript("bridge", await importPrivate(vectors.keys.bridgeIdentity, ["sign"]), hash);
  assert.equal(toBase64Url(ide), vectors.signatures.ide);
  assert.equal(toBase64Url(bridge), vectors.signatures.bridge);
  assert.equal(await verifyTranscript("ide", pub.ideIdentity, hash, ide), true);
  assert.equal(await verifyTranscript("bridge", pub.bridgeIdentity, hash, bridge), true);
  // Role labels keep one side's signature from standing in for the other's.
  assert.equal(await verifyTranscript("bridge", pub.ideIdentity, hash, ide), false);
  assert.equal(await verifyTranscript("ide", pub.bridgeIdentity, hash, bridge), false);
  const otherHash = hash.slice();
  otherHash[0] ^= 1;
  assert.equal(await verifyTranscript("ide", pub.ideIdentity, otherHash, ide), false);
});

Deno.test("vectors: the handshake classes send exactly the vector bodies", async () => {
  const ideIdentity = await identityPair(vectors.keys.ideIdentity);
  const bridgeIdentity = await identityPair(vectors.keys.bridgeIdentity);
  const [ideEphemeral, bridgeEphemeral] = [
    await ephemeralPair(vectors.keys.ideEphemeral),
    await ephemeralPair(vectors.keys.bridgeEphemeral),
  ];
  const { handshake, hello } = await withEphemerals(
    [ideEphemeral],
    () => IdeHandshake.start(ideIdentity, vectors.pairingId),
  );
  assert.deepEqual(hello, vectors.handshake.hello);
  const bridgeSide = await withEphemerals(
    [bridgeEphemeral],
    () => BridgeHandshake.respond(bridgeIdentity, vectors.pairingId, vectors.handshake.hello),
  );
  assert.deepEqual(bridgeSide.reply, vectors.handshake.reply);
  const ideSide = await handshake.finish(vectors.handshake.reply);
  assert.deepEqual(ideSide.confirm, vectors.handshake.confirm);
  assert.equal(toHex(ideSide.bridgeIdentity), toHex(pub.bridgeIdentity));
  const { session: bridgeSession, signature } = await bridgeSide.handshake.finish(vectors.handshake.confirm);
  assert.equal(signature, vectors.signatures.bridge);
  const ideSession = ideSide.session;
  await IdeHandshake.verifyBridge(ideSession, signature);
  assert.equal(ideSession.sas, vectors.sas);
  assert.equal(bridgeSession.sas, vectors.sas);
  assert.equal(toHex(ideSession.transcriptHash), vectors.transcriptHash);
  assert.equal(toHex(bridgeSession.transcriptHash), vectors.transcriptHash);
  // The e2e.info vector carries exactly the signature the bridge handshake returned.
  const info = frames.find((f) => f.header.t === "e2e.info")!;
  assert.equal(JSON.parse(info.bodyText!).signature, signature);
  // The sessions the real handshake yields seal the vector frames byte for byte.
  const senders = { "ide->bridge": ideSession, "bridge->ide": bridgeSession };
  for (const f of sealedInOrder) {
    const { t, r, id, q } = f.header;
    const sealed = await senders[f.direction].seal({ t, r, id, q, body: plaintextOf(f) });
    assert.equal(toHex(sealed), f.frame, f.name);
  }
});

Deno.test("vectors: the bridge refuses the vector confirm unless it matches the hello's commitment", async () => {
  const bridgeIdentity = await identityPair(vectors.keys.bridgeIdentity);
  const bridgeEphemeral = await ephemeralPair(vectors.keys.bridgeEphemeral);
  const respond = (hello: unknown) =>
    withEphemerals([bridgeEphemeral], () => BridgeHandshake.respond(bridgeIdentity, vectors.pairingId, hello));
  // A hello committing to other keys (one bit of the commitment changed).
  const commit = fromBase64Url(vectors.handshake.hello.commitment);
  commit[0] ^= 1;
  const other = await respond({ ...vectors.handshake.hello, commitment: toBase64Url(commit) });
  await assert.rejects(other.handshake.finish(vectors.handshake.confirm), E2eError, "commitment");
  // The vector hello, with the confirm's ephemeral swapped for the bridge's.
  const swapped = await respond(vectors.handshake.hello);
  await assert.rejects(
    swapped.handshake.finish({ ...vectors.handshake.confirm, ephemeral: vectors.keys.bridgeEphemeral.x }),
    E2eError,
    "commitment",
  );
});

Deno.test("vectors: E2eSession seals the frames byte for byte and opens them in order", async () => {
  const keys = await sessionKeys();
  const senders = {
    "ide->bridge": new E2eSession(keys.ide, pub.bridgeIdentity),
    "bridge->ide": new E2eSession(keys.bridge, pub.ideIdentity),
  };
  const receivers = { "ide->bridge": receiver(keys, "ide->bridge"), "bridge->ide": receiver(keys, "bridge->ide") };
  for (const f of sealedInOrder) {
    const { t, r, id, q, s } = f.header;
    const sealed = await senders[f.direction].seal({ t, r, id, q, body: plaintextOf(f) });
    assert.equal(toHex(sealed), f.frame, f.name);
    assert.equal(toHex(encodeFrame({ ...f.header, body: hex(f.sealedBody) })), f.frame, f.name);
    const frame = decodeFrame(sealed);
    assert.deepEqual(
      { t: frame.t, r: frame.r, id: frame.id, s: frame.s, q: frame.q },
      { r: undefined, id: undefined, q: undefined, ...f.header },
    );
    // The associated data is the header as sent with the route bytes zeroed.
    const aad = sealed.slice(0, frame.header.byteLength);
    aad.fill(0, ROUTE_OFFSET, ROUTE_OFFSET + 4);
    assert.equal(toHex(aad), f.aad, f.name);
    assert.equal(toHex(headerAad(frame.header)), f.aad, f.name);
    assert.equal(toHex(nonceFor(s)), f.nonce, f.name);
    assert.equal(toHex(await receivers[f.direction].open(frame)), toHex(plaintextOf(f)), f.name);
  }
});

Deno.test("vectors: relayed copies (route re-stamped in place) open to the same plaintext", async () => {
  const keys = await sessionKeys();
  const relayed = frames.filter((f) => f.sameSealedBodyAs !== undefined);
  assert.ok(relayed.length >= 3);
  // Stamped onto an IDE frame, cleared from a bridge frame, and every route byte changed.
  assert.ok(relayed.some((f) => f.direction === "ide->bridge" && f.header.r !== undefined));
  assert.ok(relayed.some((f) => f.direction === "bridge->ide" && f.header.r === undefined));
  assert.deepEqual([...new Set(relayed.flatMap((f) => f.changedHeaderBytes!))].sort(), ROUTE_BYTES);
  for (const f of relayed) {
    const original = frames.find((g) => g.name === f.sameSealedBodyAs)!;
    assert.equal(f.sealedBody, original.sealedBody);
    assert.equal(f.aad, original.aad);
    assert.notEqual(f.header.r, original.header.r);
    // What the relay does: stamp the route into the received bytes, in place.
    const bytes = hex(original.frame);
    assert.equal(routeFrame(bytes, f.header.r ?? 0), f.header.t);
    assert.equal(toHex(bytes), f.frame, f.name);
    const changed = changedHeaderBytes(hex(original.frame), bytes);
    assert.deepEqual(changed, f.changedHeaderBytes, f.name);
    assert.ok(changed.length > 0 && changed.every((i) => ROUTE_BYTES.includes(i)), f.name);
    const session = await receiverAt(keys, f.direction, f.header.s);
    assert.equal(toHex(await session.open(decodeFrame(bytes))), toHex(plaintextOf(f)), f.name);
  }
});

Deno.test("vectors: the bad frames change the type, flags, id, s and q, never the route", () => {
  const touched = new Set<string>();
  for (const bad of badFrames) {
    const good = frames.find((f) => f.name === bad.basedOn)!;
    const changed = changedHeaderBytes(hex(good.frame), hex(bad.frame));
    assert.deepEqual(changed, bad.changedHeaderBytes, bad.name);
    for (const i of changed) touched.add(headerField(i));
    // Each still decodes: the tag refuses it, not the decoder.
    const frame = decodeFrame(hex(bad.frame));
    assert.deepEqual(
      { t: frame.t, r: frame.r, id: frame.id, s: frame.s, q: frame.q },
      { r: undefined, id: undefined, s: undefined, q: undefined, ...bad.header },
      bad.name,
    );
  }
  assert.deepEqual([...touched].sort(), ["flags", "id", "q", "s", "type"]);
});

Deno.test("vectors: every bad frame fails to open, in a session and with the bare primitive", async () => {
  const keys = await sessionKeys();
  assert.ok(badFrames.length >= 9);
  for (const bad of badFrames) {
    const frame = decodeFrame(hex(bad.frame));
    // The receiver expects the counter in the frame's s bytes (0 where the s flag is cleared).
    const s = frame.s ?? 0;
    const session = await receiverAt(keys, bad.direction, s);
    await assert.rejects(session.open(frame), E2eError, bad.name);
    const key = bad.direction === "ide->bridge" ? keys.bridge.receive : keys.ide.receive;
    await assert.rejects(openBody(key, s, headerAad(frame.header), frame.body), bad.name);
  }
});

// ---- node:crypto, a separate implementation path --------------------------

function nodePrivate(jwk: Jwk): KeyObject {
  return createPrivateKey({ key: { ...jwk }, format: "jwk" });
}

function nodePublic(jwk: Jwk): KeyObject {
  return createPublicKey({ key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x }, format: "jwk" });
}

/** The transcript built from its definition in the description, not with transcript(). */
function nodeTranscript(): Buffer {
  const parts = [
    Buffer.from("coder1 e2e transcript", "utf8"),
    Buffer.from([vectors.protocolVersion]),
    Buffer.from(vectors.pairingId, "utf8"),
    ...[vectors.keys.ideIdentity, vectors.keys.ideEphemeral, vectors.keys.bridgeIdentity, vectors.keys.bridgeEphemeral]
      .map((k) => Buffer.from(k.x, "base64url")),
  ];
  return Buffer.concat(parts.flatMap((p) => {
    const length = Buffer.alloc(2);
    length.writeUInt16BE(p.length);
    return [length, p];
  }));
}

function nodeKeyMaterial(): { shared: Buffer; okm: Buffer; sas: Buffer; hash: Buffer } {
  const fromIde = diffieHellman({
    privateKey: nodePrivate(vectors.keys.ideEphemeral),
    publicKey: nodePublic(vectors.keys.bridgeEphemeral),
  });
  const fromBridge = diffieHellman({
    privateKey: nodePrivate(vectors.keys.bridgeEphemeral),
    publicKey: nodePublic(vectors.keys.ideEphemeral),
  });
  assert.equal(fromIde.toString("hex"), fromBridge.toString("hex"));
  const hash = createHash("sha256").update(nodeTranscript()).digest();
  return {
    shared: fromIde,
    okm: Buffer.from(hkdfSync("sha256", fromIde, hash, "coder1 e2e keys", 64)),
    sas: Buffer.from(hkdfSync("sha256", fromIde, hash, "coder1 e2e sas", 8)),
    hash,
  };
}

/**
 * Opens a frame by the layout in the description, not with the shared codec:
 * 24 fixed header bytes and then the id (its length in byte 3); the nonce is
 * four zero bytes and the s bytes (8..15); the associated data is the header
 * with the route bytes (4..7) zeroed.
 */
function nodeOpen(key: Buffer, frame: Buffer | string): Buffer {
  const bytes = typeof frame === "string" ? Buffer.from(frame, "hex") : frame;
  const headerLength = 24 + bytes[3];
  const aad = Buffer.from(bytes.subarray(0, headerLength));
  aad.fill(0, 4, 8);
  const nonce = Buffer.concat([Buffer.alloc(4), bytes.subarray(8, 16)]);
  const body = bytes.subarray(headerLength);
  if (body.length < 16) throw new Error("Cannot open: shorter than a tag");
  const decipher = createDecipheriv("aes-256-gcm", key, nonce, { authTagLength: 16 });
  decipher.setAAD(aad);
  decipher.setAuthTag(body.subarray(body.length - 16));
  return Buffer.concat([decipher.update(body.subarray(0, body.length - 16)), decipher.final()]);
}

Deno.test("node:crypto: each JWK's d belongs to its x", () => {
  for (const [name, jwk] of Object.entries(vectors.keys)) {
    const derived = createPublicKey(nodePrivate(jwk)).export({ format: "jwk" });
    assert.equal(derived.x, jwk.x, name);
  }
});

Deno.test("node:crypto: the commitment is SHA-256 of the length-prefixed pairing id and IDE keys", () => {
  const parts = [
    Buffer.from("coder1 e2e commitment", "utf8"),
    Buffer.from([vectors.protocolVersion]),
    Buffer.from(vectors.pairingId, "utf8"),
    Buffer.from(vectors.keys.ideIdentity.x, "base64url"),
    Buffer.from(vectors.keys.ideEphemeral.x, "base64url"),
  ];
  const input = Buffer.concat(parts.flatMap((p) => {
    const length = Buffer.alloc(2);
    length.writeUInt16BE(p.length);
    return [length, p];
  }));
  assert.equal(input.toString("hex"), vectors.commitmentInput);
  const digest = createHash("sha256").update(input).digest();
  assert.equal(digest.toString("hex"), vectors.commitment);
  assert.equal(digest.toString("base64url"), vectors.handshake.hello.commitment);
  // The keys the confirm reveals are the ones committed to.
  assert.equal(vectors.handshake.confirm.identity, vectors.keys.ideIdentity.x);
  assert.equal(vectors.handshake.confirm.ephemeral, vectors.keys.ideEphemeral.x);
});

Deno.test("node:crypto: transcript, X25519, HKDF and SAS agree with the vectors", () => {
  const { shared, okm, sas, hash } = nodeKeyMaterial();
  assert.equal(nodeTranscript().toString("hex"), vectors.transcript);
  assert.equal(hash.toString("hex"), vectors.transcriptHash);
  assert.equal(shared.toString("hex"), vectors.sharedSecret);
  assert.equal(okm.subarray(0, 32).toString("hex"), vectors.keyMaterial.ideToBridge);
  assert.equal(okm.subarray(32, 64).toString("hex"), vectors.keyMaterial.bridgeToIde);
  assert.equal(sas.toString("hex"), vectors.keyMaterial.sasBytes);
  const digits = (sas.readBigUInt64BE(0) % 1_000_000n).toString().padStart(6, "0");
  assert.equal(`${digits.slice(0, 3)} ${digits.slice(3)}`, vectors.sas);
});

Deno.test("node:crypto: fingerprints are the first 16 bytes of SHA-256 in groups of four", () => {
  for (const role of ["ide", "bridge"] as const) {
    const raw = Buffer.from(role === "ide" ? vectors.keys.ideIdentity.x : vectors.keys.bridgeIdentity.x, "base64url");
    const hex16 = createHash("sha256").update(raw).digest().subarray(0, 16).toString("hex");
    assert.equal(hex16.match(/.{4}/g)!.join(" "), vectors.fingerprints[role]);
  }
});

Deno.test("node:crypto: Ed25519 signatures verify, are reproduced, and are bound to role and transcript", () => {
  const { hash } = nodeKeyMaterial();
  for (const role of ["ide", "bridge"] as const) {
    const jwk = role === "ide" ? vectors.keys.ideIdentity : vectors.keys.bridgeIdentity;
    const message = Buffer.concat([Buffer.from(`coder1 e2e ${role} signature`, "utf8"), hash]);
    assert.equal(message.toString("hex"), vectors.signedMessages[role]);
    const signature = Buffer.from(vectors.signatures[role], "base64url");
    assert.equal(verify(null, message, nodePublic(jwk), signature), true, role);
    // Ed25519 is deterministic: node signs to the same bytes.
    assert.equal(sign(null, message, nodePrivate(jwk)).toString("base64url"), vectors.signatures[role], role);
    const other = role === "ide" ? "bridge" : "ide";
    const reflected = Buffer.concat([Buffer.from(`coder1 e2e ${other} signature`, "utf8"), hash]);
    assert.equal(verify(null, reflected, nodePublic(jwk), signature), false, role);
  }
  assert.equal(vectors.handshake.confirm.signature, vectors.signatures.ide);
  const info = frames.find((f) => f.header.t === "e2e.info")!;
  assert.equal(JSON.parse(info.bodyText!).signature, vectors.signatures.bridge);
});

Deno.test("node:crypto: AES-256-GCM opens every good frame with the node-derived key and no bad one", () => {
  const { okm } = nodeKeyMaterial();
  const keyFor = (direction: string) => direction === "ide->bridge" ? okm.subarray(0, 32) : okm.subarray(32, 64);
  for (const f of frames) {
    assert.equal(nodeOpen(keyFor(f.direction), f.frame).toString("hex"), toHex(plaintextOf(f)), f.name);
    // The wrong direction's key never opens it.
    const other = f.direction === "ide->bridge" ? "bridge->ide" : "ide->bridge";
    assert.throws(() => nodeOpen(keyFor(other), f.frame), f.name);
  }
  for (const bad of badFrames) {
    assert.throws(() => nodeOpen(keyFor(bad.direction), bad.frame), bad.name);
  }
});

Deno.test("node:crypto: a flipped bit anywhere in the header but the route makes a frame fail to open", () => {
  const { okm } = nodeKeyMaterial();
  const keyFor = (direction: string) => direction === "ide->bridge" ? okm.subarray(0, 32) : okm.subarray(32, 64);
  for (const f of sealedInOrder) {
    const good = Buffer.from(f.frame, "hex");
    for (let i = 0; i < 24 + good[3]; i++) {
      for (const bit of [0x01, 0x80]) {
        const bytes = Buffer.from(good);
        bytes[i] ^= bit;
        if (i >= 4 && i < 8) {
          assert.equal(nodeOpen(keyFor(f.direction), bytes).toString("hex"), toHex(plaintextOf(f)), `${f.name} ${i}`);
        } else {
          assert.throws(() => nodeOpen(keyFor(f.direction), bytes), `${f.name}: byte ${i} bit ${bit}`);
        }
      }
    }
  }
});

function hex(text: string): Uint8Array {
  return Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));
}

function toHex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("vectors: the browser-safe checker (shared/e2e_vectors_check.ts) passes every check", async () => {
  const { checkVectors } = await import("./e2e_vectors_check.ts");
  const results = await checkVectors(vectors as unknown as Parameters<typeof checkVectors>[0]);
  assert.ok(results.length >= 20, `${results.length} checks`);
  assert.deepEqual(results.filter((r) => !r.ok), []);
  // The checker notices a wrong vector.
  const broken = structuredClone(vectors) as unknown as Parameters<typeof checkVectors>[0];
  broken.sas = "000 000";
  assert.ok((await checkVectors(broken)).some((r) => !r.ok));
  const badCommitment = structuredClone(vectors) as unknown as Parameters<typeof checkVectors>[0];
  badCommitment.commitment = "00".repeat(32);
  assert.deepEqual((await checkVectors(badCommitment)).filter((r) => !r.ok).map((r) => r.name), ["commitment"]);
  const unsignedInfo = structuredClone(vectors) as unknown as Parameters<typeof checkVectors>[0];
  unsignedInfo.signatures.bridge = unsignedInfo.signatures.ide;
  assert.ok((await checkVectors(unsignedInfo)).some((r) => !r.ok && r.name.startsWith("e2e.info")));
  // A relayed copy whose relay changed more than the route (here the type byte) is caught.
  const retyped = structuredClone(vectors) as unknown as Parameters<typeof checkVectors>[0];
  const copy = retyped.frames.find((f) => f.sameSealedBodyAs !== undefined)!;
  copy.frame = copy.frame.slice(0, 2) + "47" + copy.frame.slice(4);
  assert.deepEqual((await checkVectors(retyped)).filter((r) => !r.ok).map((r) => r.name), [
    `open relayed copy: ${copy.name}`,
  ]);
});
