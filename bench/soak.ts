/**
 * `deno task soak` (issue 5): many concurrent, authenticated, idle bridges
 * answering heartbeats on one relay for a long while. It passes when
 *
 * - every bridge authenticated and none was dropped or refused;
 * - every bridge received a ping in (nearly) every heartbeat round, so the
 *   relay kept beating for all of them;
 * - a few "mute" bridges that never answer were dropped with close code 4000,
 *   so the relay's heartbeat timeout was alive all along;
 * - the relay's RSS grew by at most {@linkcode rssGrowthBound} from the
 *   sample after warm-up to the largest sample after it.
 *
 * `deno task soak` with no arguments also writes bench/soak.json and the
 * figures in docs/BENCHMARKS.md (the "Soak" section); other runs only print.
 *
 * ```sh
 * deno task soak                                 # 5,000 bridges, 5 minutes, `coder1 relay serve`
 * deno task soak --bridges 500 --seconds 30 --heartbeat-ms 2000
 * deno task soak --json out.json                 # also write the figures
 * ```
 *
 * With `--heartbeat-ms` the relay is bench/soak_relay.ts (the same relay code
 * with a shorter heartbeat, for the 30-second test); without it, the real
 * CLI with the protocol's 15-second heartbeat and 45-second timeout.
 *
 * @module
 */
import { permissionFlags } from "../cli/permissions.ts";
import { HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS } from "../shared/protocol.ts";
import { makeTestDirs, OutputWatcher, ROOT, startRelayProcess } from "../tools/harness.ts";
import { type FleetReport, IdleBridgeFleet, mintBridgeTokens } from "./idle_bridges.ts";
import { cpuMs, rssBytes } from "./proc_stats.ts";
import { formatFiles, SOAK_MARKS, spliceMarkdown } from "./report.ts";
import { round } from "./stats.ts";

/** Options for {@linkcode runSoak}. */
export interface SoakOptions {
  /** Bridges that answer heartbeats. */
  bridges: number;
  /** How long to hold them after all connected, ms. */
  durationMs: number;
  /** Bridges that never answer (they must be dropped; default 5). */
  mute?: number;
  /** A shorter heartbeat (bench/soak_relay.ts); default: the real CLI and its 15 s. */
  heartbeat?: { intervalMs: number; timeoutMs: number };
  /** Time between samples, ms (default: a tenth of the run, at most 10 s). */
  sampleMs?: number;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

/** One sample of the relay. */
export interface SoakSample {
  /** Seconds since the bridges were all connected. */
  t: number;
  /** Relay RSS, bytes. */
  rss: number;
  /** Relay CPU since the start of the hold, ms. */
  cpuMs: number;
  /** Bridges dropped so far (not counting mute ones). */
  dropped: number;
}

/** What a soak run measured and whether it passed. */
export interface SoakResult {
  /** ISO time the run started. */
  startedAt: string;
  bridges: number;
  mute: number;
  durationS: number;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  /** `coder1 relay serve` or bench/soak_relay.ts. */
  relay: string;
  /** The final report of the bridges. */
  final: FleetReport;
  /** Heartbeat rounds the hold spanned (whole intervals). */
  expectedBeats: number;
  /** Relay RSS before any bridge connected, bytes. */
  rssIdle: number;
  /** (RSS at the end - idle RSS) / bridges: what each bridge held at the end, bytes. */
  bytesPerBridge: number;
  /** RSS after warm-up, at the end, and the largest after warm-up, bytes. */
  rssWarm: number;
  rssEnd: number;
  rssMax: number;
  /** rssMax - rssWarm, and the bound it must stay under, bytes. */
  rssGrowth: number;
  rssBound: number;
  /** Relay CPU over the hold, ms, and per bridge per heartbeat round, µs. */
  relayCpuMs: number;
  cpuUsPerBridgePerBeat: number;
  samples: SoakSample[];
  /** Why it failed (empty when it passed). */
  failures: string[];
}

/**
 * The RSS growth a soak allows after warm-up: 10% of the warm RSS, and never
 * less than 16 MiB, which is about the V8 heap's own slack (a young
 * generation and a few old-space pages) that GC timing alone can leave
 * resident.
 *
 * @param warmRss The RSS after warm-up, bytes.
 * @returns The bound, bytes.
 */
export function rssGrowthBound(warmRss: number): number {
  return Math.max(16 * 2 ** 20, Math.round(warmRss * 0.1));
}

/**
 * Runs a soak.
 *
 * @param options Bridges, duration, heartbeat.
 * @returns The figures and the verdict.
 */
export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const log = options.log ?? ((line: string) => console.error(line));
  const startedAt = new Date().toISOString();
  const mute = options.mute ?? 5;
  const intervalMs = options.heartbeat?.intervalMs ?? HEARTBEAT_INTERVAL_MS;
  const timeoutMs = options.heartbeat?.timeoutMs ?? HEARTBEAT_TIMEOUT_MS;
  const sampleMs = options.sampleMs ?? Math.min(10_000, Math.max(1_000, options.durationMs / 10));
  // Warm-up: the mute bridges are dropped and the heap has seen a few rounds.
  const warmupMs = Math.min(options.durationMs / 2, Math.max(timeoutMs + 2 * intervalMs, options.durationMs / 5));
  const dirs = await makeTestDirs();
  const dataDir = `${dirs.env.XDG_DATA_HOME}/coder1`;
  const tokens = await mintBridgeTokens(dataDir, options.bridges + mute);
  const relay = options.heartbeat
    ? await _startSoakRelay(dataDir, intervalMs, timeoutMs)
    : await startRelayProcess(dirs);
  const fleet = new IdleBridgeFleet({ relayWs: relay.url.replace(/^http/, "ws"), tmpDir: dirs.root });
  const samples: SoakSample[] = [];
  let final: FleetReport;
  let cpu = 0;
  let rssIdle = 0;
  try {
    await new Promise((r) => setTimeout(r, 1_000));
    rssIdle = rssBytes(relay.child.pid);
    const connected = await fleet.add(tokens, { mute });
    log(`soak: ${connected.authed}/${options.bridges + mute} bridges authenticated (${mute} mute)`);
    await fleet.mark();
    const pid = relay.child.pid;
    const c0 = cpuMs(pid), t0 = performance.now();
    for (;;) {
      const elapsed = performance.now() - t0;
      const report = await fleet.report();
      samples.push({
        t: round(elapsed / 1000, 1),
        rss: rssBytes(pid),
        cpuMs: cpuMs(pid) - c0,
        dropped: report.dropped,
      });
      if (elapsed >= options.durationMs) break;
      log(
        `soak: ${(elapsed / 1000).toFixed(0)} s, relay RSS ${(samples.at(-1)!.rss / 2 ** 20).toFixed(1)} MiB, ` +
          `${report.authed} up, ${report.dropped} dropped, ${report.muteDropped}/${mute} mute dropped`,
      );
      await new Promise((r) => setTimeout(r, Math.min(sampleMs, options.durationMs - elapsed)));
    }
    final = await fleet.report();
    cpu = cpuMs(pid) - c0;
  } finally {
    await fleet.close();
    await relay.stop();
    await dirs.cleanup();
  }
  const after = samples.filter((s) => s.t * 1000 >= warmupMs);
  const warm = after[0] ?? samples.at(-1)!;
  const rssMax = Math.max(...after.map((s) => s.rss));
  const durationS = samples.at(-1)!.t;
  const expectedBeats = Math.floor((durationS * 1000) / intervalMs);
  const result: SoakResult = {
    startedAt,
    bridges: options.bridges,
    mute,
    durationS,
    heartbeatIntervalMs: intervalMs,
    heartbeatTimeoutMs: timeoutMs,
    relay: options.heartbeat ? "bench/soak_relay.ts" : "coder1 relay serve",
    final,
    expectedBeats,
    rssIdle,
    bytesPerBridge: Math.round((samples.at(-1)!.rss - rssIdle) / options.bridges),
    rssWarm: warm.rss,
    rssEnd: samples.at(-1)!.rss,
    rssMax,
    rssGrowth: rssMax - warm.rss,
    rssBound: rssGrowthBound(warm.rss),
    relayCpuMs: cpu,
    cpuUsPerBridgePerBeat: expectedBeats ? round((cpu * 1000) / expectedBeats / (options.bridges + mute), 1) : NaN,
    samples,
    failures: [],
  };
  const f = result.failures;
  if (final.authed !== options.bridges) f.push(`${final.authed} of ${options.bridges} bridges still up`);
  if (final.failed || final.pending) f.push(`${final.failed} bridges failed to authenticate, ${final.pending} pending`);
  if (final.dropped) f.push(`${final.dropped} bridges dropped (close codes ${JSON.stringify(final.closeCodes)})`);
  // The first and last rounds may fall just outside the window.
  if (final.minPings < Math.max(1, expectedBeats - 1)) {
    f.push(`a bridge got ${final.minPings} pings in ${durationS} s (about ${expectedBeats} rounds expected)`);
  }
  if (final.muteDropped !== mute || (mute && final.muteCloseCodes["4000"] !== mute)) {
    f.push(
      `${final.muteDropped} of ${mute} mute bridges dropped (${
        JSON.stringify(final.muteCloseCodes)
      }), all with 4000 expected`,
    );
  }
  if (result.rssGrowth > result.rssBound) {
    f.push(`relay RSS grew ${_mib(result.rssGrowth)} after warm-up, bound ${_mib(result.rssBound)}`);
  }
  return result;
}

/**
 * The soak's figures as Markdown, for docs/BENCHMARKS.md.
 *
 * @param result A finished soak.
 * @returns A short table and the verdict.
 */
export function renderSoakMarkdown(result: SoakResult): string {
  const when = result.startedAt;
  const { final } = result;
  const rows = [
    [
      "Bridges",
      `${result.bridges.toLocaleString("en-US")} idle, authenticated, answering pings (+${result.mute} mute)`,
    ],
    [
      "Relay",
      `${result.relay}, one ping every ${result.heartbeatIntervalMs / 1000} s, dropped after ${
        result.heartbeatTimeoutMs / 1000
      } s of silence`,
    ],
    ["Held for", `${result.durationS} s after all connected (${result.expectedBeats} heartbeat rounds)`],
    [
      "Up at the end / dropped / failed",
      `${final.authed.toLocaleString("en-US")} / ${final.dropped} / ${final.failed}`,
    ],
    ["Pings per bridge", `${final.minPings}–${final.maxPings}`],
    [
      "Mute bridges dropped",
      `${final.muteDropped} of ${result.mute} (close codes ${JSON.stringify(final.muteCloseCodes)})`,
    ],
    [
      "Relay RSS",
      `idle ${_mib(result.rssIdle)}; after warm-up ${_mib(result.rssWarm)}; largest ${_mib(result.rssMax)}; end ${
        _mib(result.rssEnd)
      } (${(result.bytesPerBridge / 1024).toFixed(1)} KiB per bridge)`,
    ],
    ["RSS growth after warm-up", `${_mib(result.rssGrowth)}, bound ${_mib(result.rssBound)} (rssGrowthBound)`],
    [
      "Relay CPU",
      `${
        (result.relayCpuMs / 1000).toFixed(1)
      } s over the hold (${result.cpuUsPerBridgePerBeat} µs per bridge per round)`,
    ],
  ];
  return [
    `Run of ${when.slice(0, 16).replace("T", " ")} UTC: **${result.failures.length ? "FAILED" : "passed"}**${
      result.failures.length ? ` (${result.failures.join("; ")})` : ""
    }.`,
    "",
    "| | |",
    "| - | - |",
    ...rows.map(([k, v]) => `| ${k} | ${v.replaceAll("|", "\\|")} |`),
  ].join("\n");
}

async function _startSoakRelay(
  dataDir: string,
  intervalMs: number,
  timeoutMs: number,
): Promise<{ url: string; child: Deno.ChildProcess; stop(): Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...permissionFlags("relay", { read: [dataDir], write: [dataDir] }),
      `${ROOT}/bench/soak_relay.ts`,
      "--data-dir",
      dataDir,
      "--heartbeat-ms",
      String(intervalMs),
      "--timeout-ms",
      String(timeoutMs),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = new OutputWatcher(child.stdout);
  const err = new OutputWatcher(child.stderr);
  const m = await Promise.race([
    out.waitFor(/listening on (\S+)/),
    child.status.then((s) => {
      throw new Error(`soak relay exited (${s.code}): ${err.text}`);
    }),
  ]);
  return {
    url: m[1],
    child,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already gone.
      }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // Already gone.
        }
      }, 5_000);
      await child.status;
      clearTimeout(timer);
      await Promise.all([out.done, err.done]);
    },
  };
}

function _mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

if (import.meta.main) {
  const args = [...Deno.args];
  const take = (flag: string): string | undefined => {
    const at = args.indexOf(flag);
    if (at < 0) return undefined;
    const [, value] = args.splice(at, 2);
    if (value === undefined) {
      console.error(`soak: ${flag} needs a value`);
      Deno.exit(2);
    }
    return value;
  };
  const bridges = Number(take("--bridges") ?? 5_000);
  const seconds = Number(take("--seconds") ?? 300);
  const heartbeatMs = take("--heartbeat-ms");
  const json = take("--json");
  if (args.length || !(bridges > 0) || !(seconds > 0) || (heartbeatMs !== undefined && !(Number(heartbeatMs) >= 100))) {
    console.error(`soak: bad arguments: ${Deno.args.join(" ")}`);
    console.error("usage: deno task soak [--bridges N] [--seconds S] [--heartbeat-ms MS] [--json FILE]");
    Deno.exit(2);
  }
  const result = await runSoak({
    bridges,
    durationMs: seconds * 1000,
    heartbeat: heartbeatMs ? { intervalMs: Number(heartbeatMs), timeoutMs: 5 * Number(heartbeatMs) } : undefined,
  });
  if (json) await Deno.writeTextFile(json, JSON.stringify(result, null, 2) + "\n");
  const markdown = renderSoakMarkdown(result);
  // Only the run the docs describe (the defaults) replaces the figures in them.
  if (Deno.args.length === 0) {
    const root = new URL("..", import.meta.url).pathname;
    const doc = `${root}docs/BENCHMARKS.md`;
    await Deno.writeTextFile(`${root}bench/soak.json`, JSON.stringify(result, null, 2) + "\n");
    const existing = await Deno.readTextFile(doc).catch(() => undefined);
    await Deno.writeTextFile(doc, spliceMarkdown(existing, markdown, SOAK_MARKS));
    await formatFiles([`${root}bench/soak.json`, doc], root);
    console.error(`soak: wrote ${root}bench/soak.json and the soak figures in ${doc}`);
  }
  console.log(markdown);
  Deno.exit(result.failures.length ? 1 : 0);
}
