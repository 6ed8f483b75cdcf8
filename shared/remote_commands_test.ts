import assert from "node:assert/strict";
import { ManualClock } from "./clock.ts";
import { E2eError } from "./e2e_session.ts";
import { bodyBytes, type FrameInit } from "./frame_codec.ts";
import { IdeClientError } from "./ide_client_error.ts";
import { type Frame, FrameType } from "./protocol.ts";
import { RemoteCommands, type SealedSender } from "./remote_commands.ts";

/** What the commands sent, in plaintext (the sealing is the IDE client's). */
function recorder() {
  const sent: (FrameInit & { q?: number })[] = [];
  const send: SealedSender = (frame) => (sent.push(frame), Promise.resolve());
  /** Lets the stream's send chain run (promise jobs only, no timers) until `n` frames went out. */
  const until = async (n: number) => {
    for (let i = 0; i < 100 && sent.length < n; i++) await Promise.resolve();
    assert.equal(sent.length, n);
  };
  return { sent, send, until };
}

const bytes = (body: FrameInit["body"]) => bodyBytes(body);
const frame = (t: Frame["t"], q: number, id: string, body: FrameInit["body"] = new Uint8Array(0)): Frame => ({
  v: 4,
  t,
  q,
  id,
  header: new Uint8Array(0),
  body: bytes(body),
});

/** A table on a manual clock whose stream resumed with a bridge that knows it. */
function resumed(options: { resumeTimeoutMs?: number } = {}) {
  const clock = new ManualClock(0);
  let ready = 0;
  const commands = new RemoteCommands({ timers: clock, onResumed: () => ready++, ...options });
  const wire = recorder();
  commands.requestResume(wire.send);
  const request = wire.sent.shift()!;
  assert.equal(request.t, FrameType.StreamResume);
  const stream = (request.body as { stream: string }).stream;
  commands.resume(bytes({ stream, received: 0, known: true }), wire.send);
  assert.equal(ready, 1);
  return { clock, commands, wire, stream, ready: () => ready };
}

Deno.test("RemoteCommands: cmd.start is numbered into the stream; output arrives once, in order, for its command", async () => {
  const { commands, wire } = resumed();
  const out: string[] = [];
  const cmd = commands.run("echo hi", { cwd: "src", onStdout: (b) => out.push(new TextDecoder().decode(b)) });
  await wire.until(1);
  assert.deepEqual(wire.sent.map((f) => [f.t, f.id, f.q]), [[FrameType.CmdStart, "c1", 1]]);
  assert.deepEqual(JSON.parse(new TextDecoder().decode(wire.sent[0].body as Uint8Array)), {
    command: "echo hi",
    cwd: "src",
  });
  commands.receive(frame(FrameType.CmdStdout, 1, "c1", "hi\n"));
  commands.receive(frame(FrameType.CmdStdout, 1, "c1", "hi\n")); // Resent after a reconnect: dropped.
  commands.receive(frame(FrameType.CmdStderr, 2, "c9", "?")); // Not a command of ours: skipped.
  commands.receive(frame(FrameType.CmdExit, 3, "c1", { code: 0, signal: null, durationMs: 1 }));
  assert.deepEqual(await cmd.exited, { code: 0, signal: null, durationMs: 1 });
  assert.deepEqual(out, ["hi\n"]);
  assert.equal(commands.size, 0);
  assert.throws(() => commands.receive(frame(FrameType.CmdStdout, 5, "c1")), E2eError, "a gap is refused");
  commands.suspend(); // Stops the receiver's acknowledgement timer.
});

Deno.test("RemoteCommands: cmd.error rejects with the bridge's reason; a refusal rejects at once", async () => {
  const { commands } = resumed();
  const busy = commands.run("true");
  commands.receive(frame(FrameType.CmdError, 1, "c1", { reason: "busy", message: "too many commands" }));
  await assert.rejects(busy.exited, (e: IdeClientError) => e.reason === "busy" && e.message === "too many commands");
  const refused = commands.run(
    "true",
    {},
    new IdeClientError("No bridge is connected", { status: 0, reason: "no-bridge" }),
  );
  await assert.rejects(refused.exited, (e: IdeClientError) => e.reason === "no-bridge");
  assert.equal(refused.id, "c2");
  assert.equal(commands.size, 0);
  commands.suspend(); // Stops the receiver's acknowledgement timer.
});

Deno.test("RemoteCommands: suspended commands fail with bridge-lost when the resume timeout passes on the clock", async () => {
  const { clock, commands, wire, stream } = resumed({ resumeTimeoutMs: 30_000 });
  let suspended = 0;
  const cmd = commands.run("sleep 60", { onSuspended: () => suspended++ });
  commands.suspend();
  commands.suspend(); // A second status while away: one notice, one timer.
  assert.equal(suspended, 1);
  assert.deepEqual(clock.pending, [30_000]);
  clock.advance(29_999);
  assert.equal(commands.size, 1);
  clock.advance(1);
  await assert.rejects(cmd.exited, (e: IdeClientError) => e.reason === "bridge-lost" && /30 s/.test(e.message));
  // A bridge that still has the old stream must run nothing more of it: a new stream id, numbering from 1.
  wire.sent.length = 0;
  commands.requestResume(wire.send);
  const body = wire.sent[0].body as { stream: string; received: number };
  assert.notEqual(body.stream, stream);
  assert.equal(body.received, 0);
});

Deno.test("RemoteCommands: resumed in time, the timer is cancelled, unacknowledged frames go again, callbacks say so", async () => {
  const { clock, commands, wire, stream, ready } = resumed({ resumeTimeoutMs: 30_000 });
  const events: string[] = [];
  const cmd = commands.run("cat", {
    onSuspended: () => events.push("suspended"),
    onResumed: () => events.push("resumed"),
  });
  await cmd.write("a");
  commands.suspend();
  await cmd.write("b"); // Kept for the next connection.
  clock.advance(20_000);
  wire.sent.length = 0;
  commands.resume(bytes({ stream, received: 1, known: true }), wire.send); // The bridge had cmd.start.
  await wire.until(2);
  assert.deepEqual(wire.sent.map((f) => [f.t, f.q]), [[FrameType.CmdStdin, 2], [FrameType.CmdStdin, 3]]);
  assert.deepEqual(events, ["suspended", "resumed"]);
  assert.equal(ready(), 2);
  assert.deepEqual(clock.pending, []);
  assert.throws(() => commands.resume(bytes({ stream: "x".repeat(22), received: 0 }), wire.send), E2eError);
});

Deno.test("RemoteCommands: a bridge that no longer knows the stream fails what ran there and starts numbering afresh", async () => {
  const { commands, wire, stream } = resumed();
  const cmd = commands.run("make");
  commands.suspend();
  wire.sent.length = 0;
  commands.resume(bytes({ stream, received: 0, known: false }), wire.send);
  await assert.rejects(cmd.exited, (e: IdeClientError) => e.reason === "bridge-lost" && /restarted/.test(e.message));
  const next = commands.run("true");
  await wire.until(1);
  assert.deepEqual(wire.sent.map((f) => [f.t, f.id, f.q]), [[FrameType.CmdStart, next.id, 1]]);
  commands.close();
  await assert.rejects(next.exited, (e: IdeClientError) => e.reason === "closed");
});

Deno.test("RemoteCommands: terminal frames share the stream: pushed in its numbering, handed over once, told of resets", async () => {
  const clock = new ManualClock(0);
  const others: Frame[] = [];
  let resets = 0;
  const commands = new RemoteCommands({
    timers: clock,
    resumeTimeoutMs: 30_000,
    onStreamFrame: (f) => others.push(f),
    onStreamReset: () => {
      resets++;
      // What is pushed now goes out once the stream resumes.
      void commands.push({ t: FrameType.TermAttach, id: "t1", body: { cols: 80, rows: 24 } });
    },
  });
  const wire = recorder();
  commands.requestResume(wire.send);
  const stream = (wire.sent.shift()!.body as { stream: string }).stream;
  commands.resume(bytes({ stream, received: 0, known: true }), wire.send);
  const cmd = commands.run("true");
  await commands.push({ t: FrameType.TermOpen, id: "t1", body: { cols: 80, rows: 24 } });
  await wire.until(2);
  assert.deepEqual(wire.sent.map((f) => [f.t, f.q]), [[FrameType.CmdStart, 1], [FrameType.TermOpen, 2]]);
  commands.receive(frame(FrameType.TermSnapshot, 1, "t1", { cols: 80, rows: 24, title: "", data: "" }));
  commands.receive(frame(FrameType.TermOutput, 2, "t1", "hi"));
  commands.receive(frame(FrameType.TermOutput, 2, "t1", "hi")); // Resent: dropped.
  commands.receive(frame(FrameType.CmdExit, 3, cmd.id, { code: 0, signal: null, durationMs: 1 }));
  assert.deepEqual(others.map((f) => [f.t, f.q]), [[FrameType.TermSnapshot, 1], [FrameType.TermOutput, 2]]);
  await cmd.exited;
  // The bridge no longer knows the stream: a reset, and the re-attach goes out as frame 1 of the new numbering.
  commands.suspend();
  wire.sent.length = 0;
  commands.resume(bytes({ stream, received: 0, known: false }), wire.send);
  assert.equal(resets, 1);
  await wire.until(1);
  assert.deepEqual(wire.sent.map((f) => [f.t, f.id, f.q]), [[FrameType.TermAttach, "t1", 1]]);
  // The resume timeout with a command pending: the stream is reset too.
  const slow = commands.run("sleep 60");
  commands.suspend();
  clock.advance(30_000);
  await assert.rejects(slow.exited);
  assert.equal(resets, 2);
  commands.close();
});
