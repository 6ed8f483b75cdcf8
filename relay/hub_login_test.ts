/**
 * Bridge login before the upgrade (`Hub.authenticateBridge`, then
 * `Hub.acceptBridge`): a pairing code redeemed for an upgrade that never
 * completes is not lost, but only the same address gets it back, only for
 * {@linkcode UNCLAIMED_LOGIN_MS}, and only once.
 */
import assert from "node:assert/strict";
import { ManualClock } from "../shared/clock.ts";
import { Coder1Error } from "../shared/errors.ts";
import { decodeFrame } from "../shared/frame_codec.ts";
import { FrameType } from "../shared/protocol.ts";
import { BridgeCredentials } from "./bridge_credentials.ts";
import { Hub, UNCLAIMED_LOGIN_MS } from "./hub.ts";
import { createLogger } from "./logger.ts";
import { Pairing } from "./pairing.ts";
import { MemoryStore } from "./store.ts";
import { loadSigningKey, TokenService } from "./token_service.ts";

/** An upgraded socket stand-in that opens, or closes before it ever opened. */
class FakeSocket {
  readyState: number = WebSocket.CONNECTING;
  binaryType = "nodebuffer";
  sent: Uint8Array[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number }) => void) | null = null;
  onerror: (() => void) | null = null;
  send(bytes: Uint8Array): void {
    this.sent.push(bytes);
  }
  close(): void {}
  open(): void {
    this.readyState = WebSocket.OPEN;
    this.onopen?.();
  }
  /** The upgrade failed: closed without opening. */
  fail(): void {
    this.readyState = WebSocket.CLOSED;
    this.onclose?.({ code: 1006 });
  }
}

async function setup() {
  const dir = await Deno.makeTempDir({ prefix: "coder1-hub-login-" });
  const clock = new ManualClock(Date.now());
  const store = new MemoryStore();
  const tokens = new TokenService(await loadSigningKey(`${dir}/key.jwk`, { create: true }), { clock, store });
  const pairing = new Pairing({ store, clock, random: (b) => crypto.getRandomValues(b) });
  const credentials = new BridgeCredentials({ tokens, store, pairing, clock });
  const hub = new Hub({ credentials, log: createLogger({ level: "silent" }), clock });
  const { code } = await pairing.issue("session-1", "192.0.2.1");
  return { hub, clock, code, cleanup: () => Deno.remove(dir, { recursive: true }) };
}

const refused = (e: unknown) => e instanceof Coder1Error && e.status === 401;

Deno.test("hub: a code redeemed for an upgrade that never opened gets the same login again, same address only", async () => {
  const { hub, code, cleanup } = await setup();
  try {
    const first = await hub.authenticateBridge({ code, version: "1" }, "192.0.2.7");
    assert.ok(first.token, "a redeemed code brings a token");
    const lost = new FakeSocket();
    hub.acceptBridge(lost as unknown as WebSocket, first);
    lost.fail();
    // Another address cannot pick it up: for it the code is used.
    await assert.rejects(hub.authenticateBridge({ code, version: "1" }, "192.0.2.8"), refused);
    const again = await hub.authenticateBridge({ code, version: "1" }, "192.0.2.7");
    assert.equal(again.bridgeId, first.bridgeId);
    assert.equal(again.token, first.token);
    const socket = new FakeSocket();
    hub.acceptBridge(socket as unknown as WebSocket, again);
    socket.open();
    const ok = decodeFrame(socket.sent[0]);
    assert.equal(ok.t, FrameType.AuthOk);
    assert.equal(hub.bridgeConnected("session-1"), true);
    // Picked up once: a third try is a used code.
    await assert.rejects(hub.authenticateBridge({ code, version: "1" }, "192.0.2.7"), refused);
  } finally {
    hub.stop();
    await cleanup();
  }
});

Deno.test("hub: an unclaimed login expires after UNCLAIMED_LOGIN_MS", async () => {
  const { hub, clock, code, cleanup } = await setup();
  try {
    const first = await hub.authenticateBridge({ code, version: "1" }, "192.0.2.7");
    const lost = new FakeSocket();
    hub.acceptBridge(lost as unknown as WebSocket, first);
    lost.fail();
    clock.advance(UNCLAIMED_LOGIN_MS);
    await assert.rejects(hub.authenticateBridge({ code, version: "1" }, "192.0.2.7"), refused);
  } finally {
    hub.stop();
    await cleanup();
  }
});
