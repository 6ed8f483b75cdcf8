import assert from "node:assert/strict";
import { ManualClock } from "../shared/clock.ts";
import {
  decodeTermError,
  decodeTermExit,
  decodeTermList,
  decodeTermSnapshot,
  decodeTermTitle,
  encodeTermKeys,
} from "../shared/frame_bodies.ts";
import { bodyBytes, decodeFrame, encodeFrame, type FrameInit } from "../shared/frame_codec.ts";
import { FrameType, type FrameTypeName, TERMINAL_LINGER_MS } from "../shared/protocol.ts";
import { type StreamFrame, StreamSender } from "../shared/stream.ts";
import type { FrameSender } from "./command_manager.ts";
import { KILL_GRACE_MS } from "./command_manager.ts";
import type { PtyProcess, PtySpawner, PtySpawnOptions } from "./pty_types.ts";
import type { ProcessExit } from "./shell_runner.ts";
import { TERMINAL_STALL_MS, TerminalManager, type TerminalManagerOptions } from "./terminal_manager.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/**
 * A process in a fake pseudo-terminal: what is typed is echoed (as a
 * terminal in cooked mode does), `emit` is the program writing, and the
 * program's output is only produced when read (a pull source with no
 * buffer), so a test can see when the manager stops reading.
 */
class FakePty implements PtyProcess {
  readonly pid: number;
  readonly output: ReadableStream<Uint8Array>;
  readonly exited: Promise<ProcessExit>;
  typed: string[] = [];
  sizes: [number, number][] = [];
  signals: string[] = [];
  /** Output the program still has to write; it writes one chunk per read. */
  backlog: Uint8Array[] = [];
  /** Chunks the manager has read. */
  reads = 0;
  /** When false, a hangup does not end the program (it ignores SIGHUP). */
  diesOnHangup = true;
  #pull?: () => void;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #exit = Promise.withResolvers<ProcessExit>();
  #ended = false;

  constructor(pid: number) {
    this.pid = pid;
    this.exited = this.#exit.promise;
    this.output = new ReadableStream<Uint8Array>({
      start: (c) => void (this.#controller = c),
      pull: () => {
        const chunk = this.backlog.shift();
        if (chunk) {
          this.reads++;
          this.#controller.enqueue(chunk);
          return;
        }
        if (this.#ended) return this.#controller.close();
        // Nothing to write yet: the read waits for emit().
        return new Promise<void>((resolve) => (this.#pull = resolve));
      },
    }, { highWaterMark: 0 });
  }

  /** The program writes `text` (seen by the next read). */
  emit(text: string | Uint8Array): void {
    this.backlog.push(typeof text === "string" ? enc(text) : text);
    const pull = this.#pull;
    this.#pull = undefined;
    if (pull) {
      const chunk = this.backlog.shift()!;
      this.reads++;
      this.#controller.enqueue(chunk);
      pull();
    }
  }

  write(data: Uint8Array): Promise<void> {
    this.typed.push(dec(data));
    this.emit(data.slice());
    return Promise.resolve();
  }

  resize(cols: number, rows: number): void {
    this.sizes.push([cols, rows]);
  }

  kill(signal: Deno.Signal): void {
    this.signals.push(signal);
    if (signal === "SIGKILL") this.end(null, "SIGKILL");
  }

  close(): void {
    this.signals.push("SIGHUP");
    if (this.diesOnHangup) this.end(null, "SIGHUP");
  }

  /** The shell ends: once what it wrote is read the terminal closes, and it is reaped. */
  end(code: number | null, signal: string | null = null): void {
    if (this.#ended) return;
    this.#ended = true;
    const pull = this.#pull;
    this.#pull = undefined;
    if (pull) {
      this.#controller.close();
      pull();
    }
    this.#exit.resolve({ code, signal });
  }
}

class FakeSpawner implements PtySpawner {
  spawned: PtySpawnOptions[] = [];
  ptys: FakePty[] = [];
  fail?: string;

  spawn(options: PtySpawnOptions): PtyProcess {
    if (this.fail) throw new Error(this.fail);
    this.spawned.push(options);
    const pty = new FakePty(1000 + this.ptys.length);
    this.ptys.push(pty);
    return pty;
  }
}

/** Stream `handle` as the bridge keeps it: a real sender (window, acks), its frames recorded as pushed. */
interface TestStream {
  sender: StreamSender;
  frames: StreamFrame[];
}

function setup(options: Partial<TerminalManagerOptions> = {}) {
  const clock = new ManualClock(1_700_000_000_000);
  const spawner = new FakeSpawner();
  const streams = new Map<number, TestStream>();
  let wake: (() => void)[] = [];
  const guard = { added: [] as number[], removed: [] as number[] };
  const send: FrameSender = (f) => {
    const s = streams.get(f.handle);
    if (!s) return Promise.resolve();
    const frame = { t: f.t, id: f.id, body: bodyBytes(f.body) };
    // Recorded as numbered into the stream (the transport sends later, in a promise chain).
    s.frames.push({ ...frame, q: s.sender.nextSeq });
    for (const w of wake.splice(0)) w();
    return s.sender.push(frame);
  };
  const manager = new TerminalManager({
    spawner,
    root: "/work/project",
    shell: "/bin/zsh",
    env: { PATH: "/usr/bin:/bin", HOME: "/home/u" },
    send,
    clock,
    guard: { add: (p) => guard.added.push(p), remove: (p) => guard.removed.push(p) },
    maxTerminals: 2,
    ...options,
  });
  /** Opens stream `handle` with a window of `window` bytes, attached (its frames are recorded). */
  const stream = (handle: number, window = 1 << 20): TestStream => {
    const s: TestStream = { sender: new StreamSender(window), frames: [] };
    s.sender.attach(() => Promise.resolve(), 0);
    streams.set(handle, s);
    return s;
  };
  const request = (handle: number, t: FrameTypeName, id: string, body?: FrameInit["body"]) =>
    manager.handle(handle, decodeFrame(encodeFrame({ t, id, body })));
  /** Frames of `type` stream `handle` got, oldest first. */
  const got = (handle: number, type: FrameTypeName) => streams.get(handle)!.frames.filter((f) => f.t === type);
  /** Waits (without timers of its own) until `predicate` holds, woken by every frame sent. */
  const until = async (predicate: () => boolean, what = "condition") => {
    for (let i = 0; i < 2000 && !predicate(); i++) {
      // Frames wake it; the emulator parses on the real event loop, so a turn of it wakes it too.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1);
        wake.push(() => (clearTimeout(timer), resolve()));
      });
    }
    assert.ok(predicate(), `timed out waiting for ${what}`);
  };
  /** Everything `handle` got as term.output for `id`, as text. */
  const output = (handle: number, id = "t1") =>
    got(handle, FrameType.TermOutput).filter((f) => f.id === id).map((f) => dec(f.body)).join("");
  const cleanup = async () => {
    // Every IDE has everything (nothing waits for room), and every program ends.
    for (const s of streams.values()) if (s.sender.nextSeq > 1) s.sender.ack(s.sender.nextSeq - 1);
    for (const pty of spawner.ptys) pty.end(0);
    await manager.stopAll();
    wake = [];
  };
  return { clock, spawner, manager, guard, stream, request, got, until, output, cleanup };
}

Deno.test("TerminalManager: term.open starts the login shell in the root with TERM set, paints, then echoes input", async () => {
  const h = setup();
  h.stream(1);
  h.request(1, FrameType.TermOpen, "t1", { cols: 100, rows: 30 });
  const [spawned] = h.spawner.spawned;
  assert.deepEqual(spawned, {
    file: "/bin/zsh",
    args: ["-l"],
    cwd: "/work/project",
    env: { PATH: "/usr/bin:/bin", HOME: "/home/u", TERM: "xterm-256color" },
    cols: 100,
    rows: 30,
  });
  assert.deepEqual(h.guard.added, [1000]);
  await h.until(() => h.got(1, FrameType.TermSnapshot).length === 1, "the first snapshot");
  const snap = decodeTermSnapshot(h.got(1, FrameType.TermSnapshot)[0].body);
  assert.deepEqual([snap.cols, snap.rows, snap.title], [100, 30, ""]);
  h.request(1, FrameType.TermInput, "t1", enc("echo hi\r"));
  await h.until(() => h.output(1) === "echo hi\r", "the echo");
  assert.deepEqual(h.spawner.ptys[0].typed, ["echo hi\r"]);
  // The snapshot came first, then the output, numbered in the stream.
  const frames = [...h.got(1, FrameType.TermSnapshot), ...h.got(1, FrameType.TermOutput)];
  assert.deepEqual(frames.map((f) => f.q), [1, 2]);
  assert.equal(h.manager.support, "available");
  await h.cleanup();
});

Deno.test("TerminalManager: term.keys is input once unpadded; chaff does nothing at all, wherever it goes", async () => {
  const h = setup();
  h.stream(1);
  h.request(1, FrameType.TermOpen, "t1", { cols: 80, rows: 24 });
  await h.until(() => h.got(1, FrameType.TermSnapshot).length === 1, "the first snapshot");
  h.request(1, FrameType.TermKeys, "t1", encodeTermKeys(enc("l")));
  h.request(1, FrameType.TermKeys, "t1", encodeTermKeys(new Uint8Array(0))); // Chaff.
  h.request(1, FrameType.TermInput, "t1", enc("s -la")); // A paste between keystrokes keeps its place.
  h.request(1, FrameType.TermKeys, "t1", encodeTermKeys(enc("\r")));
  await h.until(() => h.output(1) === "ls -la\r", "the echo");
  assert.deepEqual(h.spawner.ptys[0].typed, ["l", "s -la", "\r"], "chaff was never written");
  const sent = h.got(1, FrameType.TermSnapshot).length + h.got(1, FrameType.TermOutput).length;
  // Chaff for a terminal the bridge does not have (it ended meanwhile) gets no unknown-terminal error.
  h.request(1, FrameType.TermKeys, "gone", encodeTermKeys(new Uint8Array(0)));
  h.request(1, FrameType.TermKeys, "gone", encodeTermKeys(enc("x")));
  assert.deepEqual(h.got(1, FrameType.TermError).map((f) => [f.id, decodeTermError(f.body).reason]), [
    ["gone", "unknown-terminal"],
  ]);
  // A body whose length runs past its end is a bad request.
  h.request(1, FrameType.TermKeys, "t1", new Uint8Array([0, 9, 1, 2]));
  assert.equal(decodeTermError(h.got(1, FrameType.TermError)[1].body).reason, "bad-request");
  assert.equal(h.got(1, FrameType.TermSnapshot).length + h.got(1, FrameType.TermOutput).length, sent);
  // With terminals off, chaff is not answered either (keystrokes are, like any request).
  const off = setup({ spawner: undefined, unavailable: { reason: "disabled", message: "started with --no-terminal" } });
  off.stream(1);
  off.request(1, FrameType.TermKeys, "t1", encodeTermKeys(new Uint8Array(0)));
  assert.equal(off.got(1, FrameType.TermError).length, 0);
  off.request(1, FrameType.TermKeys, "t1", encodeTermKeys(enc("x")));
  assert.equal(decodeTermError(off.got(1, FrameType.TermError)[0].body).reason, "disabled");
  await h.cleanup();
});

Deno.test("TerminalManager: the limit, bad sizes, duplicate and unknown ids get a term.error each", async () => {
  const h = setup();
  h.stream(1);
  const error = (n: number) => decodeTermError(h.got(1, FrameType.TermError)[n].body);
  h.request(1, FrameType.TermOpen, "a", { cols: 80, rows: 24 });
  h.request(1, FrameType.TermOpen, "b", { cols: 80, rows: 24 });
  h.request(1, FrameType.TermOpen, "c", { cols: 80, rows: 24 });
  assert.equal(error(0).reason, "limit");
  assert.match(error(0).message, /limit is 2/);
  h.request(1, FrameType.TermOpen, "a", { cols: 80, rows: 24 });
  assert.equal(error(1).reason, "bad-request");
  h.request(1, FrameType.TermOpen, "d", { cols: 1, rows: 24 });
  assert.equal(error(2).reason, "bad-request");
  h.request(1, FrameType.TermAttach, "nope", { cols: 80, rows: 24 });
  h.request(1, FrameType.TermInput, "nope", enc("x"));
  h.request(1, FrameType.TermClose, "nope");
  assert.deepEqual([3, 4, 5].map((n) => error(n).reason), ["unknown-terminal", "unknown-terminal", "unknown-terminal"]);
  h.request(1, FrameType.TermDetach, "nope"); // Nothing to say.
  assert.equal(h.got(1, FrameType.TermError).length, 6);
  // An exited terminal no longer counts against the limit.
  h.spawner.ptys[0].end(0);
  await h.until(() => h.got(1, FrameType.TermExit).length === 1, "the exit");
  h.request(1, FrameType.TermOpen, "e", { cols: 80, rows: 24 });
  assert.equal(h.spawner.spawned.length, 3);
  h.spawner.fail = "no ptys left";
  h.request(1, FrameType.TermClose, "a"); // Forgets the exited one.
  h.request(1, FrameType.TermClose, "b");
  await h.until(() => h.manager.running === 1, "b ended");
  h.request(1, FrameType.TermOpen, "f", { cols: 80, rows: 24 });
  assert.equal(error(6).reason, "spawn-failed");
  assert.match(error(6).message, /no ptys left/);
  await h.cleanup();
});

Deno.test("TerminalManager: a second stream attaches, sees the screen so far, and takes the terminal's size", async () => {
  const h = setup();
  h.stream(1);
  h.stream(2);
  h.request(1, FrameType.TermOpen, "t1", { cols: 80, rows: 24 });
  const pty = h.spawner.ptys[0];
  pty.emit("\x1b]2;my shell\x07$ ls\r\nREADME.md\r\n$ ");
  await h.until(() => h.output(1).includes("README"), "output on stream 1");
  await h.until(() => h.got(1, FrameType.TermTitle).length === 1, "the title");
  assert.equal(decodeTermTitle(h.got(1, FrameType.TermTitle)[0].body).title, "my shell");
  h.request(2, FrameType.TermAttach, "t1", { cols: 120, rows: 40 });
  assert.deepEqual(pty.sizes, [[120, 40]]);
  await h.until(() => h.got(2, FrameType.TermSnapshot).length === 1, "stream 2's snapshot");
  const snap = decodeTermSnapshot(h.got(2, FrameType.TermSnapshot)[0].body);
  assert.deepEqual([snap.cols, snap.rows, snap.title], [120, 40, "my shell"]);
  assert.ok(snap.data.includes("README.md"), snap.data);
  assert.equal(h.output(2), "", "what the snapshot holds is not sent again");
  pty.emit("live");
  await h.until(() => h.output(2) === "live" && h.output(1).endsWith("live"), "live output on both");
  h.request(1, FrameType.TermList, "l1", {});
  const list = decodeTermList(h.got(1, FrameType.TermList)[0].body);
  assert.equal(h.got(1, FrameType.TermList)[0].id, "l1");
  assert.deepEqual(list.terminals, [{
    id: "t1",
    title: "my shell",
    alive: true,
    cols: 120,
    rows: 40,
    created: 1_700_000_000_000,
    attached: 2,
  }]);
  h.request(2, FrameType.TermDetach, "t1");
  pty.emit("+more");
  await h.until(() => h.output(1).endsWith("+more"), "more output on stream 1");
  assert.equal(h.output(2), "live", "a detached stream gets nothing more");
  assert.deepEqual(h.clock.pending, [], "no linger while a stream is attached");
  await h.cleanup();
});

Deno.test("TerminalManager: with two pages attached, the program gets one answer to each terminal query", async () => {
  const h = setup();
  h.stream(1);
  h.stream(2);
  h.request(1, FrameType.TermOpen, "t1", { cols: 80, rows: 24 });
  const pty = h.spawner.ptys[0];
  const da = "\x1b[?1;2c", cpr = "\x1b[5;1R";
  // Alone, a page's answers always go through.
  h.request(1, FrameType.TermInput, "t1", enc(da));
  h.request(2, FrameType.TermAttach, "t1", { cols: 80, rows: 24 });
  await h.until(() => h.got(2, FrameType.TermSnapshot).length === 1, "stream 2's snapshot");
  // The program asks (`ESC [ c`); both pages' terminals answer: one answer reaches it.
  h.request(2, FrameType.TermInput, "t1", enc(da));
  h.request(1, FrameType.TermInput, "t1", enc(da));
  // Typing in page 2 makes it the one that answers; page 1's answers are dropped, its typing is not.
  h.request(2, FrameType.TermInput, "t1", enc("x"));
  h.request(1, FrameType.TermInput, "t1", enc(cpr));
  h.request(2, FrameType.TermInput, "t1", enc(cpr));
  h.request(1, FrameType.TermKeys, "t1", encodeTermKeys(enc("y")));
  // Paced: page 1 typed last, so its answer counts now (term.keys carries answers too).
  h.request(2, FrameType.TermInput, "t1", enc(da));
  h.request(1, FrameType.TermKeys, "t1", encodeTermKeys(enc(da)));
  // Page 1 leaves: page 2 alone answers again.
  h.request(1, FrameType.TermDetach, "t1");
  h.request(2, FrameType.TermInput, "t1", enc(cpr));
  await h.until(() => pty.typed.join("").endsWith(cpr), "the last answer");
  assert.deepEqual(pty.typed, [da, da, "x", cpr, "y", da, cpr]);
  await h.cleanup();
});

Deno.test("TerminalManager: output read while a snapshot is taken follows it, none lost or doubled", async () => {
  const h = setup();
  h.stream(1);
  h.stream(2);
  h.request(1, FrameType.TermOpen, "t1", { cols: 80, rows: 24 });
  const pty = h.spawner.ptys[0];
  let expected = "";
  for (let i = 0; i < 50; i++) {
    const line = `line ${i}\r\n`;
    expected += line;
    pty.emit(line);
    if (i === 20) h.request(2, FrameType.TermAttach, "t1", { cols: 80, rows: 24 });
  }
  await h.until(() => h.output(1) === expected, "all output on stream 1");
  await h.until(() => h.output(2).endsWith("line 49\r\n"), "all output on stream 2");
  const snap = decodeTermSnapshot(h.got(2, FrameType.TermSnapshot)[0].body).data;
  // Whatever the snapshot holds, the output after it continues exactly where it stops.
  // deno-lint-ignore no-control-regex -- the snapshot's escape sequences are left out
  const last = Number(/line (\d+)\s*$/.exec(snap.replace(/\x1b\[[^a-zA-Z]*[a-zA-Z]/g, ""))?.[1] ?? -1);
  assert.equal(h.output(2), expected.slice(expected.indexOf(`line ${last + 1}\r\n`)));
  await h.cleanup();
});

Deno.test("TerminalManager: a terminal nobody is attached to runs on, and is hung up after the linger time", async () => {
  const h = setup({ lingerMs: 60_000 });
  h.stream(1);
  h.stream(2);
  h.request(1, FrameType.TermOpen, "t1", { cols: 80, rows: 24 });
  const pty = h.spawner.ptys[0];
  h.request(1, FrameType.TermDetach, "t1");
  assert.deepEqual(h.clock.pending, [60_000]);
  h.clock.advance(59_999);
  h.request(2, FrameType.TermAttach, "t1", { cols: 80, rows: 24 }); // Back in time: the linger stops.
  assert.deepEqual(h.clock.pending, []);
  h.clock.advance(10 * 60_000);
  assert.deepEqual(pty.signals, []);
  // Stream 2 is forgotten (its IDE stayed away): it detaches, and the linger starts again.
  h.manager.closeStream(2);
  assert.deepEqual(h.clock.pending, [60_000]);
  h.clock.advance(60_000);
  assert.deepEqual(pty.signals, ["SIGHUP"]);
  await h.until(() => h.manager.size === 0, "the terminal forgotten");
  assert.deepEqual(h.guard.removed, [1000]);
  h.request(1, FrameType.TermList, "l", {});
  assert.deepEqual(decodeTermList(h.got(1, FrameType.TermList)[0].body).terminals, []);
  assert.equal(TERMINAL_LINGER_MS, 24 * 60 * 60_000);
  await h.cleanup();
});

Deno.test("TerminalManager: term.exit when the shell ends; an exited terminal is kept for attached streams only", async () => {
  const h = setup();
  h.stream(1);
  h.stream(2);
  h.request(1, FrameType.TermOpen, "t1", { cols: 80, rows: 24 });
  const pty = h.spawner.ptys[0];
  pty.emit("bye\r\n");
  pty.end(3);
  await h.until(() => h.got(1, FrameType.TermExit).length === 1, "the exit");
  assert.deepEqual(decodeTermExit(h.got(1, FrameType.TermExit)[0].body), { code: 3, signal: null });
  assert.equal(h.output(1), "bye\r\n", "output before the exit report");
  assert.deepEqual(h.guard.removed, [1000]);
  h.request(2, FrameType.TermList, "l", {});
  assert.equal(decodeTermList(h.got(2, FrameType.TermList)[0].body).terminals[0].alive, false);
  // A page that comes later still sees the last screen, then the exit.
  h.request(2, FrameType.TermAttach, "t1", { cols: 80, rows: 24 });
  await h.until(() => h.got(2, FrameType.TermExit).length === 1, "stream 2's exit");
  assert.ok(decodeTermSnapshot(h.got(2, FrameType.TermSnapshot)[0].body).data.includes("bye"));
  assert.deepEqual(h.got(2, FrameType.TermSnapshot).concat(h.got(2, FrameType.TermExit)).map((f) => f.t), [
    FrameType.TermSnapshot,
    FrameType.TermExit,
  ]);
  h.request(1, FrameType.TermDetach, "t1");
  assert.equal(h.manager.size, 1);
  h.request(2, FrameType.TermDetach, "t1");
  assert.equal(h.manager.size, 0, "forgotten with its last stream");
  await h.cleanup();
});

Deno.test("TerminalManager: term.close hangs up (SIGHUP), SIGKILL after the grace if that is ignored", async () => {
  const h = setup();
  h.stream(1);
  h.request(1, FrameType.TermOpen, "t1", { cols: 80, rows: 24 });
  h.request(1, FrameType.TermOpen, "t2", { cols: 80, rows: 24 });
  const [p1, p2] = h.spawner.ptys;
  h.request(1, FrameType.TermClose, "t1");
  assert.deepEqual(p1.signals, ["SIGHUP"]);
  await h.until(() => h.got(1, FrameType.TermExit).length === 1, "t1's exit");
  assert.deepEqual(decodeTermExit(h.got(1, FrameType.TermExit)[0].body), { code: null, signal: "SIGHUP" });
  assert.equal(h.manager.size, 1, "a closed terminal is forgotten at once");
  p2.diesOnHangup = false;
  h.request(1, FrameType.TermClose, "t2");
  h.clock.advance(KILL_GRACE_MS - 1);
  assert.deepEqual(p2.signals, ["SIGHUP"]);
  h.clock.advance(1);
  assert.deepEqual(p2.signals, ["SIGHUP", "SIGKILL"]);
  await h.until(() => h.got(1, FrameType.TermExit).length === 2, "t2's exit");
  assert.equal(h.manager.size, 0);
  await h.cleanup();
});

Deno.test("TerminalManager: a full window stops the reads (the program blocks) until acknowledged", async () => {
  const h = setup();
  const s = h.stream(1, 8 * 1024);
  h.request(1, FrameType.TermOpen, "t1", { cols: 80, rows: 24 });
  await h.until(() => h.got(1, FrameType.TermSnapshot).length === 1, "the snapshot");
  s.sender.ack(1);
  const pty = h.spawner.ptys[0];
  const chunk = "x".repeat(999) + "\n";
  for (let i = 0; i < 100; i++) pty.backlog.push(enc(chunk));
  pty.emit(""); // Wakes the waiting read.
  await h.until(() => s.sender.unackedBytes >= 8 * 1024, "a full window");
  // Let any stray reads happen: none should.
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 1));
  const reads = pty.reads;
  assert.ok(reads <= 12, `${reads} chunks read with an 8 KiB window`);
  assert.ok(pty.backlog.length >= 85, "the program is blocked on the rest");
  // Acknowledging makes room: reading goes on, and everything arrives in order.
  while (h.output(1).length < 100 * 1000) {
    s.sender.ack(s.sender.nextSeq - 1);
    await h.until(() => s.sender.unackedBytes > 0 || h.output(1).length === 100 * 1000, "more output");
  }
  assert.equal(h.output(1), chunk.repeat(100));
  await h.cleanup();
});

Deno.test("TerminalManager: with two streams, one that stays full is left behind and repainted when it catches up", async () => {
  const h = setup();
  const fast = h.stream(1, 1 << 20);
  const slow = h.stream(2, 4 * 1024);
  h.request(1, FrameType.TermOpen, "t1", { cols: 80, rows: 24 });
  h.request(2, FrameType.TermAttach, "t1", { cols: 80, rows: 24 });
  await h.until(() => h.got(2, FrameType.TermSnapshot).length === 1, "stream 2's snapshot");
  slow.sender.ack(1);
  const pty = h.spawner.ptys[0];
  for (let i = 0; i < 20; i++) pty.emit(`${String(i).padStart(3, "0")}${"y".repeat(996)}\n`);
  // Stream 2's window fills; the reads wait for it, up to the stall time.
  await h.until(
    () => slow.sender.unackedBytes >= 4 * 1024 && h.clock.pending.includes(TERMINAL_STALL_MS),
    "a read waiting on a full stream",
  );
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 1));
  assert.ok(!h.output(1).includes("019"), "everyone waits for the full stream, for now");
  const before = pty.reads;
  h.clock.advance(TERMINAL_STALL_MS);
  await h.until(() => h.output(1).includes("019"), "the fast stream gets everything");
  assert.ok(pty.reads > before, "reading went on");
  assert.ok(!h.output(2).includes("019"), "the slow one was left behind");
  fast.sender.ack(fast.sender.nextSeq - 1);
  // The slow stream catches up: it gets a fresh snapshot with the screen as it is now.
  slow.sender.ack(slow.sender.nextSeq - 1);
  await h.until(() => h.got(2, FrameType.TermSnapshot).length === 2, "the repaint");
  assert.ok(decodeTermSnapshot(h.got(2, FrameType.TermSnapshot)[1].body).data.includes("019"));
  pty.emit("after");
  await h.until(() => h.output(2).endsWith("after"), "live again");
  await h.cleanup();
});

Deno.test("TerminalManager: a stream whose page went away (a reload) holds nobody back: left behind at once", async () => {
  const away = new Set<number>();
  const h = setup({ connected: (handle) => !away.has(handle) });
  const fast = h.stream(1, 1 << 20);
  const gone = h.stream(2, 4 * 1024);
  h.request(1, FrameType.TermOpen, "t1", { cols: 80, rows: 24 });
  h.request(2, FrameType.TermAttach, "t1", { cols: 80, rows: 24 });
  await h.until(() => h.got(2, FrameType.TermSnapshot).length === 1, "stream 2's snapshot");
  gone.sender.ack(1);
  away.add(2); // Its IDE socket closed: the page is reloading.
  const pty = h.spawner.ptys[0];
  for (let i = 0; i < 20; i++) pty.emit(`${String(i).padStart(3, "0")}${"z".repeat(996)}\n`);
  // No stall time passes on the clock: the page still there gets everything anyway.
  await h.until(() => h.output(1).includes("019"), "the present stream gets everything");
  assert.ok(!h.output(2).includes("019"), "the absent one was left behind");
  // Back and caught up: a fresh snapshot with the screen as it is now, then live output.
  away.delete(2);
  fast.sender.ack(fast.sender.nextSeq - 1);
  gone.sender.ack(gone.sender.nextSeq - 1);
  await h.until(() => h.got(2, FrameType.TermSnapshot).length === 2, "the repaint");
  assert.ok(decodeTermSnapshot(h.got(2, FrameType.TermSnapshot)[1].body).data.includes("019"));
  pty.emit("after");
  await h.until(() => h.output(2).endsWith("after"), "live again");
  await h.cleanup();
});

Deno.test("TerminalManager: stopAll hangs every terminal up and reports each exit", async () => {
  const h = setup();
  h.stream(1);
  h.request(1, FrameType.TermOpen, "t1", { cols: 80, rows: 24 });
  h.request(1, FrameType.TermOpen, "t2", { cols: 80, rows: 24 });
  await h.manager.stopAll();
  assert.deepEqual(h.spawner.ptys.map((p) => p.signals), [["SIGHUP"], ["SIGHUP"]]);
  assert.deepEqual(h.got(1, FrameType.TermExit).map((f) => f.id).sort(), ["t1", "t2"]);
  assert.equal(h.manager.size, 0);
  assert.deepEqual(h.guard.removed.sort(), [1000, 1001]);
});

Deno.test("TerminalManager: with terminals off, every request gets the reason", () => {
  const h = setup({ spawner: undefined, unavailable: { reason: "disabled", message: "started with --no-terminal" } });
  h.stream(1);
  assert.equal(h.manager.support, "disabled");
  h.request(1, FrameType.TermOpen, "t1", { cols: 80, rows: 24 });
  h.request(1, FrameType.TermAttach, "t1", { cols: 80, rows: 24 });
  h.request(1, FrameType.TermList, "l1", {});
  h.request(1, FrameType.TermInput, "t1", enc("x"));
  h.request(1, FrameType.TermDetach, "t1");
  const errors = h.got(1, FrameType.TermError).map((f) => [f.id, decodeTermError(f.body).reason]);
  assert.deepEqual(errors, [["t1", "disabled"], ["t1", "disabled"], ["l1", "disabled"], ["t1", "disabled"]]);
  assert.equal(decodeTermError(h.got(1, FrameType.TermError)[0].body).message, "started with --no-terminal");
  const unsupported = new TerminalManager({ root: "/", send: () => Promise.resolve() });
  assert.equal(unsupported.support, "unsupported-os");
});
