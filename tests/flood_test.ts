/**
 * Connection floods and slow clients: bridge upgrades without a credential
 * (HTTP 401 before any socket exists, the connection ended), upgrades sent
 * byte by byte, request heads that never end (slowloris: destroyed at the
 * head deadline), many sockets from one address (the per-address cap: HTTP
 * 429 `too-many-sockets` past it), oversized messages (4413 while they
 * arrive) and clients of an older protocol (an IDE socket is upgraded, then
 * closed with 4426; a bridge gets HTTP 426). Meanwhile a paired user keeps
 * working. tests/transport_test.ts has the memory-pinning attacks. docs/RELIABILITY.md ("Abuse limits") has the
 * figures these tests print.
 *
 * @module
 */
import assert from "node:assert/strict";
import WebSocket from "ws";
import { createLogger } from "../relay/logger.ts";
import { type RelayHandle, type RelayOptions, startRelay } from "../relay/relay.ts";
import { decodeFrame, encodeFrame } from "../shared/frame_codec.ts";
import { CLOSE_TEARDOWN_MS, REQUEST_HEAD_TIMEOUT_MS } from "../relay/http_server.ts";
import {
  CloseCode,
  FrameType,
  MAX_CONNECTIONS_PER_ADDRESS,
  PROTOCOL_VERSION,
  WS_SUBPROTOCOL,
} from "../shared/protocol.ts";
import { bridgeSocket, makeTestDirs, pairedSetup, RawSocket, runCollect, startRelayProcess } from "./helpers.ts";

const SANITIZE = { sanitizeOps: false, sanitizeResources: false };
const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function withRelay(fn: (relay: RelayHandle) => Promise<void>, options: Partial<RelayOptions> = {}) {
  const dataDir = await Deno.makeTempDir({ prefix: "coder1-flood-" });
  const relay = await startRelay({
    port: 0,
    dataDir,
    log: createLogger({ level: "silent" }),
    telemetry: false,
    ...options,
  });
  try {
    await fn(relay);
  } finally {
    await relay.shutdown();
    await Deno.remove(dataDir, { recursive: true });
  }
}

/** Polls `check` every 10 ms until it holds (or fails after `ms`). */
async function eventually(check: () => boolean, what: string, ms = 3_000): Promise<void> {
  const end = performance.now() + ms;
  while (!check()) {
    if (performance.now() > end) throw new Error(`Timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function newSession(url: string): Promise<string> {
  const res = await fetch(`${url}/api/sessions`, { method: "POST" });
  await res.body?.cancel();
  return res.headers.getSetCookie()[0].split(";")[0];
}

/**
 * A healthy session of protocol-level sockets: an IDE socket and a bridge
 * paired with a code. `roundTrip()` sends one frame each way through the relay.
 */
async function healthyPair(url: string) {
  const cookie = await newSession(url);
  const codeRes = await fetch(`${url}/api/pairing-codes`, { method: "POST", headers: { cookie } });
  const { code } = await codeRes.json();
  const ws = url.replace("http", "ws");
  const bridge = bridgeSocket(url, { code, version: "0.3.0" });
  await bridge.opened;
  assert.equal(decodeFrame(await bridge.next()).t, FrameType.AuthOk);
  const ide = new RawSocket(`${ws}/ws/ide`, { cookie, origin: url });
  await ide.opened;
  assert.equal(decodeFrame(await ide.next()).t, FrameType.BridgeStatus);
  assert.equal(decodeFrame(await bridge.next()).t, FrameType.IdeOpen);
  return {
    async roundTrip(): Promise<void> {
      ide.send(encodeFrame({ t: FrameType.CmdStdin, id: "h", q: 1, body: "ping" }));
      const there = decodeFrame(await bridge.next());
      bridge.send(encodeFrame({ t: FrameType.CmdStdout, r: there.r, id: "h", q: 1, body: "pong" }));
      assert.equal(decoder.decode(decodeFrame(await ide.next()).body), "pong");
    },
    close() {
      ide.close();
      bridge.close();
    },
  };
}

/**
 * An npm:ws socket (asking for this version's subprotocol) from `localAddress`;
 * `refused` has the status and JSON body of an HTTP refusal.
 */
function socketFrom(url: string, localAddress: string, headers: Record<string, string> = {}) {
  const ws = new WebSocket(url, [WS_SUBPROTOCOL], { headers, localAddress, perMessageDeflate: false });
  const result = Promise.withResolvers<"open" | { status: number; body: Record<string, unknown> }>();
  const closed = Promise.withResolvers<number>();
  ws.on("open", () => result.resolve("open"));
  ws.on("unexpected-response", (_req, res) => {
    let text = "";
    res.on("data", (chunk: Uint8Array) => text += decoder.decode(chunk));
    res.on("end", () => {
      result.resolve({ status: res.statusCode ?? 0, body: JSON.parse(text || "{}") });
      ws.terminate();
    });
  });
  ws.on("error", (error) => result.reject(error));
  ws.on("close", (code) => closed.resolve(code));
  return { ws, result: result.promise, closed: closed.promise };
}

// ---------------------------------------------------------------------------
// Raw TCP: HTTP requests and WebSocket frames written by hand.

/** The upgrade request of a WebSocket client of this version (it asks for the subprotocol), as bytes. */
function upgradeRequest(path: string, host: string): Uint8Array {
  return encoder.encode(
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${btoa("coder1-flood-key")}\r\nSec-WebSocket-Version: 13\r\n` +
      `Sec-WebSocket-Protocol: ${WS_SUBPROTOCOL}\r\n\r\n`,
  );
}

/** A client's masked binary frame (mask 0: a test does not need to hide anything). */
function maskedFrameHeader(length: number): Uint8Array {
  if (length < 126) return new Uint8Array([0x82, 0x80 | length, 0, 0, 0, 0]);
  return new Uint8Array([0x82, 0x80 | 126, length >> 8, length & 0xff, 0, 0, 0, 0]);
}

/** Reads a raw connection into a growing buffer; `closed` resolves when the peer ends it. */
class RawReader {
  bytes = new Uint8Array(0);
  readonly closed: Promise<number>;
  #notify?: () => void;

  constructor(readonly conn: Deno.Conn) {
    this.closed = (async () => {
      const chunk = new Uint8Array(16 * 1024);
      try {
        for (;;) {
          const n = await conn.read(chunk);
          if (n === null) break;
          const grown = new Uint8Array(this.bytes.length + n);
          grown.set(this.bytes);
          grown.set(chunk.subarray(0, n), this.bytes.length);
          this.bytes = grown;
          this.#notify?.();
        }
      } catch {
        // Reset by the peer: closed too.
      }
      this.#notify?.();
      return performance.now();
    })();
  }

  /** Waits until `check(bytes)` returns something (or the connection ends). */
  async until<T>(check: (bytes: Uint8Array) => T | undefined, ms: number): Promise<T | undefined> {
    const end = performance.now() + ms;
    let ended = false;
    this.closed.then(() => ended = true);
    for (;;) {
      const found = check(this.bytes);
      if (found !== undefined || ended || performance.now() > end) return found;
      await new Promise<void>((resolve) => {
        this.#notify = resolve;
        setTimeout(resolve, 50);
      });
    }
  }
}

/** The status code of an HTTP response head in `bytes`, once the head is complete. */
function responseStatus(bytes: Uint8Array): number | undefined {
  const text = decoder.decode(bytes);
  if (!text.includes("\r\n\r\n")) return undefined;
  return Number(text.split(" ")[1]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------

Deno.test("bridge upgrades without a credential get 401 before any socket, hold no slot and are hung up", async () => {
  await withRelay(async (relay) => {
    const good = await healthyPair(relay.url);
    const ws = relay.url.replace("http", "ws");
    const t0 = performance.now();
    // 120 bridges without a credential from 4 addresses.
    const refused = await Promise.all(
      Array.from({ length: 120 }, (_, i) => socketFrom(`${ws}/ws/bridge`, `127.0.20.${1 + (i % 4)}`).result),
    );
    // One that goes on with a frame after its upgrade request: the relay reads none of it and hangs up.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: relay.port });
    const partial = new RawReader(conn);
    await conn.write(upgradeRequest("/ws/bridge", `127.0.0.1:${relay.port}`));
    await conn.write(new Uint8Array([...maskedFrameHeader(100), ...new Uint8Array(10)])).catch(() => 0);
    const status = await partial.until(responseStatus, 2_000);
    const ended = await Promise.race([partial.closed, sleep(CLOSE_TEARDOWN_MS + 3_000).then(() => -1)]);
    await good.roundTrip();
    console.log(
      `120 bridges without a credential: ${[...new Set(refused.map((r) => r === "open" ? r : r.status))]} in ` +
        `${(performance.now() - t0).toFixed(0)} ms; with a frame after it: ${status}, hung up after ` +
        `${(ended - t0).toFixed(0)} ms`,
    );
    for (const r of refused) {
      assert.ok(r !== "open" && r.status === 401 && r.body.error === "unauthorized", JSON.stringify(r));
    }
    assert.equal(status, 401);
    assert.ok(ended > 0, "the relay hung up");
    conn.close();
    assert.equal(relay.connections.total, 2, "refused upgrades hold no slot");
    good.close();
  });
});

Deno.test("per-address cap: 64 sockets from one address, the 65th is refused with 429; others unaffected", async () => {
  await withRelay(async (relay) => {
    const cap = MAX_CONNECTIONS_PER_ADDRESS;
    const good = await healthyPair(relay.url);
    const ws = relay.url.replace("http", "ws");
    const cookie = await newSession(relay.url);
    const ideFrom = (address: string) => socketFrom(`${ws}/ws/ide`, address, { cookie, origin: relay.url });
    const crowded = "127.0.30.1";

    // (Bridge sockets count too, but only authenticated ones exist: tests/transport_test.ts.)
    const open = await Promise.all(
      Array.from({ length: cap }, () => ideFrom(crowded)).map(async (s) => {
        assert.equal(await s.result, "open");
        return s;
      }),
    );
    assert.equal(relay.connections.count(crowded), cap);
    const extra = await Promise.all(Array.from({ length: 10 }, () => ideFrom(crowded).result));
    for (const refused of extra) {
      assert.notEqual(refused, "open");
      if (refused === "open") continue;
      assert.equal(refused.status, 429);
      assert.equal(refused.body.error, "too-many-sockets");
    }
    assert.equal(relay.connections.count(crowded), cap, "refused upgrades hold no slot");
    // Operators see the refusals in /metrics (no address in the labels).
    const metrics = await (await fetch(`${relay.url}/metrics`)).text();
    assert.match(metrics, /^coder1_rate_limited_total\{limit="socket_open"\} 10$/m);
    await good.roundTrip();

    // Another address is unaffected.
    const neighbour = ideFrom("127.0.30.2");
    assert.equal(await neighbour.result, "open");
    neighbour.ws.close();

    // Closing five frees five slots, not more.
    for (const s of open.slice(0, 5)) s.ws.close();
    await eventually(() => relay.connections.count(crowded) === cap - 5, "five slots freed");
    const againSockets = Array.from({ length: 6 }, () => ideFrom(crowded));
    const again = await Promise.all(againSockets.map((s) => s.result));
    assert.equal(again.filter((r) => r === "open").length, 5);
    assert.equal(again.filter((r) => r !== "open" && r.status === 429).length, 1);

    // Connections dropped without a close handshake give their slots back too.
    for (const s of [...open, ...againSockets]) s.ws.terminate();
    await eventually(() => relay.connections.count(crowded) === 0, "all slots of the address back");
    assert.equal(relay.connections.addresses, 1, "only the healthy pair's address is in the table");
    await good.roundTrip();
    good.close();
  });
});

Deno.test("per-address cap with --trust-proxy counts the X-Forwarded-For address the proxy appended", async () => {
  await withRelay(async (relay) => {
    const ws = relay.url.replace("http", "ws");
    const cookie = await newSession(relay.url);
    const via = (forwardedFor: string) =>
      socketFrom(`${ws}/ws/ide`, "127.0.0.1", { "x-forwarded-for": forwardedFor, cookie, origin: relay.url });
    const first = await Promise.all(Array.from({ length: 4 }, () => via("198.51.100.1").result));
    assert.deepEqual(first, ["open", "open", "open", "open"]);
    // The client's own entries (left of the proxy's) do not give it a fresh budget.
    const forged = await via("203.0.113.9, 198.51.100.1").result;
    assert.ok(forged !== "open" && forged.status === 429);
    assert.equal(await via("198.51.100.2").result, "open");
    assert.equal(relay.connections.count("198.51.100.1"), 4);
    assert.equal(relay.connections.count("127.0.0.1"), 0);
  }, { trustProxy: true, maxConnectionsPerAddress: 4 });
});

Deno.test("older clients: an IDE socket gets the upgrade, then 4426; a bridge gets HTTP 426; nothing they send is read", async () => {
  await withRelay(async (relay) => {
    const good = await healthyPair(relay.url);
    const cookie = await newSession(relay.url);
    const codeRes = await fetch(`${relay.url}/api/pairing-codes`, { method: "POST", headers: { cookie } });
    const { code } = await codeRes.json();
    const ws = relay.url.replace("http", "ws");
    // Clients of protocols 1-3 asked for no subprotocol (RawSocket with `[]`).
    const bridge = new RawSocket(`${ws}/ws/bridge`, {}, {}, []);
    const ide = new RawSocket(`${ws}/ws/ide`, { cookie, origin: relay.url }, {}, []);
    await ide.opened;
    await assert.rejects(bridge.opened, /HTTP 426/);
    const [bridgeClose, ideClose] = await Promise.all([bridge.closed, ide.closed]);
    console.log(
      `older bridge: ${bridgeClose.code} "${bridgeClose.reason}"; older IDE: ${ideClose.code} "${ideClose.reason}"`,
    );
    assert.deepEqual(bridgeClose, {
      code: 426,
      reason: `update the bridge: relay speaks protocol ${PROTOCOL_VERSION}`,
    });
    assert.deepEqual(ideClose, {
      code: CloseCode.UnsupportedVersion,
      reason: `reload the page: relay speaks protocol ${PROTOCOL_VERSION}`,
    });
    await eventually(() => relay.connections.total === 2, `slots back (${relay.connections.total} held)`);
    // The code was not touched: a current bridge still pairs with it.
    const current = bridgeSocket(relay.url, { code, version: "0.4.0" });
    await current.opened;
    assert.equal(current.ws.protocol, WS_SUBPROTOCOL);
    assert.equal(decodeFrame(await current.next()).t, FrameType.AuthOk);
    current.close();
    await good.roundTrip();
    good.close();
  });
});

Deno.test("messages over MAX_FRAME_BYTES get 4413 from their header on, 2 MiB to 65 MiB alike; the relay goes on", async () => {
  await withRelay(async (relay) => {
    const good = await healthyPair(relay.url);
    const cookie = await newSession(relay.url);
    const ws = relay.url.replace("http", "ws");
    const outcomes: number[] = [];
    for (const mib of [2, 63, 65]) {
      const s = new RawSocket(`${ws}/ws/ide`, { cookie, origin: relay.url });
      await s.opened;
      s.send(new Uint8Array(mib * 1024 * 1024));
      outcomes.push((await s.closed).code);
      await good.roundTrip();
    }
    console.log(`2, 63 and 65 MiB messages: ${outcomes.join(", ")}`);
    assert.deepEqual(outcomes, [CloseCode.TooBig, CloseCode.TooBig, CloseCode.TooBig]);
    await eventually(() => relay.connections.total === 2, "slots back");
    good.close();
  });
});

Deno.test({
  name:
    "relay process: bridges without a credential, byte-by-byte upgrades, slow request heads and a capped address; a user works on",
  ...SANITIZE,
  async fn() {
    const dirs = await makeTestDirs();
    const cap = 20;
    const relay = await startRelayProcess(dirs, ["--max-connections-per-address", String(cap)]);
    const { ide, bridge } = await pairedSetup(dirs, relay.url);
    const ws = relay.url.replace("http", "ws");
    const host = `127.0.0.1:${relay.port}`;
    const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${relay.child.pid}/status`))![1]);
    const slow: RawReader[] = [];
    try {
      // A user runs commands the whole time; every output must be exact.
      let stop = false, ran = 0;
      const failures: string[] = [];
      const user = (async () => {
        for (let i = 0; !stop; i++) {
          const r = await runCollect(ide, `echo flood-${i}`).catch((e) => ({ stdout: String(e), code: -1 }));
          if (r.stdout !== `flood-${i}\n` || r.code !== 0) failures.push(`${i}: ${r.stdout}`);
          else ran++;
        }
      })();

      // (a) Bridges without a credential: 401 at once, no socket.
      const t0 = performance.now();
      const cookie = await newSession(relay.url);
      const silent = Array.from({ length: 20 }, async (_, i) => {
        const r = await socketFrom(`${ws}/ws/bridge`, `127.0.40.${i + 1}`).result;
        return { code: r === "open" ? 101 : r.status, at: performance.now() - t0 };
      });

      // (b) An upgrade sent one byte every 5 ms (within the head deadline): it completes, is refused
      //     (no credential) and hung up.
      const bytewise = (async () => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: relay.port });
        const reader = new RawReader(conn);
        const request = upgradeRequest("/ws/bridge", host);
        const start = performance.now();
        for (const byte of request) {
          await conn.write(new Uint8Array([byte]));
          await sleep(5);
        }
        const status = await reader.until(responseStatus, 2_000);
        const upgradedAfter = performance.now() - start;
        const ended = await Promise.race([reader.closed, sleep(CLOSE_TEARDOWN_MS + 3_000).then(() => -1)]);
        conn.close();
        return { status, hungUp: ended > 0, bytes: request.length, upgradedAfter };
      })();

      // (c) Request heads that never end: 200 connections from one address, each dribbling
      // header lines up to 14 KiB (under the relay's 16 KiB head limit) and never finishing:
      // destroyed at the head deadline.
      const before = rssKiB();
      const SLOW = 200, LINES = 7;
      const slowSince = performance.now();
      for (let i = 0; i < SLOW; i++) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: relay.port });
        slow.push(new RawReader(conn));
        await conn.write(encoder.encode(`GET /ws/bridge HTTP/1.1\r\nHost: ${host}\r\n`));
      }
      const line = encoder.encode(`X-Slow: ${"s".repeat(2040)}\r\n`);
      for (let n = 0; n < LINES; n++) {
        await Promise.all(slow.map((s) => s.conn.write(line).catch(() => 0)));
        await sleep(150);
      }
      await sleep(500);
      const during = rssKiB();
      const perConnection = ((during - before) / SLOW).toFixed(0);
      // Meanwhile the same address (127.0.0.1: the user's own) still gets HTTP and upgrades.
      const health = await fetch(`${relay.url}/healthz`);
      assert.equal(health.status, 200);
      await health.body?.cancel();
      const sameAddress = socketFrom(`${ws}/ws/ide`, "127.0.0.1", { cookie, origin: relay.url });
      assert.equal(await sameAddress.result, "open", "pending request heads take no slot of the cap");
      sameAddress.ws.close();

      // (d) The cap (--max-connections-per-address 20) on one address.
      const capped = await Promise.all(
        Array.from(
          { length: cap + 5 },
          () => socketFrom(`${ws}/ws/ide`, "127.0.42.1", { cookie, origin: relay.url }).result,
        ),
      );
      assert.equal(capped.filter((r) => r === "open").length, cap);
      assert.equal(capped.filter((r) => r !== "open" && r.status === 429).length, 5);

      const silentResults = await Promise.all(silent);
      const b = await bytewise;
      const stillOpen = (await Promise.all(
        slow.map((s) => Promise.race([s.closed.then(() => false), sleep(0).then(() => true)])),
      )).filter(Boolean).length;
      const heldFor = ((performance.now() - t0) / 1000).toFixed(1);

      // A head over 16 KiB is refused (431) and the connection closed.
      const big = slow[0];
      await big.conn.write(encoder.encode(`X-Big: ${"b".repeat(8_000)}\r\n`)).catch(() => 0);
      const bigStatus = await big.until(responseStatus, 3_000);
      // The rest are destroyed at the head deadline, counted from their connection.
      const lastEnd = Math.max(
        ...await Promise.all(
          slow.map((s) => Promise.race([s.closed, sleep(REQUEST_HEAD_TIMEOUT_MS + 5_000).then(() => Infinity)])),
        ),
      );
      const slowGoneAfter = lastEnd - slowSince;

      stop = true;
      await user;
      console.log(
        `bridges without a credential: ${[...new Set(silentResults.map((r) => r.code))]} after ${
          Math.min(...silentResults.map((r) => r.at)).toFixed(0)
        }-${
          Math.max(...silentResults.map((r) => r.at)).toFixed(0)
        } ms; byte-by-byte upgrade (${b.bytes} bytes): ${b.status} after ${b.upgradedAfter.toFixed(0)} ms, then ${
          b.hungUp ? "hung up" : "left open"
        }`,
      );
      console.log(
        `slow heads: ${SLOW} x ${(LINES * line.length / 1024).toFixed(0)} KiB; relay RSS ${
          (before / 1024).toFixed(1)
        } -> ${
          (during / 1024).toFixed(1)
        } MiB (${perConnection} KiB per connection); ${stillOpen}/${SLOW} still open after ${heldFor} s, all ` +
          `gone ${(slowGoneAfter / 1000).toFixed(1)} s after they connected; head over 16 KiB: ${bigStatus}; ` +
          `user commands meanwhile: ${ran}`,
      );

      for (const r of silentResults) assert.equal(r.code, 401);
      assert.equal(b.status, 401);
      assert.ok(b.hungUp, "the byte-by-byte upgrade was hung up after its 401");
      assert.ok(Number(perConnection) < 256, `${perConnection} KiB per slow connection`);
      assert.equal(bigStatus, 431);
      assert.ok(slowGoneAfter < REQUEST_HEAD_TIMEOUT_MS + 5_000, `slow heads held ${slowGoneAfter.toFixed(0)} ms`);
      assert.deepEqual(failures, []);
      assert.ok(ran >= 5, `only ${ran} commands`);
      const exited = await Promise.race([relay.status.then(() => true), sleep(0).then(() => false)]);
      assert.equal(exited, false, "relay process alive");
    } finally {
      for (const s of slow) {
        try {
          s.conn.close();
        } catch {
          // Closed by the relay already.
        }
      }
      ide.close();
      await bridge.stop();
      await relay.stop();
      await dirs.cleanup();
    }
  },
});
