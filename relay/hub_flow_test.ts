/**
 * The hub's pushback with sockets whose send buffer the test controls:
 * `flow` pauses and resumes, the stuck-receiver close (4508) and the close
 * of a sender that ignores a pause (4509). The real-process fault tests
 * (tests/faults_test.ts) cover the same paths end to end where the kernel's
 * buffers let them show.
 */
import assert from "node:assert/strict";
import { ManualClock, systemClock } from "../shared/clock.ts";
import { decodeBridgeStatus, decodeFlow } from "../shared/frame_bodies.ts";
import { decodeFrame, encodeFrame } from "../shared/frame_codec.ts";
import { CloseCode, FLOW_HIGH_BYTES, FLOW_LOW_BYTES, FrameType, MAX_BUFFERED_BYTES } from "../shared/protocol.ts";
import { Hub } from "./hub.ts";
import { createLogger } from "./logger.ts";
import { Pairing } from "./pairing.ts";
import { BridgeCredentials } from "./bridge_credentials.ts";
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

  flows(): { r?: number; paused: boolean }[] {
    return this.sent.map((b) => decodeFrame(b)).filter((f) => f.t === FrameType.Flow)
      .map((f) => ({ r: f.r, paused: decodeFlow(f.body).paused }));
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
  const clock = new ManualClock(1_000_000);
  const pairing = new Pairing({ store, clock: systemClock, random: (b) => crypto.getRandomValues(b) });
  const credentials = new BridgeCredentials({ tokens, store, pairing, clock: systemClock });
  const hub = new Hub({
    credentials,
    log: createLogger({ level: "silent" }),
    clock,
    timings: { heartbeatIntervalMs: 50, heartbeatTimeoutMs: 60_000, receiverStuckMs: 300, ...timings },
  });
  // No timer: the tests run heartbeat rounds themselves, on the manual clock.
  const sid = "session-1";
  const ide = new FakeSocket();
  hub.acceptIde(ide as unknown as WebSocket, sid);
  ide.onopen!();
  const bridge = new FakeSocket();
  const { token } = await tokens.issueBridgeToken("bridge-1", sid);
  const login = await hub.authenticateBridge({ token, version: "0.3.0" }, "127.0.0.1");
  hub.acceptBridge(bridge as unknown as WebSocket, login);
  bridge.onopen!();
  const route = decodeBridgeStatus(decodeFrame(ide.sent[0]).body).route;
  const cleanup = async () => {
    hub.stop();
    await Deno.remove(dir, { recursive: true });
  };
  return { hub, ide, bridge, route, clock, cleanup };
}

Deno.test("hub: a congested IDE pauses the bridge for its route, and drains resume it", async () => {
  const { ide, bridge, route, cleanup } = await setup();
  try {
    bridge.receive({ t: FrameType.CmdStdout, r: route, id: "a", s: 0, q: 1, body: "x" });
    await tick(10);
    assert.deepEqual(bridge.flows(), [], "no pause while the IDE keeps up");
    ide.bufferedAmount = FLOW_HIGH_BYTES + 1;
    bridge.receive({ t: FrameType.CmdStdout, r: route, id: "a", s: 1, q: 2, body: "x" });
    await tick(10);
    assert.deepEqual(bridge.flows(), [{ r: route, paused: true }]);
    ide.bufferedAmount = FLOW_LOW_BYTES + 1;
    await tick(50);
    assert.equal(bridge.flows().length, 1, "still above the low mark: still paused");
    ide.bufferedAmount = FLOW_LOW_BYTES;
    await tick(50);
    assert.deepEqual(bridge.flows(), [{ r: route, paused: true }, { r: route, paused: false }]);
  } finally {
    await cleanup();
  }
});

Deno.test("hub: a congested bridge pauses every IDE socket of the session", async () => {
  const { ide, bridge, cleanup } = await setup();
  try {
    bridge.bufferedAmount = FLOW_HIGH_BYTES + 1;
    ide.receive({ t: FrameType.CmdStdin, id: "a", s: 0, q: 1, body: "x" });
    assert.deepEqual(ide.flows(), [{ r: undefined, paused: true }]);
    bridge.bufferedAmount = 0;
    await tick(50);
    assert.deepEqual(ide.flows(), [{ r: undefined, paused: true }, { r: undefined, paused: false }]);
  } finally {
    await cleanup();
  }
});

Deno.test("hub: a sender that ignores the pause is closed with 4509; the receiver stays", async () => {
  const { ide, bridge, route, cleanup } = await setup({ receiverStuckMs: 60_000 });
  try {
    ide.bufferedAmount = MAX_BUFFERED_BYTES + 1;
    bridge.receive({ t: FrameType.CmdStdout, r: route, id: "a", s: 0, q: 1, body: "x" });
    await tick(10);
    assert.equal(bridge.closed?.code, CloseCode.IgnoredPause);
    assert.equal(ide.closed, undefined);
  } finally {
    await cleanup();
  }
});

Deno.test("hub: a receiver whose buffer does not shrink for the stuck limit is closed with 4508", async () => {
  const { hub, ide, clock, cleanup } = await setup();
  try {
    ide.bufferedAmount = 1000;
    hub.beat();
    clock.advance(200);
    hub.beat();
    assert.equal(ide.closed, undefined, "not yet");
    ide.bufferedAmount = 900; // It reads a little: the clock starts again.
    hub.beat();
    clock.advance(200);
    hub.beat();
    assert.equal(ide.closed, undefined, "reading slowly is not stuck");
    clock.advance(400);
    hub.beat();
    assert.equal((ide.closed as { code: number } | undefined)?.code, CloseCode.SlowConsumer);
  } finally {
    await cleanup();
  }
});

Deno.test("hub: heartbeats run on the injected clock: pings while alive, 4000 after the timeout of silence", async () => {
  const { hub, ide, bridge, clock, cleanup } = await setup({ heartbeatTimeoutMs: 45_000 });
  try {
    const pings = (socket: FakeSocket) => socket.sent.filter((b) => decodeFrame(b).t === FrameType.Ping).length;
    hub.beat();
    assert.equal(pings(ide), 1);
    assert.equal(pings(bridge), 1);
    clock.advance(30_000);
    bridge.receive({ t: FrameType.Pong }); // The bridge answers; the IDE stays silent.
    clock.advance(15_001);
    hub.beat();
    assert.equal((ide.closed as { code: number } | undefined)?.code, CloseCode.HeartbeatTimeout);
    assert.equal(bridge.closed, undefined);
    assert.equal(pings(bridge), 2);
  } finally {
    await cleanup();
  }
});
