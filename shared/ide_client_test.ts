import assert from "node:assert/strict";
import { decodeFrame, encodeFrame } from "./frame_codec.ts";
import { IdeClient, type WebSocketLike } from "./ide_client.ts";
import { FrameType } from "./protocol.ts";

/** A fake IDE socket the test drives as the relay. */
class FakeSocket implements WebSocketLike {
  binaryType = "arraybuffer";
  readyState = 1;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  sent: { t: string; at: number }[] = [];
  send(data: Uint8Array): void {
    this.sent.push({ t: decodeFrame(data).t, at: performance.now() });
  }
  close(code = 1000, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  deliver(init: Parameters<typeof encodeFrame>[0]): void {
    this.onmessage?.({ data: encodeFrame(init).buffer });
  }
}

async function until(fn: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!fn()) {
    if (performance.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("IDE client: handshakes abandoned before the bridge proves itself back off exponentially", async () => {
  const socket = new FakeSocket();
  const ide = new IdeClient({ relayUrl: "http://relay.test", webSocket: () => socket });
  const connected = ide.connect();
  const status = { state: "connected", route: 1, bridgeId: "b1", version: "0.2.0" };
  socket.deliver({ t: FrameType.BridgeStatus, body: status });
  await connected;
  const hellos = () => socket.sent.filter((f) => f.t === FrameType.E2eHello);
  await until(() => hellos().length === 1, 2_000);
  // The "relay" never answers and announces the bridge again, three times.
  for (const [n, minGap] of [[2, 450], [3, 950]] as const) {
    const before = hellos()[n - 2].at;
    socket.deliver({ t: FrameType.BridgeStatus, body: status });
    await until(() => hellos().length === n, 5_000);
    assert.ok(hellos()[n - 1].at - before >= minGap, `hello ${n} came after ${hellos()[n - 1].at - before} ms`);
  }
  // Unknown frame types are skipped, not treated as an end-to-end failure.
  const future = encodeFrame({ t: FrameType.Ping, body: "x" });
  future[1] = 0xee; // A type code this version does not know.
  socket.onmessage?.({ data: future.buffer });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(socket.readyState, 1);
  ide.close();
});
