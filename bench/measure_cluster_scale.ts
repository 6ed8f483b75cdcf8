/**
 * Item 9 of the bench (issue 15's soak figure): what idle bridges cost when
 * they are spread over several relay instances sharing Redis, against one
 * relay holding them all. Three configurations run one after the other in
 * the same run, each on fresh processes, with the same minted tokens:
 *
 * - `single`: one `coder1 relay serve` without Redis (today's relay), all bridges;
 * - `solo`: one relay with `--redis-url`, alone in its cluster, all bridges:
 *   what leases, presence and credential lines in Redis cost, without spreading;
 * - `cluster`: `instances` relays sharing one redis-server, each holding its
 *   share of the bridges;
 * - `spread` (full run only): `instances` independent relays without Redis,
 *   each holding its share: what more processes cost, without Redis.
 *
 * Every bridge is an idle socket (bench/idle_bridges.ts) that authenticated
 * with a token minted from the key the relays share (`--jwt-key-file`) and
 * answers pings. Each instance's bridges connect straight to it (no load
 * balancer), so each instance is the home of its bridges' sessions: it claims
 * their leases, renews them and the bridges' presence every LEASE_RENEW_MS,
 * and pings them every HEARTBEAT_INTERVAL_MS. That Redis traffic is part of
 * what is measured: relay CPU is summed over the instances and redis-server's
 * RSS and CPU are read beside it, over a window of whole intervals.
 *
 * ```sh
 * deno task bench --only cluster-scale --out /tmp/cs          # 3 × 1,000 against 3,000
 * deno task bench --only cluster-scale --quick --out /tmp/cs  # 3 × 20 against 60, a 5 s window
 * ```
 *
 * @module
 */
import { HEARTBEAT_INTERVAL_MS, LEASE_RENEW_MS } from "../shared/protocol.ts";
import { freePort, makeTestDirs, type RelayProcess, startRelayProcess } from "../tools/harness.ts";
import { type FleetReport, IdleBridgeFleet, mintBridgeTokensWithKey } from "./idle_bridges.ts";
import { redisMissing, type RedisProcess, startRedis, writeSharedKeys } from "./measure_cluster.ts";
import { cpuMs, rssAnonBytes, rssBytes } from "./proc_stats.ts";
import type { Row } from "./report.ts";
import { ratio, round } from "./stats.ts";

/** Settings for item 9. */
export interface ClusterScaleConfig {
  /** Relay instances in the cluster configuration (the single relays hold as many bridges as all of them). */
  instances: number;
  /** Bridges per instance at each level, ascending (at least two levels: the slope is taken between them). */
  perInstance: number[];
  /** How long to let the relays settle before reading RSS, ms. */
  settleMs: number;
  /** The CPU window, ms: whole heartbeat intervals in the full run (each holds three lease rounds). */
  windowMs: number;
  /**
   * A window before any bridge connects, ms: the CPU the same processes
   * spend idle (timers, the Redis connection, GC), which the per-bridge CPU
   * is taken net of, scaled to {@linkcode windowMs}.
   */
  idleWindowMs: number;
  /** Whether to measure the `spread` control too (independent relays without Redis). */
  spread: boolean;
}

/** The three configurations. */
export type ClusterScaleVariant = "single" | "solo" | "cluster" | "spread";

/** One level of one configuration; RSS summed over its relay processes. */
export interface ClusterScaleLevel {
  /** Bridges asked for, over all instances. */
  bridges: number;
  /** Bridges authenticated. */
  authed: number;
  /** Bridges that failed to connect or authenticate, or dropped, so far. */
  failed: number;
  /** Relay RSS, bytes, summed over the instances. */
  relayRss: number;
  /** Relay anonymous (private) RSS, bytes, summed. */
  relayRssAnon: number;
  /** Seconds to connect and authenticate this level's new bridges (instances in parallel). */
  connectS: number;
  /** Relay CPU spent connecting them, ms, summed. */
  connectCpuMs: number;
}

/** The figures of one configuration. */
export interface ClusterScaleFigures {
  variant: ClusterScaleVariant;
  /** Relay processes. */
  relays: number;
  /** Whether it used a redis-server. */
  redis: boolean;
  /** Relay RSS with no bridges, summed, bytes (and its anonymous part). */
  idleRss: number;
  idleRssAnon: number;
  levels: ClusterScaleLevel[];
  /** (RSS − idle RSS) / bridges at the top level, bytes. */
  bytesPerBridge: number;
  anonBytesPerBridge: number;
  /** RSS added per bridge between the lowest and the top level, bytes. */
  slopeBytes: number;
  slopeAnonBytes: number;
  /** The CPU window at the top level. */
  window: {
    ms: number;
    bridges: number;
    /** Relay CPU over the window, ms, summed over the instances. */
    relayCpuMs: number;
    /** The same, instance by instance. */
    relayCpuMsByInstance: number[];
    /** Relay CPU per bridge per heartbeat interval (one ping, three lease and presence renewals), µs. */
    relayUsPerBridgePerInterval: number;
    /** Relay CPU of the same processes with no bridges, scaled to this window, ms. */
    idleRelayCpuMs: number;
    /** {@linkcode relayUsPerBridgePerInterval} net of the idle processes' CPU, µs. */
    relayUsPerBridgePerIntervalAboveIdle: number;
    /** Relay CPU as a share of one core, summed over the instances, %. */
    relayPercentOfOneCore: number;
    /** Pings one bridge received in the window, fewest and most. */
    minPings: number;
    maxPings: number;
  };
  /** redis-server, when used: RSS before the bridges and after the window, its CPU over the window. */
  redisServer?: {
    idleRss: number;
    rss: number;
    bytesPerBridge: number;
    cpuMs: number;
    usPerBridgePerInterval: number;
    /** Its CPU with no bridges, scaled to the window, ms. */
    idleCpuMs: number;
    /**
     * Commands redis-server ran in the window (INFO commandstats, which also
     * counts the commands a Lua script runs), by command; their sum and each
     * of them per bridge per lease round.
     */
    commands: Record<string, number>;
    commandsPerBridgePerRound: number;
    perBridgePerRound: Record<string, number>;
  };
  /** Bridges that never authenticated, and authenticated ones the relay dropped, by the end. */
  failed: number;
  dropped: number;
  /** Close codes and reasons of the failed and dropped ones. */
  closeReasons: Record<string, number>;
}

/** What item 9 produced. */
export interface ClusterScaleResults {
  rows: Row[];
  sections: Record<string, unknown>;
  notes: string[];
}

/**
 * Measures item 9.
 *
 * @param config Instances, levels and the CPU window.
 * @param log Progress lines.
 * @returns Rows, raw figures and notes.
 */
export async function measureClusterScale(
  config: ClusterScaleConfig,
  log: (line: string) => void,
): Promise<ClusterScaleResults> {
  if (config.perInstance.length < 2 || config.instances < 2) {
    throw new RangeError("Cannot measure cluster scale: need two levels at least and two instances at least");
  }
  const missing = redisMissing();
  if (missing) {
    log(`cluster-scale: skipped: ${missing}`);
    return {
      rows: [_skippedRow("cluster-scale-rss", missing), _skippedRow("cluster-scale-cpu", missing)],
      sections: { clusterScale: { skipped: missing } },
      notes: [],
    };
  }
  const keysDir = await Deno.makeTempDir({ prefix: "coder1-bench-cluster-scale-" });
  const figures: ClusterScaleFigures[] = [];
  try {
    const jwtKey = `${keysDir}/jwt-key.pem`, meshKey = `${keysDir}/mesh-key`;
    await writeSharedKeys(jwtKey, meshKey);
    const total = config.instances * config.perInstance.at(-1)!;
    const t0 = performance.now();
    const tokens = await mintBridgeTokensWithKey(jwtKey, total);
    log(`cluster-scale: minted ${total} bridge tokens in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const variants: ClusterScaleVariant[] = [
      "single",
      "solo",
      "cluster",
      ...(config.spread ? ["spread" as const] : []),
    ];
    for (const variant of variants) {
      figures.push(await _measureVariant(variant, config, { tokens, jwtKey, meshKey }, log));
    }
  } finally {
    await Deno.remove(keysDir, { recursive: true }).catch(() => {});
  }
  return _report(config, figures);
}

/** One configuration on fresh processes: relays (and redis-server), levels of bridges, the CPU window. */
async function _measureVariant(
  variant: ClusterScaleVariant,
  config: ClusterScaleConfig,
  shared: { tokens: string[]; jwtKey: string; meshKey: string },
  log: (line: string) => void,
): Promise<ClusterScaleFigures> {
  const n = variant === "cluster" || variant === "spread" ? config.instances : 1;
  // Bridges per relay process at each level: the single relays hold every instance's share.
  const perRelay = config.perInstance.map((c) => (c * config.instances) / n);
  const top = perRelay.at(-1)!;
  const dirs = await makeTestDirs();
  let redis: RedisProcess | undefined;
  const relays: RelayProcess[] = [];
  const fleets: IdleBridgeFleet[] = [];
  try {
    if (variant === "solo" || variant === "cluster") {
      await Deno.mkdir(`${dirs.root}/redis`);
      redis = await startRedis(`${dirs.root}/redis`);
    }
    for (let i = 0; i < n; i++) {
      const args = ["--data-dir", `${dirs.root}/relay-${i}`, "--jwt-key-file", shared.jwtKey];
      let port = 0;
      if (redis) {
        port = freePort();
        args.push("--redis-url", redis.url, "--advertise-url", `http://127.0.0.1:${port}`);
        args.push("--mesh-key-file", shared.meshKey);
      }
      const relay = await startRelayProcess(dirs, args, port);
      relays.push(relay);
      await Deno.mkdir(`${dirs.root}/fleet-${i}`);
      fleets.push(
        new IdleBridgeFleet({
          relayWs: relay.url.replace(/^http/, "ws"),
          tmpDir: `${dirs.root}/fleet-${i}`,
          // Source addresses of their own: the instances share their rate windows (logins per address) in Redis.
          firstIndex: i * top,
        }),
      );
    }
    const pids = relays.map((r) => r.child.pid);
    const sum = (f: (pid: number) => number) => pids.reduce((s, pid) => s + f(pid), 0);
    // Each relay's bridges: its own slice of the tokens.
    const slices = relays.map((_, i) => shared.tokens.slice(i * top, (i + 1) * top));
    await _sleep(config.settleMs);
    const i0 = sum(cpuMs), ir0 = redis ? cpuMs(redis.pid) : 0, iw0 = performance.now();
    await _sleep(config.idleWindowMs);
    const idleMs = performance.now() - iw0;
    const idleRelayCpuMs = sum(cpuMs) - i0, idleRedisCpuMs = redis ? cpuMs(redis.pid) - ir0 : 0;
    // Idle RSS after the idle window: a relay just started still gives back start-up memory for some seconds.
    const idleRss = sum(rssBytes), idleRssAnon = sum(rssAnonBytes);
    const redisIdleRss = redis ? rssBytes(redis.pid) : 0;
    const label = variant === "cluster"
      ? `${n} instances`
      : variant === "spread"
      ? `${n} relays, no Redis`
      : variant === "solo"
      ? "one relay with Redis"
      : "one relay, no Redis";
    log(
      `cluster-scale: ${label}: idle RSS ${_mib(idleRss)}, CPU ${idleRelayCpuMs} ms over ${
        (idleMs / 1000).toFixed(1)
      } s${redis ? `; redis-server ${_mib(redisIdleRss)}, ${idleRedisCpuMs} ms` : ""}`,
    );

    const levels: ClusterScaleLevel[] = [];
    let have = 0, last: FleetReport[] = [];
    for (const level of perRelay) {
      const c0 = sum(cpuMs), w0 = performance.now();
      last = await Promise.all(fleets.map((f, i) => f.add(slices[i].slice(have, level))));
      const connectS = (performance.now() - w0) / 1000, connectCpuMs = sum(cpuMs) - c0;
      await _sleep(config.settleMs);
      const authed = last.reduce((s, r) => s + r.authed, 0);
      const failed = last.reduce((s, r) => s + r.failed + r.dropped, 0);
      levels.push({
        bridges: level * n,
        authed,
        failed,
        relayRss: sum(rssBytes),
        relayRssAnon: sum(rssAnonBytes),
        connectS: round(connectS, 2),
        connectCpuMs,
      });
      log(
        `cluster-scale: ${label}: ${authed}/${level * n} bridges authenticated in ${connectS.toFixed(1)} s, ` +
          `relay RSS ${_mib(levels.at(-1)!.relayRss)}`,
      );
      have = level;
    }

    // The window: whole heartbeat intervals (each with LEASE_RENEW_MS rounds of lease and presence renewals).
    await Promise.all(fleets.map((f) => f.mark()));
    const calls0 = redis ? await redisCommandCalls(redis.url) : {};
    const c0 = sum(cpuMs), r0 = redis ? cpuMs(redis.pid) : 0, w0 = performance.now();
    const byInstance0 = pids.map(cpuMs);
    await _sleep(config.windowMs);
    const relayCpuMsByInstance = pids.map((pid, i) => cpuMs(pid) - byInstance0[i]);
    const relayCpuMs = sum(cpuMs) - c0, redisCpuMs = redis ? cpuMs(redis.pid) - r0 : 0;
    const wallMs = performance.now() - w0;
    const commands: Record<string, number> = {};
    if (redis) {
      // The INFO command that reads them is left out (its own call before the window is counted in neither).
      for (const [name, n] of Object.entries(await redisCommandCalls(redis.url))) {
        const k = n - (calls0[name] ?? 0) - (name === "info" ? 1 : 0);
        if (k > 0) commands[name] = k;
      }
    }
    const redisRss = redis ? rssBytes(redis.pid) : 0;
    last = await Promise.all(fleets.map((f) => f.report()));
    const bridges = last.reduce((s, r) => s + r.authed, 0);
    const intervals = wallMs / HEARTBEAT_INTERVAL_MS;
    const perBridgeInterval = (ms: number) => bridges ? round((ms * 1000) / intervals / bridges, 2) : NaN;
    const perBridgeRound = (k: number) => bridges ? round(k / (wallMs / LEASE_RENEW_MS) / bridges, 2) : NaN;
    const closeReasons: Record<string, number> = {};
    for (const r of last) {
      for (const [why, k] of Object.entries(r.closeReasons)) closeReasons[why] = (closeReasons[why] ?? 0) + k;
    }
    const lo = levels[0], hi = levels.at(-1)!;
    const result: ClusterScaleFigures = {
      variant,
      relays: n,
      redis: Boolean(redis),
      idleRss,
      idleRssAnon,
      levels,
      bytesPerBridge: Math.round((hi.relayRss - idleRss) / hi.bridges),
      anonBytesPerBridge: Math.round((hi.relayRssAnon - idleRssAnon) / hi.bridges),
      slopeBytes: Math.round((hi.relayRss - lo.relayRss) / (hi.bridges - lo.bridges)),
      slopeAnonBytes: Math.round((hi.relayRssAnon - lo.relayRssAnon) / (hi.bridges - lo.bridges)),
      window: {
        ms: Math.round(wallMs),
        bridges,
        relayCpuMs,
        relayCpuMsByInstance,
        relayUsPerBridgePerInterval: perBridgeInterval(relayCpuMs),
        idleRelayCpuMs: Math.round(idleRelayCpuMs * wallMs / idleMs),
        relayUsPerBridgePerIntervalAboveIdle: perBridgeInterval(relayCpuMs - idleRelayCpuMs * wallMs / idleMs),
        relayPercentOfOneCore: round((relayCpuMs / wallMs) * 100, 2),
        minPings: last.reduce((m, r) => Math.min(m, r.minPings), Infinity),
        maxPings: last.reduce((m, r) => Math.max(m, r.maxPings), 0),
      },
      failed: last.reduce((s, r) => s + r.failed, 0),
      dropped: last.reduce((s, r) => s + r.dropped, 0),
      closeReasons,
    };
    if (redis) {
      result.redisServer = {
        idleRss: redisIdleRss,
        rss: redisRss,
        bytesPerBridge: bridges ? Math.round((redisRss - redisIdleRss) / bridges) : NaN,
        cpuMs: redisCpuMs,
        usPerBridgePerInterval: perBridgeInterval(redisCpuMs),
        idleCpuMs: Math.round(idleRedisCpuMs * wallMs / idleMs),
        commands,
        commandsPerBridgePerRound: perBridgeRound(Object.values(commands).reduce((a, b) => a + b, 0)),
        perBridgePerRound: Object.fromEntries(Object.entries(commands).map(([c, k]) => [c, perBridgeRound(k)])),
      };
    }
    log(
      `cluster-scale: ${label}: ${relayCpuMs} ms relay CPU over ${(wallMs / 1000).toFixed(1)} s at ${bridges} ` +
        `bridges${
          redis ? `, redis-server ${redisCpuMs} ms, RSS ${_mib(redisRss)}, commands ${JSON.stringify(commands)}` : ""
        }; ` +
        `${result.failed} failed, ${result.dropped} dropped`,
    );
    return result;
  } finally {
    await Promise.all(fleets.map((f) => f.close()));
    for (const relay of relays) await relay.stop();
    await redis?.stop();
    await dirs.cleanup();
  }
}

/** Rows and notes from the three configurations. */
function _report(config: ClusterScaleConfig, figures: ClusterScaleFigures[]): ClusterScaleResults {
  const [single, solo, cluster, spread] = figures;
  const n = config.instances, per = config.perInstance.at(-1)!, total = n * per;
  const fmt = (v: number) => v.toLocaleString("en-US");
  const up = (f: ClusterScaleFigures) =>
    f.failed + f.dropped === 0 && f.window.bridges === f.levels.at(-1)!.bridges
      ? ""
      : `; ${f.failed} failed, ${f.dropped} dropped`;
  const allUp = figures.every((f) => up(f) === "");
  const rss = (f: ClusterScaleFigures) =>
    `${_kib(f.bytesPerBridge)} per bridge above idle (slope ${_kib(f.slopeBytes)}, private ${
      _kib(f.anonBytesPerBridge)
    }); ${_mib(f.levels.at(-1)!.relayRss)} in all, idle ${_mib(f.idleRss)}${up(f)}`;
  const cpu = (f: ClusterScaleFigures) =>
    `${f.window.relayUsPerBridgePerInterval} µs per bridge per ${
      HEARTBEAT_INTERVAL_MS / 1000
    } s, ${f.window.relayUsPerBridgePerIntervalAboveIdle} above idle (${f.window.relayCpuMs} ms over ${
      round(f.window.ms / 1000, 1)
    } s, idle ${f.window.idleRelayCpuMs} ms; ${f.window.relayPercentOfOneCore}% of one core)${up(f)}`;
  const redisText = (f: ClusterScaleFigures) =>
    `${_kib(f.redisServer!.bytesPerBridge)} RSS per bridge (${_mib(f.redisServer!.idleRss)} → ${
      _mib(f.redisServer!.rss)
    }), ${f.redisServer!.usPerBridgePerInterval} µs CPU per bridge per ${HEARTBEAT_INTERVAL_MS / 1000} s (${
      f.redisServer!.cpuMs
    } ms, idle ${f.redisServer!.idleCpuMs} ms); commands per bridge per ${
      LEASE_RENEW_MS / 1000
    } s (with those run inside Lua scripts): ${
      Object.entries(f.redisServer!.perBridgePerRound).map(([c, k]) => `${c.toUpperCase()} ${k}`).join(", ") || "none"
    }`;
  const what = `${n} instances × ${fmt(per)} idle bridges`;
  const target = "reported (no target); every bridge stays up";
  const rows: Row[] = [
    {
      id: "cluster-scale-rss",
      item: 9,
      measure: `Relay RSS, ${what} (summed over the instances) vs one relay with ${fmt(total)}`,
      coder1: rss(cluster),
      baseline: `one relay, no Redis: ${rss(single)}`,
      ratio: ratio(cluster.bytesPerBridge, single.bytesPerBridge),
      target,
      met: allUp,
    },
    {
      id: "cluster-scale-rss-redis",
      item: 9,
      measure: `Relay RSS, one relay with --redis-url alone in its cluster, ${fmt(total)} idle bridges, vs one relay ` +
        "without Redis (what leases and presence cost, without spreading)",
      coder1: rss(solo),
      baseline: `one relay, no Redis: ${_kib(single.bytesPerBridge)} per bridge (slope ${_kib(single.slopeBytes)})`,
      ratio: ratio(solo.bytesPerBridge, single.bytesPerBridge),
      target,
      met: allUp,
    },
    {
      id: "cluster-scale-cpu",
      item: 9,
      measure: `Relay CPU, ${what}, summed over the instances, over ${
        round(config.windowMs / HEARTBEAT_INTERVAL_MS, 2)
      } heartbeat intervals (each: one ping, ${
        HEARTBEAT_INTERVAL_MS / LEASE_RENEW_MS
      } lease and presence renewals per bridge) vs one relay with ${fmt(total)}`,
      coder1: cpu(cluster),
      baseline: `one relay, no Redis: ${cpu(single)}`,
      ratio: ratio(cluster.window.relayUsPerBridgePerInterval, single.window.relayUsPerBridgePerInterval),
      target,
      met: allUp,
    },
    {
      id: "cluster-scale-cpu-redis",
      item: 9,
      measure: `Relay CPU, one relay with --redis-url alone in its cluster, ${fmt(total)} idle bridges, vs one relay ` +
        "without Redis, same window",
      coder1: cpu(solo),
      baseline: `one relay, no Redis: ${single.window.relayUsPerBridgePerInterval} µs per bridge per ${
        HEARTBEAT_INTERVAL_MS / 1000
      } s, ${single.window.relayUsPerBridgePerIntervalAboveIdle} above idle`,
      ratio: ratio(solo.window.relayUsPerBridgePerInterval, single.window.relayUsPerBridgePerInterval),
      target,
      met: allUp,
    },
    {
      id: "cluster-scale-redis-server",
      item: 9,
      measure: `redis-server under ${what} (their leases, presence and credential lines), same window`,
      coder1: redisText(cluster),
      baseline: `under one relay with Redis and ${fmt(total)}: ${redisText(solo)}`,
      ratio: null,
      target: "reported (no target)",
      met: null,
    },
  ];
  if (spread) {
    rows.push({
      id: "cluster-scale-spread",
      item: 9,
      measure: `Control: ${n} independent relays without Redis, ${fmt(per)} idle bridges each, vs one relay with ${
        fmt(total)
      } (what more processes cost, without Redis)`,
      coder1: `${cpu(spread)}; RSS ${rss(spread)}`,
      baseline: `one relay, no Redis: ${single.window.relayUsPerBridgePerInterval} µs per bridge per ${
        HEARTBEAT_INTERVAL_MS / 1000
      } s; ${_kib(single.bytesPerBridge)} per bridge above idle`,
      ratio: ratio(spread.window.relayUsPerBridgePerInterval, single.window.relayUsPerBridgePerInterval),
      target,
      met: allUp,
    });
  }
  const notes = [
    `Several instances at scale (item 9): ${fmt(total)} idle bridges (minted tokens, answering pings, as in item 4) ` +
    `held by one \`coder1 relay serve\` without Redis, by one with \`--redis-url\` alone in its cluster, and by ` +
    `${n} instances sharing a redis-server (persistence off), ${fmt(per)} each, connected straight to their ` +
    `instance so that each is its bridges' sessions' home: it renews their leases and presence every ` +
    `${LEASE_RENEW_MS / 1000} s and pings them every ${HEARTBEAT_INTERVAL_MS / 1000} s. The configurations run one ` +
    `after the other on fresh processes. RSS is summed over the relay processes after ${config.settleMs / 1000} s of ` +
    `settling (idle RSS: after the idle window too); per bridge above idle = (RSS − RSS of the same processes with no bridges) / bridges; the slope is ` +
    `taken between ${fmt(n * config.perInstance[0])} and ${fmt(total)} bridges in all. CPU is user+system time ` +
    `summed over the relay processes (and redis-server's apart) over a window of ${
      round(config.windowMs / 1000, 1)
    } s, given per bridge per heartbeat interval, all-in and net of the CPU the same processes spent idle (measured ` +
    `over ${round(config.idleWindowMs / 1000, 1)} s before any bridge connected, scaled to the window). Ratios are ` +
    `of the all-in figures.` +
    (spread
      ? ` The control: ${n} independent relays without Redis, ${fmt(per)} bridges each, measured the same way.`
      : ""),
  ];
  return { rows, sections: { clusterScale: { config, figures } }, notes };
}

/**
 * How many times redis-server ran each command since it started, from `INFO
 * commandstats` (one plain RESP exchange on a socket of its own).
 *
 * @param url `redis://host:port`.
 * @returns Calls by lower-case command name (`evalsha`, `set`, ...).
 */
export async function redisCommandCalls(url: string): Promise<Record<string, number>> {
  const { hostname, port } = new URL(url);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  let text = "";
  try {
    await conn.write(new TextEncoder().encode("*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n"));
    const decoder = new TextDecoder();
    const buf = new Uint8Array(65_536);
    const deadline = Date.now() + 5_000;
    // A bulk string: "$<length>\r\n<body>\r\n". Read until the body is in (bounded in time).
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += decoder.decode(buf.subarray(0, n), { stream: true });
      const m = /^\$(\d+)\r\n/.exec(text);
      if (m && new TextEncoder().encode(text).length >= m[0].length + Number(m[1])) break;
      if (Date.now() > deadline) throw new Error(`Cannot read INFO commandstats from ${url}: timed out`);
    }
  } finally {
    conn.close();
  }
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^cmdstat_([a-z|_-]+):calls=(\d+)/gm)) out[m[1]] = Number(m[2]);
  return out;
}

function _skippedRow(id: string, why: string): Row {
  return {
    id,
    item: 9,
    measure: id === "cluster-scale-rss"
      ? "Relay RSS per idle bridge: several instances vs one relay"
      : "Relay CPU per idle bridge: several instances vs one relay",
    coder1: "skipped",
    baseline: "one relay: skipped",
    ratio: null,
    target: "reported (no target)",
    met: null,
    skipped: why,
  };
}

function _sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function _mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

function _kib(bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KiB`;
}
