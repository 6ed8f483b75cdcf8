import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Buffer } from "node:buffer";
import {
  commitment,
  deriveSessionKeys,
  fromBase64Url,
  generateEphemeral,
  generateIdentity,
  rawPublicKey,
  type SessionKeys,
  signTranscript,
  toBase64Url,
  transcript,
} from "./e2e_crypto.ts";
import {
  BridgeHandshake,
  type ConfirmBody,
  E2eError,
  E2eSession,
  type HelloBody,
  IdeHandshake,
  type ReplyBody,
} from "./e2e_session.ts";
import { Coder1Error } from "./errors.ts";
import { decodeFrame, encodeFrame, headerAad, routeFrame } from "./frame_codec.ts";
import { CloseCode, type Frame, type FrameTypeName, HEADER_BYTES, PROTOCOL_VERSION } from "./protocol.ts";

const PAIRING = "0d3c2b1a-5e4f-4a6b-8c7d-9e0f1a2b3c4d";
const te = new TextEncoder();
const td = new TextDecoder();

/** Handshake bodies cross the relay as JSON: what a side receives is a parsed copy. */
function wire<T>(body: T): unknown {
  return JSON.parse(JSON.stringify(body));
}

/** An IDE and a bridge identity, made once (they are long-term keys). */
const ideIdentity = await generateIdentity();
const bridgeIdentity = await generateIdentity();

/**
 * Runs a whole handshake between two identities; returns both sessions, the
 * bodies exchanged and the bridge's signature (which travels sealed in
 * `e2e.info`; the IDE has not verified it yet).
 */
async function pair(ide = ideIdentity, bridge = bridgeIdentity, pairingId = PAIRING) {
  const { handshake: ideSide, hello } = await IdeHandshake.start(ide, pairingId);
  const { handshake: bridgeSide, reply } = await BridgeHandshake.respond(bridge, pairingId, wire(hello));
  const { session: ideSession, bridgeIdentity, confirm } = await ideSide.finish(wire(reply));
  const { session: bridgeSession, signature } = await bridgeSide.finish(wire(confirm));
  return { ideSession, bridgeSession, bridgeIdentity, hello, reply, confirm, signature };
}

/** What a relay can compute from the cleartext handshake: the transcript hash. */
async function transcriptHash(confirm: ConfirmBody, reply: ReplyBody, pairingId = PAIRING): Promise<Uint8Array> {
  const t = transcript({
    pairingId,
    ideIdentity: fromBase64Url(confirm.identity),
    ideEphemeral: fromBase64Url(confirm.ephemeral),
    bridgeIdentity: fromBase64Url(reply.identity),
    bridgeEphemeral: fromBase64Url(reply.ephemeral),
  });
  return new Uint8Array(await crypto.subtle.digest("SHA-256", t as BufferSource));
}

/** A fresh raw X25519 public key (base64url), as a relay would substitute it. */
async function otherEphemeral(): Promise<string> {
  return toBase64Url(await rawPublicKey((await generateEphemeral()).publicKey));
}

/** A base64url value with one bit flipped. */
function flipped(text: string, byte = 0): string {
  const bytes = fromBase64Url(text);
  bytes[byte] ^= 1;
  return toBase64Url(bytes);
}

/** Expects an E2eError whose message matches `pattern`. */
async function refused(promise: Promise<unknown>, pattern: RegExp, what?: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof E2eError, `${what ?? ""}: ${error}`);
    assert.match(error.message, pattern, what ?? String(pattern));
    return true;
  });
}

/**
 * A relay posing as an IDE, built from the primitives: unlike IdeHandshake it
 * can answer any number of replies with the keys it committed to, and it
 * learns each SAS from the reply alone.
 */
async function committedIde(identity: CryptoKeyPair, pairingId = PAIRING) {
  const ephemeral = await generateEphemeral();
  const mine = { identity: await rawPublicKey(identity.publicKey), ephemeral: await rawPublicKey(ephemeral.publicKey) };
  const commit = await commitment({ pairingId, ideIdentity: mine.identity, ideEphemeral: mine.ephemeral });
  const hello: HelloBody = { pairingId, commitment: toBase64Url(commit) };
  const answer = async (reply: ReplyBody): Promise<{ sas: string; confirm: ConfirmBody }> => {
    const bridgeEphemeral = fromBase64Url(reply.ephemeral);
    const t = transcript({
      pairingId,
      ideIdentity: mine.identity,
      ideEphemeral: mine.ephemeral,
      bridgeIdentity: fromBase64Url(reply.identity),
      bridgeEphemeral,
    });
    const keys = await deriveSessionKeys("ide", ephemeral.privateKey, bridgeEphemeral, t);
    const signature = await signTranscript("ide", identity.privateKey, keys.transcriptHash);
    return {
      sas: keys.sas,
      confirm: {
        identity: toBase64Url(mine.identity),
        ephemeral: toBase64Url(mine.ephemeral),
        signature: toBase64Url(signature),
      },
    };
  };
  return { hello, answer };
}

/** Re-encodes a frame with changed header fields and/or body. */
function edit(frame: Frame, change: Partial<Frame>): Frame {
  const f = { ...frame, ...change };
  return decodeFrame(encodeFrame({ t: f.t, r: f.r, id: f.id, s: f.s, q: f.q, body: f.body }));
}

/** Both directions' keys of one key agreement, for tests that need many fresh sessions on the same keys. */
async function agreedKeys(): Promise<{ ide: SessionKeys; bridge: SessionKeys }> {
  const ide = await generateEphemeral();
  const bridge = await generateEphemeral();
  const ideEphemeral = await rawPublicKey(ide.publicKey);
  const bridgeEphemeral = await rawPublicKey(bridge.publicKey);
  const t = transcript({
    pairingId: PAIRING,
    ideIdentity: await rawPublicKey(ideIdentity.publicKey),
    ideEphemeral,
    bridgeIdentity: await rawPublicKey(bridgeIdentity.publicKey),
    bridgeEphemeral,
  });
  return {
    ide: await deriveSessionKeys("ide", ide.privateKey, bridgeEphemeral, t),
    bridge: await deriveSessionKeys("bridge", bridge.privateKey, ideEphemeral, t),
  };
}

/** A peer identity for sessions made from {@linkcode agreedKeys} (opening never reads it). */
const PEER = new Uint8Array(32);

/** Offsets within the (longer) of two headers where they differ. */
function changedHeaderBytes(a: Uint8Array, b: Uint8Array): number[] {
  const changed: number[] = [];
  for (let i = 0; i < Math.max(a.byteLength, b.byteLength); i++) if (a[i] !== b[i]) changed.push(i);
  return changed;
}

/** Which header field a byte offset belongs to (the layout at `HEADER_BYTES` in protocol.ts). */
function headerField(offset: number): string {
  if (offset < 4) return ["version", "type", "flags", "id length"][offset];
  if (offset < 8) return "route";
  if (offset < 16) return "s";
  return offset < HEADER_BYTES ? "q" : "id";
}

async function sealed(session: E2eSession, t: FrameTypeName, body: string, id?: string, q?: number): Promise<Frame> {
  return decodeFrame(await session.seal({ t, id, q, body: te.encode(body) }));
}

// ---- Handshake ------------------------------------------------------------

Deno.test("handshake: IDE and bridge agree on the SAS, and the IDE verifies the bridge's signature", async () => {
  const { ideSession, bridgeSession, bridgeIdentity: seen, hello, reply, confirm, signature } = await pair();
  assert.match(ideSession.sas, /^\d{3} \d{3}$/);
  assert.equal(ideSession.sas, bridgeSession.sas);
  const bridgeKey = await rawPublicKey(bridgeIdentity.publicKey);
  assert.deepEqual(seen, bridgeKey);
  assert.deepEqual(ideSession.peerIdentity, bridgeKey);
  assert.deepEqual(bridgeSession.peerIdentity, await rawPublicKey(ideIdentity.publicKey));
  // The hello carries no key, only a commitment; the confirm reveals the keys and the IDE's signature.
  assert.deepEqual(Object.keys(hello).sort(), ["commitment", "pairingId"]);
  assert.equal(hello.pairingId, PAIRING);
  assert.deepEqual(Object.keys(reply).sort(), ["ephemeral", "identity"]);
  assert.deepEqual(Object.keys(confirm).sort(), ["ephemeral", "identity", "signature"]);
  assert.deepEqual(fromBase64Url(confirm.identity), await rawPublicKey(ideIdentity.publicKey));
  assert.equal(fromBase64Url(signature).byteLength, 64);
  // Both sides hash the same transcript, the one the cleartext bodies determine.
  assert.deepEqual(ideSession.transcriptHash, bridgeSession.transcriptHash);
  assert.deepEqual(ideSession.transcriptHash, await transcriptHash(confirm, reply));
  // The bridge's signature (sent sealed in e2e.info) verifies on the IDE's session.
  await IdeHandshake.verifyBridge(ideSession, signature);
  // The commitment, recomputed with node:crypto from the revealed keys.
  const parts = [
    Buffer.from("coder1 e2e commitment", "utf8"),
    Buffer.from([PROTOCOL_VERSION]),
    Buffer.from(PAIRING, "utf8"),
    Buffer.from(confirm.identity, "base64url"),
    Buffer.from(confirm.ephemeral, "base64url"),
  ];
  const input = Buffer.concat(parts.flatMap((p) => [Buffer.from([p.length >> 8, p.length & 0xff]), p]));
  assert.equal(createHash("sha256").update(input).digest("base64url"), hello.commitment);
  // Keys work both ways.
  assert.equal(td.decode(await bridgeSession.open(await sealed(ideSession, "cmd.start", "up"))), "up");
  assert.equal(td.decode(await ideSession.open(await sealed(bridgeSession, "cmd.stdout", "down"))), "down");
});

Deno.test("handshake: every run uses fresh ephemerals, so the commitment, keys and SAS change", async () => {
  const a = await pair();
  const b = await pair();
  assert.notEqual(a.hello.commitment, b.hello.commitment);
  assert.notEqual(a.confirm.ephemeral, b.confirm.ephemeral);
  assert.equal(a.confirm.identity, b.confirm.identity);
  assert.notEqual(a.reply.ephemeral, b.reply.ephemeral);
  assert.notDeepEqual(a.ideSession.transcriptHash, b.ideSession.transcriptHash);
  // A frame from one session does not open in the other.
  await assert.rejects(b.bridgeSession.open(await sealed(a.ideSession, "cmd.start", "x")), E2eError);
});

Deno.test("handshake: the bridge refuses a confirm whose keys do not match the hello's commitment", async () => {
  const { handshake: ideSide, hello } = await IdeHandshake.start(ideIdentity, PAIRING);
  const { handshake: bridgeSide, reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(hello));
  const { confirm } = await ideSide.finish(wire(reply));
  const mallory = await generateIdentity();
  const malloryKey = toBase64Url(await rawPublicKey(mallory.publicKey));
  // A relay that passed the IDE's hello on swaps in its own ephemeral (to hold the other end of the DH),
  await refused(bridgeSide.finish({ ...confirm, ephemeral: await otherEphemeral() }), /commitment/, "ephemeral");
  // or its own identity,
  await refused(bridgeSide.finish({ ...confirm, identity: malloryKey }), /commitment/, "identity");
  // or the two keys exchanged.
  await refused(
    bridgeSide.finish({ ...confirm, identity: confirm.ephemeral, ephemeral: confirm.identity }),
    /commitment/,
    "exchanged",
  );
  // A complete, correctly signed confirm for this reply, from a handshake committed to other keys:
  // the relay's own, and one of the same IDE with another ephemeral.
  for (const identity of [mallory, ideIdentity]) {
    const other = await IdeHandshake.start(identity, PAIRING);
    const { confirm: otherConfirm } = await other.handshake.finish(wire(reply));
    await refused(bridgeSide.finish(wire(otherConfirm)), /commitment/, "another handshake's confirm");
  }
  // The untouched confirm still finishes: the refusals were about the changes.
  const { session } = await bridgeSide.finish(wire(confirm));
  assert.deepEqual(session.peerIdentity, await rawPublicKey(ideIdentity.publicKey));
});

Deno.test("handshake: the bridge refuses a confirm whose IDE signature does not verify", async () => {
  const { handshake: ideSide, hello } = await IdeHandshake.start(ideIdentity, PAIRING);
  const { handshake: bridgeSide, reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(hello));
  const { session: ideSession, confirm } = await ideSide.finish(wire(reply));
  const hash = ideSession.transcriptHash;
  const otherHash = hash.slice();
  otherHash[0] ^= 1;
  const mallory = await generateIdentity();
  const signatures: [string, Uint8Array | string][] = [
    ["signed by another identity", await signTranscript("ide", mallory.privateKey, hash)],
    ["the IDE key with the bridge's role label", await signTranscript("bridge", ideIdentity.privateKey, hash)],
    ["the IDE key over another transcript", await signTranscript("ide", ideIdentity.privateKey, otherHash)],
    ["one bit flipped", flipped(confirm.signature, 5)],
    ["all zero", new Uint8Array(64)],
  ];
  for (const [what, signature] of signatures) {
    const text = typeof signature === "string" ? signature : toBase64Url(signature);
    await refused(bridgeSide.finish({ ...confirm, signature: text }), /signature does not verify/, what);
  }
  // The genuine confirm is accepted.
  const { session } = await bridgeSide.finish(wire(confirm));
  assert.deepEqual(session.peerIdentity, await rawPublicKey(ideIdentity.publicKey));
});

Deno.test("handshake: verifyBridge refuses a wrong, missing or other-role signature", async () => {
  const { ideSession, bridgeSession, confirm, signature } = await pair();
  const other = await pair();
  const hash = ideSession.transcriptHash;
  const mallory = await generateIdentity();
  const bad: [string, unknown, RegExp][] = [
    ["missing", undefined, /no handshake signature/],
    ["null", null, /no handshake signature/],
    ["a number", 42, /no handshake signature/],
    ["empty", "", /expected 64 bytes/],
    ["not base64url", "@@", /not base64url/],
    ["63 bytes", toBase64Url(fromBase64Url(signature).subarray(0, 63)), /expected 64 bytes/],
    ["one bit flipped", flipped(signature, 10), /does not verify/],
    ["the IDE's own signature from the confirm", confirm.signature, /does not verify/],
    [
      "the bridge key with the IDE's role label",
      toBase64Url(await signTranscript("ide", bridgeIdentity.privateKey, hash)),
      /does not verify/,
    ],
    ["another identity", toBase64Url(await signTranscript("bridge", mallory.privateKey, hash)), /does not verify/],
    ["the same bridge's signature from another session", other.signature, /does not verify/],
  ];
  for (const [what, value, pattern] of bad) await refused(IdeHandshake.verifyBridge(ideSession, value), pattern, what);
  // It checks against the session's peer: on the bridge's own session (peer: the IDE) it fails.
  await refused(IdeHandshake.verifyBridge(bridgeSession, signature), /does not verify/, "bridge session");
  // The genuine signature verifies, on its own session only.
  await IdeHandshake.verifyBridge(ideSession, signature);
  await IdeHandshake.verifyBridge(other.ideSession, other.signature);
  await refused(IdeHandshake.verifyBridge(other.ideSession, signature), /does not verify/, "crossed sessions");
});

Deno.test("handshake: a relay in the middle with its own handshakes gets a different SAS on each side", async () => {
  const relayIdentity = await generateIdentity();
  // IDE <-> relay posing as the bridge.
  const { handshake: ideSide, hello } = await IdeHandshake.start(ideIdentity, PAIRING);
  const { handshake: fakeBridge, reply: fakeReply } = await BridgeHandshake.respond(
    relayIdentity,
    PAIRING,
    wire(hello),
  );
  const { session: ideSession, confirm } = await ideSide.finish(wire(fakeReply));
  const relayToIde = await fakeBridge.finish(wire(confirm));
  // Relay posing as the IDE <-> bridge.
  const { handshake: fakeIde, hello: fakeHello } = await IdeHandshake.start(relayIdentity, PAIRING);
  const { handshake: bridgeSide, reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(fakeHello));
  const { session: relayToBridge, confirm: fakeConfirm } = await fakeIde.finish(wire(reply));
  const { session: bridgeSession, signature } = await bridgeSide.finish(wire(fakeConfirm));
  await IdeHandshake.verifyBridge(relayToBridge, signature);
  // Each half is a valid handshake with the relay: the IDE even verifies the relay's signature...
  await IdeHandshake.verifyBridge(ideSession, relayToIde.signature);
  assert.equal(ideSession.sas, relayToIde.session.sas);
  assert.equal(bridgeSession.sas, relayToBridge.sas);
  // ...but the two people comparing screens see different codes (equal only by a one-in-a-million
  // coincidence) and the relay's identity, not their peer's.
  assert.notEqual(ideSession.sas, bridgeSession.sas);
  assert.deepEqual(ideSession.peerIdentity, await rawPublicKey(relayIdentity.publicKey));
  assert.deepEqual(bridgeSession.peerIdentity, await rawPublicKey(relayIdentity.publicKey));
  // The real bridge's signature is over another transcript: passing it on does not help the relay.
  await refused(IdeHandshake.verifyBridge(ideSession, signature), /does not verify/);
  // Without re-sealing, the relay cannot pass the IDE's frames through.
  await assert.rejects(bridgeSession.open(await sealed(ideSession, "cmd.start", "ls")), E2eError);
});

Deno.test("handshake: the commitment makes a relay choose its keys before it can know the other side's", async () => {
  const relayIdentity = await generateIdentity();
  // Towards the IDE: all the relay sees before it must answer is a pairing id and a hash.
  const ides = [];
  for (let i = 0; i < 3; i++) ides.push(await IdeHandshake.start(ideIdentity, PAIRING));
  for (const { hello } of ides) assert.deepEqual(Object.keys(hello).sort(), ["commitment", "pairingId"]);
  // Answered with one and the same reply, the IDEs end up with different SAS values: the IDE's
  // hidden ephemeral decides, so the relay cannot search for a reply that gives a SAS it wants.
  const { handshake: fakeBridge, reply } = await BridgeHandshake.respond(relayIdentity, PAIRING, wire(ides[0].hello));
  const finished = [];
  for (const ide of ides) finished.push(await ide.handshake.finish(wire(reply)));
  const ideSas = finished.map((f) => f.session.sas);
  assert.equal(new Set(ideSas).size, ideSas.length, ideSas.join(", "));
  // The relay learns that SAS only from the confirm, when its keys are long fixed.
  assert.equal((await fakeBridge.finish(wire(finished[0].confirm))).session.sas, ideSas[0]);

  // Towards the bridge: the relay's keys are fixed by its commitment before the bridge picks its
  // ephemeral, so the same relay hello answered several times gives SAS values the relay did not choose.
  const relay = await committedIde(relayIdentity);
  const bridgeSas = [];
  for (let i = 0; i < 3; i++) {
    const { handshake, reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(relay.hello));
    const { sas, confirm } = await relay.answer(reply);
    assert.equal((await handshake.finish(wire(confirm))).session.sas, sas);
    bridgeSas.push(sas);
  }
  assert.equal(new Set(bridgeSas).size, bridgeSas.length, bridgeSas.join(", "));
  // Having seen the bridge's keys, the relay cannot reveal keys other than those it committed to.
  const { handshake, reply: bridgeReply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(relay.hello));
  const later = await committedIde(relayIdentity);
  await refused(handshake.finish(wire((await later.answer(bridgeReply)).confirm)), /commitment/);
});

Deno.test("handshake: the bridge refuses a hello for another pairing id, and keys committed for one", async () => {
  const { hello } = await IdeHandshake.start(ideIdentity, "another-bridge");
  await refused(BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(hello)), /another pairing/);
  const { hello: good } = await IdeHandshake.start(ideIdentity, PAIRING);
  await refused(
    BridgeHandshake.respond(bridgeIdentity, PAIRING, { ...good, pairingId: `${PAIRING}x` }),
    /another pairing/,
  );
  // A hello for another bridge relabelled with this one's id: the commitment covers the pairing id.
  const { handshake: ideSide, hello: elsewhere } = await IdeHandshake.start(ideIdentity, "another-bridge");
  const { handshake: bridgeSide, reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, {
    ...elsewhere,
    pairingId: PAIRING,
  });
  const { confirm } = await ideSide.finish(wire(reply));
  await refused(bridgeSide.finish(wire(confirm)), /commitment/);
});

Deno.test("handshake: small-order and malformed X25519 keys are refused with E2eError", async () => {
  const zero = toBase64Url(new Uint8Array(32));
  const one = toBase64Url(Uint8Array.from({ length: 32 }, (_, i) => i === 0 ? 1 : 0));
  const malformed = [toBase64Url(new Uint8Array(31)), toBase64Url(new Uint8Array(33)), "not base64!", ""];
  // The bridge side: a small-order ephemeral the IDE (or a relay) committed to honestly, so the
  // commitment matches and the key itself is what fails.
  const ideKey = await rawPublicKey(ideIdentity.publicKey);
  for (const ephemeral of [zero, one]) {
    const commit = await commitment({
      pairingId: PAIRING,
      ideIdentity: ideKey,
      ideEphemeral: fromBase64Url(ephemeral),
    });
    const { handshake } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, {
      pairingId: PAIRING,
      commitment: toBase64Url(commit),
    });
    const confirm = { identity: toBase64Url(ideKey), ephemeral, signature: toBase64Url(new Uint8Array(64)) };
    await refused(handshake.finish(confirm), /ephemeral key is invalid/, ephemeral);
  }
  // Malformed keys in a confirm, and a malformed commitment in a hello.
  const { handshake: ideSide, hello } = await IdeHandshake.start(ideIdentity, PAIRING);
  const { handshake: bridgeSide, reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(hello));
  for (const key of malformed) {
    await refused(
      BridgeHandshake.respond(bridgeIdentity, PAIRING, { ...hello, commitment: key }),
      /Cannot read handshake/,
      `commitment ${key}`,
    );
  }
  // The IDE side: a reply carrying a small-order or malformed ephemeral.
  for (const ephemeral of [zero, one, ...malformed]) {
    await assert.rejects(ideSide.finish({ ...reply, ephemeral }), E2eError, ephemeral);
  }
  const { confirm } = await ideSide.finish(wire(reply));
  for (const ephemeral of malformed) {
    await refused(bridgeSide.finish({ ...confirm, ephemeral }), /Cannot read handshake/, `ephemeral ${ephemeral}`);
  }
  // The refusals spoiled neither side: the IDE finished above, and the bridge finishes now.
  assert.equal((await bridgeSide.finish(wire(confirm))).session.peerIdentity.byteLength, 32);
});

Deno.test("handshake: malformed bodies are refused with E2eError", async () => {
  const { handshake, hello } = await IdeHandshake.start(ideIdentity, PAIRING);
  const badHellos: unknown[] = [null, "hello", 42, [], {}, { ...hello, commitment: 7 }, { pairingId: PAIRING }];
  for (const body of badHellos) {
    await assert.rejects(BridgeHandshake.respond(bridgeIdentity, PAIRING, body), E2eError, JSON.stringify(body));
  }
  const { handshake: bridgeSide, reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(hello));
  const badReplies: unknown[] = [null, "reply", 42, [], {}, { ...reply, identity: 7 }, { identity: reply.identity }];
  for (const body of badReplies) await assert.rejects(handshake.finish(body), E2eError, JSON.stringify(body));
  const { confirm } = await handshake.finish(wire(reply));
  const badConfirms: unknown[] = [
    null,
    {},
    { signature: confirm.signature },
    { identity: confirm.identity, ephemeral: confirm.ephemeral },
    { ...confirm, signature: 1 },
    { ...confirm, signature: "" },
    { ...confirm, signature: "@@" },
    { ...confirm, signature: confirm.signature.slice(0, -2) },
  ];
  for (const body of badConfirms) await assert.rejects(bridgeSide.finish(body), E2eError, JSON.stringify(body));
});

Deno.test("handshake: E2eError closes with the end-to-end failure code", async () => {
  const err = await BridgeHandshake.respond(bridgeIdentity, PAIRING, null).catch((e) => e);
  assert.ok(err instanceof E2eError);
  assert.equal(err.closeCode, CloseCode.E2eFailure);
  assert.equal(err.reason, "e2e-failure");
});

// ---- Session ----------------------------------------------------------------

Deno.test("session: frames round-trip in order, both ways, with counters from 0", async () => {
  const { ideSession, bridgeSession } = await pair();
  // Seals issued together keep call order.
  const frames = await Promise.all(
    ["one", "two", "three"].map((text) => ideSession.seal({ t: "cmd.stdin", id: "a1", body: te.encode(text) })),
  );
  const decoded = frames.map((f) => decodeFrame(f));
  assert.deepEqual(decoded.map((f) => f.s), [0, 1, 2]);
  // Opens issued together also resolve in order.
  const opened = await Promise.all(decoded.map((f) => bridgeSession.open(f)));
  assert.deepEqual(opened.map((b) => td.decode(b)), ["one", "two", "three"]);
  // The other direction counts on its own, and empty and binary bodies survive.
  const empty = decodeFrame(await bridgeSession.seal({ t: "cmd.eof", id: "a1" }));
  assert.equal(empty.s, 0);
  assert.equal(empty.body.byteLength, 16);
  assert.equal((await ideSession.open(empty)).byteLength, 0);
  const binary = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff);
  const out = await ideSession.open(decodeFrame(await bridgeSession.seal({ t: "cmd.stdout", id: "a1", body: binary })));
  assert.deepEqual(out, binary);
});

Deno.test("session: the sealed e2e.* frames (info, approve) decode and open like commands", async () => {
  const { ideSession, bridgeSession } = await pair();
  const info = '{"name":"box","os":"linux","version":"0.1.0","approval":"needed"}';
  const infoFrame = decodeFrame(await bridgeSession.seal({ t: "e2e.info", r: 3, body: te.encode(info) }));
  assert.equal(infoFrame.t, "e2e.info");
  assert.equal(td.decode(await ideSession.open(infoFrame)), info);
  const approve = decodeFrame(await ideSession.seal({ t: "e2e.approve" }));
  assert.equal(approve.t, "e2e.approve");
  assert.equal((await bridgeSession.open(approve)).byteLength, 0);
  // An approve cannot be turned into a reject: the type is authenticated.
  const { ideSession: ide2, bridgeSession: bridge2 } = await pair();
  const approve2 = decodeFrame(await ide2.seal({ t: "e2e.approve" }));
  await assert.rejects(bridge2.open(edit(approve2, { t: "e2e.reject" })), E2eError);
});

Deno.test("session: a replayed frame throws E2eError", async () => {
  const { ideSession, bridgeSession } = await pair();
  const f = await sealed(ideSession, "cmd.start", "ls");
  assert.equal(td.decode(await bridgeSession.open(f)), "ls");
  await assert.rejects(bridgeSession.open(f), E2eError);
});

Deno.test("session: reordered or skipped frames throw E2eError", async () => {
  {
    const { ideSession, bridgeSession } = await pair();
    const first = await sealed(ideSession, "cmd.stdin", "1");
    const second = await sealed(ideSession, "cmd.stdin", "2");
    await assert.rejects(bridgeSession.open(second), E2eError);
    // A failure ends the session: the caller closes the socket and re-keys.
    await assert.rejects(bridgeSession.open(first), E2eError);
  }
  {
    const { ideSession, bridgeSession } = await pair();
    await sealed(ideSession, "cmd.stdin", "dropped by the relay");
    await assert.rejects(bridgeSession.open(await sealed(ideSession, "cmd.stdin", "next")), E2eError);
  }
  {
    const { ideSession, bridgeSession } = await pair();
    const f = await sealed(ideSession, "cmd.stdin", "x");
    await assert.rejects(bridgeSession.open(edit(f, { s: undefined })), E2eError);
  }
});

Deno.test("session: a flipped bit or a truncated body throws E2eError", async () => {
  const cases: [string, (body: Uint8Array) => Uint8Array][] = [
    ["first ciphertext bit", (b) => b.map((x, i) => i === 0 ? x ^ 1 : x)],
    ["last tag bit", (b) => b.map((x, i) => i === b.length - 1 ? x ^ 0x80 : x)],
    ["one byte short", (b) => b.slice(0, -1)],
    ["tag only", (b) => b.slice(-16)],
    ["ciphertext only", (b) => b.slice(0, -16)],
    ["empty", () => new Uint8Array(0)],
    ["one byte longer", (b) => Uint8Array.from([...b, 0])],
  ];
  for (const [name, change] of cases) {
    const { ideSession, bridgeSession } = await pair();
    const f = await sealed(ideSession, "cmd.stdin", "some input");
    await assert.rejects(bridgeSession.open(edit(f, { body: change(f.body.slice()) })), E2eError, name);
  }
});

Deno.test("session: an altered header (type, flags, id, s or q) throws E2eError", async () => {
  const cases: [string, Partial<Frame>][] = [
    ["type", { t: "cmd.stdin" }],
    ["id", { id: "b2" }],
    ["id removed", { id: undefined }],
    ["q", { q: 8 }],
    ["q removed (flag and field)", { q: undefined }],
  ];
  for (const [name, change] of cases) {
    const { ideSession, bridgeSession } = await pair();
    const f = await sealed(ideSession, "cmd.start", "ls", "a1", 7);
    await assert.rejects(bridgeSession.open(edit(f, change)), E2eError, name);
  }
  for (const [name, change] of [["id added", { id: "a1" }], ["q added", { q: 1 }]] as const) {
    const { ideSession, bridgeSession } = await pair();
    const f = await sealed(ideSession, "stream.close", "");
    await assert.rejects(bridgeSession.open(edit(f, change)), E2eError, name);
  }
  {
    // s relabelled to the counter the receiver expects next: the counter check passes, the nonce and AAD do not.
    const { ideSession, bridgeSession } = await pair();
    const f = await sealed(ideSession, "cmd.stdin", "once", "a1");
    await bridgeSession.open(f);
    await assert.rejects(bridgeSession.open(edit(f, { s: 1 })), E2eError, "s");
  }
  {
    // The flags: the s-present bit cleared on the first frame (s is 0, so no other byte changes).
    const { ideSession, bridgeSession } = await pair();
    const f = await sealed(ideSession, "e2e.approve", "");
    const cleared = edit(f, { s: undefined });
    assert.deepEqual(changedHeaderBytes(f.header, cleared.header), [2]);
    await assert.rejects(bridgeSession.open(cleared), E2eError, "flags");
  }
});

Deno.test("session: a change to any header byte but the route's keeps the frame from opening", async () => {
  const keys = await agreedKeys();
  const good = await new E2eSession(keys.ide, PEER).seal({ t: "cmd.stdin", id: "a1-b_2", q: 3, body: te.encode("in") });
  const refusedBy = { decoder: new Set<string>(), session: new Set<string>() };
  for (let i = 0; i < decodeFrame(good).header.byteLength; i++) {
    for (const bit of [0x01, 0x02, 0x80]) {
      const bytes = good.slice();
      bytes[i] ^= bit;
      const what = `byte ${i} (${headerField(i)}) ^ ${bit}`;
      // A fresh receiver on the same keys for each try: a failed open ends a session.
      const receiver = new E2eSession(keys.bridge, PEER);
      if (headerField(i) === "route") {
        assert.equal(td.decode(await receiver.open(decodeFrame(bytes))), "in", what);
        continue;
      }
      let frame: Frame;
      try {
        frame = decodeFrame(bytes);
      } catch (error) {
        assert.ok(error instanceof Coder1Error && !(error instanceof E2eError), what);
        refusedBy.decoder.add(headerField(i));
        continue;
      }
      await assert.rejects(receiver.open(frame), E2eError, what);
      refusedBy.session.add(headerField(i));
    }
  }
  // The decoder refuses what is malformed (another version, unknown flags, an s beyond 2^53, bad id
  // characters); every field it lets through is still covered by the counter check or the tag.
  assert.ok(refusedBy.decoder.has("version"));
  assert.deepEqual([...refusedBy.session].sort(), ["flags", "id", "id length", "q", "s", "type"]);
});

Deno.test("session: a frame sealed for one direction does not open in the other", async () => {
  const { ideSession, bridgeSession } = await pair();
  // Reflected to its sender: the IDE receives with the bridge->IDE key.
  await assert.rejects(ideSession.open(await sealed(ideSession, "cmd.start", "ls")), E2eError);
  await assert.rejects(bridgeSession.open(await sealed(bridgeSession, "cmd.stdout", "out")), E2eError);
});

Deno.test("session: the route is not authenticated (the relay re-stamps it in place)", async () => {
  const { ideSession, bridgeSession } = await pair();
  const up = await ideSession.seal({ t: "cmd.start", id: "a1", q: 1, body: te.encode("ls") });
  assert.equal(decodeFrame(up).r, undefined);
  // What the relay does to a frame from the IDE socket with route 12: stamps the route into the bytes.
  assert.equal(routeFrame(up, 12), "cmd.start");
  const stamped = decodeFrame(up);
  assert.equal(stamped.r, 12);
  assert.equal(td.decode(await bridgeSession.open(stamped)), "ls");
  // The bridge addresses its answer to route 12; the relay clears the route before the IDE gets it.
  const down = await bridgeSession.seal({ t: "cmd.stdout", r: 12, id: "a1", q: 1, body: te.encode("out") });
  assert.equal(decodeFrame(down).r, 12);
  routeFrame(down, 0);
  assert.equal(decodeFrame(down).r, undefined);
  assert.equal(td.decode(await ideSession.open(decodeFrame(down))), "out");
  // Any route at all: the associated data does not change with it.
  const again = await sealed(bridgeSession, "cmd.stdout", "more", "a1", 2);
  const moved = edit(again, { r: 0xffffffff });
  assert.equal(moved.r, 0xffffffff);
  assert.deepEqual(changedHeaderBytes(again.header, moved.header), [4, 5, 6, 7]);
  assert.deepEqual(headerAad(moved.header), headerAad(again.header));
  assert.equal(td.decode(await ideSession.open(moved)), "more");
});

Deno.test("session: a frame re-stamped onto another IDE route does not open in that route's session", async () => {
  // Two IDE tabs each have their own handshake; the relay re-stamping a frame onto the other tab's route fails.
  const tabA = await pair();
  const tabB = await pair();
  const bytes = await tabA.ideSession.seal({ t: "cmd.start", id: "a1", body: te.encode("ls") });
  routeFrame(bytes, 2);
  await assert.rejects(tabB.bridgeSession.open(decodeFrame(bytes)), E2eError);
});

Deno.test("handshake: each side finishes at most once (no second session reusing nonces)", async () => {
  const { handshake: ide, hello } = await IdeHandshake.start(ideIdentity, PAIRING);
  const { handshake: bridge, reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(hello));
  const { confirm } = await ide.finish(wire(reply));
  await refused(ide.finish(wire(reply)), /already finished/);
  const { reply: otherReply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(hello));
  await refused(ide.finish(wire(otherReply)), /already finished/);
  await bridge.finish(wire(confirm));
  await refused(bridge.finish(wire(confirm)), /already finished/);
  // Two finishes racing: exactly one gets a session.
  {
    const { handshake: ide, hello } = await IdeHandshake.start(ideIdentity, PAIRING);
    const { handshake: bridge, reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(hello));
    const ideRace = await Promise.allSettled([ide.finish(wire(reply)), ide.finish(wire(reply))]);
    assert.equal(ideRace.filter((r) => r.status === "fulfilled").length, 1);
    const { confirm } = (ideRace.find((r) => r.status === "fulfilled") as PromiseFulfilledResult<
      Awaited<ReturnType<IdeHandshake["finish"]>>
    >).value;
    const bridgeRace = await Promise.allSettled([bridge.finish(wire(confirm)), bridge.finish(wire(confirm))]);
    assert.equal(bridgeRace.filter((r) => r.status === "fulfilled").length, 1);
  }
});
