import assert from "node:assert/strict";
import { ManualClock } from "./clock.ts";
import { generateIdentity, rawPublicKey, toBase64Url } from "./e2e_crypto.ts";
import { BridgeHandshake, type E2eSession } from "./e2e_session.ts";
import { decodeTermKeys } from "./frame_bodies.ts";
import { bodyBytes, decodeFrame, encodeFrame, type FrameInit } from "./frame_codec.ts";
import { IdeClient, type IdeClientError, MemoryPinStore, type WebSocketLike } from "./ide_client.ts";
import { HANDSHAKE_BACKOFF_BASE_MS, HANDSHAKE_BACKOFF_MAX_MS } from "./ide_e2e.ts";
import {
  CloseCode,
  type Frame,
  FrameType,
  type FrameTypeName,
  HEARTBEAT_TIMEOUT_MS,
  TERMINAL_KEYS_BODY_BYTES,
  type TerminalSupport,
} from "./protocol.ts";

/** A frame the IDE sent, with the manual time it was sent at and, once a bridge session is set, its plaintext. */
interface Sent {
  frame: Frame;
  at: number;
  plaintext?: Promise<Uint8Array>;
}

/**
 * A fake IDE socket: the test drives it as the relay (and, through
 * {@linkcode FakeSocket.bridge}, as the bridge behind it). Frames the IDE sends
 * are kept, and waited for with {@linkcode FakeSocket.next}: nothing sleeps.
 */
class FakeSocket implements WebSocketLike {
  binaryType = "arraybuffer";
  readyState = 1;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  sent: Sent[] = [];
  closed?: { code: number; reason: string };
  /** The bridge's end of the current e2e session: sealed frames the IDE sends are opened with it, in order. */
  bridge?: E2eSession;
  #taken = new Map<string, number>();
  #wake?: () => void;

  constructor(readonly clock: ManualClock) {}

  send(data: Uint8Array): void {
    const frame = decodeFrame(data.slice());
    const sent: Sent = { frame, at: this.clock.now() };
    if (this.bridge && frame.s !== undefined) sent.plaintext = this.bridge.open(frame);
    this.sent.push(sent);
    this.#wake?.();
  }

  close(code = 1000, reason = ""): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.closed = { code, reason };
    this.onclose?.({ code, reason });
  }

  /** Delivers a frame to the IDE as the relay would. */
  deliver(init: FrameInit): void {
    this.deliverBytes(encodeFrame(init));
  }

  /** Delivers encoded bytes (a sealed frame) to the IDE. */
  deliverBytes(bytes: Uint8Array): void {
    this.onmessage?.({ data: bytes.slice().buffer });
  }

  /** The frames of type `t` the IDE sent so far. */
  all(t: FrameTypeName): Sent[] {
    return this.sent.filter((s) => s.frame.t === t);
  }

  /** Resolves with the next frame of type `t` the IDE sends (or sent and was not yet taken). */
  async next(t: FrameTypeName): Promise<Sent> {
    const index = this.#taken.get(t) ?? 0;
    while (this.all(t).length <= index) {
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#wake = resolve;
      await promise;
    }
    this.#taken.set(t, index + 1);
    return this.all(t)[index];
  }
}

const RELAY = "http://relay.test";
const json = (bytes: Uint8Array) => JSON.parse(new TextDecoder().decode(bytes));
const status = (state: "connected" | "disconnected", bridgeId = "b1") => ({
  t: FrameType.BridgeStatus,
  body: { state, route: 1, bridgeId, version: "0.3.0" },
});

/** Lets the IDE's frame queue run (it handles delivered frames in promise jobs). */
async function settle(socket: FakeSocket): Promise<void> {
  socket.deliver({ t: FrameType.Ping });
  await socket.next(FrameType.Pong);
}

/**
 * Plays the bridge for one handshake: answers the next hello, finishes on
 * the confirm, and sends a sealed `e2e.info` with `approval`.
 *
 * @returns A sealer for more bridge -> IDE frames on the new session.
 */
async function playBridge(
  socket: FakeSocket,
  identity: CryptoKeyPair,
  approval: "pinned" | "needed" = "pinned",
  terminals?: TerminalSupport,
  termKeys = false,
): Promise<(init: FrameInit & { q?: number }) => Promise<void>> {
  const hello = await socket.next(FrameType.E2eHello);
  const { handshake, reply } = await BridgeHandshake.respond(identity, "b1", json(hello.frame.body));
  socket.deliver({ t: FrameType.E2eReply, body: reply });
  const confirm = await socket.next(FrameType.E2eConfirm);
  const { session, signature } = await handshake.finish(json(confirm.frame.body));
  socket.bridge = session;
  const seal = async (init: FrameInit & { q?: number }) =>
    socket.deliverBytes(await session.seal({ t: init.t, id: init.id, q: init.q, body: bodyBytes(init.body) }));
  const info = {
    name: "box",
    os: "linux",
    version: "0.3.0",
    approval,
    signature,
    ...(terminals ? { terminals } : {}),
    ...(termKeys ? { termKeys } : {}),
  };
  await seal({ t: FrameType.E2eInfo, body: info });
  return seal;
}

/** An IDE client on a manual clock, its fake socket, and a bridge identity it has pinned. */
async function setup(options: { resumeTimeoutMs?: number; obscureKeystrokes?: boolean } = {}) {
  const clock = new ManualClock(1_000_000);
  const socket = new FakeSocket(clock);
  const bridgeIdentity = await generateIdentity(false);
  const pins = new MemoryPinStore();
  await pins.set("b1", toBase64Url(await rawPublicKey(bridgeIdentity.publicKey)));
  const ide = new IdeClient({ relayUrl: RELAY, webSocket: () => socket, clock, pins, ...options });
  return { clock, socket, bridgeIdentity, pins, ide };
}

/** Connects, plays a pinned bridge and answers the stream's resume: the IDE is `ready`. */
async function connectReady(
  socket: FakeSocket,
  ide: IdeClient,
  bridgeIdentity: CryptoKeyPair,
  known = true,
  terminals?: TerminalSupport,
  termKeys = false,
) {
  const connected = ide.connect();
  socket.deliver(status("connected"));
  await connected;
  const seal = await playBridge(socket, bridgeIdentity, "pinned", terminals, termKeys);
  const resume = json(await (await socket.next(FrameType.StreamResume)).plaintext!);
  const ready = ide.waitForBridge();
  await seal({ t: FrameType.StreamResume, body: { stream: resume.stream, received: 0, known } });
  await ready;
  return { seal, stream: resume.stream as string };
}

Deno.test("IDE client: handshakes abandoned before the bridge proves itself back off 0.5 s, 1 s, 2 s ... up to 60 s", async () => {
  const { clock, socket, ide } = await setup();
  const connected = ide.connect();
  socket.deliver(status("connected"));
  await connected;
  let previous = await socket.next(FrameType.E2eHello);
  assert.equal(previous.at, 1_000_000, "the first hello goes at once");
  const expected = [500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000];
  assert.equal(expected[0], HANDSHAKE_BACKOFF_BASE_MS);
  assert.equal(expected.at(-1), HANDSHAKE_BACKOFF_MAX_MS);
  for (const delay of expected) {
    // The "relay" never answers and announces the bridge again.
    socket.deliver(status("connected"));
    await settle(socket);
    assert.ok(clock.pending.includes(delay), `the next hello waits ${delay} ms (timers: ${clock.pending})`);
    // A relay that says nothing for longer than the heartbeat timeout loses the socket: ping halfway.
    clock.advance(delay / 2);
    socket.deliver({ t: FrameType.Ping });
    clock.advance(delay / 2 - 1);
    assert.ok(clock.pending.includes(1), "1 ms early: still waiting");
    clock.advance(1);
    const hello = await socket.next(FrameType.E2eHello);
    assert.equal(hello.at - previous.at, delay);
    previous = hello;
  }
  assert.equal(ide.state, "handshaking");
  ide.close();
});

Deno.test("IDE client: a status while a hello waits restarts the wait without counting; a verified bridge resets the backoff", async () => {
  const { clock, socket, ide, bridgeIdentity } = await setup();
  const states: string[] = [];
  ide.onStateChange((state) => states.push(state));
  const connected = ide.connect();
  socket.deliver(status("connected"));
  await connected;
  await socket.next(FrameType.E2eHello);
  socket.deliver(status("connected")); // The first handshake is abandoned: the next one waits.
  await settle(socket);
  assert.deepEqual(clock.pending, [500, 5_000], "the hello, the watchdog");
  socket.deliver(status("connected")); // No hello went out for this one: it is not counted.
  await settle(socket);
  assert.deepEqual(clock.pending, [500, 5_000], "the same wait again, and only one");
  clock.advance(500);
  const seal = await playBridge(socket, bridgeIdentity);
  const resume = json(await (await socket.next(FrameType.StreamResume)).plaintext!);
  await seal({ t: FrameType.StreamResume, body: { stream: resume.stream, received: 0, known: true } });
  await settle(socket);
  assert.equal(ide.state, "ready");
  assert.equal(socket.all(FrameType.E2eHello).length, 2, "the cancelled wait sent nothing");
  assert.deepEqual(states, ["handshaking", "ready"]);
  // The bridge proved itself: after it reconnects, the hello goes at once again.
  socket.deliver(status("connected"));
  await socket.next(FrameType.E2eHello);
  assert.deepEqual(clock.pending, [4_500], "only the watchdog is waiting");
  ide.close();
});

Deno.test("IDE client: frame types this version does not know are skipped, not an end-to-end failure", async () => {
  const { socket, ide } = await setup();
  const connected = ide.connect();
  socket.deliver(status("connected"));
  await connected;
  const future = encodeFrame({ t: FrameType.Ping, body: "x" });
  future[1] = 0xee; // A type code this version does not know.
  socket.deliverBytes(future);
  await settle(socket);
  assert.equal(socket.closed, undefined);
  assert.equal(ide.state, "handshaking");
  ide.close();
});

Deno.test("IDE client: the watchdog closes the socket with 4000 after the heartbeat timeout of silence", async () => {
  const { clock, socket, ide } = await setup();
  const closed = Promise.withResolvers<IdeClientError>();
  ide.onClose((error) => closed.resolve(error));
  const connected = ide.connect();
  socket.deliver(status("disconnected"));
  await connected;
  clock.advance(30_000);
  socket.deliver({ t: FrameType.Ping }); // Heard from at 30 s.
  clock.advance(HEARTBEAT_TIMEOUT_MS);
  assert.equal(socket.readyState, 1, "silent for exactly the timeout: still open");
  clock.advance(5_000);
  assert.equal(socket.closed?.code, CloseCode.HeartbeatTimeout);
  const error = await closed.promise;
  assert.equal(error.status, CloseCode.HeartbeatTimeout);
  assert.equal(error.reason, "relay-lost");
  assert.deepEqual(clock.pending, [], "nothing left waiting");
});

Deno.test("IDE client: run() refuses without a ready bridge; waitForBridge times out on the clock", async () => {
  const { clock, socket, ide } = await setup();
  const connected = ide.connect();
  socket.deliver(status("disconnected"));
  await connected;
  await assert.rejects(ide.run("true").exited, (e: IdeClientError) => e.reason === "no-bridge");
  socket.deliver(status("connected"));
  await settle(socket);
  await assert.rejects(ide.run("true").exited, (e: IdeClientError) => e.reason === "not-approved");
  const waiting = ide.waitForBridge(1_000);
  clock.advance(1_000);
  await assert.rejects(waiting, (e: IdeClientError) => e.reason === "timeout");
  ide.close();
});

Deno.test("IDE client: commands wait while the bridge is away and fail with bridge-lost after the resume timeout", async () => {
  const { clock, socket, ide, bridgeIdentity } = await setup({ resumeTimeoutMs: 10_000 });
  await connectReady(socket, ide, bridgeIdentity);
  const suspended = Promise.withResolvers<void>();
  const cmd = ide.run("sleep 100", { onSuspended: () => suspended.resolve() });
  const start = await socket.next(FrameType.CmdStart);
  assert.equal(start.frame.q, 1);
  assert.deepEqual(json(await start.plaintext!), { command: "sleep 100" });
  socket.deliver(status("disconnected"));
  await suspended.promise;
  assert.equal(ide.state, "disconnected");
  clock.advance(9_999);
  assert.equal(ide.pendingCommands, 1, "still waiting for the bridge");
  clock.advance(1);
  await assert.rejects(cmd.exited, (e: IdeClientError) => e.reason === "bridge-lost" && /10 s/.test(e.message));
  assert.equal(ide.pendingCommands, 0);
  ide.close();
});

Deno.test("IDE client: a bridge back within the resume timeout gets the unacknowledged frames again; output resumes", async () => {
  const { clock, socket, ide, bridgeIdentity } = await setup({ resumeTimeoutMs: 10_000 });
  const first = await connectReady(socket, ide, bridgeIdentity);
  const events: string[] = [];
  const out: string[] = [];
  const cmd = ide.run("echo hi", {
    onStdout: (b) => out.push(new TextDecoder().decode(b)),
    onSuspended: () => events.push("suspended"),
    onResumed: () => events.push(`resumed (${ide.state})`),
  });
  await socket.next(FrameType.CmdStart);
  socket.deliver(status("disconnected"));
  await settle(socket);
  clock.advance(9_000);
  // The bridge reconnects: fresh keys, and the same stream.
  socket.deliver(status("connected"));
  const seal = await playBridge(socket, bridgeIdentity);
  const resume = json(await (await socket.next(FrameType.StreamResume)).plaintext!);
  assert.deepEqual(resume, { stream: first.stream, received: 0 });
  await seal({ t: FrameType.StreamResume, body: { stream: first.stream, received: 0, known: true } });
  const again = await socket.next(FrameType.CmdStart);
  assert.equal(again.frame.q, 1, "resent with its number");
  await seal({ t: FrameType.CmdStdout, id: "c1", q: 1, body: "hi\n" });
  await seal({ t: FrameType.CmdStdout, id: "c1", q: 1, body: "hi\n" }); // A resent duplicate: dropped.
  await seal({ t: FrameType.CmdExit, id: "c1", q: 2, body: { code: 0, signal: null, durationMs: 3 } });
  assert.deepEqual(await cmd.exited, { code: 0, signal: null, durationMs: 3 });
  assert.deepEqual(out, ["hi\n"]);
  assert.deepEqual(events, ["suspended", "resumed (ready)"]);
  clock.advance(10_000); // The resume timeout was cancelled: nothing fires.
  assert.equal(socket.closed, undefined);
  ide.close();
});

Deno.test("IDE client: terminals go sealed in the stream, only to a bridge that runs them, and survive a bridge reconnect", async () => {
  const { socket, ide, bridgeIdentity } = await setup();
  const { seal, stream } = await connectReady(socket, ide, bridgeIdentity, true, "available");
  assert.equal(ide.terminalSupport, "available");
  const term = ide.openTerminal({ cols: 80, rows: 24 });
  const open = await socket.next(FrameType.TermOpen);
  assert.deepEqual([open.frame.id, open.frame.q], [term.id, 1]);
  assert.deepEqual(json(await open.plaintext!), { cols: 80, rows: 24 }, "the size travels sealed");
  const out: string[] = [];
  term.onData((b) => out.push(new TextDecoder().decode(b)));
  await seal({ t: FrameType.TermSnapshot, id: term.id, q: 1, body: { cols: 80, rows: 24, title: "sh", data: "$ " } });
  assert.equal((await term.ready).data, "$ ");
  await term.write("echo hi\r");
  const input = await socket.next(FrameType.TermInput);
  assert.equal(new TextDecoder().decode(await input.plaintext!), "echo hi\r");
  await seal({ t: FrameType.TermOutput, id: term.id, q: 2, body: "echo hi\r\nhi\r\n$ " });
  await settle(socket);
  assert.deepEqual(out, ["echo hi\r\nhi\r\n$ "]);
  // The bridge goes and comes back (new keys): the same stream resumes, the terminal's output goes on.
  socket.deliver(status("disconnected"));
  await settle(socket);
  assert.equal(ide.state, "disconnected");
  socket.deliver(status("connected"));
  const seal2 = await playBridge(socket, bridgeIdentity, "pinned", "available");
  const again = json(await (await socket.next(FrameType.StreamResume)).plaintext!);
  assert.deepEqual([again.stream, again.received], [stream, 2]);
  await seal2({ t: FrameType.StreamResume, body: { stream, received: 2, known: true } });
  await seal2({ t: FrameType.TermOutput, id: term.id, q: 3, body: "more" });
  await settle(socket);
  assert.deepEqual(out, ["echo hi\r\nhi\r\n$ ", "more"]);
  assert.equal(term.state, "attached");
  ide.close();
  await assert.rejects(term.exited, (e: IdeClientError) => e.reason === "closed");
});

Deno.test("IDE client: no terminal frame goes to a bridge that has terminals off or predates them", async () => {
  for (const [support, reason] of [["disabled", "disabled"], [undefined, "unsupported-bridge"]] as const) {
    const { socket, ide, bridgeIdentity } = await setup();
    await connectReady(socket, ide, bridgeIdentity, true, support);
    assert.equal(ide.terminalSupport, support);
    const term = ide.openTerminal({ cols: 80, rows: 24 });
    await assert.rejects(term.ready, (e: IdeClientError) => e.reason === reason);
    await assert.rejects(ide.listTerminals(), (e: IdeClientError) => e.reason === reason);
    await settle(socket);
    assert.equal(socket.all(FrameType.TermOpen).length + socket.all(FrameType.TermList).length, 0);
    ide.close();
  }
  const { ide } = await setup();
  await assert.rejects(
    ide.attachTerminal("t1", { cols: 80, rows: 24 }).ready,
    (e: IdeClientError) => e.reason === "no-bridge",
  );
});

Deno.test("IDE client: keystrokes are paced in sealed term.keys frames only with a bridge that takes them, unless turned off", async () => {
  const { clock, socket, ide, bridgeIdentity } = await setup();
  assert.equal(ide.obscureKeystrokes, true, "on by default");
  assert.equal(ide.keystrokesObscured, false, "no bridge yet");
  const { seal } = await connectReady(socket, ide, bridgeIdentity, true, "available", true);
  assert.equal(ide.keystrokesObscured, true);
  const term = ide.openTerminal({ cols: 80, rows: 24 });
  await socket.next(FrameType.TermOpen);
  await seal({ t: FrameType.TermSnapshot, id: term.id, q: 1, body: { cols: 80, rows: 24, title: "", data: "$ " } });
  await term.ready;
  // Each frame is sealed and sent in promise jobs: wait for it before moving the clock on.
  const frames: Sent[] = [];
  void term.write("s");
  frames.push(await socket.next(FrameType.TermKeys));
  clock.advance(7);
  void term.write("u");
  clock.advance(13);
  frames.push(await socket.next(FrameType.TermKeys));
  for (let i = 0; i < 10; i++) {
    clock.advance(20);
    frames.push(await socket.next(FrameType.TermKeys));
  }
  assert.deepEqual(frames.map((f) => f.at - frames[0].at), Array.from({ length: 12 }, (_, i) => 20 * i));
  assert.deepEqual(new Set(frames.map((f) => f.frame.body.byteLength)), new Set([TERMINAL_KEYS_BODY_BYTES + 16]));
  assert.deepEqual(frames.map((f) => f.frame.q), Array.from({ length: 12 }, (_, i) => 2 + i), "numbered in the stream");
  const typed = await Promise.all(
    frames.map(async (f) => new TextDecoder().decode(decodeTermKeys(await f.plaintext!))),
  );
  assert.deepEqual(typed, ["s", "u", ...Array(10).fill("")]);
  // Turned off at run time: unpaced term.input at once, and no more chaff.
  ide.setObscureKeystrokes(false);
  assert.deepEqual([ide.obscureKeystrokes, ide.keystrokesObscured], [false, false]);
  void term.write("do");
  const input = await socket.next(FrameType.TermInput);
  assert.equal(new TextDecoder().decode(await input.plaintext!), "do");
  clock.advance(5_000);
  await settle(socket);
  assert.equal(socket.all(FrameType.TermKeys).length, 12);
  assert.deepEqual(ide.keystrokeStats, { keys: 2, chaff: 10, bulk: 1 });
  ide.close();
  // Off from the start (the option).
  const off = await setup({ obscureKeystrokes: false });
  await connectReady(off.socket, off.ide, off.bridgeIdentity, true, "available", true);
  assert.equal(off.ide.keystrokesObscured, false);
  off.ide.close();
});

Deno.test("IDE client: the socket URL carries the session's routing key as ?r=, only a well-formed one", async () => {
  const clock = new ManualClock(1_000_000);
  const urls: string[] = [];
  const answers = [
    { expiresAt: 5, routingKey: "../../x?y" }, // POST /api/sessions from a broken relay
    { ok: true, routingKey: "644ab2d723dad42f" }, // GET /api/session
    { ok: true }, // GET /api/session from a relay without routing keys
  ];
  const fakeFetch: typeof fetch = () => Promise.resolve(Response.json(answers.shift(), { status: 200 }));
  const ide = new IdeClient({
    relayUrl: RELAY,
    fetch: fakeFetch,
    clock,
    webSocket: (url) => (urls.push(url), new FakeSocket(clock)),
  });
  await ide.createSession();
  assert.equal(ide.routingKey, undefined);
  // Each connect() replaces the socket before (its promise rejects: that socket is gone).
  const connect = () => void ide.connect().catch(() => {});
  connect();
  await ide.ensureSession();
  assert.equal(ide.routingKey, "644ab2d723dad42f");
  connect();
  await ide.ensureSession();
  connect();
  assert.deepEqual(urls, [
    "ws://relay.test/ws/ide",
    "ws://relay.test/ws/ide?r=644ab2d723dad42f",
    "ws://relay.test/ws/ide",
  ]);
  ide.close();
});
