/**
 * The synchronous AES-256-GCM path (shared/node_aead.ts, used by the Deno
 * processes for small bodies) against the known-answer vectors, and sessions
 * where one side seals on its own thread and the other through WebCrypto:
 * they interoperate, keep frames in order when small and large bodies mix,
 * and refuse tampered, replayed and skipped frames the same way.
 */
import assert from "node:assert/strict";
import vectors from "./e2e_vectors.json" with { type: "json" };
import {
  deriveSessionKeys,
  generateEphemeral,
  generateIdentity,
  rawPublicKey,
  type SessionKeys,
  SYNC_AEAD_MAX_BYTES,
  transcript,
  useSyncAead,
} from "./e2e_crypto.ts";
import { E2eError, E2eSession } from "./e2e_session.ts";
import { decodeFrame } from "./frame_codec.ts";
import { nodeAead } from "./node_aead.ts";

const hex = (s: string) => new Uint8Array(s.match(/../g)?.map((b) => parseInt(b, 16)) ?? []);
const toHex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
const te = new TextEncoder();
const td = new TextDecoder();

Deno.test("node AEAD: seals every frame vector to the same bytes as WebCrypto did, and opens it", () => {
  for (const f of vectors.frames) {
    const key = hex(f.direction === "ide->bridge" ? vectors.keyMaterial.ideToBridge : vectors.keyMaterial.bridgeToIde);
    const body = "bodyHex" in f && typeof f.bodyHex === "string" ? hex(f.bodyHex) : te.encode(f.bodyText ?? "");
    const sealed = nodeAead.seal(key, hex(f.nonce), hex(f.aad), body);
    assert.equal(toHex(sealed), f.sealedBody, f.name);
    assert.deepEqual(nodeAead.open(key, hex(f.nonce), hex(f.aad), sealed), body, f.name);
    // One flipped bit anywhere (body, tag, associated data, nonce) and it does not open.
    const flipped = sealed.slice();
    flipped[flipped.byteLength - 1] ^= 1;
    assert.throws(() => nodeAead.open(key, hex(f.nonce), hex(f.aad), flipped), f.name);
    const aad = hex(f.aad);
    aad[1] ^= 1;
    assert.throws(() => nodeAead.open(key, hex(f.nonce), aad, sealed), f.name);
    const nonce = hex(f.nonce);
    nonce[11] ^= 1;
    assert.throws(() => nodeAead.open(key, nonce, hex(f.aad), sealed), f.name);
  }
  assert.throws(() => nodeAead.open(new Uint8Array(32), new Uint8Array(12), new Uint8Array(0), new Uint8Array(15)));
});

/** One key exchange; `syncIde` / `syncBridge`: whether that side derives with the synchronous AEAD in use. */
async function sessions(syncIde: boolean, syncBridge: boolean): Promise<{ ide: E2eSession; bridge: E2eSession }> {
  const identity = await rawPublicKey((await generateIdentity()).publicKey);
  const a = await generateEphemeral();
  const b = await generateEphemeral();
  const ideEphemeral = await rawPublicKey(a.publicKey);
  const bridgeEphemeral = await rawPublicKey(b.publicKey);
  const t = transcript({
    pairingId: "p",
    ideIdentity: identity,
    ideEphemeral,
    bridgeIdentity: identity,
    bridgeEphemeral,
  });
  const derive = async (sync: boolean, f: () => Promise<SessionKeys>) => {
    useSyncAead(sync ? nodeAead : undefined);
    const keys = await f();
    assert.equal(keys.raw !== undefined, sync, "raw key bytes only where the synchronous AEAD is in use");
    return keys;
  };
  const ide = await derive(syncIde, () => deriveSessionKeys("ide", a.privateKey, bridgeEphemeral, t));
  const bridge = await derive(syncBridge, () => deriveSessionKeys("bridge", b.privateKey, ideEphemeral, t));
  useSyncAead(nodeAead);
  return { ide: new E2eSession(ide, identity), bridge: new E2eSession(bridge, identity) };
}

Deno.test("node AEAD: a synchronous side and a WebCrypto side talk both ways, small and large bodies mixed, in order", async () => {
  try {
    for (const [syncIde, syncBridge] of [[true, false], [false, true], [true, true]]) {
      const { ide, bridge } = await sessions(syncIde, syncBridge);
      for (const [from, to] of [[ide, bridge], [bridge, ide]]) {
        // Small (synchronous), large (WebCrypto), then small ones queued behind it, all at once.
        const bodies = ["b", "a".repeat(SYNC_AEAD_MAX_BYTES * 64), "c".repeat(SYNC_AEAD_MAX_BYTES), "d"];
        const frames = await Promise.all(
          bodies.map((body) => from.seal({ t: "cmd.stdin", id: "1", body: te.encode(body) })),
        );
        const decoded = frames.map((bytes) => decodeFrame(bytes));
        assert.deepEqual(decoded.map((f) => f.s), decoded.map((_, i) => decoded[0].s! + i), "counters in call order");
        const opened = await Promise.all(decoded.map((f) => to.open(f)));
        assert.deepEqual(opened.map((b) => td.decode(b)), bodies);
      }
    }
  } finally {
    useSyncAead(undefined);
  }
});

Deno.test("node AEAD: on the synchronous path a tampered, replayed or skipped small frame throws E2eError", async () => {
  try {
    const { ide, bridge } = await sessions(true, true);
    const first = decodeFrame(await ide.seal({ t: "term.input", id: "t1", body: te.encode("x") }));
    const tampered = decodeFrame(await ide.seal({ t: "term.input", id: "t1", body: te.encode("y") }));
    tampered.body[0] ^= 1;
    assert.equal(td.decode(await bridge.open(first)), "x");
    await assert.rejects(bridge.open(tampered), E2eError);
    const { ide: ide2, bridge: bridge2 } = await sessions(true, true);
    await ide2.seal({ t: "term.input", id: "t1", body: te.encode("1") }); // Never delivered.
    const two = decodeFrame(await ide2.seal({ t: "term.input", id: "t1", body: te.encode("2") }));
    await assert.rejects(bridge2.open(two), /sequence 1, expected 0/);
    const { ide: ide3, bridge: bridge3 } = await sessions(true, true);
    const once = decodeFrame(await ide3.seal({ t: "term.input", id: "t1", body: te.encode("1") }));
    await bridge3.open(once);
    await assert.rejects(bridge3.open(once), /sequence 0, expected 1/);
  } finally {
    useSyncAead(undefined);
  }
});
