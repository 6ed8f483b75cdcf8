/**
 * Item 8 of the bench (issue 15): what a session pays when its two ends sit
 * on different relay instances. The IDE is on instance A (the session's
 * home), the bridge on instance B, which forwards its socket to A over the
 * mesh; beside it, in the same run and in alternating rounds, one relay
 * process without Redis carries the same traffic, as bench/measure_link.ts
 * measures it:
 *
 * - Round trip: a small frame IDE → A → B → bridge → B → A → IDE with the
 *   echo bridge (bench/echo_bridge.ts), against IDE → relay → bridge → relay → IDE.
 * - Throughput: `head -c N /dev/zero` through a real `coder1 bridge start`,
 *   streamed to the IDE client.
 *
 * Instances A and B are real `coder1 relay serve` processes with
 * `--redis-url`, `--advertise-url`, `--mesh-key-file` and a shared
 * `--jwt-key-file`, over a throwaway redis-server on loopback (persistence
 * off). After the run, A's and B's `/metrics` must show frames forwarded over
 * the mesh, so that a figure is never reported for a path it did not take.
 * Without redis-server the rows are reported as skipped, with the reason.
 *
 * ```sh
 * deno task bench --only cluster                    # full repetitions
 * deno task bench --only cluster --quick --out /tmp/b
 * ```
 *
 * @module
 */
import type { IdeClient } from "../shared/ide_client.ts";
import {
  approveBridge,
  type Coder1Process,
  freePort,
  ideClient,
  makeTestDirs,
  type RelayProcess,
  startBridgeProcess,
  startRelayProcess,
  type TestDirs,
} from "../tools/harness.ts";
import { echoCommand, fmtMs, share, startEchoBridge, streamCoder1 } from "./measure_link.ts";
import type { Row } from "./report.ts";
import { ratio, round, summarize } from "./stats.ts";

/** Repetitions for item 8. */
export interface ClusterConfig {
  /** Round trips per variant and frame size. */
  roundTrips: number;
  /** Frame sizes for the round trip, bytes (the first is the headline). */
  frameSizes: number[];
  /** Bytes the throughput command writes. */
  streamBytes: number;
  /** Throughput runs per variant. */
  streamRuns: number;
  /** Rounds the samples are interleaved in. */
  rounds: number;
}

/** What item 8 produced. */
export interface ClusterResults {
  rows: Row[];
  sections: Record<string, unknown>;
  notes: string[];
}

/** Targets of issue 15: cross-instance round trip at most this much slower at the median, ms. */
export const CLUSTER_RTT_BUDGET_MS = 0.1;
/** And at least this fraction of the single-instance throughput. */
export const CLUSTER_THROUGHPUT_FLOOR = 0.6;

/** One paired IDE and bridge, through one relay or across two instances. */
interface Path {
  name: "single" | "cross";
  dirs: TestDirs;
  ide: IdeClient;
  /** Where the bridge connects (instance B for the cross path). */
  bridgeRelay: string;
  bridge?: Coder1Process;
}

/**
 * Measures item 8.
 *
 * @param config Repetitions.
 * @param log Progress lines.
 * @returns Rows, raw figures and notes.
 */
export async function measureCluster(config: ClusterConfig, log: (line: string) => void): Promise<ClusterResults> {
  const missing = redisMissing();
  if (missing) {
    log(`cluster: skipped: ${missing}`);
    return {
      rows: [
        _skippedRow("cluster-round-trip-64", "Round trip across two relay instances", missing),
        _skippedRow("cluster-throughput", "Throughput across two relay instances", missing),
      ],
      sections: { cluster: { skipped: missing } },
      notes: [],
    };
  }
  const rows: Row[] = [];
  const sections: Record<string, unknown> = {};
  const keysDir = await Deno.makeTempDir({ prefix: "coder1-bench-cluster-" });
  const redis = await startRedis(keysDir);
  const relays: RelayProcess[] = [];
  const paths: Path[] = [];
  try {
    const jwtKey = `${keysDir}/jwt-key.pem`;
    const meshKey = `${keysDir}/mesh-key`;
    await writeSharedKeys(jwtKey, meshKey);
    const relayDirs = await makeTestDirs();
    const instance = async (name: string) => {
      const port = freePort();
      const relay = await startRelayProcess(relayDirs, [
        "--data-dir",
        `${relayDirs.root}/${name}`,
        "--redis-url",
        redis.url,
        "--advertise-url",
        `http://127.0.0.1:${port}`,
        "--mesh-key-file",
        meshKey,
        "--jwt-key-file",
        jwtKey,
      ], port);
      relays.push(relay);
      return relay;
    };
    const single = await startRelayProcess(relayDirs, ["--data-dir", `${relayDirs.root}/single`]);
    relays.push(single);
    const a = await instance("a");
    const b = await instance("b");
    log(`cluster: one relay at ${single.url}; instances A ${a.url} and B ${b.url} on ${redis.url}`);

    // Pair both paths with real bridges: the cross path's IDE opens its socket on A first (A becomes the
    // session's home), then its bridge redeems the code on B, which forwards the bridge's socket to A.
    paths.push(await _pair("single", single.url, single.url));
    paths.push(await _pair("cross", a.url, b.url));
    log("cluster: paired a bridge on each path (cross: IDE on A, bridge on B)");

    // Throughput, alternating paths run by run.
    const command = `head -c ${config.streamBytes} /dev/zero`;
    const tp = { single: [] as number[], cross: [] as number[] };
    await streamCoder1(paths[0].ide, "head -c 1048576 /dev/zero", 1_048_576);
    await streamCoder1(paths[1].ide, "head -c 1048576 /dev/zero", 1_048_576);
    for (let run = 0; run < config.streamRuns; run++) {
      for (const path of run % 2 ? [...paths].reverse() : paths) {
        tp[path.name].push(await streamCoder1(path.ide, command, config.streamBytes));
      }
      log(
        `cluster: throughput run ${run + 1}/${config.streamRuns}: one relay ${round(tp.single.at(-1)!, 0)} ` +
          `MB/s, across instances ${round(tp.cross.at(-1)!, 0)} MB/s`,
      );
    }
    const thr = { bytes: config.streamBytes, single: summarize(tp.single, 1), cross: summarize(tp.cross, 1) };
    const thrRatio = ratio(thr.cross.median, thr.single.median);
    sections.clusterThroughput = { ...thr, ratio: thrRatio, unit: "MB/s (10^6 bytes per second), median over runs" };
    rows.push({
      id: "cluster-throughput",
      item: 8,
      measure: `Output throughput, ${round(config.streamBytes / 2 ** 20, 1)} MiB: IDE on instance A, bridge on ` +
        "instance B (forwarded over the mesh) vs one relay",
      coder1: `${round(thr.cross.median, 1)} MB/s`,
      baseline: `one relay, no Redis: ${round(thr.single.median, 1)} MB/s`,
      ratio: thrRatio,
      target: `≥ ${CLUSTER_THROUGHPUT_FLOOR}× one relay`,
      met: thrRatio >= CLUSTER_THROUGHPUT_FLOOR,
    });

    // Round trip: the echo bridge in place of the real one on each path (it reuses the stored pairing).
    for (const path of paths) {
      await path.bridge!.stop();
      path.bridge = undefined;
      await _until(() => path.ide.state !== "ready", 10_000, `the ${path.name} IDE to see its bridge leave`);
      const echo = startEchoBridge(path.dirs.env, path.bridgeRelay);
      path.bridge = echo;
      await Promise.race([
        path.ide.waitForBridge(20_000),
        echo.status.then((s) => {
          throw new Error(`echo bridge (${path.name}) exited (${s.code}): ${echo.stderr.text}`);
        }),
      ]);
    }
    log("cluster: echo bridges connected with the pinned keys");
    const rtt: Record<string, unknown>[] = [];
    for (const size of config.frameSizes) {
      const payload = crypto.getRandomValues(new Uint8Array(size));
      const samples = { single: [] as number[], cross: [] as number[] };
      const echo = { single: echoCommand(paths[0].ide), cross: echoCommand(paths[1].ide) };
      for (let i = 0; i < Math.min(50, config.roundTrips); i++) {
        await echo.single.roundTrip(payload);
        await echo.cross.roundTrip(payload);
      }
      for (let r = 0; r < config.rounds; r++) {
        const n = share(config.roundTrips, config.rounds, r);
        const order = r % 2 ? ["cross", "single"] as const : ["single", "cross"] as const;
        for (const name of order) for (let i = 0; i < n; i++) samples[name].push(await echo[name].roundTrip(payload));
      }
      await echo.single.close();
      await echo.cross.close();
      const s = { bytes: size, single: summarize(samples.single), cross: summarize(samples.cross) };
      const extra = round(s.cross.median - s.single.median, 3);
      rtt.push({ ...s, extraMs: extra });
      const headline = size === config.frameSizes[0];
      rows.push({
        id: `cluster-round-trip-${size}`,
        item: 8,
        measure: `Round trip, ${size >= 1024 ? `${size / 1024} KiB` : `${size} B`} frame: IDE on instance A, ` +
          "bridge on instance B (IDE → A → B → bridge and back) vs one relay",
        coder1: `${fmtMs(s.cross)}, +${extra} ms`,
        baseline: `one relay, no Redis: ${fmtMs(s.single)}`,
        ratio: ratio(s.cross.median, s.single.median),
        target: headline ? `≤ +${CLUSTER_RTT_BUDGET_MS} ms at the median` : "none (context)",
        met: headline ? extra <= CLUSTER_RTT_BUDGET_MS : null,
      });
      log(`cluster: round trip ${size} B one relay ${fmtMs(s.single)}, across instances ${fmtMs(s.cross)}`);
    }
    sections.clusterRoundTrip = rtt;

    // The cross path really went through the mesh (B forwarded, A was home), the single one did not.
    const forwarded = { a: await meshFrames(a.url), b: await meshFrames(b.url), single: await meshFrames(single.url) };
    if (forwarded.b === 0) {
      throw new Error(
        `Cannot report the cross-instance figures: instance B forwarded no frames over the mesh ` +
          `(A ${forwarded.a}, B ${forwarded.b})`,
      );
    }
    sections.clusterMesh = { forwardedFrames: forwarded };
    return {
      rows,
      sections,
      notes: [
        "Across instances (item 8): two `coder1 relay serve` processes sharing a throwaway redis-server on loopback " +
        "(persistence off), a shared signing key and mesh key. The IDE client's socket is on instance A, which " +
        "holds the session's lease; the bridge connects to instance B, which forwards its socket to A over one " +
        "mesh WebSocket; frames pass through both. The baseline is one relay without Redis, paired the same way, " +
        "measured in alternating rounds in the same run. Frames forwarded over the mesh (from /metrics, " +
        `coder1_mesh_forwarded_frames_total): A ${forwarded.a}, B ${forwarded.b}.`,
      ],
    };
  } finally {
    for (const path of paths) {
      path.ide.close();
      await path.bridge?.stop();
      await path.dirs.cleanup();
    }
    for (const relay of relays) await relay.stop();
    await redis.stop();
    await Deno.remove(keysDir, { recursive: true }).catch(() => {});
  }
}

/** Pairs a fresh IDE (session and socket on `ideRelay`) with a real bridge started against `bridgeRelay`. */
async function _pair(name: Path["name"], ideRelay: string, bridgeRelay: string): Promise<Path> {
  const dirs = await makeTestDirs();
  const ide = ideClient(ideRelay);
  await ide.createSession();
  const { code } = await ide.requestPairingCode();
  await ide.connect();
  const bridge = startBridgeProcess(dirs, bridgeRelay, { code });
  await approveBridge(ide, bridge);
  return { name, dirs, ide, bridgeRelay, bridge };
}

/** Why redis-server cannot run here, or undefined when it can. */
export function redisMissing(): string | undefined {
  try {
    const out = new Deno.Command("redis-server", { args: ["--version"], stdout: "null", stderr: "null" }).outputSync();
    return out.success ? undefined : "redis-server --version failed";
  } catch {
    return "redis-server is not installed (Debian: apt install redis-server)";
  }
}

/** A redis-server started by {@linkcode startRedis}. */
export interface RedisProcess {
  /** `redis://127.0.0.1:PORT`. */
  url: string;
  /** Its process id (for RSS and CPU). */
  pid: number;
  /** Stops it (SIGTERM) and waits for it to exit. */
  stop(): Promise<void>;
}

/**
 * A throwaway redis-server on a loopback port of its own, persistence off, its files in `dir`.
 *
 * @param dir Its working directory.
 * @returns The running server, once it answers PING.
 */
export async function startRedis(dir: string): Promise<RedisProcess> {
  const port = freePort();
  const child = new Deno.Command("redis-server", {
    args: ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(new TextEncoder().encode("PING\r\n"));
      const buf = new Uint8Array(16);
      const n = await conn.read(buf);
      conn.close();
      if (n && new TextDecoder().decode(buf.subarray(0, n)).startsWith("+PONG")) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited already.
      }
      await child.status;
      throw new Error(`redis-server did not answer on port ${port}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // Gone already.
      }
      await child.status;
    },
  };
}

/**
 * The keys every instance shares, made as deploy/systemd/coder1-relay@.service
 * says: an Ed25519 signing key as PKCS#8 PEM and 48 random bytes in base64
 * for the mesh, both mode 0600.
 *
 * @param jwtKey Where the signing key goes (`--jwt-key-file`).
 * @param meshKey Where the mesh key goes (`--mesh-key-file`).
 */
export async function writeSharedKeys(jwtKey: string, meshKey: string): Promise<void> {
  const { privateKey } = await crypto.subtle.generateKey("Ed25519", true, ["sign", "verify"]) as CryptoKeyPair;
  const der = new Uint8Array(await crypto.subtle.exportKey("pkcs8", privateKey));
  const pem = `-----BEGIN PRIVATE KEY-----\n${btoa(String.fromCharCode(...der))}\n-----END PRIVATE KEY-----\n`;
  await Deno.writeTextFile(jwtKey, pem, { mode: 0o600 });
  const mesh = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(48))));
  await Deno.writeTextFile(meshKey, `${mesh}\n`, { mode: 0o600 });
}

/** Frames an instance forwarded over the mesh so far (both directions), from its `/metrics`; 0 when it has none. */
async function meshFrames(relayUrl: string): Promise<number> {
  const text = await (await fetch(`${relayUrl}/metrics`)).text();
  let total = 0;
  for (const m of text.matchAll(/^coder1_mesh_forwarded_frames_total(?:\{[^}]*\})? (\d+)$/gm)) total += Number(m[1]);
  return total;
}

function _skippedRow(id: string, measure: string, why: string): Row {
  return {
    id,
    item: 8,
    measure,
    coder1: "skipped",
    baseline: "one relay: skipped",
    ratio: null,
    target: id.startsWith("cluster-round-trip") ? `≤ +${CLUSTER_RTT_BUDGET_MS} ms at the median` : "≥ 0.6× one relay",
    met: null,
    skipped: why,
  };
}

async function _until(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
