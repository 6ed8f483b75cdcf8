import assert from "node:assert/strict";
import { ManualClock } from "./clock.ts";
import { generateIdentity, rawPublicKey, toBase64Url } from "./e2e_crypto.ts";
import { BridgeHandshake, E2eError, type E2eSession, type HelloBody } from "./e2e_session.ts";
import { bodyBytes, decodeFrame, encodeFrame, type FrameInit } from "./frame_codec.ts";
import { type ApprovalRequest, type E2eState, HANDSHAKE_BACKOFF_BASE_MS, IdeE2e } from "./ide_e2e.ts";
import { MemoryPinStore } from "./pin_store.ts";
import { type E2eInfoBody, FrameType } from "./protocol.ts";

/** An IdeE2e on a manual clock with recording senders and listeners, and a bridge identity. */
async function setup(pinned: "bridge" | "other" | "none", revokeFails = false) {
  const clock = new ManualClock(0);
  const bridgeIdentity = await generateIdentity(false);
  const pins = new MemoryPinStore();
  if (pinned !== "none") {
    const key = await rawPublicKey((pinned === "bridge" ? bridgeIdentity : await generateIdentity(false)).publicKey);
    await pins.set("b1", toBase64Url(key));
  }
  const sent: FrameInit[] = [], sealed: FrameInit[] = [], revoked: string[] = [];
  const states: [E2eState, string | undefined][] = [];
  const approvals: ApprovalRequest[] = [];
  let trusted = 0;
  let wake: (() => void) | undefined;
  const e2e = new IdeE2e({
    pins,
    timers: clock,
    send: (frame) => (sent.push(frame), wake?.()),
    sendSealed: (frame) => (sealed.push(frame), Promise.resolve()),
    onTrusted: () => trusted++,
    revoke: (bridgeId) =>
      revokeFails ? Promise.reject(new Error("relay unreachable")) : (revoked.push(bridgeId), Promise.resolve()),
    onState: (state, detail) => states.push([state, detail]),
    onApproval: (request) => approvals.push(request),
  });
  /** Resolves with the next cleartext frame the IDE sends (the hello is made asynchronously). */
  const next = async (count: number): Promise<FrameInit> => {
    while (sent.length < count) await new Promise<void>((resolve) => (wake = resolve));
    return sent[count - 1];
  };
  return { clock, bridgeIdentity, pins, e2e, sent, sealed, revoked, states, approvals, next, trusted: () => trusted };
}

/** Plays the bridge: answers the hello and, if the IDE confirms, finishes with its confirm. */
async function handshake(t: Awaited<ReturnType<typeof setup>>, helloCount = 1) {
  const hello = await t.next(helloCount);
  assert.equal(hello.t, FrameType.E2eHello);
  const { handshake, reply } = await BridgeHandshake.respond(t.bridgeIdentity, "b1", hello.body as HelloBody);
  await t.e2e.onReply(decodeFrame(encodeFrame({ t: FrameType.E2eReply, body: reply })));
  return handshake;
}

async function finish(t: Awaited<ReturnType<typeof setup>>, handshake: BridgeHandshake) {
  const confirm = t.sent.at(-1)!;
  assert.equal(confirm.t, FrameType.E2eConfirm);
  const { session, signature } = await handshake.finish(confirm.body);
  return { session, signature };
}

/** The bridge sends a sealed e2e.info; the IDE opens it and acts on it. */
async function info(t: Awaited<ReturnType<typeof setup>>, session: E2eSession, body: E2eInfoBody): Promise<void> {
  const frame = decodeFrame(await session.seal({ t: FrameType.E2eInfo, body: bodyBytes(body) }));
  await t.e2e.onInfo(await t.e2e.open(frame));
}

const about = { name: "box", os: "linux", version: "0.3.0" };

Deno.test("IdeE2e: a first pairing asks for approval with the bridge's SAS; approving pins the key, the bridge's 'pinned' trusts it", async () => {
  const t = await setup("none");
  t.e2e.restart("b1");
  const { session, signature } = await finish(t, await handshake(t));
  await info(t, session, { ...about, approval: "needed", signature });
  assert.equal(t.e2e.state, "approval");
  const request = t.approvals[0];
  assert.equal(t.e2e.approval, request);
  assert.equal(request.sas, session.sas);
  assert.deepEqual([request.bridgeId, request.name, request.os], ["b1", "box", "linux"]);
  await request.approve();
  assert.equal(await t.pins.get("b1"), toBase64Url(await rawPublicKey(t.bridgeIdentity.publicKey)));
  assert.deepEqual(t.sealed.map((f) => f.t), [FrameType.E2eApprove]);
  assert.equal(t.e2e.state, "confirming");
  await assert.rejects(request.approve(), TypeError, "one answer per request");
  await info(t, session, { ...about, approval: "pinned", signature });
  assert.equal(t.trusted(), 1, "the stream may resume");
  t.e2e.resumed();
  assert.deepEqual(t.states.map(([s]) => s), ["handshaking", "approval", "confirming", "ready"]);
});

Deno.test("IdeE2e: rejecting tells the bridge and revokes it", async () => {
  const t = await setup("none");
  t.e2e.restart("b1");
  const { session, signature } = await finish(t, await handshake(t));
  await info(t, session, { ...about, approval: "needed", signature });
  await t.approvals[0].reject();
  assert.deepEqual(t.sealed.map((f) => f.t), [FrameType.E2eReject]);
  assert.deepEqual(t.states.at(-1), ["rejected", "rejected by the user"]);
  assert.deepEqual(t.revoked, ["b1"]);
  assert.equal(t.e2e.approval, undefined);
});

Deno.test("IdeE2e: a revocation that fails after Reject is reported, not swallowed", async () => {
  const t = await setup("none", true);
  t.e2e.restart("b1");
  const { session, signature } = await finish(t, await handshake(t));
  await info(t, session, { ...about, approval: "needed", signature });
  await assert.rejects(t.approvals[0].reject(), /relay unreachable/);
  assert.deepEqual(t.sealed.map((f) => f.t), [FrameType.E2eReject], "the bridge is still told");
});

Deno.test("IdeE2e: a bridge key other than the pinned one is refused, and the next handshake waits", async () => {
  const t = await setup("other");
  t.e2e.restart("b1");
  await handshake(t);
  assert.equal(t.e2e.state, "refused");
  assert.match(t.states.at(-1)![1]!, /presented identity .* not the approved/);
  assert.deepEqual(t.sent.map((f) => f.t), [FrameType.E2eHello], "no confirm");
  assert.equal(t.e2e.session, undefined);
  t.e2e.restart("b1");
  assert.deepEqual(t.clock.pending, [HANDSHAKE_BACKOFF_BASE_MS]);
  t.e2e.stop("socket closed");
  assert.deepEqual(t.clock.pending, [], "stopping cancels the wait");
  assert.deepEqual(t.states.at(-1), ["disconnected", "socket closed"]);
});

Deno.test("IdeE2e: an e2e.info whose signature does not verify is an end-to-end failure, and nothing is trusted", async () => {
  const t = await setup("bridge");
  t.e2e.restart("b1");
  const { session, signature } = await finish(t, await handshake(t));
  const forged = toBase64Url(new Uint8Array(64));
  await assert.rejects(info(t, session, { ...about, approval: "pinned", signature: forged }), E2eError);
  assert.equal(t.trusted(), 0);
  // Restarted before the bridge proved itself: that handshake counts as abandoned.
  t.e2e.restart("b1");
  assert.deepEqual(t.clock.pending, [HANDSHAKE_BACKOFF_BASE_MS]);
  t.clock.advance(HANDSHAKE_BACKOFF_BASE_MS);
  const again = await finish(t, await handshake(t, 3)); // Frames sent: hello, confirm, hello.
  await info(t, again.session, { ...about, approval: "pinned", signature: again.signature });
  assert.equal(t.trusted(), 1);
  assert.notEqual(signature, again.signature);
});
