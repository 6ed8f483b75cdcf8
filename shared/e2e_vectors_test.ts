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
  frameAad,
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
import { BridgeHandshake, E2eChannel, E2eError, IdeHandshake } from "./e2e_session.ts";
import { decodeFrame, encodeFrame } from "./frame_codec.ts";
import { type Frame, PROTOCOL_VERSION } from "./protocol.ts";

type Direction = "ide->bridge" | "bridge->ide";
type FrameVector = (typeof vectors.frames)[number] & { bodyHex?: string; bodyText?: string; sameSealedBodyAs?: string };
type Jwk = typeof vectors.keys.ideIdentity;

const te = new TextEncoder();
const subtle = globalThis.crypto.subtle;
const frames = vectors.frames as FrameVector[];
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

/** A channel that receives frames travelling in `direction`. */
function receiver(keys: Record<E2eRole, SessionKeys>, direction: Direction): E2eChannel {
  return direction === "ide->bridge"
    ? new E2eChannel(keys.bridge, pub.ideIdentity)
    : new E2eChannel(keys.ide, pub.bridgeIdentity);
}

/** A fresh receiver that has opened every good frame of `direction` before counter `s`. */
async function receiverAt(keys: Record<E2eRole, SessionKeys>, direction: Direction, s: number): Promise<E2eChannel> {
  const channel = receiver(keys, direction);
  for (const f of sealedInOrder.filter((f) => f.direction === direction && f.header.s < s)) {
    await channel.open(decodeFrame(hex(f.frame)));
  }
  return channel;
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
  const { channel: bridgeChannel, signature } = await bridgeSide.handshake.finish(vectors.handshake.confirm);
  assert.equal(signature, vectors.signatures.bridge);
  const ideChannel = ideSide.channel;
  await IdeHandshake.verifyBridge(ideChannel, signature);
  assert.equal(ideChannel.sas, vectors.sas);
  assert.equal(bridgeChannel.sas, vectors.sas);
  assert.equal(toHex(ideChannel.transcriptHash), vectors.transcriptHash);
  assert.equal(toHex(bridgeChannel.transcriptHash), vectors.transcriptHash);
  // The e2e.info vector carries exactly the signature the bridge handshake returned.
  const info = frames.find((f) => f.header.t === "e2e.info")!;
  assert.equal(JSON.parse(info.bodyText!).signature, signature);
  // The channels the real handshake yields seal the vector frames byte for byte.
  const senders = { "ide->bridge": ideChannel, "bridge->ide": bridgeChannel };
  for (const f of sealedInOrder) {
    const sealed = await senders[f.direction as Direction].seal({
      t: f.header.t,
      c: "c" in f.header ? f.header.c as number : undefined,
      id: f.header.id,
      body: plaintextOf(f),
    });
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

Deno.test("vectors: E2eChannel seals the frames byte for byte and opens them in order", async () => {
  const keys = await sessionKeys();
  const senders = {
    "ide->bridge": new E2eChannel(keys.ide, pub.bridgeIdentity),
    "bridge->ide": new E2eChannel(keys.bridge, pub.ideIdentity),
  };
  const receivers = { "ide->bridge": receiver(keys, "ide->bridge"), "bridge->ide": receiver(keys, "bridge->ide") };
  for (const f of sealedInOrder) {
    const direction = f.direction as Direction;
    const header = f.header as { t: string; c?: number; id?: string; s: number };
    const sealed = await senders[direction].seal({ t: header.t, c: header.c, id: header.id, body: plaintextOf(f) });
    assert.equal(toHex(sealed), f.frame, f.name);
    assert.equal(toHex(encodeFrame({ ...header, body: hex(f.sealedBody) })), f.frame, f.name);
    const frame = decodeFrame(sealed);
    assert.deepEqual({ t: frame.t, c: frame.c, id: frame.id, s: frame.s }, { c: undefined, id: undefined, ...header });
    assert.equal(new TextDecoder().decode(frameAad(frame as Frame & { s: number })), f.aad, f.name);
    assert.equal(toHex(nonceFor(header.s)), f.nonce, f.name);
    assert.equal(toHex(await receivers[direction].open(frame)), toHex(plaintextOf(f)), f.name);
  }
});

Deno.test("vectors: relayed copies (c stamped or removed) open to the same plaintext", async () => {
  const keys = await sessionKeys();
  const relayed = frames.filter((f) => f.sameSealedBodyAs !== undefined);
  assert.ok(relayed.length >= 2);
  for (const f of relayed) {
    const original = frames.find((g) => g.name === f.sameSealedBodyAs)!;
    assert.equal(f.sealedBody, original.sealedBody);
    assert.notEqual(f.frame, original.frame);
    assert.notEqual((f.header as { c?: number }).c, (original.header as { c?: number }).c);
    const channel = await receiverAt(keys, f.direction as Direction, f.header.s);
    assert.equal(toHex(await channel.open(decodeFrame(hex(f.frame)))), toHex(plaintextOf(f)), f.name);
  }
});

Deno.test("vectors: every bad frame fails to open, in a channel and with the bare primitive", async () => {
  const keys = await sessionKeys();
  assert.ok(vectors.badFrames.length >= 3);
  for (const bad of vectors.badFrames) {
    const direction = bad.direction as Direction;
    const frame = decodeFrame(hex(bad.frame));
    const channel = await receiverAt(keys, direction, frame.s!);
    await assert.rejects(channel.open(frame), E2eError, bad.name);
    const key = direction === "ide->bridge" ? keys.bridge.receive : keys.ide.receive;
    const aad = frameAad({ v: frame.v, t: frame.t, id: frame.id, s: frame.s! });
    await assert.rejects(openBody(key, frame.s!, aad, frame.body), bad.name);
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

function nodeOpen(key: Buffer, frameHex: string): Buffer {
  const frame = Buffer.from(frameHex, "hex");
  const headerLength = frame.readUInt16BE(0);
  const header = JSON.parse(frame.subarray(2, 2 + headerLength).toString("utf8"));
  const body = frame.subarray(2 + headerLength);
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64BE(BigInt(header.s), 4);
  if (body.length < 16) throw new Error("Cannot open: shorter than a tag");
  const decipher = createDecipheriv("aes-256-gcm", key, nonce, { authTagLength: 16 });
  decipher.setAAD(Buffer.from(JSON.stringify([header.v, header.t, header.id ?? null, header.s]), "utf8"));
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
  for (const bad of vectors.badFrames) {
    assert.throws(() => nodeOpen(keyFor(bad.direction), bad.frame), bad.name);
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
});
