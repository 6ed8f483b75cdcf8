/**
 * Hostile and broken peers: each gets a documented close code (or HTTP
 * status), and the relay keeps serving everyone else. Also the Origin
 * allowlist on the IDE socket and the heartbeats on both legs.
 */
import assert from "node:assert/strict";
import { decodeFrame, encodeFrame } from "../shared/frame_codec.ts";
import { CloseCode, FrameType, MAX_FRAME_BYTES } from "../shared/protocol.ts";
import { createLogger } from "../relay/logger.ts";
import { type RelayHandle, type RelayOptions, startRelay } from "../relay/relay.ts";
import { ideClient, RawSocket } from "./helpers.ts";

async function withRelay(
  fn: (relay: RelayHandle) => Promise<void>,
  options: Partial<RelayOptions> = {},
): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "coder1-bad-" });
  const relay = await startRelay({ port: 0, dataDir, log: createLogger({ level: "silent" }), ...options });
  try {
    await fn(relay);
  } finally {
    await relay.shutdown();
    await Deno.remove(dataDir, { recursive: true });
  }
}

/** A well-formed frame with one byte changed afterwards (bypassing encodeFrame's checks). */
function editedFrame(init: Parameters<typeof encodeFrame>[0], at: number, value: number): Uint8Array {
  const bytes = encodeFrame(init);
  bytes[at] = value;
  return bytes;
}

/** A protocol 3 frame: a u16 length, then a JSON header. */
function v3Frame(header: unknown, body = new Uint8Array(0)): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(header));
  return new Uint8Array([h.byteLength >> 8, h.byteLength & 0xff, ...h, ...body]);
}

async function newSession(relay: RelayHandle): Promise<string> {
  const res = await fetch(`${relay.url}/api/sessions`, { method: "POST" });
  await res.body?.cancel();
  return res.headers.getSetCookie()[0].split(";")[0];
}

/** A healthy session: an IDE socket and a protocol-level bridge, paired. */
async function healthyPair(relay: RelayHandle) {
  const cookie = await newSession(relay);
  const codeRes = await fetch(`${relay.url}/api/pairing-codes`, { method: "POST", headers: { cookie } });
  const { code } = await codeRes.json();
  const ws = relay.url.replace("http", "ws");
  const bridge = new RawSocket(`${ws}/ws/bridge`);
  await bridge.opened;
  bridge.send(encodeFrame({ t: FrameType.Auth, body: { code, name: "b", version: "0", os: "linux" } }));
  assert.equal(decodeFrame(await bridge.next()).t, FrameType.AuthOk);
  const ide = new RawSocket(`${ws}/ws/ide`, { cookie, origin: relay.url });
  await ide.opened;
  assert.equal(decodeFrame(await ide.next()).t, FrameType.BridgeStatus);
  assert.equal(decodeFrame(await bridge.next()).t, FrameType.IdeOpen);
  return {
    bridge,
    ide,
    /** One frame each way through the relay. */
    async roundTrip(): Promise<void> {
      ide.send(encodeFrame({ t: FrameType.CmdStdin, id: "x", body: "ping" }));
      const got = decodeFrame(await bridge.next());
      assert.equal(got.t, FrameType.CmdStdin);
      bridge.send(encodeFrame({ t: FrameType.CmdStdout, r: got.r, id: "x", body: "pong" }));
      const back = decodeFrame(await ide.next());
      assert.equal(new TextDecoder().decode(back.body), "pong");
    },
    close() {
      bridge.close();
      ide.close();
    },
  };
}

Deno.test("bad frames on the bridge socket get documented close codes; others keep working", async (t) => {
  await withRelay(async (relay) => {
    const good = await healthyPair(relay);
    const ws = relay.url.replace("http", "ws");
    const cases: [string, (s: RawSocket) => void, number][] = [
      ["text (non-JSON) frame", (s) => s.send("hello"), CloseCode.BadFrame],
      ["JSON as text", (s) => s.send(JSON.stringify({ t: "auth" })), CloseCode.BadFrame],
      ["garbage bytes", (s) => s.send(new Uint8Array([4, 5, 1, 2, 3, 4, 5, 6])), CloseCode.BadFrame],
      [
        "shorter than the header",
        (s) => s.send(encodeFrame({ t: FrameType.Auth }).subarray(0, 20)),
        CloseCode.BadFrame,
      ],
      [
        "id longer than the frame",
        (s) => s.send(editedFrame({ t: FrameType.Auth, body: "{}" }, 3, 60)),
        CloseCode.BadFrame,
      ],
      ["unknown flag bits", (s) => s.send(editedFrame({ t: FrameType.Auth }, 2, 0x80)), CloseCode.BadFrame],
      [
        "another protocol version",
        (s) => s.send(editedFrame({ t: FrameType.Auth }, 0, 9)),
        CloseCode.UnsupportedVersion,
      ],
      [
        "a protocol 3 auth frame",
        (s) => s.send(v3Frame({ v: 3, t: "auth" }, new TextEncoder().encode('{"code":"123456","version":"0.3.0"}'))),
        CloseCode.UnsupportedVersion,
      ],
      [
        "frame before auth",
        (s) => s.send(encodeFrame({ t: FrameType.CmdStdout, r: 1, id: "a", body: "x" })),
        CloseCode.BadFrame,
      ],
      ["auth body not JSON", (s) => s.send(encodeFrame({ t: FrameType.Auth, body: "{nope" })), CloseCode.BadFrame],
      [
        "auth with both code and token",
        (s) =>
          s.send(
            encodeFrame({ t: FrameType.Auth, body: { code: "123456", token: "x", name: "n", version: "1", os: "l" } }),
          ),
        CloseCode.BadFrame,
      ],
      ["oversized frame", (s) => s.send(new Uint8Array(MAX_FRAME_BYTES + 1)), CloseCode.TooBig],
    ];
    for (const [name, act, expected] of cases) {
      await t.step(name, async () => {
        const s = new RawSocket(`${ws}/ws/bridge`);
        await s.opened;
        act(s);
        assert.equal((await s.closed).code, expected);
        await good.roundTrip();
      });
    }
    await t.step("unknown type, IDE-only type, relay-only type and a second auth after auth", async () => {
      const frames = [
        editedFrame({ t: FrameType.CmdStdout, r: 1, id: "a" }, 1, 0xee),
        encodeFrame({ t: FrameType.CmdStart, r: 1, id: "a" }),
        encodeFrame({ t: FrameType.Flow, r: 1, body: { paused: true } }),
        encodeFrame({ t: FrameType.Auth, body: { code: "123456", version: "1" } }),
        encodeFrame({ t: FrameType.CmdStdout, id: "no-route" }),
      ];
      for (const frame of frames) {
        const pair = await healthyPair(relay);
        pair.bridge.send(frame);
        assert.equal((await pair.bridge.closed).code, CloseCode.BadFrame);
        pair.close();
        await good.roundTrip();
      }
    });
    good.close();
    const health = await fetch(`${relay.url}/healthz`);
    assert.deepEqual((await health.json()).status, "ok");
  });
});

Deno.test("bad frames on the IDE socket get documented close codes; others keep working", async (t) => {
  await withRelay(async (relay) => {
    const good = await healthyPair(relay);
    const ws = relay.url.replace("http", "ws");
    const cases: [string, (s: RawSocket) => void, number][] = [
      ["text frame", (s) => s.send("{}"), CloseCode.BadFrame],
      ["garbage bytes", (s) => s.send(new Uint8Array([4, 1, 0x7b])), CloseCode.BadFrame],
      ["a protocol 3 frame", (s) => s.send(v3Frame({ v: 3, t: "pong" })), CloseCode.UnsupportedVersion],
      ["unknown type", (s) => s.send(editedFrame({ t: FrameType.Pong }, 1, 0xee)), CloseCode.BadFrame],
      ["bridge-only type", (s) => s.send(encodeFrame({ t: FrameType.CmdStdout, id: "a" })), CloseCode.BadFrame],
      ["auth on the IDE socket", (s) => s.send(encodeFrame({ t: FrameType.Auth, body: {} })), CloseCode.BadFrame],
      ["relay-only type", (s) => s.send(encodeFrame({ t: FrameType.BridgeStatus, body: {} })), CloseCode.BadFrame],
      // A bad id, s or q in an end-to-end frame is not checked here: the relay reads only the
      // fixed prefix of what it forwards, and the bridge refuses such frames (shared/frame_codec.ts).
      ["oversized frame", (s) => s.send(new Uint8Array(MAX_FRAME_BYTES + 10)), CloseCode.TooBig],
    ];
    for (const [name, act, expected] of cases) {
      await t.step(name, async () => {
        const cookie = await newSession(relay);
        const s = new RawSocket(`${ws}/ws/ide`, { cookie, origin: relay.url });
        await s.opened;
        await s.next(); // bridge.status
        act(s);
        assert.equal((await s.closed).code, expected);
        await good.roundTrip();
      });
    }
    good.close();
  });
});

Deno.test("a bridge socket that never authenticates is closed with 4408", async () => {
  await withRelay(async (relay) => {
    const s = new RawSocket(`${relay.url.replace("http", "ws")}/ws/bridge`);
    await s.opened;
    const t0 = performance.now();
    assert.equal((await s.closed).code, CloseCode.AuthTimeout);
    assert.ok(performance.now() - t0 >= 150);
  }, { timings: { authDeadlineMs: 200 } });
});

Deno.test("heartbeats: silent peers are dropped with 4000 on both legs; live ones stay", async () => {
  await withRelay(async (relay) => {
    const pair = await healthyPair(relay); // raw sockets: they never answer pings
    const live = ideClient(relay.url);
    await live.createSession();
    await live.connect();
    const [b, i] = await Promise.all([pair.bridge.closed, pair.ide.closed]);
    assert.equal(b.code, CloseCode.HeartbeatTimeout);
    assert.equal(i.code, CloseCode.HeartbeatTimeout);
    // The IdeClient answers pings: it is still connected after several intervals.
    await new Promise((r) => setTimeout(r, 1_500));
    const res = await fetch(`${relay.url}/healthz`);
    await res.body?.cancel();
    assert.equal(relay.hub.stats.ides, 1);
    live.close();
  }, { timings: { heartbeatIntervalMs: 100, heartbeatTimeoutMs: 600 } });
});

Deno.test("the IDE socket checks Origin and session; the API refuses foreign origins", async (t) => {
  await withRelay(async (relay) => {
    const ws = relay.url.replace("http", "ws");
    const cookie = await newSession(relay);
    await t.step("foreign Origin is refused with 403", async () => {
      const s = new RawSocket(`${ws}/ws/ide`, { cookie, origin: "https://evil.example" });
      await assert.rejects(s.opened, /HTTP 403/);
    });
    await t.step("missing Origin is refused", async () => {
      const s = new RawSocket(`${ws}/ws/ide`, { cookie });
      await assert.rejects(s.opened, /HTTP 403/);
    });
    await t.step("allowed Origin without a session is refused with 401", async () => {
      const s = new RawSocket(`${ws}/ws/ide`, { origin: relay.url });
      await assert.rejects(s.opened, /HTTP 401/);
    });
    await t.step("an --allowed-origin is accepted", async () => {
      const s = new RawSocket(`${ws}/ws/ide`, { cookie, origin: "https://ide.example" });
      await s.opened;
      s.close();
    });
    await t.step("pairing codes cannot be requested from a foreign origin", async () => {
      const res = await fetch(`${relay.url}/api/pairing-codes`, {
        method: "POST",
        headers: { cookie, origin: "https://evil.example" },
      });
      assert.equal(res.status, 403);
      assert.equal((await res.json()).error, "bad-origin");
    });
    await t.step("CORS preflight only for allowed origins", async () => {
      const ok = await fetch(`${relay.url}/api/pairing-codes`, {
        method: "OPTIONS",
        headers: { origin: "https://ide.example" },
      });
      await ok.body?.cancel();
      assert.equal(ok.status, 204);
      assert.equal(ok.headers.get("access-control-allow-origin"), "https://ide.example");
      const bad = await fetch(`${relay.url}/api/pairing-codes`, {
        method: "OPTIONS",
        headers: { origin: "https://evil.example" },
      });
      await bad.body?.cancel();
      assert.equal(bad.status, 403);
    });
    await t.step("unknown routes and methods get JSON errors", async () => {
      const nf = await fetch(`${relay.url}/nope`);
      assert.equal(nf.status, 404);
      assert.equal((await nf.json()).error, "not-found");
      const m = await fetch(`${relay.url}/api/sessions`);
      assert.equal(m.status, 405);
      await m.body?.cancel();
      const up = await fetch(`${relay.url}/ws/bridge`);
      assert.equal(up.status, 426);
      await up.body?.cancel();
      // An upgrade without a usable key is the client's mistake: 400 with a JSON reason, not a 500.
      for (const headers of [{}, { "sec-websocket-key": "short", "sec-websocket-version": "13" }]) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(relay.url).port) });
        const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
        await conn.write(new TextEncoder().encode(
          `GET /ws/bridge HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n${extra}\r\n`,
        ));
        const buf = new Uint8Array(4096);
        const n = await conn.read(buf);
        conn.close();
        const answer = new TextDecoder().decode(buf.subarray(0, n ?? 0));
        assert.match(answer, /^HTTP\/1\.1 400/);
        assert.match(answer, /"bad-upgrade"/);
      }
    });
  }, { allowedOrigins: ["https://ide.example"] });
});

Deno.test("relay forwards IDE frames stamped with the sender's route; bridge replies go back by route", async () => {
  await withRelay(async (relay) => {
    const pair = await healthyPair(relay);
    const sent = encodeFrame({ t: FrameType.CmdStart, r: 999, id: "k", s: 7, q: 3, body: { command: "x" } });
    pair.ide.send(sent);
    const got = await pair.bridge.next();
    const f = decodeFrame(got);
    assert.notEqual(f.r, 999, "an IDE cannot choose its route");
    assert.equal(JSON.parse(new TextDecoder().decode(f.body)).command, "x");
    // Forwarding changes the four route bytes and nothing else.
    assert.equal(got.byteLength, sent.byteLength);
    for (let i = 0; i < sent.byteLength; i++) if (i < 4 || i > 7) assert.equal(got[i], sent[i], `byte ${i}`);
    // Frames to the IDE carry no route.
    pair.bridge.send(encodeFrame({ t: FrameType.CmdStdout, r: f.r, id: "k", body: "back" }));
    assert.equal(decodeFrame(await pair.ide.next()).r, undefined);
    // A reply to a route that does not exist goes nowhere and does not kill the bridge.
    pair.bridge.send(encodeFrame({ t: FrameType.CmdStdout, r: 424242, id: "k", body: "lost" }));
    await pair.roundTrip();
    pair.close();
  });
});

Deno.test("allowed origins are compared as browsers send them (no trailing slash, no default port)", async () => {
  await withRelay(async (relay) => {
    assert.ok(relay.allowedOrigins.includes("https://ide.example"));
    assert.ok(relay.allowedOrigins.includes("https://relay.example"));
    const cookie = await newSession(relay);
    const s = new RawSocket(`${relay.url.replace("http", "ws")}/ws/ide`, { cookie, origin: "https://relay.example" });
    await s.opened;
    s.close();
  }, { allowedOrigins: ["https://ide.example/"], publicUrl: "https://relay.example:443/" });
});

Deno.test("a client of an older protocol (no coder1.v4 subprotocol) is told which side to update, with 4426", async () => {
  await withRelay(async (relay) => {
    const ws = relay.url.replace("http", "ws");
    const bridge = new RawSocket(`${ws}/ws/bridge`, {}, {}, []);
    await bridge.opened;
    const closed = await bridge.closed;
    assert.equal(closed.code, CloseCode.UnsupportedVersion);
    assert.equal(closed.reason, "update the bridge: relay speaks protocol 4");
    const cookie = await newSession(relay);
    const ide = new RawSocket(`${ws}/ws/ide`, { cookie, origin: relay.url }, {}, []);
    await ide.opened;
    const ideClosed = await ide.closed;
    assert.equal(ideClosed.code, CloseCode.UnsupportedVersion);
    assert.equal(ideClosed.reason, "reload the page: relay speaks protocol 4");
    // A newer client gets its own subprotocol back (so its handshake succeeds) and then the reason.
    const newer = new RawSocket(`${ws}/ws/bridge`, {}, {}, ["coder1.v9"]);
    await newer.opened;
    assert.equal(newer.ws.protocol, "coder1.v9");
    const newerClosed = await newer.closed;
    assert.equal(newerClosed.code, CloseCode.UnsupportedVersion);
    assert.equal(newerClosed.reason, "update the relay: it speaks protocol 4, this bridge 9");
    // A current client gets the subprotocol back.
    const current = new RawSocket(`${ws}/ws/bridge`);
    await current.opened;
    assert.equal(current.ws.protocol, "coder1.v4");
    current.close();
  });
});
