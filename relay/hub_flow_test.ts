/**
 * The hub's pushback with sockets whose send buffer the test controls:
 * `flow` pauses and resumes, the stuck-receiver close (4508) and the close
 * of a sender that ignores a pause (4509). The real-process fault tests
 * (tests/faults_test.ts) cover the same paths end to end where the kernel's
 * buffers let them show.
 */
import assert from "node:assert/strict";
import { systemClock } from "../shared/clock.ts";
import { decodeFrame, encodeFrame, jsonBody } from "../shared/frame_codec.ts";
import { CloseCode, FLOW_HIGH_BYTES, FLOW_LOW_BYTES, FrameType, MAX_BUFFERED_BYTES } from "../shared/protocol.ts";
import { Hub } from "./hub.ts";
import { createLogger } from "./logger.ts";
import { Pairing } from "./pairing.ts";
import { MemoryStore } from "./store.ts";
import { loadSigningKey, TokenService } from "./token_service.ts";

/** A server-side socket stand-in: records what the hub sends, with a settable send buffer. */
class FakeSocket {
  readyState: number = WebSocket.OPEN;
  bufferedAmount = 0;
  binaryType = "arraybuffer";
  sent: Uint8Array[] = [];
  closed?: { code: number; reason: string };
  onopen: (() => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: (() => void) | null = null;
  onerror: (() => void) | null = null;

  send(bytes: Uint8Array): void {
    this.sent.push(bytes);
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = { code, reason };
    this.readyState = WebSocket.CLOSED;
    this.onclose?.();
  }

  receive(frame: Parameters<typeof encodeFrame>[0]): void {
    this.onmessage?.({ data: encodeFrame(frame).buffer });
  }

  flows(): { c?: number; paused: boolean }[] {
    return this.sent.map((b) => decodeFrame(b)).filter((f) => f.t === FrameType.Flow)
      .map((f) => ({ c: f.c, paused: jsonBody(f).paused === true }));
  }
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

async function setup(timings: Record<string, number> = {}) {
  const dir = await Deno.makeTempDir({ prefix: "coder1-hub-flow-" });
  const store = new MemoryStore();
  const tokens = new TokenService(await loadSigningKey(`${dir}/key.jwk`, { create: true }), {
    clock: systemClock,
    store,
  });
  const pairing = new Pairing({ store, clock: systemClock, random: (b) => crypto.getRandomValues(b) });
  const hub = new Hub({
    pairing,
    tokens,
    log: createLogger({ level: "silent" }),
    timings: { heartbeatIntervalMs: 50, heartbeatTimeoutMs: 60_000, receiverStuckMs: 300, ...timings },
  });
  hub.start();
  const sid = "session-1";
  const ide = new FakeSocket();
  hub.acceptIde(ide as unknown as WebSocket, sid);
  ide.onopen!();
  const bridge = new FakeSocket();
  hub.acceptBridge(bridge as unknown as WebSocket, "127.0.0.1");
  const { token } = await tokens.issueBridgeToken("bridge-1", sid);
  bridge.receive({ t: FrameType.Auth, body: { token, version: "0.3.0" } });
  for (let i = 0; i < 100 && !bridge.sent.some((b) => decodeFrame(b).t === FrameType.AuthOk); i++) await tick(5);
  const channel = (jsonBody(decodeFrame(ide.sent[0])) as { channel: number }).channel;
  const cleanup = async () => {
    hub.stop();
    await Deno.remove(dir, { recursive: true });
  };
  return { hub, ide, bridge, channel, cleanup };
}

Deno.test("hub: a congested IDE pauses the bridge for its channel, and drains resume it", async () => {
  const { ide, bridge, channel, cleanup } = await setup();
  try {
    bridge.receive({ t: FrameType.CmdStdout, c: channel, id: "a", s: 0, q: 1, body: "x" });
    await tick(10);
    assert.deepEqual(bridge.flows(), [], "no pause while the IDE keeps up");
    ide.bufferedAmount = FLOW_HIGH_BYTES + 1;
    bridge.receive({ t: FrameType.CmdStdout, c: channel, id: "a", s: 1, q: 2, body: "x" });
    await tick(10);
    assert.deepEqual(bridge.flows(), [{ c: channel, paused: true }]);
    ide.bufferedAmount = FLOW_LOW_BYTES + 1;
    await tick(50);
    assert.equal(bridge.flows().length, 1, "still above the low mark: still paused");
    ide.bufferedAmount = FLOW_LOW_BYTES;
    await tick(50);
    assert.deepEqual(bridge.flows(), [{ c: channel, paused: true }, { c: channel, paused: false }]);
  } finally {
    await cleanup();
  }
});

Deno.test("hub: a congested bridge pauses every IDE socket of the session", async () => {
  const { ide, bridge, cleanup } = await setup();
  try {
    bridge.bufferedAmount = FLOW_HIGH_BYTES + 1;
    ide.receive({ t: FrameType.CmdStdin, id: "a", s: 0, q: 1, body: "x" });
    assert.deepEqual(ide.flows(), [{ c: undefined, paused: true }]);
    bridge.bufferedAmount = 0;
    await tick(50);
    assert.deepEqual(ide.flows(), [{ c: undefined, paused: true }, { c: undefined, paused: false }]);
  } finally {
    await cleanup();
  }
});

Deno.test("hub: a sender that ignores the pause is closed with 4509; the receiver stays", async () => {
  const { ide, bridge, channel, cleanup } = await setup({ receiverStuckMs: 60_000 });
  try {
    ide.bufferedAmount = MAX_BUFFERED_BYTES + 1;
    bridge.receive({ t: FrameType.CmdStdout, c: channel, id: "a", s: 0, q: 1, body: "x" });
    await tick(10);
    assert.equal(bridge.closed?.code, CloseCode.IgnoredPause);
    assert.equal(ide.closed, undefined);
  } finally {
    await cleanup();
  }
});

Deno.test("hub: a receiver whose buffer does not shrink for the stuck limit is closed with 4508", async () => {
  const { ide, cleanup } = await setup();
  try {
    ide.bufferedAmount = 1000;
    await tick(200);
    assert.equal(ide.closed, undefined, "not yet");
    ide.bufferedAmount = 900; // It reads a little: the clock starts again.
    await tick(200);
    assert.equal(ide.closed, undefined, "reading slowly is not stuck");
    await tick(400);
    assert.equal((ide.closed as { code: number } | undefined)?.code, CloseCode.SlowConsumer);
  } finally {
    await cleanup();
  }
});
