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
import { bridgeSocket, ideClient, RawSocket } from "./helpers.ts";

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

/** Bridges of healthy pairs each come from their own loopback address (10 redemptions per address per minute). */
let pairs = 0;

/** A healthy session: an IDE socket and a protocol-level bridge, paired. */
async function healthyPair(relay: RelayHandle) {
  const cookie = await newSession(relay);
  const codeRes = await fetch(`${relay.url}/api/pairing-codes`, { method: "POST", headers: { cookie } });
  const { code } = await codeRes.json();
  const ws = relay.url.replace("http", "ws");
  const bridge = bridgeSocket(relay.url, { code }, {}, { localAddress: `127.0.33.${1 + (pairs++ % 250)}` });
  await bridge.opened;
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

Deno.test("bad credentials on /ws/bridge get an HTTP error before any socket; others keep working", async (t) => {
  await withRelay(async (relay) => {
    const good = await healthyPair(relay);
    const ws = relay.url.replace("http", "ws");
    const cases: [string, Record<string, string>, number, RegExp][] = [
      ["no credential (a bridge from before this relay)", {}, 401, /Authorization/],
      ["an unknown scheme", { authorization: "Basic Zm9vOmJhcg==" }, 401, /Authorization/],
      ["a wrong code", { authorization: "Pairing-Code 000000", "coder1-bridge-version": "1" }, 401, /wrong/],
      ["a forged token", { authorization: "Bearer a.b.c", "coder1-bridge-version": "1" }, 401, /authenticate/],
      ["no version", { authorization: "Pairing-Code 123456" }, 400, /version/],
      ["a version too long", { authorization: "Bearer x", "coder1-bridge-version": "9".repeat(40) }, 400, /version/],
      [
        "a bad telemetry header",
        { authorization: "Bearer x", "coder1-bridge-version": "1", "coder1-telemetry": "no" },
        400,
        /Telemetry/,
      ],
      [
        "an Origin (a web page)",
        { authorization: "Bearer x", "coder1-bridge-version": "1", origin: relay.url },
        403,
        /web page/,
      ],
    ];
    for (const [name, headers, status, message] of cases) {
      await t.step(name, async () => {
        const s = new RawSocket(`${ws}/ws/bridge`, headers);
        await assert.rejects(s.opened, new RegExp(`HTTP ${status}`));
        const closed = await s.closed;
        assert.equal(closed.code, status);
        assert.match(closed.reason, message);
        await good.roundTrip();
      });
    }
    good.close();
  });
});

Deno.test("bad frames on an authenticated bridge socket get documented close codes; others keep working", async (t) => {
  await withRelay(async (relay) => {
    const good = await healthyPair(relay);
    const cases: [string, Uint8Array | string, number][] = [
      ["text (non-JSON) frame", "hello", CloseCode.BadFrame],
      ["JSON as text", JSON.stringify({ t: "auth" }), CloseCode.BadFrame],
      ["garbage bytes", new Uint8Array([4, 5, 1, 2, 3, 4, 5, 6]), CloseCode.BadFrame],
      ["shorter than the header", encodeFrame({ t: FrameType.Pong }).subarray(0, 20), CloseCode.BadFrame],
      [
        "id longer than the frame",
        editedFrame({ t: FrameType.CmdStdout, r: 1, body: "{}" }, 3, 60),
        CloseCode.BadFrame,
      ],
      ["unknown flag bits", editedFrame({ t: FrameType.Pong }, 2, 0x80), CloseCode.BadFrame],
      ["another protocol version", editedFrame({ t: FrameType.Pong }, 0, 9), CloseCode.UnsupportedVersion],
      [
        "a protocol 3 auth frame",
        v3Frame({ v: 3, t: "auth" }, new TextEncoder().encode('{"code":"123456","version":"0.3.0"}')),
        CloseCode.UnsupportedVersion,
      ],
      ["unknown type", editedFrame({ t: FrameType.CmdStdout, r: 1, id: "a" }, 1, 0xee), CloseCode.BadFrame],
      ["IDE-only type", encodeFrame({ t: FrameType.CmdStart, r: 1, id: "a" }), CloseCode.BadFrame],
      ["relay-only type", encodeFrame({ t: FrameType.Flow, r: 1, body: { paused: true } }), CloseCode.BadFrame],
      // Bridges of this relay's version present their credential in the upgrade request, never in a frame.
      ["an auth frame", encodeFrame({ t: FrameType.Auth, body: { code: "123456", version: "1" } }), CloseCode.BadFrame],
      ["no route", encodeFrame({ t: FrameType.CmdStdout, id: "no-route" }), CloseCode.BadFrame],
      ["oversized frame", new Uint8Array(MAX_FRAME_BYTES + 1), CloseCode.TooBig],
    ];
    for (const [name, frame, expected] of cases) {
      await t.step(name, async () => {
        const pair = await healthyPair(relay);
        pair.bridge.send(frame);
        const closed = await pair.bridge.closed;
        assert.equal(closed.code, expected);
        if (name === "an auth frame") assert.match(closed.reason, /update the bridge/);
        pair.close();
        await good.roundTrip();
      });
    }
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
      // An upgrade without a usable key, or without `Connection: Upgrade`, is the client's mistake:
      // 400 with a JSON reason, not a 500.
      const key = { "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13" };
      const variants: [string, Record<string, string>][] = [
        ["/ws/bridge", { connection: "upgrade" }],
        ["/ws/bridge", { connection: "upgrade", "sec-websocket-key": "short", "sec-websocket-version": "13" }],
        ["/ws/bridge", { connection: "keep-alive", ...key }],
        ["/ws/ide", { connection: "keep-alive", ...key }],
      ];
      for (const [path, headers] of variants) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(relay.url).port) });
        const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
        const cookie = path === "/ws/ide" ? `cookie: ${await newSession(relay)}\r\norigin: ${relay.url}\r\n` : "";
        await conn.write(new TextEncoder().encode(
          `GET ${path} HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n${cookie}${extra}\r\n`,
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

Deno.test("a client of another protocol is told which side to update: an IDE with 4426, a bridge with HTTP 426", async () => {
  await withRelay(async (relay) => {
    const ws = relay.url.replace("http", "ws");
    // A bridge gets no socket before it has authenticated the way this relay expects.
    const bridge = new RawSocket(`${ws}/ws/bridge`, {}, {}, []);
    await assert.rejects(bridge.opened, /HTTP 426/);
    const closed = await bridge.closed;
    assert.equal(closed.code, 426);
    assert.equal(closed.reason, "update the bridge: relay speaks protocol 4");
    const cookie = await newSession(relay);
    const ide = new RawSocket(`${ws}/ws/ide`, { cookie, origin: relay.url }, {}, []);
    await ide.opened;
    const ideClosed = await ide.closed;
    assert.equal(ideClosed.code, CloseCode.UnsupportedVersion);
    assert.equal(ideClosed.reason, "reload the page: relay speaks protocol 4");
    // A newer IDE gets its own subprotocol back (so its handshake succeeds) and then the reason.
    const newerIde = new RawSocket(`${ws}/ws/ide`, { cookie, origin: relay.url }, {}, ["coder1.v9"]);
    await newerIde.opened;
    assert.equal(newerIde.ws.protocol, "coder1.v9");
    const newerIdeClosed = await newerIde.closed;
    assert.equal(newerIdeClosed.code, CloseCode.UnsupportedVersion);
    assert.equal(newerIdeClosed.reason, "update the relay: it speaks protocol 4, this page 9");
    const newer = new RawSocket(`${ws}/ws/bridge`, {}, {}, ["coder1.v9"]);
    assert.equal((await newer.closed).reason, "update the relay: it speaks protocol 4, this bridge 9");
    // A current client gets the subprotocol back.
    const cookie2 = await newSession(relay);
    const { code } =
      await (await fetch(`${relay.url}/api/pairing-codes`, { method: "POST", headers: { cookie: cookie2 } }))
        .json();
    const current = bridgeSocket(relay.url, { code });
    await current.opened;
    assert.equal(current.ws.protocol, "coder1.v4");
    current.close();
  });
});

Deno.test("/metrics answers only a Host that names the relay: a DNS-rebinding page gets 421", async () => {
  await withRelay(async (relay) => {
    const ask = async (host: string) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: relay.port });
      await conn.write(new TextEncoder().encode(`GET /metrics HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
      const chunks: Uint8Array[] = [];
      const buf = new Uint8Array(64 * 1024);
      for (let n = await conn.read(buf); n !== null; n = await conn.read(buf).catch(() => null)) {
        chunks.push(buf.slice(0, n));
      }
      conn.close();
      const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
      return { status: Number(text.split(" ")[1]), text };
    };
    // The attacker's page resolves its own name to the relay's address: the Host is still the attacker's name.
    for (const host of [`evil.example:${relay.port}`, "evil.example", `relay.example.evil:${relay.port}`, ""]) {
      const r = await ask(host);
      assert.equal(r.status, 421, `Host: ${host}`);
    }
    assert.match((await ask(`evil.example:${relay.port}`)).text, /"bad-host"/);
    for (const host of [`127.0.0.1:${relay.port}`, `localhost:${relay.port}`, "relay.example", "[::1]:8787"]) {
      const r = await ask(host);
      assert.equal(r.status, 200, `Host: ${host}`);
      assert.match(r.text, /coder1_bridges_connected/);
    }
  }, { publicUrl: "https://relay.example" });
});
