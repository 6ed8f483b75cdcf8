import assert from "node:assert/strict";
import { generateIdentity, rawPublicKey, signTranscript, toBase64Url, transcript } from "./e2e_crypto.ts";
import {
  BridgeHandshake,
  type ConfirmBody,
  type E2eChannel,
  E2eError,
  type HelloBody,
  IdeHandshake,
  type ReplyBody,
} from "./e2e_session.ts";
import { decodeFrame, encodeFrame, withChannel } from "./frame_codec.ts";
import { CloseCode, type Frame } from "./protocol.ts";

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

/** Runs a whole handshake between two identities; returns both channels and the bodies exchanged. */
async function pair(ide = ideIdentity, bridge = bridgeIdentity, pairingId = PAIRING) {
  const { handshake: ideSide, hello } = await IdeHandshake.start(ide, pairingId);
  const { handshake: bridgeSide, reply } = await BridgeHandshake.respond(bridge, pairingId, wire(hello));
  const { channel: ideChannel, confirm } = await ideSide.finish(wire(reply));
  const bridgeChannel = await bridgeSide.finish(wire(confirm));
  return { ideChannel, bridgeChannel, hello, reply, confirm };
}

/** What a relay could compute from the cleartext handshake: the transcript hash. */
async function transcriptHash(hello: HelloBody, reply: ReplyBody): Promise<Uint8Array> {
  const b = (s: string) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const t = transcript({
    pairingId: hello.pairingId,
    ideIdentity: b(hello.identity),
    ideEphemeral: b(hello.ephemeral),
    bridgeIdentity: b(reply.identity),
    bridgeEphemeral: b(reply.ephemeral),
  });
  return new Uint8Array(await crypto.subtle.digest("SHA-256", t as BufferSource));
}

/** A fresh raw X25519 public key (base64url), as a relay would substitute it. */
async function otherEphemeral(): Promise<string> {
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]) as CryptoKeyPair;
  return toBase64Url(await rawPublicKey(pair.publicKey));
}

/** Re-encodes a frame with changed header fields and/or body. */
function edit(frame: Frame, change: Partial<Frame>): Frame {
  const f = { ...frame, ...change };
  return decodeFrame(encodeFrame({ t: f.t, c: f.c, id: f.id, s: f.s, body: f.body }));
}

async function sealed(channel: E2eChannel, t: string, body: string, id?: string): Promise<Frame> {
  return decodeFrame(await channel.seal({ t, id, body: te.encode(body) }));
}

// ---- Handshake ------------------------------------------------------------

Deno.test("handshake: IDE and bridge agree on the SAS and learn each other's identity", async () => {
  const { ideChannel, bridgeChannel, hello, reply, confirm } = await pair();
  assert.match(ideChannel.sas, /^\d{3} \d{3}$/);
  assert.equal(ideChannel.sas, bridgeChannel.sas);
  assert.deepEqual(ideChannel.peerIdentity, await rawPublicKey(bridgeIdentity.publicKey));
  assert.deepEqual(bridgeChannel.peerIdentity, await rawPublicKey(ideIdentity.publicKey));
  assert.equal(hello.pairingId, PAIRING);
  assert.deepEqual(Object.keys(hello).sort(), ["ephemeral", "identity", "pairingId"]);
  assert.deepEqual(Object.keys(reply).sort(), ["ephemeral", "identity", "signature"]);
  assert.deepEqual(Object.keys(confirm), ["signature"]);
  // Keys work both ways.
  assert.equal(td.decode(await bridgeChannel.open(await sealed(ideChannel, "cmd.start", "up"))), "up");
  assert.equal(td.decode(await ideChannel.open(await sealed(bridgeChannel, "cmd.stdout", "down"))), "down");
});

Deno.test("handshake: every run uses fresh ephemerals, so the keys and SAS change", async () => {
  const a = await pair();
  const b = await pair();
  assert.notEqual(a.hello.ephemeral, b.hello.ephemeral);
  assert.notEqual(a.reply.ephemeral, b.reply.ephemeral);
  // A frame from one session does not open in the other.
  await assert.rejects(b.bridgeChannel.open(await sealed(a.ideChannel, "cmd.start", "x")), E2eError);
});

Deno.test("handshake: the IDE rejects a reply whose signature covers another transcript", async () => {
  // A relay swaps the bridge's ephemeral key in the reply (to hold the other end of the DH itself).
  const { handshake, hello } = await IdeHandshake.start(ideIdentity, PAIRING);
  const { reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(hello));
  await assert.rejects(handshake.finish({ ...reply, ephemeral: await otherEphemeral() }), E2eError);
  // A relay swaps the IDE's ephemeral key in the hello: the bridge signs a transcript the IDE never had.
  {
    const { handshake, hello } = await IdeHandshake.start(ideIdentity, PAIRING);
    const { reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, {
      ...hello,
      ephemeral: await otherEphemeral(),
    });
    await assert.rejects(handshake.finish(wire(reply)), E2eError);
  }
  // Another identity presented with the real bridge's signature.
  const mallory = await generateIdentity();
  const malloryKey = toBase64Url(await rawPublicKey(mallory.publicKey));
  await assert.rejects(handshake.finish({ ...reply, identity: malloryKey }), E2eError);
  // A signature over the right transcript but with the IDE's role label (a reflected confirm) is no bridge signature.
  const reflectedReply = { ...reply, identity: hello.identity };
  const ideSigned = await signTranscript("ide", ideIdentity.privateKey, await transcriptHash(hello, reflectedReply));
  await assert.rejects(handshake.finish({ ...reflectedReply, signature: toBase64Url(ideSigned) }), E2eError);
  // The untouched reply still finishes: the rejections were about the changes.
  const { channel } = await handshake.finish(wire(reply));
  assert.deepEqual(channel.peerIdentity, await rawPublicKey(bridgeIdentity.publicKey));
});

Deno.test("handshake: the bridge rejects a confirm signed by a different identity", async () => {
  const { hello, handshake: ideSide } = await IdeHandshake.start(ideIdentity, PAIRING);
  const { handshake, reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(hello));
  const hash = await transcriptHash(hello, reply);
  const mallory = await generateIdentity();
  const forged: ConfirmBody = { signature: toBase64Url(await signTranscript("ide", mallory.privateKey, hash)) };
  await assert.rejects(handshake.finish(wire(forged)), E2eError);
  // Nor does the bridge accept its own signature reflected back, or a signature with the wrong role label.
  await assert.rejects(handshake.finish({ signature: reply.signature }), E2eError);
  const wrongRole = await signTranscript("bridge", ideIdentity.privateKey, hash);
  await assert.rejects(handshake.finish({ signature: toBase64Url(wrongRole) }), E2eError);
  // The genuine confirm is accepted.
  const { confirm } = await ideSide.finish(wire(reply));
  const channel = await handshake.finish(wire(confirm));
  assert.deepEqual(channel.peerIdentity, await rawPublicKey(ideIdentity.publicKey));
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
  const { channel: ideChannel, confirm } = await ideSide.finish(wire(fakeReply));
  const relayToIde = await fakeBridge.finish(wire(confirm));
  // Relay posing as the IDE <-> bridge.
  const { handshake: fakeIde, hello: fakeHello } = await IdeHandshake.start(relayIdentity, PAIRING);
  const { handshake: bridgeSide, reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(fakeHello));
  const { channel: relayToBridge, confirm: fakeConfirm } = await fakeIde.finish(wire(reply));
  const bridgeChannel = await bridgeSide.finish(wire(fakeConfirm));
  // Each half agrees with the relay, but the two people comparing screens see different codes
  // (equal only by a one-in-a-million coincidence) and the relay's identity, not their peer's.
  assert.equal(ideChannel.sas, relayToIde.sas);
  assert.equal(bridgeChannel.sas, relayToBridge.sas);
  assert.notEqual(ideChannel.sas, bridgeChannel.sas);
  assert.deepEqual(ideChannel.peerIdentity, await rawPublicKey(relayIdentity.publicKey));
  assert.deepEqual(bridgeChannel.peerIdentity, await rawPublicKey(relayIdentity.publicKey));
  // Without re-sealing, the relay cannot pass the IDE's frames through.
  await assert.rejects(bridgeChannel.open(await sealed(ideChannel, "cmd.start", "ls")), E2eError);
});

Deno.test("handshake: the bridge rejects a hello for another pairing id", async () => {
  const { hello } = await IdeHandshake.start(ideIdentity, "another-bridge");
  await assert.rejects(BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(hello)), E2eError);
  const { hello: good } = await IdeHandshake.start(ideIdentity, PAIRING);
  await assert.rejects(
    BridgeHandshake.respond(bridgeIdentity, PAIRING, { ...good, pairingId: `${PAIRING}x` }),
    E2eError,
  );
});

Deno.test("handshake: small-order and malformed X25519 keys are rejected with E2eError", async () => {
  const zero = toBase64Url(new Uint8Array(32));
  const one = toBase64Url(Uint8Array.from({ length: 32 }, (_, i) => i === 0 ? 1 : 0));
  const { hello } = await IdeHandshake.start(ideIdentity, PAIRING);
  for (
    const ephemeral of [zero, one, toBase64Url(new Uint8Array(31)), toBase64Url(new Uint8Array(33)), "not base64!"]
  ) {
    await assert.rejects(
      BridgeHandshake.respond(bridgeIdentity, PAIRING, { ...hello, ephemeral }),
      E2eError,
      ephemeral,
    );
  }
  // The IDE side: a reply carrying a small-order ephemeral (no honest bridge signs one, but it must fail cleanly).
  const { handshake, hello: ideHello } = await IdeHandshake.start(ideIdentity, PAIRING);
  const { reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(ideHello));
  for (const ephemeral of [zero, one]) {
    await assert.rejects(handshake.finish({ ...reply, ephemeral }), E2eError, ephemeral);
  }
});

Deno.test("handshake: malformed bodies are rejected with E2eError", async () => {
  const { handshake, hello } = await IdeHandshake.start(ideIdentity, PAIRING);
  const bad: unknown[] = [null, "hello", 42, [], {}, { ...hello, identity: 7 }, { identity: hello.identity }];
  for (const body of bad) {
    await assert.rejects(BridgeHandshake.respond(bridgeIdentity, PAIRING, body), E2eError, JSON.stringify(body));
    await assert.rejects(handshake.finish(body), E2eError, JSON.stringify(body));
  }
  const { handshake: bridgeSide, reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(hello));
  await assert.rejects(handshake.finish({ ...reply, signature: reply.signature.slice(0, -2) }), E2eError);
  for (const body of [null, {}, { signature: 1 }, { signature: "" }, { signature: "@@" }]) {
    await assert.rejects(bridgeSide.finish(body), E2eError, JSON.stringify(body));
  }
});

Deno.test("handshake: E2eError closes with the end-to-end failure code", async () => {
  const err = await BridgeHandshake.respond(bridgeIdentity, PAIRING, null).catch((e) => e);
  assert.ok(err instanceof E2eError);
  assert.equal(err.closeCode, CloseCode.E2eFailure);
  assert.equal(err.reason, "e2e-failure");
});

// ---- Channel ----------------------------------------------------------------

Deno.test("channel: frames round-trip in order, both ways, with counters from 0", async () => {
  const { ideChannel, bridgeChannel } = await pair();
  // Seals issued together keep call order.
  const frames = await Promise.all(
    ["one", "two", "three"].map((text) => ideChannel.seal({ t: "cmd.stdin", id: "a1", body: te.encode(text) })),
  );
  const decoded = frames.map(decodeFrame);
  assert.deepEqual(decoded.map((f) => f.s), [0, 1, 2]);
  // Opens issued together also resolve in order.
  const opened = await Promise.all(decoded.map((f) => bridgeChannel.open(f)));
  assert.deepEqual(opened.map((b) => td.decode(b)), ["one", "two", "three"]);
  // The other direction counts on its own, and empty and binary bodies survive.
  const empty = decodeFrame(await bridgeChannel.seal({ t: "cmd.eof", id: "a1" }));
  assert.equal(empty.s, 0);
  assert.equal(empty.body.byteLength, 16);
  assert.equal((await ideChannel.open(empty)).byteLength, 0);
  const binary = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff);
  const out = await ideChannel.open(decodeFrame(await bridgeChannel.seal({ t: "cmd.stdout", id: "a1", body: binary })));
  assert.deepEqual(out, binary);
});

Deno.test("channel: the sealed e2e.* frames (info, approve) decode and open like commands", async () => {
  const { ideChannel, bridgeChannel } = await pair();
  const info = '{"name":"box","os":"linux","version":"0.1.0","approval":"needed"}';
  const infoFrame = decodeFrame(await bridgeChannel.seal({ t: "e2e.info", c: 3, body: te.encode(info) }));
  assert.equal(infoFrame.t, "e2e.info");
  assert.equal(td.decode(await ideChannel.open(infoFrame)), info);
  const approve = decodeFrame(await ideChannel.seal({ t: "e2e.approve" }));
  assert.equal(approve.t, "e2e.approve");
  assert.equal((await bridgeChannel.open(approve)).byteLength, 0);
  // An approve cannot be turned into a reject: the type is authenticated.
  const { ideChannel: ide2, bridgeChannel: bridge2 } = await pair();
  const approve2 = decodeFrame(await ide2.seal({ t: "e2e.approve" }));
  await assert.rejects(bridge2.open(edit(approve2, { t: "e2e.reject" })), E2eError);
});

Deno.test("channel: a replayed frame throws E2eError", async () => {
  const { ideChannel, bridgeChannel } = await pair();
  const f = await sealed(ideChannel, "cmd.start", "ls");
  assert.equal(td.decode(await bridgeChannel.open(f)), "ls");
  await assert.rejects(bridgeChannel.open(f), E2eError);
});

Deno.test("channel: reordered or skipped frames throw E2eError", async () => {
  {
    const { ideChannel, bridgeChannel } = await pair();
    const first = await sealed(ideChannel, "cmd.stdin", "1");
    const second = await sealed(ideChannel, "cmd.stdin", "2");
    await assert.rejects(bridgeChannel.open(second), E2eError);
    // A failure ends the channel: the caller closes the socket and re-keys.
    await assert.rejects(bridgeChannel.open(first), E2eError);
  }
  {
    const { ideChannel, bridgeChannel } = await pair();
    await sealed(ideChannel, "cmd.stdin", "dropped by the relay");
    await assert.rejects(bridgeChannel.open(await sealed(ideChannel, "cmd.stdin", "next")), E2eError);
  }
  {
    const { ideChannel, bridgeChannel } = await pair();
    const f = await sealed(ideChannel, "cmd.stdin", "x");
    await assert.rejects(bridgeChannel.open(edit(f, { s: undefined })), E2eError);
  }
});

Deno.test("channel: a flipped bit or a truncated body throws E2eError", async () => {
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
    const { ideChannel, bridgeChannel } = await pair();
    const f = await sealed(ideChannel, "cmd.stdin", "some input");
    await assert.rejects(bridgeChannel.open(edit(f, { body: change(f.body.slice()) })), E2eError, name);
  }
});

Deno.test("channel: an altered header (t, id or s) throws E2eError", async () => {
  const cases: [string, Partial<Frame>][] = [
    ["t", { t: "cmd.stdin" }],
    ["id", { id: "b2" }],
    ["id removed", { id: undefined }],
  ];
  for (const [name, change] of cases) {
    const { ideChannel, bridgeChannel } = await pair();
    const f = await sealed(ideChannel, "cmd.start", "ls", "a1");
    await assert.rejects(bridgeChannel.open(edit(f, change)), E2eError, name);
  }
  {
    const { ideChannel, bridgeChannel } = await pair();
    const f = await sealed(ideChannel, "cmd.eof", "");
    await assert.rejects(bridgeChannel.open(edit(f, { id: "a1" })), E2eError, "id added");
  }
  {
    // s relabelled to the counter the receiver expects next: the counter check passes, the nonce and AAD do not.
    const { ideChannel, bridgeChannel } = await pair();
    const f = await sealed(ideChannel, "cmd.stdin", "once", "a1");
    await bridgeChannel.open(f);
    await assert.rejects(bridgeChannel.open(edit(f, { s: 1 })), E2eError, "s");
  }
});

Deno.test("channel: a frame sealed for one direction does not open in the other", async () => {
  const { ideChannel, bridgeChannel } = await pair();
  // Reflected to its sender: the IDE receives with the bridge->IDE key.
  await assert.rejects(ideChannel.open(await sealed(ideChannel, "cmd.start", "ls")), E2eError);
  await assert.rejects(bridgeChannel.open(await sealed(bridgeChannel, "cmd.stdout", "out")), E2eError);
});

Deno.test("channel: the channel number c is not authenticated (the relay stamps and removes it)", async () => {
  const { ideChannel, bridgeChannel } = await pair();
  const up = decodeFrame(await ideChannel.seal({ t: "cmd.start", id: "a1", body: te.encode("ls") }));
  assert.equal(up.c, undefined);
  const stamped = decodeFrame(withChannel(up, 12));
  assert.equal(stamped.c, 12);
  assert.equal(td.decode(await bridgeChannel.open(stamped)), "ls");
  const down = decodeFrame(await bridgeChannel.seal({ t: "cmd.stdout", c: 12, id: "a1", body: te.encode("out") }));
  assert.equal(down.c, 12);
  assert.equal(td.decode(await ideChannel.open(decodeFrame(withChannel(down, undefined)))), "out");
  const again = decodeFrame(await bridgeChannel.seal({ t: "cmd.stdout", c: 12, id: "a1", body: te.encode("more") }));
  assert.equal(td.decode(await ideChannel.open(edit(again, { c: 99 }))), "more");
});

Deno.test("channel: a frame moved to another IDE channel's session does not open", async () => {
  // Two IDE tabs each have their own handshake; the relay re-stamping a frame onto the other tab's c fails.
  const tabA = await pair();
  const tabB = await pair();
  const f = await sealed(tabA.ideChannel, "cmd.start", "ls");
  await assert.rejects(tabB.bridgeChannel.open(decodeFrame(withChannel(f, 2))), E2eError);
});

Deno.test("handshake: each side finishes at most once (no second channel reusing nonces)", async () => {
  const { handshake: ide, hello } = await IdeHandshake.start(ideIdentity, PAIRING);
  const { handshake: bridge, reply } = await BridgeHandshake.respond(bridgeIdentity, PAIRING, wire(hello));
  const { confirm } = await ide.finish(wire(reply));
  await assert.rejects(ide.finish(wire(reply)), E2eError);
  await bridge.finish(wire(confirm));
  await assert.rejects(bridge.finish(wire(confirm)), E2eError);
});
