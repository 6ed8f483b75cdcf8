import assert from "node:assert/strict";
import { ManualClock } from "./clock.ts";
import { E2eError } from "./e2e_session.ts";
import { decodeTermKeys } from "./frame_bodies.ts";
import { bodyBytes, type FrameInit } from "./frame_codec.ts";
import { IdeClientError } from "./ide_client_error.ts";
import { type Frame, FrameType, type FrameTypeName, TERMINAL_KEYS_BODY_BYTES } from "./protocol.ts";
import { RemoteTerminals, TERMINAL_INPUT_CHUNK_BYTES } from "./remote_terminals.ts";

/** What the terminals pushed into the stream, as plaintext frames. */
function recorder() {
  const sent: FrameInit[] = [];
  const terminals = new RemoteTerminals({
    push: (frame) => (sent.push(frame), Promise.resolve()),
    random: (b) => b.fill(7),
  });
  const body = (n: number) => JSON.parse(new TextDecoder().decode(bodyBytes(sent[n].body)));
  return { sent, terminals, body };
}

const frame = (t: FrameTypeName, id: string, body: FrameInit["body"] = new Uint8Array(0)): Frame => ({
  v: 4,
  t,
  id,
  q: 1,
  header: new Uint8Array(0),
  body: bodyBytes(body),
});

const snapshot = (cols = 80, rows = 24, title = "", data = "$ ") => ({ cols, rows, title, data });

Deno.test("RemoteTerminals: open sends term.open with a new id; snapshot, output, title and exit reach the terminal", async () => {
  const { sent, terminals, body } = recorder();
  const term = terminals.open({ cols: 100, rows: 30 });
  assert.match(term.id, /^t[A-Za-z0-9_-]{16}$/);
  assert.deepEqual([sent[0].t, sent[0].id], [FrameType.TermOpen, term.id]);
  assert.deepEqual(body(0), { cols: 100, rows: 30 });
  assert.equal(term.state, "attaching");
  const seen: string[] = [];
  term.onSnapshot((s) => seen.push(`snapshot ${s.cols}x${s.rows} ${JSON.stringify(s.data)}`));
  term.onData((b) => seen.push(`data ${new TextDecoder().decode(b)}`));
  term.onTitle((t) => seen.push(`title ${t}`));
  term.onExit((r) => seen.push(`exit ${r.code}`));
  terminals.receive(frame(FrameType.TermSnapshot, term.id, snapshot(100, 30, "zsh")));
  assert.deepEqual(await term.ready, snapshot(100, 30, "zsh"));
  assert.equal(term.state, "attached");
  terminals.receive(frame(FrameType.TermOutput, term.id, "ls\r\n"));
  terminals.receive(frame(FrameType.TermTitle, term.id, { title: "vim" }));
  terminals.receive(frame(FrameType.TermOutput, "t-other", "not ours")); // Skipped.
  terminals.receive(frame(FrameType.TermExit, term.id, { code: 0, signal: null }));
  assert.deepEqual(await term.exited, { code: 0, signal: null });
  assert.deepEqual(seen, ['snapshot 100x30 "$ "', "title zsh", "data ls\r\n", "title vim", "exit 0"]);
  assert.equal(term.title, "vim");
  assert.equal(term.state, "exited");
  // Typing into an exited terminal sends nothing; closing it lets the bridge forget it.
  await term.write("x");
  assert.equal(sent.length, 1);
  await term.close();
  assert.deepEqual(sent.map((f) => f.t), [FrameType.TermOpen, FrameType.TermClose]);
  assert.equal(terminals.size, 0);
  assert.throws(() => terminals.open({ cols: 1, rows: 24 }), RangeError);
});

Deno.test("RemoteTerminals: all input goes through input(), a large paste in several frames; resize and detach", async () => {
  const { sent, terminals, body } = recorder();
  const term = terminals.open({ cols: 80, rows: 24 });
  terminals.receive(frame(FrameType.TermSnapshot, term.id, snapshot()));
  const through: number[] = [];
  const input = terminals.input.bind(terminals);
  terminals.input = (t, data) => (through.push(data.byteLength), input(t, data));
  await term.write("ls\r");
  await term.write(new Uint8Array(TERMINAL_INPUT_CHUNK_BYTES * 2 + 5));
  assert.deepEqual(through, [3, TERMINAL_INPUT_CHUNK_BYTES * 2 + 5]);
  const inputs = sent.filter((f) => f.t === FrameType.TermInput).map((f) => bodyBytes(f.body).byteLength);
  assert.deepEqual(inputs, [3, TERMINAL_INPUT_CHUNK_BYTES, TERMINAL_INPUT_CHUNK_BYTES, 5]);
  await term.resize(120, 40);
  await term.resize(120, 40); // The same size again: nothing to say.
  assert.deepEqual(body(sent.length - 1), { cols: 120, rows: 40 });
  assert.equal(sent.filter((f) => f.t === FrameType.TermResize).length, 1);
  assert.throws(() => term.resize(80, 0), RangeError);
  await term.detach();
  assert.equal(sent.at(-1)!.t, FrameType.TermDetach);
  await assert.rejects(term.exited, (e: IdeClientError) => e.reason === "detached");
  terminals.receive(frame(FrameType.TermOutput, term.id, "late")); // Nobody listens any more.
  assert.equal(terminals.size, 0);
});

Deno.test("RemoteTerminals: close waits for the exit; a term.error fails the terminal with the bridge's reason", async () => {
  const { sent, terminals } = recorder();
  const a = terminals.open({ cols: 80, rows: 24 });
  terminals.receive(frame(FrameType.TermSnapshot, a.id, snapshot()));
  await a.close();
  assert.equal(a.state, "closing");
  assert.equal(sent.at(-1)!.t, FrameType.TermClose);
  terminals.receive(frame(FrameType.TermExit, a.id, { code: null, signal: "SIGHUP" }));
  assert.deepEqual(await a.exited, { code: null, signal: "SIGHUP" });
  assert.equal(terminals.size, 0);
  const b = terminals.open({ cols: 80, rows: 24 });
  terminals.receive(frame(FrameType.TermError, b.id, { reason: "limit", message: "16 terminals are running" }));
  await assert.rejects(b.ready, (e: IdeClientError) => e.reason === "limit" && /16 terminals/.test(e.message));
  await assert.rejects(b.exited, (e: IdeClientError) => e.reason === "limit");
  assert.equal(b.state, "failed");
  const refused = terminals.open(
    { cols: 80, rows: 24 },
    new IdeClientError("No bridge", { status: 0, reason: "no-bridge" }),
  );
  await assert.rejects(refused.ready, (e: IdeClientError) => e.reason === "no-bridge");
  assert.equal(sent.filter((f) => f.t === FrameType.TermOpen).length, 2, "a refused terminal sends nothing");
  const c = terminals.open({ cols: 80, rows: 24 });
  assert.throws(() => terminals.receive(frame(FrameType.TermSnapshot, c.id, { data: 1 })), E2eError);
});

Deno.test("RemoteTerminals: attach by id, list, and after a stream reset everything is asked for again", async () => {
  const { sent, terminals, body } = recorder();
  const term = terminals.attach("t-from-before", { cols: 90, rows: 20 });
  assert.deepEqual([sent[0].t, sent[0].id], [FrameType.TermAttach, "t-from-before"]);
  assert.deepEqual(body(0), { cols: 90, rows: 20 });
  assert.throws(() => terminals.attach("bad id!", { cols: 80, rows: 24 }), RangeError);
  terminals.receive(frame(FrameType.TermSnapshot, term.id, snapshot(90, 20, "", "old screen")));
  const listed = terminals.list();
  assert.deepEqual([sent[1].t, sent[1].id], [FrameType.TermList, "l1"]);
  assert.deepEqual(body(1), {});
  // The stream starts afresh (the bridge forgot it): the terminal is attached again, the list asked again.
  terminals.streamReset();
  assert.deepEqual(sent.slice(2).map((f) => [f.t, f.id]), [
    [FrameType.TermAttach, "t-from-before"],
    [FrameType.TermList, "l1"],
  ]);
  assert.equal(term.state, "attaching");
  const info = { id: "t-from-before", title: "", alive: true, cols: 90, rows: 20, created: 5, attached: 1 };
  terminals.receive(frame(FrameType.TermList, "l1", { terminals: [info] }));
  assert.deepEqual(await listed, [info]);
  const repaints: string[] = [];
  term.onSnapshot((s) => repaints.push(s.data));
  terminals.receive(frame(FrameType.TermSnapshot, term.id, snapshot(90, 20, "", "new screen")));
  assert.deepEqual(repaints, ["new screen"]);
  // A bridge that restarted no longer has it.
  terminals.streamReset();
  terminals.receive(frame(FrameType.TermError, term.id, { reason: "unknown-terminal", message: "no terminal" }));
  await assert.rejects(term.exited, (e: IdeClientError) => e.reason === "unknown-terminal");
  const failed = terminals.list();
  terminals.receive(frame(FrameType.TermError, "l2", { reason: "disabled", message: "--no-terminal" }));
  await assert.rejects(failed, (e: IdeClientError) => e.reason === "disabled");
  const pending = terminals.list();
  const open = terminals.open({ cols: 80, rows: 24 });
  terminals.close();
  await assert.rejects(pending, (e: IdeClientError) => e.reason === "closed");
  await assert.rejects(open.exited, (e: IdeClientError) => e.reason === "closed");
});

Deno.test("RemoteTerminals: with a bridge that takes term.keys, typing leaves in equal frames on a grid; pastes at once", async () => {
  const clock = new ManualClock(0);
  const sent: { at: number; frame: FrameInit }[] = [];
  let accepted = true;
  const terminals = new RemoteTerminals({
    push: (frame) => (sent.push({ at: clock.now(), frame }), Promise.resolve()),
    random: (b) => b.fill(0),
    clock,
    keysAccepted: () => accepted,
  });
  assert.equal(terminals.pacing, true);
  const term = terminals.open({ cols: 80, rows: 24 });
  terminals.receive(frame(FrameType.TermSnapshot, term.id, snapshot()));
  for (const [at, key] of [[3, "p"], [9, "w"], [41, "d"], [70, "\r"]] as const) {
    clock.advance(at - clock.now());
    void term.write(key);
  }
  const paste = "x".repeat(500);
  void term.write(paste);
  clock.advance(5_000);
  const keys = sent.filter((s) => s.frame.t === FrameType.TermKeys);
  assert.ok(keys.every((s, i) => s.frame.id === term.id && s.at === 3 + 20 * i), "one every 20 ms from the first key");
  assert.deepEqual(new Set(keys.map((s) => bodyBytes(s.frame.body).byteLength)), new Set([TERMINAL_KEYS_BODY_BYTES]));
  const typed = keys.map((s) => new TextDecoder().decode(decodeTermKeys(bodyBytes(s.frame.body))));
  // The "\r" typed at 70 was waiting for the tick at 83 when the paste came: it went first, with the paste.
  assert.deepEqual(typed.filter((t) => t), ["p", "w", "d"]);
  assert.ok(typed.filter((t) => !t).length > 40, "chaff for a second after the last key");
  const inputs = sent.filter((s) => s.frame.t === FrameType.TermInput);
  assert.deepEqual(inputs.map((s) => [s.at, new TextDecoder().decode(bodyBytes(s.frame.body))]), [[70, `\r${paste}`]]);
  assert.deepEqual(terminals.keystrokeStats, { keys: 3, chaff: typed.length - 3, bulk: 1 });
  // Turned off mid-burst: what waits goes now, unpadded, and typing is no longer paced.
  void term.write("a");
  clock.advance(1);
  void term.write("b");
  terminals.setObscureKeystrokes(false);
  assert.equal(terminals.pacing, false);
  void term.write("c");
  clock.advance(5_000);
  assert.deepEqual(
    sent.slice(-3).map((s) => [s.frame.t, new TextDecoder().decode(bodyBytes(s.frame.body).subarray(0, 2))]),
    [[FrameType.TermKeys, "\0\x01"], [FrameType.TermInput, "b"], [FrameType.TermInput, "c"]],
  );
  // On again, but the bridge does not take term.keys (an older one, or none ready): unpaced.
  terminals.setObscureKeystrokes(true);
  accepted = false;
  void term.write("d");
  assert.equal(sent.at(-1)!.frame.t, FrameType.TermInput);
  // A detach sends what waits first.
  accepted = true;
  void term.write("e");
  clock.advance(100);
  void term.write("f");
  await term.detach();
  assert.deepEqual(sent.slice(-2).map((s) => s.frame.t), [FrameType.TermKeys, FrameType.TermDetach]);
  assert.equal(new TextDecoder().decode(decodeTermKeys(bodyBytes(sent.at(-2)!.frame.body))), "f");
  const before = sent.length;
  clock.advance(5_000);
  assert.equal(sent.length, before, "no chaff for a detached terminal");
  assert.deepEqual(clock.pending, []);
});
