/**
 * Fault tests with real processes: the relay killed with SIGKILL in the middle
 * of a 256 MiB stream, connections cut at seeded random moments by a TCP
 * proxy, an IDE that stops reading for 30 s, a receiver stuck past the limit,
 * the bridge killed (SIGKILL) or stopped (SIGTERM) mid-command, and the
 * relay's SIGTERM shutdown. The guarantee checked each time: every byte
 * exactly once, in order (SHA-256 equal), then the exit status; or, when the
 * bridge is gone, a clear `bridge-lost` and no orphan processes.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import WebSocket from "ws";
import { createLogger } from "../relay/logger.ts";
import { startRelay } from "../relay/relay.ts";
import type { IdeClient, IdeClientError, WebSocketLike } from "../shared/ide_client.ts";
import {
  approveBridge,
  type Coder1Process,
  freePort,
  ideClient,
  makeTestDirs,
  pairedSetup,
  type RelayProcess,
  startBridgeProcess,
  startRelayProcess,
  type TestDirs,
} from "./helpers.ts";

const SANITIZE = { sanitizeOps: false, sanitizeResources: false };
const MiB = 1024 * 1024;

/** Reconnects the IDE socket whenever it closes, until `stop()`. */
function keepConnected(ide: IdeClient): { stop(): void; closes: number[] } {
  let stopped = false;
  const closes: number[] = [];
  const retry = async () => {
    for (let i = 0; i < 600 && !stopped; i++) {
      await new Promise((r) => setTimeout(r, 100));
      if (stopped) return;
      try {
        await ide.connect();
        return;
      } catch {
        // The relay is not back yet (or the proxy cut us again): try again.
      }
    }
  };
  const off = ide.onClose((error) => {
    closes.push(error.status);
    if (!stopped) void retry();
  });
  return {
    closes,
    stop() {
      stopped = true;
      off();
    },
  };
}

/** Writes `bytes` pseudo-random bytes to `path` and returns their SHA-256 (hex). */
async function bigFile(path: string, bytes: number): Promise<string> {
  const { success } = await new Deno.Command("sh", {
    args: ["-c", `head -c ${bytes} /dev/urandom > '${path}'`],
  }).output();
  assert.ok(success, "made the test file");
  const hash = createHash("sha256");
  const file = await Deno.open(path);
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

/** Runs `cat path` through the IDE, hashing stdout; calls `onProgress` with the byte count. */
function catThrough(ide: IdeClient, path: string, onProgress: (received: number) => void = () => {}) {
  const hash = createHash("sha256");
  let received = 0;
  const cmd = ide.run(`cat '${path}'`, {
    onStdout: (bytes) => {
      hash.update(bytes);
      received += bytes.byteLength;
      onProgress(received);
    },
  });
  return {
    cmd,
    get received() {
      return received;
    },
    digest: () => hash.digest("hex"),
  };
}

function alive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

async function gone(pid: number, ms = 5_000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !alive(pid);
}

function rssKiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
}

/** A seeded PRNG (mulberry32), so a failing cut schedule can be replayed. */
function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A loopback TCP proxy to `target` that can cut every connection through it at once. */
function cuttingProxy(target: number): { port: number; cut(): number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  (async () => {
    for await (const client of listener) {
      Deno.connect({ hostname: "127.0.0.1", port: target }).then((upstream) => {
        open.add(client).add(upstream);
        const end = () => {
          for (const c of [client, upstream]) {
            open.delete(c);
            try {
              c.close();
            } catch {
              // Already closed.
            }
          }
        };
        client.readable.pipeTo(upstream.writable, { preventClose: true }).catch(() => {}).finally(end);
        upstream.readable.pipeTo(client.writable, { preventClose: true }).catch(() => {}).finally(end);
      }).catch(() => client.close());
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    cut() {
      const n = open.size / 2;
      for (const c of [...open]) {
        open.delete(c);
        try {
          c.close();
        } catch {
          // Already closed.
        }
      }
      return n;
    },
    close() {
      listener.close();
      this.cut();
    },
  };
}

async function withDirs(fn: (dirs: TestDirs, work: string) => Promise<void>): Promise<void> {
  const dirs = await makeTestDirs();
  const work = `${dirs.root}/work`;
  await Deno.mkdir(work);
  try {
    await fn(dirs, work);
  } finally {
    await dirs.cleanup();
  }
}

Deno.test({
  name: "relay killed with SIGKILL mid-stream (256 MiB) and restarted: every byte once, in order, then the exit status",
  ...SANITIZE,
  async fn() {
    await withDirs(async (dirs, work) => {
      const port = freePort();
      let relay: RelayProcess = await startRelayProcess(dirs, [], port);
      const { ide, bridge } = await pairedSetup(dirs, relay.url);
      const keeper = keepConnected(ide);
      try {
        const expected = await bigFile(`${work}/big`, 256 * MiB);
        let killed = false;
        const stream = catThrough(ide, `${work}/big`, (received) => {
          if (!killed && received >= 64 * MiB) {
            killed = true;
            relay.child.kill("SIGKILL");
          }
        });
        while (!killed) await new Promise((r) => setTimeout(r, 20));
        await relay.status;
        const at = stream.received;
        relay = await startRelayProcess(dirs, [], port);
        const result = await stream.cmd.exited;
        assert.equal(result.code, 0);
        assert.equal(stream.received, 256 * MiB, "every byte, exactly once");
        assert.equal(stream.digest(), expected, "in order (SHA-256 equal)");
        assert.ok(at < 256 * MiB, `the relay died mid-stream (at ${(at / MiB).toFixed(1)} MiB)`);
        await bridge.stdout.waitFor(/Bridge reconnected/);
      } finally {
        keeper.stop();
        ide.close();
        await bridge.stop();
        await relay.stop();
      }
    });
  },
});

Deno.test({
  name: "a TCP proxy cuts the bridge's and the IDE's connections at seeded random moments: nothing lost, nothing twice",
  ...SANITIZE,
  async fn() {
    await withDirs(async (dirs, work) => {
      const relay = await startRelayProcess(dirs);
      const bridgeProxy = cuttingProxy(relay.port), ideProxy = cuttingProxy(relay.port);
      const ide = ideClient(`http://127.0.0.1:${ideProxy.port}`, { origin: relay.url });
      await ide.createSession();
      const { code } = await ide.requestPairingCode();
      await ide.connect();
      const bridge = startBridgeProcess(dirs, `http://127.0.0.1:${bridgeProxy.port}`, { code });
      const keeper = keepConnected(ide);
      try {
        await approveBridge(ide, bridge);
        const seed = 20261125;
        const random = mulberry32(seed);
        const expected = await bigFile(`${work}/big`, 128 * MiB);
        const stream = catThrough(ide, `${work}/big`);
        const cuts: string[] = [];
        let done = false;
        stream.cmd.exited.finally(() => (done = true)).catch(() => {});
        for (let i = 0; i < 8 && !done; i++) {
          await new Promise((r) => setTimeout(r, 150 + random() * 600));
          if (done) break;
          const which = random();
          const side = which < 0.4 ? "bridge" : which < 0.8 ? "ide" : "both";
          if (side !== "ide") bridgeProxy.cut();
          if (side !== "bridge") ideProxy.cut();
          cuts.push(`${side}@${(stream.received / MiB).toFixed(1)}MiB`);
        }
        const result = await stream.cmd.exited;
        assert.equal(result.code, 0);
        assert.equal(stream.received, 128 * MiB, `every byte exactly once (seed ${seed}, cuts ${cuts.join(" ")})`);
        assert.equal(stream.digest(), expected, `in order (seed ${seed}, cuts ${cuts.join(" ")})`);
        assert.ok(cuts.length >= 2, `the stream was cut (${cuts.join(" ")})`);
      } finally {
        keeper.stop();
        ide.close();
        await bridge.stop();
        bridgeProxy.close();
        ideProxy.close();
        await relay.stop();
      }
    });
  },
});

Deno.test({
  name: "an IDE that stops reading for 30 s while a command floods output: relay RSS stays bounded, nothing lost",
  ...SANITIZE,
  async fn() {
    await withDirs(async (dirs, work) => {
      const relay = await startRelayProcess(dirs);
      let socket: WebSocket | undefined;
      const ide = ideClient(relay.url, {
        webSocket: (url, headers, protocols) => {
          socket = new WebSocket(url, protocols, { headers, perMessageDeflate: false });
          return socket as unknown as WebSocketLike;
        },
      });
      await ide.createSession();
      const { code } = await ide.requestPairingCode();
      await ide.connect();
      const bridge = startBridgeProcess(dirs, relay.url, { code });
      try {
        await approveBridge(ide, bridge);
        const expected = await bigFile(`${work}/big`, 64 * MiB);
        await new Promise((r) => setTimeout(r, 500));
        const baseline = rssKiB(relay.child.pid);
        const tcp = (socket as unknown as { _socket: { pause(): void; resume(): void } })._socket;
        let paused = false;
        const stream = catThrough(ide, `${work}/big`, (received) => {
          if (!paused && received >= 4 * MiB) {
            paused = true;
            tcp.pause();
          }
        });
        let ended = false;
        stream.cmd.exited.finally(() => (ended = true)).catch(() => {});
        while (!paused) await new Promise((r) => setTimeout(r, 10));
        // Frames already read from the socket before the pause are still opened and delivered.
        await new Promise((r) => setTimeout(r, 2_000));
        let peak = baseline;
        const stalledAt = stream.received;
        for (let i = 0; i < 28; i++) {
          await new Promise((r) => setTimeout(r, 1_000));
          peak = Math.max(peak, rssKiB(relay.child.pid));
        }
        assert.equal(stream.received, stalledAt, "the IDE really read nothing for 28 s");
        assert.equal(ended, false, "the command was held back (it blocks on write), not finished into a buffer");
        tcp.resume();
        const result = await stream.cmd.exited;
        assert.equal(result.code, 0);
        assert.equal(stream.received, 64 * MiB);
        assert.equal(stream.digest(), expected);
        const growthMiB = (peak - baseline) / 1024;
        console.log(`relay RSS ${baseline} KiB before, ${peak} KiB at most while the IDE stalled (+${growthMiB} MiB)`);
        assert.ok(growthMiB < 48, `relay RSS grew by ${growthMiB.toFixed(1)} MiB (bound 48 MiB)`);
      } finally {
        ide.close();
        await bridge.stop();
        await relay.stop();
      }
    });
  },
});

Deno.test({
  name: "a receiver stuck past the limit is disconnected (4000 or 4508) and resumes losslessly when it comes back",
  ...SANITIZE,
  async fn() {
    await withDirs(async (dirs, work) => {
      const dataDir = `${dirs.root}/relay-data`;
      const relay = await startRelay({
        port: 0,
        dataDir,
        log: createLogger({ level: "silent" }),
        // A receiver that reads nothing stops answering pings (4000) and, if the
        // relay holds bytes for it that do not shrink, is stuck (4508).
        timings: { heartbeatIntervalMs: 250, heartbeatTimeoutMs: 2_000, receiverStuckMs: 2_000 },
      });
      let socket: WebSocket | undefined;
      const ide = ideClient(relay.url, {
        webSocket: (url, headers, protocols) => {
          socket = new WebSocket(url, protocols, { headers, perMessageDeflate: false });
          return socket as unknown as WebSocketLike;
        },
      });
      await ide.createSession();
      const { code } = await ide.requestPairingCode();
      await ide.connect();
      const bridge = startBridgeProcess(dirs, relay.url, { code });
      const keeper = keepConnected(ide);
      try {
        await approveBridge(ide, bridge);
        const expected = await bigFile(`${work}/big`, 32 * MiB);
        let paused = false;
        let tcp: { pause(): void; resume(): void } | undefined;
        const stream = catThrough(ide, `${work}/big`, (received) => {
          if (!paused && received >= 2 * MiB) {
            paused = true;
            tcp = (socket as unknown as { _socket: { pause(): void; resume(): void } })._socket;
            tcp.pause();
          }
        });
        while (!paused) await new Promise((r) => setTimeout(r, 10));
        await new Promise((r) => setTimeout(r, 4_000));
        tcp!.resume();
        const result = await stream.cmd.exited;
        assert.equal(result.code, 0);
        assert.equal(stream.received, 32 * MiB);
        assert.equal(stream.digest(), expected);
        const stuck = keeper.closes.filter((c) => c === 4000 || c === 4508);
        assert.ok(stuck.length >= 1, `closed as stuck (closes: ${keeper.closes.join(",")})`);
      } finally {
        keeper.stop();
        ide.close();
        await bridge.stop();
        await relay.shutdown();
      }
    });
  },
});

Deno.test({
  name: "bridge killed with SIGKILL mid-command: the IDE is told, the command fails with bridge-lost, no orphans",
  ...SANITIZE,
  async fn(t) {
    await withDirs(async (dirs) => {
      const relay = await startRelayProcess(dirs);
      const ide = ideClient(relay.url, { resumeTimeoutMs: 3_000 });
      await ide.createSession();
      const { code } = await ide.requestPairingCode();
      await ide.connect();
      let bridge: Coder1Process = startBridgeProcess(dirs, relay.url, { code });
      try {
        await approveBridge(ide, bridge);
        const startCommand = async () => {
          let suspended = false;
          const pid = Promise.withResolvers<number>();
          const cmd = ide.run("echo $$; exec sleep 300", {
            onStdout: (b) => pid.resolve(Number(new TextDecoder().decode(b).trim())),
            onSuspended: () => (suspended = true),
          });
          return { cmd, pid: await pid.promise, suspended: () => suspended };
        };

        await t.step("the bridge does not come back: bridge-lost after the resume timeout", async () => {
          const { cmd, pid, suspended } = await startCommand();
          const started = Date.now();
          bridge.child.kill("SIGKILL");
          await bridge.status;
          const error = await cmd.exited.then(() => undefined, (e: IdeClientError) => e);
          assert.equal(error?.reason, "bridge-lost");
          assert.ok(suspended(), "the command was reported suspended first");
          assert.ok(Date.now() - started < 10_000, "nothing hangs");
          assert.ok(await gone(pid), `the command's process ${pid} is gone (orphan guard)`);
        });

        await t.step("the bridge restarts: the IDE learns at once that the command is gone", async () => {
          bridge = startBridgeProcess(dirs, relay.url);
          await ide.waitForBridge(20_000);
          const { cmd, pid } = await startCommand();
          bridge.child.kill("SIGKILL");
          await bridge.status;
          bridge = startBridgeProcess(dirs, relay.url);
          const error = await cmd.exited.then(() => undefined, (e: IdeClientError) => e);
          assert.equal(error?.reason, "bridge-lost");
          assert.match(error!.message, /restarted/);
          assert.ok(await gone(pid), `the command's process ${pid} is gone`);
          await ide.waitForBridge(20_000);
          const again = ide.run("true");
          assert.equal((await again.exited).code, 0, "the restarted bridge runs new commands");
        });
      } finally {
        ide.close();
        await bridge.stop();
        await relay.stop();
      }
    });
  },
});

Deno.test({
  name: "SIGTERM: the bridge stops its commands and reports their exit; the relay sends 1001 to all and exits quickly",
  ...SANITIZE,
  async fn(t) {
    await withDirs(async (dirs) => {
      const relay = await startRelayProcess(dirs);
      const { ide, bridge } = await pairedSetup(dirs, relay.url);
      try {
        await t.step("bridge SIGTERM mid-command", async () => {
          const pid = Promise.withResolvers<number>();
          const cmd = ide.run("echo $$; exec sleep 300", {
            onStdout: (b) => pid.resolve(Number(new TextDecoder().decode(b).trim())),
          });
          const child = await pid.promise;
          const status = await bridge.stop("SIGTERM");
          assert.equal(status.code, 0);
          const result = await cmd.exited;
          assert.equal(result.signal, "SIGTERM", "the exit report reached the IDE before the bridge hung up");
          assert.ok(await gone(child, 1_000));
          const lost = await new Promise<string>((resolve) => {
            if (ide.bridge?.state === "disconnected") return resolve("disconnected");
            const off = ide.onBridgeStatus((s) => {
              if (s.state === "disconnected") {
                off();
                resolve(s.state);
              }
            });
          });
          assert.equal(lost, "disconnected", "the relay knows the bridge left");
        });

        await t.step("relay SIGTERM", async () => {
          const closed = new Promise<number>((resolve) => ide.onClose((e) => resolve(e.status)));
          const started = Date.now();
          const status = await relay.stop("SIGTERM");
          const took = Date.now() - started;
          assert.equal(status.code, 0);
          assert.equal(await closed, 1001, "going away");
          assert.ok(took < 5_000, `exited in ${took} ms (grace 3 s)`);
        });
      } finally {
        ide.close();
        await bridge.stop();
        await relay.stop();
      }
    });
  },
});
