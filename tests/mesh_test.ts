/**
 * Several relay instances in one process, sharing one in-memory store (as
 * they share Redis in production), over real sockets: an IDE on one instance
 * and a bridge process on another work as if they met on one (commands, a
 * 16 MiB stream with equal SHA-256); the session's home keeps its sockets and
 * the other instance pipes its client there; the mesh endpoints refuse a bad
 * HMAC, a replayed header, an old time and a stale epoch; a dead or silent
 * home is taken over; a home that lost its lease closes its sockets with
 * 4412; a revoke asked of another instance closes the bridge on its home;
 * `/readyz` reports the store; a single relay makes no lease calls at all;
 * the cluster flags are all or nothing and the mesh key file is checked.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import WebSocket from "ws";
import { createLogger } from "../relay/logger.ts";
import { MeshAuth } from "../relay/mesh.ts";
import { type RelayHandle, type RelayOptions, startRelay } from "../relay/relay.ts";
import { MemoryStore, type RelayStore } from "../relay/store.ts";
import { systemClock } from "../shared/clock.ts";
import { decodeFrame, encodeFrame, parseJsonObject } from "../shared/frame_codec.ts";
import type { IdeClient, IdeClientError, WebSocketLike } from "../shared/ide_client.ts";
import { CloseCode, FrameType, LEASE_TTL_MS } from "../shared/protocol.ts";
import {
  approveBridge,
  bridgeLogin,
  freePort,
  ideClient,
  makeTestDirs,
  RawSocket,
  runCollect,
  spawnCoder1,
  startBridgeProcess,
} from "./helpers.ts";

const SANITIZE = { sanitizeOps: false, sanitizeResources: false };
const MiB = 1024 * 1024;

/** Relays on their own ports sharing one store, one signing key and one mesh key. */
interface Cluster {
  store: MemoryStore;
  key: Uint8Array;
  relays: RelayHandle[];
  urls: string[];
  stop(): Promise<void>;
}

async function startCluster(n: number, extra: Partial<RelayOptions> = {}): Promise<Cluster> {
  const store = new MemoryStore();
  const key = crypto.getRandomValues(new Uint8Array(32));
  const root = await Deno.makeTempDir({ prefix: "coder1-mesh-" });
  const urls = Array.from({ length: n }, () => `http://127.0.0.1:${freePort()}`);
  const relays: RelayHandle[] = [];
  for (let i = 0; i < n; i++) {
    relays.push(
      await startRelay({
        port: Number(new URL(urls[i]).port),
        dataDir: `${root}/r${i}`,
        // One signing key for all: the first creates it.
        jwtKeyFile: i === 0 ? undefined : `${root}/r0/jwt-ed25519.jwk`,
        store,
        advertiseUrl: urls[i],
        meshKey: key,
        allowedOrigins: urls,
        log: createLogger({ level: "silent" }),
        telemetry: false,
        ...extra,
      }),
    );
  }
  return {
    store,
    key,
    relays,
    urls,
    async stop() {
      for (const relay of relays) await relay.shutdown().catch(() => {});
      await Deno.remove(root, { recursive: true }).catch(() => {});
    },
  };
}

/** An IDE client whose socket goes to `target.url` (a load balancer deciding), whatever relay it was made for. */
function ideVia(target: { url: string }): IdeClient {
  return ideClient(target.url, {
    webSocket: (url, headers, protocols) =>
      new WebSocket(url.replace(/^ws:\/\/[^/]+/, target.url.replace(/^http/, "ws")), protocols, {
        headers,
        perMessageDeflate: false,
      }) as unknown as WebSocketLike,
  });
}

/** The session id in an IDE's cookie (the JWT's subject). */
function sidOf(ide: IdeClient): string {
  const jwt = ide.sessionCookie!.split("=")[1].split(";")[0];
  return JSON.parse(Buffer.from(jwt.split(".")[1], "base64url").toString()).sub;
}

/** Runs `cat file` through the IDE: SHA-256 of the output, bytes, exit code and time. */
async function catHashed(ide: IdeClient, file: string) {
  const hash = createHash("sha256");
  let received = 0;
  const started = performance.now();
  const cat = ide.run(`cat '${file}'`, {
    onStdout: (bytes) => {
      hash.update(bytes);
      received += bytes.byteLength;
    },
  });
  const result = await cat.exited;
  return { digest: hash.digest("hex"), received, code: result.code, ms: performance.now() - started };
}

function rendered(relay: RelayHandle, line: string): boolean {
  return relay.metrics.render().split("\n").includes(line);
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

Deno.test(
  "mesh: IDE on A, bridge on B: the session lives on A, commands and a 16 MiB stream with equal SHA-256; A shut down, both move to B and it works",
  SANITIZE,
  async () => {
    const c = await startCluster(2);
    const dirs = await makeTestDirs();
    const [a, b] = c.relays;
    const target = { url: c.urls[0] };
    const ide = ideVia(target);
    let bridge;
    try {
      await ide.createSession();
      const { code } = await ide.requestPairingCode();
      await ide.connect();
      bridge = startBridgeProcess(dirs, c.urls[1], { code });
      await approveBridge(ide, bridge);
      await bridge.stdout.waitFor(/Bridge connected/);

      // Both ends are in A's room; B only pipes its bridge socket there.
      assert.deepEqual(a.hub.stats, { bridges: 1, ides: 1 });
      assert.deepEqual(b.hub.stats, { bridges: 0, ides: 0 });
      assert.ok(rendered(b, "coder1_mesh_links 1"), "B holds one mesh link");
      assert.equal((await c.store.lease(sidOf(ide), Date.now()))?.instance, c.urls[0]);

      const echo = await runCollect(ide, "echo through-the-mesh");
      assert.equal(echo.stdout, "through-the-mesh\n");
      assert.equal(echo.code, 0);

      const file = `${dirs.root}/big.bin`;
      await new Deno.Command("sh", { args: ["-c", `head -c ${16 * MiB} /dev/urandom > '${file}'`] }).output();
      const expected = createHash("sha256").update(await Deno.readFile(file)).digest("hex");
      const across = await catHashed(ide, file);
      console.log(`16 MiB across the mesh (IDE on A, bridge on B): ${across.ms.toFixed(0)} ms`);
      assert.equal(across.code, 0);
      assert.equal(across.received, 16 * MiB);
      assert.equal(across.digest, expected, "every byte once, in order");
      assert.ok(b.metrics.value("coder1_mesh_forwarded_frames_total", { direction: "from_home" }) > 10);
      assert.ok(b.metrics.value("coder1_mesh_forwarded_frames_total", { direction: "to_home" }) > 0);

      // The API on B, which is not the home, sees the bridge connected on A (its presence in the store).
      const onB = { cookie: ide.sessionCookie!, origin: c.urls[1] };
      const listed = await (await fetch(`${c.urls[1]}/api/bridges`, { headers: onB })).json();
      assert.equal(listed.bridges.length, 1);
      assert.equal(listed.bridges[0].connected, true, "connected, seen from B");

      // The home goes away: the bridge's link closes with A's 1001, the bridge reconnects to B,
      // which is home now; the page reconnects through the balancer, to B too.
      const lost = bridge.stdout.waitFor(/Bridge reconnected/);
      await a.shutdown();
      await lost;
      target.url = c.urls[1];
      await until("the IDE back on B", async () => {
        try {
          await ide.connect();
          return true;
        } catch {
          return false;
        }
      });
      await ide.waitForBridge(20_000);
      const after = await runCollect(ide, "echo after-the-move");
      assert.equal(after.stdout, "after-the-move\n");
      assert.deepEqual(b.hub.stats, { bridges: 1, ides: 1 });
      assert.equal((await c.store.lease(sidOf(ide), Date.now()))?.instance, c.urls[1]);
      const local = await catHashed(ide, file);
      console.log(`16 MiB on one instance (both on B), same run: ${local.ms.toFixed(0)} ms`);
      assert.equal(local.digest, expected);
    } finally {
      ide.close();
      await bridge?.stop();
      await c.stop();
      await dirs.cleanup();
    }
  },
);

Deno.test(
  "mesh: the home's refusal is the client's answer (409 session-taken), and a revoke asked of the other instance closes the forwarded bridge with 4410",
  SANITIZE,
  async () => {
    const c = await startCluster(2);
    const [a] = c.relays;
    const ide = ideVia({ url: c.urls[0] });
    try {
      await ide.createSession();
      const { code } = await ide.requestPairingCode();
      // A raw IDE socket on A: the session's home is A.
      const cookie = ide.sessionCookie!;
      const page = new RawSocket(`${c.urls[0].replace(/^http/, "ws")}/ws/ide`, { Cookie: cookie, Origin: c.urls[0] });
      await page.opened;
      await page.next(); // bridge.status

      const first = await bridgeLogin(c.urls[1], { code });
      assert.ok(first.ok, `paired through B: ${JSON.stringify(first.close)}`);
      const bridgeId = first.ok.bridgeId as string;
      assert.deepEqual(a.hub.stats, { bridges: 1, ides: 1 });
      assert.equal(await c.store.isPresent(bridgeId, Date.now()), true, "presence set by the home");

      // A second page of the session reaches B: B pipes it to A, whose hub stamps its route and tells it the bridge.
      const tab = new RawSocket(`${c.urls[1].replace(/^http/, "ws")}/ws/ide`, { Cookie: cookie, Origin: c.urls[1] });
      await tab.opened;
      const status = decodeFrame(await tab.next());
      assert.equal(status.t, FrameType.BridgeStatus);
      assert.equal(parseJsonObject(status.body, status.t).state, "connected");
      assert.deepEqual(a.hub.stats, { bridges: 1, ides: 2 });
      assert.ok(rendered(c.relays[1], "coder1_mesh_links 2"), "B links the bridge and the tab");
      tab.close();
      await until("the tab gone from A", () => a.hub.stats.ides === 1);

      // The page approves it (the relay sees the frame type only), so it holds its place.
      page.send(encodeFrame({ t: FrameType.E2eApprove, body: new Uint8Array(32) }));
      await until("approval seen", () => a.hub.sessionBridge(sidOf(ide)) !== undefined);
      await new Promise((r) => setTimeout(r, 50));

      // A second pairing for the session at B: A runs the takeover rule and refuses; B answers with A's 409.
      const { code: second } = await ide.requestPairingCode({ replace: true });
      const refused = await bridgeLogin(c.urls[1], { code: second });
      assert.equal(refused.close?.code, 409);
      assert.match(refused.close!.reason, /approved bridge is connected/);
      assert.deepEqual(a.hub.stats, { bridges: 1, ides: 1 }, "the approved bridge stays");

      // "Revoke the connected bridge" asked of B, which is not its home: B finds the line connected on A (presence),
      // revokes it and publishes; the home closes the bridge, B passes 4410 and the reason on.
      const revoke = await fetch(`${c.urls[1]}/api/bridge/revoke`, {
        method: "POST",
        headers: { cookie, origin: c.urls[1], "content-type": "application/json" },
        body: "{}",
      });
      assert.equal(revoke.status, 200, await revoke.clone().text());
      assert.deepEqual(await revoke.json(), { revoked: true, bridgeId });
      const closed = await first.socket.closed;
      assert.equal(closed.code, CloseCode.Revoked);
      assert.match(closed.reason, /token revoked/);
      await until("presence cleared", async () => !(await c.store.isPresent(bridgeId, Date.now())));
      page.close();
    } finally {
      await c.stop();
    }
  },
);

Deno.test(
  "mesh: links are refused without the key's HMAC, replayed, out of the time window, or at a stale epoch; no socket is made",
  SANITIZE,
  async () => {
    const c = await startCluster(2);
    const [a] = c.relays;
    const single = await startRelay({
      port: 0,
      dataDir: await Deno.makeTempDir(),
      log: createLogger({ level: "silent" }),
      telemetry: false,
    });
    try {
      const sid = "mesh-attack-session";
      const { epoch } = await c.store.claimLease(sid, c.urls[0], LEASE_TTL_MS, Date.now());
      const auth = new MeshAuth(c.key, systemClock);
      const url = `${c.urls[0].replace(/^http/, "ws")}/mesh/ide`;
      const link = (headers: Record<string, string>) => new RawSocket(url, headers, {}, []);

      const good = auth.sign(c.urls[1], "/mesh/ide", sid, epoch);
      const first = link(good);
      await first.opened;
      await until("the linked socket in A's room", () => a.hub.stats.ides === 1);
      first.close();
      await until("the room empty", () => a.hub.stats.ides === 0);

      const attempts: [string, Record<string, string>, number, RegExp][] = [
        ["replayed", good, 401, /replay/],
        [
          "wrong key",
          new MeshAuth(new Uint8Array(32).fill(1), systemClock).sign(c.urls[1], "/mesh/ide", sid, epoch),
          401,
          /HMAC/,
        ],
        ["old time", auth.sign(c.urls[1], "/mesh/ide", sid, epoch, undefined, Date.now() - 31_000), 401, /window/],
        ["future time", auth.sign(c.urls[1], "/mesh/ide", sid, epoch, undefined, Date.now() + 31_000), 401, /window/],
        ["stale epoch", auth.sign(c.urls[1], "/mesh/ide", sid, epoch + 1), 409, /lease/],
        ["signed for another path", auth.sign(c.urls[1], "/mesh/bridge", sid, epoch), 401, /HMAC/],
        ["no header", {}, 401, /malformed/],
      ];
      for (const [what, headers, status, reason] of attempts) {
        const s = link(headers);
        const closed = await s.closed;
        assert.equal(closed.code, status, what);
        assert.match(closed.reason, reason, what);
        assert.equal(a.hub.stats.ides, 0, `${what}: no socket`);
      }
      // Another session's id under a valid HMAC for this one: the HMAC covers the session header.
      const swapped = { ...auth.sign(c.urls[1], "/mesh/ide", sid, epoch), "Coder1-Mesh-Session": "other-session" };
      assert.equal((await link(swapped).closed).code, 401);

      // A single relay has no mesh at all.
      const none = new RawSocket(`${single.url.replace(/^http/, "ws")}/mesh/ide`, good, {}, []);
      assert.equal((await none.closed).code, 404);
    } finally {
      await single.shutdown();
      await c.stop();
    }
  },
);

Deno.test(
  "mesh: a home that refuses the connection, or accepts it and says nothing, is taken over",
  SANITIZE,
  async () => {
    const c = await startCluster(1);
    const [b] = c.relays;
    const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const held: Deno.Conn[] = [];
    (async () => {
      for await (const conn of silent) held.push(conn);
    })();
    try {
      const homes = [`http://127.0.0.1:${freePort()}`, `http://127.0.0.1:${(silent.addr as Deno.NetAddr).port}`];
      for (const [i, dead] of homes.entries()) {
        const ide = ideVia({ url: c.urls[0] });
        await ide.createSession();
        const sid = sidOf(ide);
        const stale = await c.store.claimLease(sid, dead, LEASE_TTL_MS, Date.now());
        const started = performance.now();
        await ide.connect();
        const ms = performance.now() - started;
        const lease = await c.store.lease(sid, Date.now());
        assert.equal(lease?.instance, c.urls[0]);
        assert.equal(lease?.epoch, stale.epoch + 1);
        assert.equal(b.metrics.value("coder1_lease_moves_total", { why: "takeover" }), i + 1);
        assert.deepEqual(b.hub.stats, { bridges: 0, ides: 1 });
        console.log(`${i === 0 ? "refused" : "silent"} home taken over in ${ms.toFixed(0)} ms`);
        if (i === 1) assert.ok(ms >= 1_900, "the silent home had its 2 s");
        ide.close();
        await until("closed", () => b.hub.stats.ides === 0);
      }
    } finally {
      silent.close();
      for (const conn of held) conn.close();
      await c.stop();
    }
  },
);

Deno.test(
  "mesh: a home whose lease was taken over closes the session's sockets with 4412; a store that fails a renewal is no loss",
  SANITIZE,
  async () => {
    const c = await startCluster(1);
    const [a] = c.relays;
    const ide = ideVia({ url: c.urls[0] });
    try {
      await ide.createSession();
      const { code } = await ide.requestPairingCode();
      await ide.connect();
      const bridge = await bridgeLogin(c.urls[0], { code });
      assert.ok(bridge.ok);
      const closes: number[] = [];
      ide.onClose((error: IdeClientError) => closes.push(error.status));

      // Redis down for a round: the room goes on.
      const store = c.store as RelayStore;
      const renew = store.renewLease;
      store.renewLease = () => Promise.reject(new Error("connection refused"));
      await a.hub.renewLeases();
      store.renewLease = renew;
      assert.deepEqual(a.hub.stats, { bridges: 1, ides: 1 });
      await a.hub.renewLeases();
      assert.deepEqual(a.hub.stats, { bridges: 1, ides: 1 });

      // Paused past its lease and taken over elsewhere (as another instance would).
      const sid = sidOf(ide);
      const lease = (await c.store.lease(sid, Date.now()))!;
      assert.ok(await c.store.takeOverLease(sid, "http://127.0.0.1:1", lease.epoch, LEASE_TTL_MS, Date.now()));
      await a.hub.renewLeases();
      const closed = await bridge.socket.closed;
      assert.equal(closed.code, CloseCode.SessionMoved);
      assert.match(closed.reason, /session moved to another relay instance/);
      await until("the page's socket closed", () => closes.length === 1);
      assert.equal(closes[0], CloseCode.SessionMoved);
      assert.equal(a.metrics.value("coder1_lease_moves_total", { why: "lost" }), 1);
      assert.equal(a.metrics.value("coder1_socket_closes_total", { role: "ide", reason: "session_moved" }), 1);
    } finally {
      await c.stop();
    }
  },
);

Deno.test(
  "mesh: a revocation whose event this instance missed still closes the bridge at the next lease renewal (4410)",
  SANITIZE,
  async () => {
    const c = await startCluster(1);
    const [a] = c.relays;
    const ide = ideVia({ url: c.urls[0] });
    try {
      await ide.createSession();
      const { code } = await ide.requestPairingCode();
      await ide.connect();
      const bridge = await bridgeLogin(c.urls[0], { code });
      assert.ok(bridge.ok);
      const bridgeId = bridge.ok.bridgeId as string;
      // Another instance revoked the line while this one's subscription was down: the record changed, no event came.
      const line = (await c.store.getCredential(bridgeId))!;
      assert.ok(await c.store.putCredential({ ...line, revokedAt: Date.now(), revokedReason: "user" }, line.jti));
      await a.hub.renewLeases();
      const closed = await bridge.socket.closed;
      assert.equal(closed.code, CloseCode.Revoked);
      assert.match(closed.reason, /token revoked/);
    } finally {
      ide.close();
      await c.stop();
    }
  },
);

Deno.test(
  "mesh: /readyz answers 503 with redis unreachable while the shared store does not answer",
  SANITIZE,
  async () => {
    const c = await startCluster(1);
    try {
      const ok = await fetch(`${c.urls[0]}/readyz`);
      assert.equal(ok.status, 200);
      await ok.body?.cancel();
      c.store.ping = () => Promise.resolve(false);
      const down = await fetch(`${c.urls[0]}/readyz`);
      assert.equal(down.status, 503);
      assert.deepEqual(await down.json(), { status: "unavailable", ready: false, redis: "unreachable" });
    } finally {
      await c.stop();
    }
  },
);

Deno.test("mesh: a single relay (no advertise URL) makes no lease or presence calls", SANITIZE, async () => {
  const calls: string[] = [];
  const inner = new MemoryStore();
  // Not `subscribe`: the credential service subscribes once at start on every relay (revocations reach the hub
  // through the store's events; in memory, an in-process call).
  const watched = new Set([
    "claimLease",
    "renewLease",
    "takeOverLease",
    "releaseLease",
    "lease",
    "setPresence",
    "clearPresence",
  ]);
  const store = new Proxy(inner, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver);
      if (typeof name === "string" && watched.has(name)) calls.push(name);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const relay = await startRelay({
    port: 0,
    dataDir: await Deno.makeTempDir(),
    store,
    log: createLogger({ level: "silent" }),
    telemetry: false,
  });
  const ide = ideClient(relay.url);
  try {
    await ide.createSession();
    const { code } = await ide.requestPairingCode();
    await ide.connect();
    const bridge = await bridgeLogin(relay.url, { code });
    assert.ok(bridge.ok);
    relay.hub.beat();
    await relay.hub.renewLeases();
    bridge.socket.close();
    await bridge.socket.closed;
    assert.deepEqual(calls, []);
  } finally {
    await relay.shutdown();
  }
});

Deno.test("mesh: --redis-url, --advertise-url and --mesh-key-file go together, and the key file is checked", async () => {
  const dirs = await makeTestDirs();
  try {
    const key = `${dirs.root}/mesh.key`;
    await Deno.writeTextFile(key, "x".repeat(64) + "\n", { mode: 0o600 });
    await Deno.chmod(key, 0o600);
    const short = `${dirs.root}/short.key`;
    await Deno.writeTextFile(short, "x".repeat(31) + "\n");
    await Deno.chmod(short, 0o600);
    const open = `${dirs.root}/open.key`;
    await Deno.writeTextFile(open, "x".repeat(64));
    await Deno.chmod(open, 0o644);
    const cluster = ["--redis-url", "redis://127.0.0.1:1", "--advertise-url", "http://127.0.0.1:8801"];
    const cases: [string[], RegExp][] = [
      [["--advertise-url", "http://127.0.0.1:8801"], /need --redis-url/],
      [["--mesh-key-file", key], /need --redis-url/],
      [["--redis-url", "redis://127.0.0.1:1"], /--redis-url needs --advertise-url and --mesh-key-file/],
      [["--redis-url", "http://127.0.0.1:1"], /--redis-url must be a redis:\/\/ or rediss:\/\/ URL/],
      [[...cluster.slice(0, 2), "--advertise-url", "http://h:1/path", "--mesh-key-file", key], /without a path/],
      [[...cluster, "--mesh-key-file", `${dirs.root}/missing.key`], /cannot read mesh key file/],
      [[...cluster, "--mesh-key-file", short], /holds 31 bytes; a mesh key needs at least 32/],
      [[...cluster, "--mesh-key-file", open], /readable by other users \(mode 644\)/],
    ];
    for (const [args, pattern] of cases) {
      const proc = spawnCoder1(["relay", "serve", "--port", "0", ...args], { env: dirs.env });
      const status = await proc.status;
      assert.equal(status.code, 2, `${args.join(" ")}: ${proc.stderr.text}`);
      assert.match(proc.stderr.text.split("\n")[0], pattern);
    }
  } finally {
    await dirs.cleanup();
  }
});
