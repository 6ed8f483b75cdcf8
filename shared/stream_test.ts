import assert from "node:assert/strict";
import { E2eError } from "./e2e_session.ts";
import { STREAM_FRAME_OVERHEAD } from "./protocol.ts";
import { FlowGate, type StreamFrame, StreamReceiver, StreamSender } from "./stream.ts";

const body = (n: number) => new Uint8Array(n);
const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

Deno.test("sender: numbers frames, keeps them until acknowledged, resends the rest in order on attach", async () => {
  const sender = new StreamSender(1 << 20);
  const first: StreamFrame[] = [];
  sender.attach((f) => Promise.resolve(void first.push(f)), 0);
  for (let i = 0; i < 5; i++) await sender.push({ t: "cmd.stdout", id: "a", body: body(10) });
  await tick();
  assert.deepEqual(first.map((f) => f.q), [1, 2, 3, 4, 5]);
  sender.ack(2);
  assert.equal(sender.unackedFrames, 3);
  sender.detach();
  await sender.push({ t: "cmd.exit", id: "a", body: body(2) }); // Buffered while away.
  const second: StreamFrame[] = [];
  sender.attach((f) => Promise.resolve(void second.push(f)), 3); // The peer had 3.
  await tick();
  assert.deepEqual(second.map((f) => [f.q, f.t]), [[4, "cmd.stdout"], [5, "cmd.stdout"], [6, "cmd.exit"]]);
});

Deno.test("sender: push waits while a window is unacknowledged, and goes on as acknowledgements arrive", async () => {
  const frame = 1000;
  const sender = new StreamSender(3 * (frame + STREAM_FRAME_OVERHEAD));
  sender.attach(() => Promise.resolve(), 0);
  await sender.push({ t: "cmd.stdout", body: body(frame) });
  await sender.push({ t: "cmd.stdout", body: body(frame) });
  let done = false;
  sender.push({ t: "cmd.stdout", body: body(frame) }).then(() => (done = true));
  await tick();
  assert.equal(done, false, "the window is full");
  sender.ack(1);
  await tick();
  assert.equal(done, true);
});

Deno.test("sender: an acknowledgement of frames never sent is an end-to-end failure", () => {
  const sender = new StreamSender();
  sender.push({ t: "cmd.stdout", body: body(1) });
  assert.throws(() => sender.ack(2), E2eError);
  assert.throws(() => sender.ack(-1), E2eError);
  assert.throws(() => sender.ack(1.5), E2eError);
  assert.throws(() => sender.attach(() => Promise.resolve(), 5), E2eError);
});

Deno.test("sender: frames queued for a connection that went away are not sent on it", async () => {
  const sender = new StreamSender();
  const old: number[] = [];
  let release!: () => void;
  const slow = new Promise<void>((r) => (release = r));
  sender.attach(async (f) => {
    await slow;
    old.push(f.q);
  }, 0);
  sender.push({ t: "cmd.stdout", body: body(1) });
  sender.push({ t: "cmd.stdout", body: body(1) });
  sender.detach();
  release();
  await tick();
  assert.deepEqual(old, [], "nothing not yet handed over goes to the old connection");
  const fresh: number[] = [];
  sender.attach((f) => Promise.resolve(void fresh.push(f.q)), 0);
  await tick();
  assert.deepEqual(fresh, [1, 2]);
});

Deno.test("receiver: delivers each number once and in order; refuses a gap; acknowledges cumulatively", async () => {
  const receiver = new StreamReceiver();
  const acks: number[] = [];
  receiver.setAckSender((n) => acks.push(n));
  const f = (q?: number) => ({ t: "cmd.stdout" as const, q, body: body(1) });
  assert.equal(receiver.accept(f(1)), true);
  assert.equal(receiver.accept(f(2)), true);
  assert.equal(receiver.accept(f(2)), false, "duplicate");
  assert.equal(receiver.accept(f(1)), false, "duplicate");
  assert.throws(() => receiver.accept(f(4)), E2eError);
  assert.throws(() => receiver.accept(f(undefined)), E2eError);
  assert.equal(receiver.received, 2);
  await tick(60);
  assert.deepEqual(acks, [2], "one acknowledgement after the delay, for everything so far");
  receiver.accept(f(3));
  receiver.setAckSender(undefined);
  await tick(60);
  assert.deepEqual(acks, [2], "no acknowledgement without a connection");
});

Deno.test("flow gate: sends wait while paused and leave in call order when resumed", async () => {
  const gate = new FlowGate();
  const out: number[] = [];
  const send = (n: number) => gate.send(() => Promise.resolve(void out.push(n)));
  await send(1);
  gate.pause();
  const a = send(2), b = send(3);
  await tick();
  assert.deepEqual(out, [1]);
  gate.resume();
  gate.pause();
  const c = send(4);
  await tick();
  gate.resume();
  await Promise.all([a, b, c]);
  assert.deepEqual(out, [1, 2, 3, 4]);
});

/** Whether `promise` has settled after pending microtasks and timers ran. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => (done = true), () => (done = true));
  await tick();
  return done;
}

Deno.test("sender: drained resolves at once with nothing unacknowledged, or without a connection", async () => {
  const sender = new StreamSender();
  await sender.drained(); // Never attached.
  sender.push({ t: "cmd.stdout", body: body(1) });
  assert.equal(await settled(sender.drained()), true, "detached: nobody is there to acknowledge");
  sender.attach(() => Promise.resolve(), 0);
  assert.equal(await settled(sender.drained()), false);
  sender.ack(1);
  assert.equal(await settled(sender.drained()), true);
});

Deno.test("sender: drained waits for what was pushed before it, not for frames pushed later", async () => {
  const sender = new StreamSender();
  sender.attach(() => Promise.resolve(), 0);
  sender.push({ t: "cmd.stdout", id: "a", body: body(10) });
  sender.push({ t: "cmd.exit", id: "a", body: body(2) });
  const drained = sender.drained();
  sender.push({ t: "cmd.stdout", id: "b", body: body(10) }); // After the call: not waited for.
  sender.ack(1);
  assert.equal(await settled(drained), false, "frame 2 is not acknowledged yet");
  sender.ack(2);
  assert.equal(await settled(drained), true);
  assert.equal(sender.unackedFrames, 1);
});

Deno.test("sender: drained resolves when the connection goes (detach or reset), acknowledged or not", async () => {
  const sender = new StreamSender();
  sender.attach(() => Promise.resolve(), 0);
  sender.push({ t: "cmd.exit", id: "a", body: body(2) });
  const first = sender.drained();
  assert.equal(await settled(first), false);
  sender.detach();
  assert.equal(await settled(first), true);
  assert.equal(sender.unackedFrames, 1, "still kept for the next connection");

  sender.attach(() => Promise.resolve(), 0);
  const second = sender.drained();
  sender.reset();
  assert.equal(await settled(second), true);
});
