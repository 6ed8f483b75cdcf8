/**
 * The mesh link's pipe and header checks, against a stand-in home (an npm:ws
 * server) over real loopback sockets: a client that stops reading makes the
 * forwarding instance stop reading the home (the home's own buffer grows,
 * the forwarder's stays under its mark), and everything arrives in order
 * once it reads again; close codes and reasons pass through both ways; the
 * header covers the login.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import WebSocket, { WebSocketServer } from "ws";
import { type Clock, ManualClock, systemClock } from "../shared/clock.ts";
import { CloseCode, HEARTBEAT_TIMEOUT_MS } from "../shared/protocol.ts";
import { type RelayHttpServer, serveRelayHttp } from "./http_server.ts";
import type { BridgeLogin } from "./hub.ts";
import { createLogger } from "./logger.ts";
import { MESH_HIGH_BYTES, MeshAuth, MeshLinks, unmaskedLink } from "./mesh.ts";

const SANITIZE = { sanitizeOps: false, sanitizeResources: false };
const KiB = 1024, MiB = 1024 * KiB;

/** A forwarding instance whose every upgrade is piped to `home`; its client-side sockets are kept for the test. */
async function forwarder(home: string, clock: Clock = systemClock) {
  const auth = new MeshAuth(new Uint8Array(32).fill(9), systemClock);
  const links = new MeshLinks({
    auth,
    instance: "http://127.0.0.1:1",
    clock,
    log: createLogger({ level: "silent" }),
  });
  const clients: WebSocket[] = [];
  const server: RelayHttpServer = await serveRelayHttp({ hostname: "127.0.0.1", port: 0 }, async (_request, info) => {
    const { socket, response } = info.upgrade!();
    clients.push(socket as unknown as WebSocket);
    await links.open(socket, { instance: home, epoch: 1, expiresAt: 0 }, "sid");
    return response;
  });
  return { links, clients, url: `ws://127.0.0.1:${server.addr.port}`, server };
}

/** A stand-in home: an npm:ws server on loopback. */
async function standInHome(onConnection: (ws: WebSocket) => void) {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise<void>((resolve) => wss.once("listening", () => resolve()));
  wss.on("connection", onConnection);
  return { wss, url: `http://127.0.0.1:${(wss.address() as { port: number }).port}` };
}

function opened(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
}

Deno.test(
  "mesh pipe: a client that stops reading stops the forwarder reading the home; all arrives in order afterwards",
  SANITIZE,
  async () => {
    const count = 128, size = 512 * KiB;
    let homeSide: WebSocket | undefined;
    const home = await standInHome((ws) => {
      homeSide = ws;
      for (let i = 0; i < count; i++) {
        const message = Buffer.alloc(size, i % 251);
        message.writeUInt32BE(i, 0);
        ws.send(message);
      }
    });
    const x = await forwarder(home.url);
    const client = new WebSocket(x.url, { perMessageDeflate: false });
    try {
      await opened(client);
      client.pause();
      // Let the home push what it can.
      await new Promise((r) => setTimeout(r, 1_000));
      const forwarderBuffered = x.clients[0].bufferedAmount;
      const homeBuffered = homeSide!.bufferedAmount;
      console.log(
        `client paused: forwarder holds ${(forwarderBuffered / MiB).toFixed(1)} MiB, home ${
          (homeBuffered / MiB).toFixed(1)
        } MiB`,
      );
      assert.ok(forwarderBuffered <= MESH_HIGH_BYTES + size, `forwarder holds ${forwarderBuffered} bytes`);
      assert.ok(homeBuffered > 16 * MiB, `the home was pushed back (${homeBuffered} bytes unsent)`);

      const got: number[] = [];
      const all = new Promise<void>((resolve) => {
        client.on("message", (data: Buffer) => {
          assert.equal(data.byteLength, size);
          got.push(data.readUInt32BE(0));
          if (got.length === count) resolve();
        });
      });
      client.resume();
      await all;
      assert.deepEqual(got, Array.from({ length: count }, (_, i) => i), "every message once, in order");
    } finally {
      client.terminate();
      x.links.stop(1001, "test over");
      await x.server.shutdown();
      home.wss.close();
    }
  },
);

Deno.test("mesh pipe: close codes and reasons pass through both ways", SANITIZE, async () => {
  const homeSockets: WebSocket[] = [];
  const homeClosed: { code: number; reason: string }[] = [];
  const home = await standInHome((ws) => {
    homeSockets.push(ws);
    ws.on("close", (code: number, reason: Buffer) => homeClosed.push({ code, reason: reason.toString() }));
    ws.on("message", (data: Buffer) => ws.send(data));
  });
  const x = await forwarder(home.url);
  try {
    // The home closes: the client sees the same code and reason.
    const first = new WebSocket(x.url, { perMessageDeflate: false });
    await opened(first);
    const echoed = new Promise<string>((resolve) => first.once("message", (d: Buffer) => resolve(d.toString())));
    first.send("ping through");
    assert.equal(await echoed, "ping through");
    assert.equal(x.links.size, 1);
    const firstClosed = new Promise<[number, string]>((resolve) =>
      first.once("close", (code: number, reason: Buffer) => resolve([code, reason.toString()]))
    );
    homeSockets[0].close(4410, "token revoked");
    assert.deepEqual(await firstClosed, [4410, "token revoked"]);

    // The client closes: the home sees it.
    const second = new WebSocket(x.url, { perMessageDeflate: false });
    await opened(second);
    second.close(1000, "IDE closing");
    for (let i = 0; i < 100 && homeClosed.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(homeClosed[1], { code: 1000, reason: "IDE closing" });

    // The client vanishes without a close frame (1006, not sendable): the home gets 1001.
    const third = new WebSocket(x.url, { perMessageDeflate: false });
    await opened(third);
    third.terminate();
    for (let i = 0; i < 100 && homeClosed.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(homeClosed[2].code, 1001);
    assert.equal(x.links.size, 0);
  } finally {
    x.links.stop(1001, "test over");
    await x.server.shutdown();
    home.wss.close();
  }
});

Deno.test(
  "mesh pipe: a home silent for the heartbeat timeout gets its link closed, the client with 4000",
  SANITIZE,
  async () => {
    const clock = new ManualClock();
    const home = await standInHome(() => {});
    const x = await forwarder(home.url, clock);
    const client = new WebSocket(x.url, { perMessageDeflate: false });
    try {
      await opened(client);
      const closed = new Promise<[number, string]>((resolve) =>
        client.once("close", (code: number, reason: Buffer) => resolve([code, reason.toString()]))
      );
      clock.advance(HEARTBEAT_TIMEOUT_MS);
      x.links.beat(HEARTBEAT_TIMEOUT_MS);
      assert.equal(x.links.size, 1, "not before the timeout");
      clock.advance(1);
      x.links.beat(HEARTBEAT_TIMEOUT_MS);
      const [code, reason] = await closed;
      assert.equal(code, CloseCode.HeartbeatTimeout);
      assert.match(reason, /went silent/);
      assert.equal(x.links.size, 0);
    } finally {
      client.terminate();
      await x.server.shutdown();
      home.wss.close();
    }
  },
);

Deno.test("mesh auth: the HMAC covers the login; a login for another session is refused", () => {
  const auth = new MeshAuth(new Uint8Array(32).fill(3), systemClock);
  const login: BridgeLogin = {
    sid: "s1",
    bridgeId: "b1",
    jti: "j1",
    expiresAt: 1,
    approved: false,
    version: "0.0.0",
    telemetry: true,
    address: "127.0.0.1",
  };
  const headers = auth.sign("http://10.0.0.1:8801", "/mesh/bridge", "s1", 1, login);
  assert.deepEqual(auth.verify(new Headers(headers), "/mesh/bridge").login, login);

  const forged = auth.sign("http://10.0.0.1:8801", "/mesh/bridge", "s1", 1, login);
  const other = Buffer.from(JSON.stringify({ ...login, approved: true })).toString("base64url");
  assert.throws(() => auth.verify(new Headers({ ...forged, "Coder1-Mesh-Login": other }), "/mesh/bridge"), /HMAC/);

  const elsewhere = auth.sign("http://10.0.0.1:8801", "/mesh/bridge", "s2", 1, login);
  assert.throws(() => auth.verify(new Headers(elsewhere), "/mesh/bridge"), /login does not match/);
  assert.throws(() => new MeshAuth(new Uint8Array(31), systemClock), /at least 32/);
});

Deno.test("mesh links skip WebSocket masking only over TLS or loopback", () => {
  for (const url of ["http://127.0.0.1:8801", "http://127.1.2.3:1", "http://[::1]:8801", "http://localhost:8801"]) {
    assert.equal(unmaskedLink(url), true, url);
  }
  assert.equal(unmaskedLink("https://relay-2.internal:8443"), true, "TLS");
  for (const url of ["http://10.0.0.2:8801", "http://relay-2.internal:8801", "http://127.example.com:1"]) {
    assert.equal(unmaskedLink(url), false, url);
  }
});
