/**
 * Several relay instances sharing one Redis, end to end with real processes
 * on loopback (tests/cluster_harness.ts): Debian's redis-server, three
 * `coder1 relay serve` processes (A, B, C) with `--redis-url`, and Debian's
 * nginx with deploy/nginx/cluster.conf in front.
 *
 * - Pairing across instances: a code issued on A is redeemed on B; two
 *   redemptions of one code at once on A and B, exactly one wins; the
 *   per-address and relay-wide redemption budgets are one budget across the
 *   instances; a revoke through A closes the bridge on B (4410) and its token
 *   is refused on C.
 * - IDE on A, bridge on B: commands, a terminal, and 64 MiB with equal SHA-256.
 * - Failures: the session's home killed (SIGKILL) at seeded random points of a
 *   64 MiB stream; the IDE's instance killed; redis-server killed mid-stream;
 *   the home paused (SIGSTOP) past its lease and resumed. Every time: every
 *   byte exactly once, in order (SHA-256 equal).
 *
 * Skipped with a printed reason when redis-server, nginx or openssl is
 * missing (under CODER1_REQUIRE_ALL=1 they run and fail).
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { generateIdentity } from "../shared/e2e_crypto.ts";
import { type IdeClient, type IdeClientOptions, MemoryPinStore, type RemoteTerminal } from "../shared/ide_client.ts";
import {
  CloseCode,
  LEASE_RENEW_MS,
  LEASE_TTL_MS,
  REDEEM_GLOBAL_PER_WINDOW,
  REDEEM_PER_ADDRESS_PER_WINDOW,
} from "../shared/protocol.ts";
import {
  type Cluster,
  CLUSTER_SITE,
  haveClusterTools,
  type Instance,
  switchableProxy,
  whereAreSockets,
  withCluster,
} from "./cluster_harness.ts";
import {
  approveBridge,
  bridgeLogin,
  type Coder1Process,
  ideClient,
  RawSocket,
  runCollect,
  startBridgeProcess,
  wsFactory,
} from "./helpers.ts";

const HAVE_TOOLS = haveClusterTools("relay cluster tests");
const SANITIZE = { sanitizeOps: false, sanitizeResources: false, ignore: !HAVE_TOOLS };
const MiB = 1024 * 1024;
/** How long nginx keeps an upstream it saw fail out of rotation (deploy/nginx/cluster.conf, `fail_timeout`). */
const NGINX_FAIL_TIMEOUT_MS = 1000 *
  Number(/fail_timeout=(\d+)s/.exec(await Deno.readTextFile(CLUSTER_SITE).catch(() => ""))?.[1] ?? 10);
const STREAM_BYTES = 64 * MiB;

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/** A browser session on `relayUrl` and a code issued to it (from 127.0.0.1). */
async function issueCode(relayUrl: string): Promise<{ cookie: string; code: string }> {
  const session = await fetch(`${relayUrl}/api/sessions`, { method: "POST" });
  assert.equal(session.status, 201, await session.text());
  const cookie = session.headers.getSetCookie()[0].split(";")[0];
  const issued = await fetch(`${relayUrl}/api/pairing-codes`, { method: "POST", headers: { cookie } });
  assert.equal(issued.status, 201);
  return { cookie, code: ((await issued.json()) as { code: string }).code };
}

/** Writes `bytes` pseudo-random bytes to `path` and returns their SHA-256 (hex). */
async function bigFile(path: string, bytes: number): Promise<string> {
  const { success } = await new Deno.Command("sh", { args: ["-c", `head -c ${bytes} /dev/urandom > '${path}'`] })
    .output();
  assert.ok(success, "made the test file");
  const hash = createHash("sha256");
  for await (const chunk of (await Deno.open(path)).readable) hash.update(chunk);
  return hash.digest("hex");
}

/** Runs `cat path` through the IDE, hashing stdout; `onProgress` sees the byte count. */
function catThrough(ide: IdeClient, path: string, onProgress: (received: number) => void = () => {}) {
  const hash = createHash("sha256");
  let received = 0;
  let lastAt = performance.now();
  const cmd = ide.run(`cat '${path}'`, {
    onStdout: (bytes) => {
      hash.update(bytes);
      received += bytes.byteLength;
      lastAt = performance.now();
      onProgress(received);
    },
  });
  return {
    cmd,
    get received() {
      return received;
    },
    get lastAt() {
      return lastAt;
    },
    digest: () => hash.digest("hex"),
  };
}

/**
 * Reconnects the IDE socket whenever it closes, until `stop()`, as the page
 * does: one retry loop at a time (a refused attempt reports a close too),
 * 100 ms apart. Records the close codes.
 */
function keepConnected(
  ide: IdeClient,
): { stop(): void; closes: number[]; lastCloseAt: number; lastOpenAt: number } {
  let stopped = false;
  let lastCloseAt = 0, lastOpenAt = 0;
  let retrying = false;
  const closes: number[] = [];
  const retry = async () => {
    if (retrying) return;
    retrying = true;
    try {
      for (let i = 0; i < 300 && !stopped; i++) {
        await new Promise((r) => setTimeout(r, 100));
        if (stopped) return;
        try {
          await ide.connect();
          lastOpenAt = performance.now();
          return;
        } catch {
          // No instance took it yet: try again.
        }
      }
    } finally {
      retrying = false;
    }
  };
  const off = ide.onClose((error) => {
    closes.push(error.status);
    lastCloseAt = performance.now();
    if (!stopped) void retry();
  });
  return {
    closes,
    get lastCloseAt() {
      return lastCloseAt;
    },
    get lastOpenAt() {
      return lastOpenAt;
    },
    stop() {
      stopped = true;
      off();
    },
  };
}

/** A seeded PRNG (mulberry32), so a failing kill schedule can be replayed. */
function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Waits until `check` holds, polling, at most `ms`. */
async function until(check: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  for (const end = Date.now() + ms;;) {
    if (await check()) return;
    assert.ok(Date.now() < end, `timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Everything a terminal wrote, as text, and waiting for a pattern in it. */
async function terminalRoundTrip(term: RemoteTerminal): Promise<void> {
  let text = "";
  const decoder = new TextDecoder();
  term.onData((bytes) => (text += decoder.decode(bytes, { stream: true })));
  await term.ready;
  await until(() => /[$#] $/.test(text), 20_000, "the shell's prompt");
  const mark = `mk${crypto.randomUUID().replaceAll("-", "")}`;
  await term.write(`echo ${mark}-$((40 + 2))\r`);
  await until(() => text.includes(`${mark}-42`), 20_000, "the terminal's answer");
}

/**
 * An IDE client on `relayUrl` (an instance, or nginx's https URL) whose page
 * is at the cluster's public URL.
 */
function ideAt(cluster: Cluster, relayUrl: string, options: Partial<IdeClientOptions> = {}): IdeClient {
  const tls = relayUrl.startsWith("https:") ? { fetch: cluster.fetch, webSocket: wsFactory({ ca: cluster.ca }) } : {};
  return ideClient(relayUrl, { origin: cluster.publicUrl, ...tls, ...options });
}

/**
 * An IDE client for `relayUrl` with an identity and pins a reloaded page
 * would find again, paired with a fresh bridge process on `bridgeUrl`.
 */
async function pair(cluster: Cluster, relayUrl: string, bridgeUrl: string) {
  const identity = await generateIdentity(false);
  const pins = new MemoryPinStore();
  const ide = ideAt(cluster, relayUrl, { identity, pins });
  await ide.createSession();
  const { code } = await ide.requestPairingCode();
  await ide.connect();
  const args = bridgeUrl.startsWith("https:") ? ["--ca-file", cluster.caFile] : [];
  const bridge = startBridgeProcess(cluster.dirs, bridgeUrl, { code, args });
  await approveBridge(ide, bridge);
  await bridge.stdout.waitFor(/Bridge connected/);
  /** The same browser session, identity and pins in a new client on `url`: the page after a reload. */
  const reload = async (url: string): Promise<IdeClient> => {
    const again = ideAt(cluster, url, { identity, pins, sessionCookie: ide.sessionCookie });
    await again.connect();
    await again.waitForBridge(20_000);
    return again;
  };
  return { ide, bridge, reload };
}

/** The instance (index) holding the bridge socket, i.e. the session's home. */
async function homeOf(cluster: Cluster): Promise<number> {
  let where = await whereAreSockets(cluster);
  await until(async () => (where = await whereAreSockets(cluster)).bridges.length === 1, 10_000, "one home");
  return where.bridges[0];
}

/** Stops the bridge with SIGTERM; SIGKILL (and a printed note) if it has not exited 8 s later. */
async function stopBridge(bridge: Coder1Process | undefined): Promise<void> {
  if (!bridge) return;
  const timer = setTimeout(() => {
    console.log("NOTE: the bridge did not exit within 8 s of SIGTERM; killing it");
    bridge.child.kill("SIGKILL");
  }, 8_000);
  await bridge.stop();
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------------------------
// Pairing across instances

Deno.test({
  name:
    "cluster: a code from A redeems on B; a race on A and B has one winner; budgets are shared; revoke reaches B and C",
  ...SANITIZE,
  async fn(t) {
    await withCluster(async (cluster) => {
      const [A, B, C] = cluster.instances;
      /** Attempts that spent the relay-wide budget so far (every attempt from an address the code was not issued to). */
      let globalSpent = 0;

      await t.step("a code issued on A is redeemed on B, and is dead on C and A after", async () => {
        const { code } = await issueCode(A.url);
        const first = await bridgeLogin(B.url, { code });
        assert.ok(first.ok?.token, `redeemed on B: ${JSON.stringify(first.close)}`);
        for (const other of [C, A]) {
          const again = await bridgeLogin(other.url, { code });
          assert.equal(again.close?.code, 401, `refused on ${other.name}`);
          globalSpent++;
        }
        first.socket.close();
      });

      await t.step("two redemptions of one code at once on A and B: exactly one succeeds (5 rounds)", async () => {
        for (let round = 0; round < 5; round++) {
          const { code } = await issueCode(round % 2 ? B.url : A.url);
          // From addresses the code was not issued to, so neither takes the same-address path first.
          const results = await Promise.all([
            bridgeLogin(A.url, { code }, {}, { localAddress: `127.0.1.${2 * round + 1}` }),
            bridgeLogin(B.url, { code }, {}, { localAddress: `127.0.1.${2 * round + 2}` }),
          ]);
          globalSpent += 2;
          const won = results.filter((r) => r.ok);
          assert.equal(won.length, 1, `round ${round}: ${JSON.stringify(results.map((r) => r.ok ?? r.close))}`);
          assert.equal(results.find((r) => !r.ok)?.close?.code, 401);
          for (const r of results) r.socket.close();
        }
      });

      await t.step("a revoke through A closes the bridge on B (4410); its token is refused on C", async () => {
        const ide = ideAt(cluster, A.url);
        await ide.createSession();
        const { code } = await ide.requestPairingCode();
        const paired = await bridgeLogin(B.url, { code });
        assert.ok(paired.ok, JSON.stringify(paired.close));
        // Before the revoke the token is good on C too (that login takes the line over from B: 4409)...
        const onC = await bridgeLogin(C.url, { token: paired.ok.token as string });
        assert.ok(onC.ok, `the token works on C: ${JSON.stringify(onC.close)}`);
        assert.equal((await paired.socket.closed).code, CloseCode.Replaced);
        onC.socket.close();
        await onC.socket.closed;
        // ...and the bridge comes back on B with the newest token (a login may rotate it).
        const bridge = await bridgeLogin(B.url, { token: (onC.ok.token ?? paired.ok.token) as string });
        assert.ok(bridge.ok, `back on B: ${JSON.stringify(bridge.close)}`);
        const token = (bridge.ok.token ?? onC.ok.token ?? paired.ok.token) as string;
        const started = performance.now();
        await ide.revokeBridge(bridge.ok.bridgeId as string);
        const closed = await Promise.race([
          bridge.socket.closed,
          new Promise<never>((_, reject) => setTimeout(() => reject(new Error("not closed in 5 s")), 5_000)),
        ]);
        assert.equal(closed.code, CloseCode.Revoked, `bridge on B closed with ${closed.code} ${closed.reason}`);
        console.log(
          `revoke on A -> bridge on B closed (${closed.code}) in ${(performance.now() - started).toFixed(0)} ms`,
        );
        const after = await bridgeLogin(C.url, { token });
        assert.equal(after.close?.code, 401, "refused on C after the revoke");
        ide.close();
      });

      await t.step("the per-address redemption budget holds across A, B and C", async () => {
        const at = { localAddress: "127.0.0.2" };
        for (let i = 0; i < REDEEM_PER_ADDRESS_PER_WINDOW; i++) {
          const instance = cluster.instances[i % 3];
          const r = await bridgeLogin(instance.url, { code: String(100000 + i) }, {}, at);
          assert.equal(r.close?.code, 401, `attempt ${i + 1} on ${instance.name}`);
          globalSpent++;
        }
        for (const instance of cluster.instances) {
          const r = await bridgeLogin(instance.url, { code: "999999" }, {}, at);
          assert.equal(r.close?.code, 429, `over the address's budget on ${instance.name}`);
        }
        // Another address is not limited by it.
        const other = await bridgeLogin(C.url, { code: "999998" }, {}, { localAddress: "127.0.0.3" });
        assert.equal(other.close?.code, 401);
        globalSpent++;
      });

      await t.step("the relay-wide redemption budget is one budget across A, B and C", async () => {
        // Fresh addresses, one guess each, spread over the instances, in batches of 9, until the budget is spent.
        let looked = 0, limited = 0, sent = 0;
        for (let batch = 0; batch < 30 && limited === 0; batch++) {
          const outcomes = await Promise.all(Array.from({ length: 9 }, () => {
            const n = sent++;
            const instance = cluster.instances[n % 3];
            const address = `127.0.${2 + Math.floor(n / 250)}.${(n % 250) + 1}`;
            return bridgeLogin(instance.url, { code: "999997" }, {}, { localAddress: address })
              .then((r) => r.close?.code);
          }));
          looked += outcomes.filter((c) => c === 401).length;
          limited += outcomes.filter((c) => c === 429).length;
        }
        console.log(
          `relay-wide budget: ${globalSpent} spent before, ${looked} more looked at, then 429 (budget ${REDEEM_GLOBAL_PER_WINDOW})`,
        );
        assert.ok(limited > 0, "the budget ran out");
        assert.equal(globalSpent + looked, REDEEM_GLOBAL_PER_WINDOW, "exactly the budget, over three instances");
        for (const [k, instance] of cluster.instances.entries()) {
          const r = await bridgeLogin(instance.url, { code: "999996" }, {}, { localAddress: `127.0.200.${k + 1}` });
          assert.equal(r.close?.code, 429, `spent on ${instance.name} too`);
        }
      });
    });
  },
});

// ---------------------------------------------------------------------------------------------------------------
// IDE on A, bridge on B

Deno.test({
  name: "cluster: IDE on A, bridge on B: a command, a terminal, and 64 MiB with equal SHA-256",
  ...SANITIZE,
  async fn() {
    await withCluster(async (cluster) => {
      const [A, B] = cluster.instances;
      const { ide, bridge } = await pair(cluster, A.url, B.url);
      try {
        assert.equal(await homeOf(cluster), 0, "A, where the IDE came first, is the home; B forwards the bridge");
        assert.equal((await runCollect(ide, "echo across instances")).stdout, "across instances\n");
        await terminalRoundTrip(ide.openTerminal({ cols: 80, rows: 24 }));
        const expected = await bigFile(`${cluster.dirs.root}/big`, STREAM_BYTES);
        const started = performance.now();
        const stream = catThrough(ide, `${cluster.dirs.root}/big`);
        assert.equal((await stream.cmd.exited).code, 0);
        const seconds = (performance.now() - started) / 1000;
        assert.equal(stream.received, STREAM_BYTES);
        assert.equal(stream.digest(), expected, "SHA-256 equal");
        console.log(`64 MiB IDE(A) <- B <- bridge in ${seconds.toFixed(2)} s (${(64 / seconds).toFixed(0)} MiB/s)`);
        const forwarded = [...(await B.metrics())].filter(([k]) => k.startsWith("coder1_mesh_forwarded_frames_total"));
        console.log(`B: ${forwarded.map(([k, v]) => `${k} ${v}`).join(", ")}`);
        const toHome = (await B.metrics()).get('coder1_mesh_forwarded_frames_total{direction="to_home"}') ?? 0;
        assert.ok(toHome > 0, "the bridge's frames went over B's mesh link to A");
      } finally {
        ide.close();
        await stopBridge(bridge);
      }
    });
  },
});

// ---------------------------------------------------------------------------------------------------------------
// Failures

Deno.test({
  name: "cluster: the session's home killed (SIGKILL) at random points of a 64 MiB stream, 3 runs: SHA-256 equal",
  ...SANITIZE,
  async fn() {
    await withCluster(async (cluster) => {
      // Both ends through nginx, as users meet it.
      const { ide, bridge } = await pair(cluster, cluster.publicUrl, cluster.publicUrl);
      const keeper = keepConnected(ide);
      const seed = Number(Deno.env.get("CODER1_CLUSTER_SEED") ?? (Date.now() % 2 ** 31));
      const random = mulberry32(seed);
      const recoveries: string[] = [];
      try {
        const expected = await bigFile(`${cluster.dirs.root}/big`, STREAM_BYTES);
        for (let run = 0; run < 3; run++) {
          const home = await homeOf(cluster);
          const victim: Instance = cluster.instances[home];
          const killAt = Math.floor((4 + random() * 52) * MiB);
          let killedAt = 0;
          let resumedAt = 0;
          let killing: Promise<void> | undefined;
          // When the bridge says it is back (its output, polled).
          const reconnects = () => bridge.stdout.text.split("Bridge reconnected").length;
          const before = reconnects();
          let bridgeBackAt = 0;
          const poll = setInterval(() => {
            if (!bridgeBackAt && reconnects() > before) bridgeBackAt = performance.now();
          }, 10);
          const stream = catThrough(ide, `${cluster.dirs.root}/big`, (received) => {
            if (!killing && received >= killAt) {
              killedAt = performance.now();
              killing = victim.kill("SIGKILL");
            } else if (killing && !resumedAt && keeper.lastCloseAt > killedAt) resumedAt = performance.now();
          });
          const result = await Promise.race([
            stream.cmd.exited,
            new Promise<never>((_, reject) => setTimeout(() => reject(new Error("stream not done in 60 s")), 60_000)),
          ]);
          await killing;
          const what = `seed ${seed}, run ${run}, ${victim.name} killed at ${(killAt / MiB).toFixed(1)} MiB`;
          assert.ok(killing, `${what}: the home was killed mid-stream`);
          assert.equal(result.code, 0, what);
          assert.equal(stream.received, STREAM_BYTES, `every byte exactly once (${what})`);
          assert.equal(stream.digest(), expected, `in order, SHA-256 equal (${what})`);
          clearInterval(poll);
          const recovery = resumedAt ? resumedAt - killedAt : NaN;
          const ms = (at: number) => (at ? `${(at - killedAt).toFixed(0)} ms` : "-");
          recoveries.push(
            `${victim.name}@${(killAt / MiB).toFixed(0)}MiB: ${recovery.toFixed(0)} ms ` +
              `(IDE back ${ms(keeper.lastOpenAt)}, bridge back ${ms(bridgeBackAt)})`,
          );
          assert.ok(resumedAt > 0, `${what}: bytes came after the IDE reconnected`);
          // Back to three instances for the next run, and in nginx's rotation again: it keeps an
          // upstream it saw fail out for fail_timeout (three failures in one window leave none live).
          await victim.restart();
          if (run < 2) {
            const wait = NGINX_FAIL_TIMEOUT_MS - (performance.now() - killedAt);
            if (wait > 0) await new Promise((r) => setTimeout(r, wait + 200));
          }
        }
        console.log(
          `home killed, recovery (kill -> first byte after the IDE's reconnection) (seed ${seed}): ${
            recoveries.join(", ")
          }`,
        );
      } finally {
        keeper.stop();
        ide.close();
        await stopBridge(bridge);
      }
    });
  },
});

Deno.test({
  name: "cluster: the IDE's instance killed (SIGKILL) mid-stream: the IDE reconnects to another and resumes",
  ...SANITIZE,
  async fn() {
    await withCluster(async (cluster) => {
      const [A, B, C] = cluster.instances;
      // Paired on A (the home, with the bridge); then the page reloads through a balancer that picks C.
      const { ide: first, bridge, reload } = await pair(cluster, A.url, A.url);
      first.close();
      const balancer = switchableProxy(C.port);
      const ide = await reload(balancer.url);
      const keeper = keepConnected(ide);
      try {
        assert.equal(await homeOf(cluster), 0, "A is the home; C forwards the IDE");
        const expected = await bigFile(`${cluster.dirs.root}/big`, STREAM_BYTES);
        let killedAt = 0, resumedAt = 0;
        let killing: Promise<void> | undefined;
        const stream = catThrough(ide, `${cluster.dirs.root}/big`, (received) => {
          if (!killing && received >= 16 * MiB) {
            killedAt = performance.now();
            killing = C.kill("SIGKILL").then(() => balancer.switchTo(B.port));
          } else if (killing && !resumedAt && keeper.lastCloseAt > killedAt) resumedAt = performance.now();
        });
        const result = await stream.cmd.exited;
        assert.ok(killing, "C was killed mid-stream");
        assert.ok(resumedAt > 0, "bytes came after the IDE reconnected");
        assert.equal(result.code, 0);
        assert.equal(stream.received, STREAM_BYTES, "every byte exactly once");
        assert.equal(stream.digest(), expected, "SHA-256 equal");
        console.log(`IDE's instance killed: resumed through B in ${(resumedAt - killedAt).toFixed(0)} ms`);
        assert.equal((await runCollect(ide, "echo still here")).stdout, "still here\n");
      } finally {
        keeper.stop();
        ide.close();
        balancer.close();
        await stopBridge(bridge);
      }
    });
  },
});

Deno.test({
  name:
    "cluster: redis-server killed mid-stream: the stream completes, pairing fails with 503, all works after restart",
  ...SANITIZE,
  async fn() {
    await withCluster(async (cluster) => {
      const [A, B, C] = cluster.instances;
      const { ide, bridge } = await pair(cluster, A.url, B.url);
      const keeper = keepConnected(ide);
      try {
        const expected = await bigFile(`${cluster.dirs.root}/big`, STREAM_BYTES);
        let killed = false;
        const stream = catThrough(ide, `${cluster.dirs.root}/big`, (received) => {
          if (!killed && received >= 16 * MiB) {
            killed = true;
            cluster.redis.kill("SIGKILL");
          }
        });
        const result = await stream.cmd.exited;
        assert.ok(killed, "redis was killed mid-stream");
        assert.equal(result.code, 0);
        assert.equal(stream.received, STREAM_BYTES, "every byte exactly once");
        assert.equal(stream.digest(), expected, "SHA-256 equal, Redis down");
        assert.equal((await runCollect(ide, "echo no redis")).stdout, "no redis\n", "established session works");

        // New pairings fail closed, with a clear error.
        const issued = await fetch(`${C.url}/api/pairing-codes`, {
          method: "POST",
          headers: { cookie: ide.sessionCookie!, "content-type": "application/json" },
          body: JSON.stringify({ replace: true }),
        });
        assert.equal(issued.status, 503);
        assert.equal((await issued.json()).error, "state-store-unavailable");
        const redeem = await bridgeLogin(B.url, { code: "123456" });
        assert.equal(redeem.close?.code, 503, "a redemption is refused with 503 before the upgrade");
        const ready = await fetch(`${A.url}/readyz`);
        assert.equal(ready.status, 503);
        const readiness = await ready.json();
        assert.equal(readiness.ready, false);
        assert.equal(readiness.redis, "unreachable");

        // Redis back (empty: persistence is off): pairing works again by itself.
        const restarted = performance.now();
        await cluster.redis.restart();
        await until(
          async () => (await fetch(`${A.url}/readyz`).then((r) => (r.body?.cancel(), r.status))) === 200,
          10_000,
          "ready again",
        );
        const { code } = await issueCode(C.url);
        const again = await bridgeLogin(A.url, { code });
        assert.ok(again.ok, `a new pairing after the restart: ${JSON.stringify(again.close)}`);
        again.socket.close();
        console.log(`redis restarted: pairing again within ${(performance.now() - restarted).toFixed(0)} ms`);
        // The established session past a lease renewal on the empty Redis.
        await new Promise((r) => setTimeout(r, LEASE_RENEW_MS + 1_000));
        assert.equal((await runCollect(ide, "echo after restart")).stdout, "after restart\n");
      } finally {
        keeper.stop();
        ide.close();
        await stopBridge(bridge);
      }
    });
  },
});

Deno.test({
  name:
    "cluster: a home paused (SIGSTOP) past its lease, then resumed: its stale room is closed (4412), nothing doubled",
  ...SANITIZE,
  async fn() {
    await withCluster(async (cluster) => {
      const [A, B] = cluster.instances;
      const balancer = switchableProxy(A.port);
      // The IDE comes first, on A: A is the home; the bridge on B is forwarded to it.
      const { ide, bridge } = await pair(cluster, balancer.url, B.url);
      const keeper = keepConnected(ide);
      // A second page of the session, straight on A: it sees what A's room sees.
      const observer = new RawSocket(`${A.url.replace(/^http/, "ws")}/ws/ide`, {
        cookie: ide.sessionCookie!,
        origin: cluster.publicUrl,
      });
      try {
        await observer.opened;
        assert.equal(await homeOf(cluster), 0, "A is the home");
        const expected = await bigFile(`${cluster.dirs.root}/big`, STREAM_BYTES);
        let paused = false;
        const stream = catThrough(ide, `${cluster.dirs.root}/big`, (received) => {
          if (!paused && received >= 8 * MiB) {
            paused = true;
            A.proc.child.kill("SIGSTOP");
          }
        });
        await until(() => paused, 30_000, "the stream to reach 8 MiB");
        const stoppedAt = stream.received;
        await new Promise((r) => setTimeout(r, LEASE_TTL_MS + 1_500));
        // The balancer gives up on A: the IDE reconnects to B, which takes the session over.
        balancer.switchTo(B.port);
        // (A is stopped: only B is asked.)
        const switchedAt = performance.now();
        await until(
          async () => ((await B.metrics()).get("coder1_ide_sockets_connected") ?? 0) > 0,
          20_000,
          "the IDE's socket in B's own room",
        );
        console.log(
          `the IDE reconnected to B, which took the session over, in ${(performance.now() - switchedAt).toFixed(0)} ms`,
        );
        const continuedAt = performance.now();
        A.proc.child.kill("SIGCONT");
        const closed = await Promise.race([
          observer.closed,
          new Promise<never>((_, reject) => setTimeout(() => reject(new Error("A's room not closed in 10 s")), 10_000)),
        ]);
        assert.equal(closed.code, CloseCode.SessionMoved, `A's stale room closed with ${closed.code} ${closed.reason}`);
        console.log(
          `A resumed: its stale room closed (${closed.code}) in ${(performance.now() - continuedAt).toFixed(0)} ms`,
        );
        const result = await stream.cmd.exited;
        assert.equal(result.code, 0);
        assert.ok(stoppedAt < STREAM_BYTES);
        assert.equal(stream.received, STREAM_BYTES, "every byte exactly once: nothing doubled");
        assert.equal(stream.digest(), expected, "SHA-256 equal");
        assert.equal(await homeOf(cluster), 1, "B is the home now");
        assert.equal((await A.metrics()).get('coder1_lease_moves_total{why="lost"}'), 1, "A counted the lease it lost");
      } finally {
        A.proc.child.kill("SIGCONT");
        observer.close();
        keeper.stop();
        ide.close();
        balancer.close();
        await stopBridge(bridge);
      }
    });
  },
});

// ---------------------------------------------------------------------------------------------------------------
// Placement

/**
 * Whether the relay puts the session's routing key in a bridge's `auth.ok`
 * (docs/PROTOCOL.md; the bridge stores it and reconnects with `?r=`). Until
 * relay/hub.ts sends it, bridges reconnecting through the balancer land at
 * random and are forwarded over the mesh: the placement test is skipped,
 * saying so.
 */
const AUTH_OK_ROUTING_KEY = /routingKey/.test(await Deno.readTextFile(new URL("../relay/hub.ts", import.meta.url)));
if (HAVE_TOOLS && !AUTH_OK_ROUTING_KEY) {
  console.log("SKIP cluster placement test: relay/hub.ts does not put routingKey in auth.ok yet");
}

Deno.test({
  name: "cluster: placement: a bridge reconnecting through nginx lands on its session's home (no mesh link)",
  ...SANITIZE,
  ignore: !HAVE_TOOLS || !AUTH_OK_ROUTING_KEY,
  async fn() {
    await withCluster(async (cluster) => {
      const { ide, bridge: first } = await pair(cluster, cluster.publicUrl, cluster.publicUrl);
      let bridge: Coder1Process | undefined;
      try {
        // The first pairing connection had no key (it may have landed anywhere); a restarted bridge has one.
        await stopBridge(first);
        bridge = startBridgeProcess(cluster.dirs, cluster.publicUrl, { args: ["--ca-file", cluster.caFile] });
        await ide.waitForBridge(20_000);
        const home = await homeOf(cluster);
        const where = await whereAreSockets(cluster);
        assert.deepEqual(where, { bridges: [home], ides: [home] }, "both ends on one instance");
        for (const instance of cluster.instances) {
          assert.equal((await instance.metrics()).get("coder1_mesh_links"), 0, `no mesh link on ${instance.name}`);
        }
        assert.equal((await runCollect(ide, "echo placed")).stdout, "placed\n");
        // nginx logs a WebSocket when it ends: the restarted bridge asked with its routing key.
        await stopBridge(bridge);
        bridge = undefined;
        await until(
          async () => /"GET \/ws\/bridge\?r=[0-9a-f]{16} HTTP\/1\.1" 101 /.test(await cluster.nginx.accessLog()),
          5_000,
          "the bridge's keyed request in nginx's access log",
        );
      } finally {
        ide.close();
        await stopBridge(bridge);
      }
    });
  },
});
