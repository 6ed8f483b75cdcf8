/**
 * Item 4 of the bench: the relay's memory with many idle, authenticated
 * bridges that answer heartbeats, and the CPU the heartbeats cost. The relay
 * is a real `coder1 relay serve` process with its role's permission flags and
 * the default timings (a ping every 15 s); the bridges are minted tokens held
 * by helper processes (bench/idle_bridges.ts).
 *
 * @module
 */
import { HEARTBEAT_INTERVAL_MS } from "../shared/protocol.ts";
import { makeTestDirs, startRelayProcess } from "../tools/harness.ts";
import { IdleBridgeFleet, mintBridgeTokens } from "./idle_bridges.ts";
import { cpuMs, rssAnonBytes, rssBytes } from "./proc_stats.ts";
import type { Row } from "./report.ts";
import { round } from "./stats.ts";

/** Settings for item 4. */
export interface ScaleConfig {
  /** Bridge counts to measure at, ascending. */
  levels: number[];
  /** How long to let the relay settle at each level before reading RSS, ms. */
  settleMs: number;
  /** Heartbeat rounds to measure CPU over at the top level (0: skip). */
  heartbeatRounds: number;
}

/** Target: relay memory per idle bridge. */
export const BYTES_PER_BRIDGE_TARGET = 32 * 1024;

/** One level's figures. */
export interface ScaleLevel {
  /** Bridges asked for. */
  bridges: number;
  /** Bridges authenticated. */
  authed: number;
  /** Bridges that failed to connect or authenticate. */
  failed: number;
  /** Relay RSS, bytes. */
  relayRss: number;
  /** (RSS - RSS with no bridges) / bridges. */
  bytesPerBridge: number;
  /** RSS added per bridge since the previous level. */
  marginalBytesPerBridge: number;
  /** Relay anonymous (private) RSS, bytes: {@linkcode relayRss} without executable and library pages. */
  relayRssAnon: number;
  /** (anonymous RSS - anonymous RSS with no bridges) / bridges. */
  anonBytesPerBridge: number;
  /** Seconds to connect and authenticate this level's new bridges. */
  connectS: number;
  /** Relay CPU spent connecting them, ms. */
  connectCpuMs: number;
}

/**
 * Measures item 4.
 *
 * @param config Levels and windows.
 * @param log Progress lines.
 * @returns Rows, raw figures and notes.
 */
export async function measureScale(
  config: ScaleConfig,
  log: (line: string) => void,
): Promise<{ rows: Row[]; sections: Record<string, unknown>; notes: string[] }> {
  const dirs = await makeTestDirs();
  const top = config.levels.at(-1)!;
  const t0 = performance.now();
  const tokens = await mintBridgeTokens(`${dirs.env.XDG_DATA_HOME}/coder1`, top);
  log(`scale: minted ${top} bridge tokens in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const relay = await startRelayProcess(dirs);
  const pid = relay.child.pid;
  const fleet = new IdleBridgeFleet({ relayWs: relay.url.replace(/^http/, "ws"), tmpDir: dirs.root });
  const levels: ScaleLevel[] = [];
  let heartbeat: Record<string, number> | null = null;
  let slopeRow: Record<string, number> | null = null;
  try {
    await _sleep(config.settleMs);
    const rss0 = rssBytes(pid), anon0 = rssAnonBytes(pid);
    let have = 0, prevRss = rss0;
    for (const level of config.levels) {
      const c0 = cpuMs(pid), w0 = performance.now();
      const report = await fleet.add(tokens.slice(have, level));
      const connectS = (performance.now() - w0) / 1000, connectCpuMs = cpuMs(pid) - c0;
      await _sleep(config.settleMs);
      const rss = rssBytes(pid), anon = rssAnonBytes(pid);
      levels.push({
        bridges: level,
        authed: report.authed,
        failed: report.failed + report.dropped,
        relayRss: rss,
        bytesPerBridge: Math.round((rss - rss0) / level),
        marginalBytesPerBridge: Math.round((rss - prevRss) / (level - have)),
        relayRssAnon: anon,
        anonBytesPerBridge: Math.round((anon - anon0) / level),
        connectS: round(connectS, 2),
        connectCpuMs,
      });
      log(
        `scale: ${report.authed}/${level} bridges authenticated in ${connectS.toFixed(1)} s, relay RSS ${_mib(rss)}, ${
          _kib((rss - rss0) / level)
        } per bridge`,
      );
      have = level;
      prevRss = rss;
    }
    if (config.heartbeatRounds > 0) {
      // A window of whole heartbeat intervals holds that many pings per bridge.
      await fleet.mark();
      const c0 = cpuMs(pid), w0 = performance.now();
      await _sleep(config.heartbeatRounds * HEARTBEAT_INTERVAL_MS + 500);
      const report = await fleet.report();
      const cpu = cpuMs(pid) - c0, wallMs = performance.now() - w0;
      const beats = report.authed ? Math.round(report.maxPings) : 0;
      heartbeat = {
        bridges: report.authed,
        windowS: round(wallMs / 1000, 1),
        beats,
        minPingsPerBridge: report.minPings,
        relayCpuMs: cpu,
        cpuMsPerBeat: beats ? round(cpu / beats, 1) : NaN,
        cpuUsPerBridgePerBeat: beats ? round((cpu * 1000) / beats / report.authed, 1) : NaN,
        cpuPercentOfOneCore: round((cpu / wallMs) * 100, 2),
        rssAfter: rssBytes(pid),
        dropped: report.dropped,
      };
      log(`scale: heartbeats at ${report.authed} bridges: ${cpu} ms relay CPU over ${beats} rounds`);
    }
  } finally {
    await fleet.close();
    await relay.stop();
    await dirs.cleanup();
  }

  const rows: Row[] = [];
  for (const l of levels) {
    rows.push({
      id: `scale-rss-${l.bridges}`,
      item: 4,
      measure: `Relay RSS with ${l.bridges.toLocaleString("en-US")} idle authenticated bridges, all-in per bridge`,
      coder1: `${_mib(l.relayRss)}: ${_kib(l.bytesPerBridge)} per bridge (private memory ${
        _kib(l.anonBytesPerBridge)
      }); ${l.authed} authenticated in ${l.connectS} s`,
      baseline: `relay with no bridges: ${_mib(l.relayRss - l.bytesPerBridge * l.bridges)}`,
      ratio: null,
      target: "≤ 32 KiB per idle bridge",
      met: l.authed === l.bridges && l.bytesPerBridge <= BYTES_PER_BRIDGE_TARGET,
    });
  }
  if (levels.length >= 2) {
    // The slope between the lowest and highest level: what one more bridge
    // costs, without the relay's one-off costs (code paged in on first use,
    // the heap's young generation sized by the connection burst).
    const lo = levels[0], hi = levels.at(-1)!;
    const slope = Math.round((hi.relayRss - lo.relayRss) / (hi.bridges - lo.bridges));
    const anonSlope = Math.round((hi.relayRssAnon - lo.relayRssAnon) / (hi.bridges - lo.bridges));
    const allUp = levels.every((l) => l.authed === l.bridges);
    slopeRow = { bytes: slope, anonBytes: anonSlope, from: lo.bridges, to: hi.bridges };
    rows.push({
      id: "scale-bytes-per-bridge",
      item: 4,
      measure: `Bytes per idle bridge: relay RSS added per bridge from ${lo.bridges.toLocaleString("en-US")} to ${
        hi.bridges.toLocaleString("en-US")
      } bridges`,
      coder1: `${_kib(slope)} per bridge (private memory ${_kib(anonSlope)})`,
      baseline: `all-in at ${hi.bridges.toLocaleString("en-US")}: ${_kib(hi.bytesPerBridge)}; at ${
        lo.bridges.toLocaleString("en-US")
      }: ${_kib(lo.bytesPerBridge)}`,
      ratio: null,
      target: "≤ 32 KiB per idle bridge",
      met: allUp && slope <= BYTES_PER_BRIDGE_TARGET,
    });
  }
  if (heartbeat) {
    rows.push({
      id: "scale-heartbeat-cpu",
      item: 4,
      measure: `Relay CPU on heartbeats, ${heartbeat.bridges.toLocaleString("en-US")} bridges, ping every ${
        HEARTBEAT_INTERVAL_MS / 1000
      } s`,
      coder1:
        `${heartbeat.cpuMsPerBeat} ms per round (${heartbeat.cpuUsPerBridgePerBeat} µs per ping and pong), ${heartbeat.cpuPercentOfOneCore}% of one core`,
      baseline: `idle relay between rounds (the window's CPU is all heartbeat work and GC)`,
      ratio: null,
      target: "none (reported)",
      met: null,
    });
  }
  const notes = [
    `Scale: bridges are idle sockets that authenticated with tokens minted from the relay's own key ` +
    `(bench/idle_bridges.ts) and answer every ping; they live in helper processes of at most 2,500 sockets each and ` +
    `come from loopback addresses 127.1.x.y, 32 each, under the relay's cap of open connections per address. ` +
    `RSS is the relay process's VmRSS after ${config.settleMs / 1000} s of settling; all-in per bridge = (RSS − RSS ` +
    `with no bridges) / bridges, which also carries the relay's one-off costs (code of the binary paged in on first ` +
    `use, the V8 young generation grown during the connection burst); private memory is the same for RssAnon ` +
    `(without file-backed pages); bytes per idle bridge is the slope of RSS between the lowest and highest level. ` +
    `Heartbeat CPU is the relay's user+system time over ${config.heartbeatRounds} whole ping intervals at the top ` +
    `level, divided by the rounds.`,
  ];
  return { rows, sections: { scale: { levels, slope: slopeRow, heartbeat } }, notes };
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
