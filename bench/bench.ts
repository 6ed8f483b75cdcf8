/**
 * `deno task bench`: measures what users feel, each figure beside its
 * baseline from the same run, and writes bench/results.json and the table in
 * docs/BENCHMARKS.md.
 *
 * ```sh
 * deno task bench                          # full run (< 10 minutes on 2 cores)
 * deno task bench --quick --out /tmp/b     # smoke run: few repetitions, results in /tmp/b
 * deno task bench --only link,scale        # some sections: startup, pairing, link, scale
 * deno task bench --only cluster           # across two relay instances (not in the default run)
 * deno task bench --only cluster-scale     # 3 instances × 1,000 idle bridges vs one relay (not in the default run)
 * ```
 *
 * Items (issue 7): 1 round trip, 2 command latency, 3 throughput (all in
 * bench/measure_link.ts; the relay's CPU floor in bench/measure_forward.ts),
 * 4 scale (bench/measure_scale.ts), 5 pairing (bench/measure_pairing.ts),
 * 6 start-up (bench/measure_startup.ts); and of issue 13, 7 a terminal (keystroke
 * echo with and without keystroke timing obfuscation, `cat` in a terminal;
 * bench/measure_terminal.ts, in the link section). OpenSSH
 * rows need Debian's openssh-server and openssh-client; without them they are
 * reported as skipped, with the reason. Item 8 of issue 15, a session whose
 * IDE and bridge are on two relay instances sharing Redis against one relay
 * (bench/measure_cluster.ts), runs only when asked for (`--only cluster`); so does
 * item 9, idle bridges spread over three instances against one relay holding
 * them all (bench/measure_cluster_scale.ts, `--only cluster-scale`).
 *
 * @module
 */
import { type ClusterConfig, measureCluster } from "./measure_cluster.ts";
import { type ClusterScaleConfig, measureClusterScale } from "./measure_cluster_scale.ts";
import { type LinkConfig, measureLink } from "./measure_link.ts";
import { measurePairing, type PairingConfig } from "./measure_pairing.ts";
import { measureScale, type ScaleConfig } from "./measure_scale.ts";
import { measureStartup, type StartupConfig } from "./measure_startup.ts";
import { OpenSsh, opensshMissing } from "./openssh.ts";
import { HEARTBEAT_INTERVAL_MS, LEASE_RENEW_MS } from "../shared/protocol.ts";
import { machineInfo } from "./proc_stats.ts";
import { type BenchResults, formatFiles, renderMarkdown, RESULTS_SCHEMA, type Row, spliceMarkdown } from "./report.ts";
import { round } from "./stats.ts";

/** Repetitions for every section. */
export interface BenchConfig {
  link: LinkConfig;
  scale: ScaleConfig;
  pairing: PairingConfig;
  startup: StartupConfig;
  cluster: ClusterConfig;
  clusterScale: ClusterScaleConfig;
}

/** The full run. */
export const FULL: BenchConfig = {
  link: {
    roundTrips: 2_000,
    frameSizes: [64, 16_384],
    commands: 200,
    freshSsh: 20,
    streamBytes: 256 * 2 ** 20,
    streamRuns: 5,
    rounds: 10,
    keystrokes: 300,
    terminalBytes: 64 * 2 ** 20,
    terminalRuns: 3,
  },
  scale: { levels: [1_000, 5_000, 10_000], settleMs: 3_000, heartbeatRounds: 2 },
  pairing: { sequential: 40, concurrent: 60, concurrency: 8 },
  startup: { runs: 10, relayRuns: 3 },
  cluster: { roundTrips: 2_000, frameSizes: [64, 16_384], streamBytes: 256 * 2 ** 20, streamRuns: 5, rounds: 10 },
  clusterScale: {
    instances: 3,
    perInstance: [200, 1_000],
    settleMs: 3_000,
    windowMs: 2 * HEARTBEAT_INTERVAL_MS,
    idleWindowMs: 2 * HEARTBEAT_INTERVAL_MS,
    spread: true,
  },
};

/** The smoke run (`--quick`): every path once, few repetitions (about 30 s). */
export const QUICK: BenchConfig = {
  link: {
    roundTrips: 60,
    frameSizes: [64],
    commands: 10,
    freshSsh: 2,
    streamBytes: 16 * 2 ** 20,
    streamRuns: 1,
    rounds: 2,
    keystrokes: 20,
    terminalBytes: 8 * 2 ** 20,
    terminalRuns: 1,
  },
  scale: { levels: [100, 300], settleMs: 1_000, heartbeatRounds: 0 },
  pairing: { sequential: 4, concurrent: 4, concurrency: 2 },
  startup: { runs: 2, relayRuns: 1 },
  cluster: { roundTrips: 60, frameSizes: [64], streamBytes: 16 * 2 ** 20, streamRuns: 1, rounds: 2 },
  clusterScale: {
    instances: 3,
    perInstance: [10, 20],
    settleMs: 1_000,
    windowMs: LEASE_RENEW_MS,
    idleWindowMs: 2_000,
    spread: false,
  },
};

/** The sections, in the order they run. */
export const SECTIONS = ["startup", "pairing", "link", "scale", "cluster"] as const;
/** Sections that run only when named in `--only` (they need more than the default run has, e.g. redis-server). */
export const OPTIONAL_SECTIONS = ["cluster-scale"] as const;

/** Options for {@linkcode runBench}. */
export interface BenchOptions {
  /** Use {@linkcode QUICK}. */
  quick?: boolean;
  /** Sections to run (default all of {@linkcode SECTIONS}; {@linkcode OPTIONAL_SECTIONS} only when named). */
  only?: readonly string[];
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

/**
 * Runs the bench.
 *
 * @param options Quick or full, which sections, where progress goes.
 * @returns The results.
 */
export async function runBench(options: BenchOptions = {}): Promise<BenchResults> {
  const config = options.quick ? QUICK : FULL;
  const only = new Set(options.only ?? SECTIONS);
  const log = options.log ?? ((line: string) => console.error(line));
  const startedAt = new Date().toISOString();
  const t0 = performance.now();
  const machine = await machineInfo();
  const rows: Row[] = [];
  const sections: Record<string, unknown> = {};
  const notes: string[] = [
    "Every ratio compares figures taken in this run, on this machine; medians unless marked p99 (nearest rank). " +
    "End-to-end encryption is on: the IDE client and the bridge pair with the X25519/Ed25519 handshake, SAS and " +
    "approval, and seal every frame with AES-256-GCM.",
  ];
  const sshDir = await Deno.makeTempDir({ prefix: "coder1-bench-ssh-" });
  // Only the link section talks to sshd: the others start none (startup only asks whether ssh is installed).
  let ssh: OpenSsh | { missing: string } = { missing: opensshMissing() ?? "" };
  if (ssh.missing) {
    log(`bench: OpenSSH rows skipped: ${ssh.missing}`);
  } else if (only.has("link")) {
    try {
      ssh = await OpenSsh.start(sshDir);
    } catch (error) {
      ssh = { missing: `sshd did not start: ${(error as Error).message.split("\n")[0]}` };
      log(`bench: OpenSSH rows skipped: ${ssh.missing}`);
    }
  }
  const sshMissing = ssh instanceof OpenSsh ? undefined : ssh.missing || undefined;
  if (sshMissing) sections.openssh = { skipped: sshMissing };
  try {
    for (const name of [...SECTIONS, ...OPTIONAL_SECTIONS]) {
      if (!only.has(name)) continue;
      const s0 = performance.now();
      const part = name === "startup"
        ? await measureStartup(config.startup, sshMissing, log)
        : name === "pairing"
        ? await measurePairing(config.pairing, log)
        : name === "link"
        ? await measureLink(config.link, ssh, log)
        : name === "cluster"
        ? await measureCluster(config.cluster, log)
        : name === "cluster-scale"
        ? await measureClusterScale(config.clusterScale, log)
        : await measureScale(config.scale, log);
      rows.push(...part.rows);
      Object.assign(sections, part.sections);
      notes.push(...part.notes);
      log(`bench: ${name} done in ${((performance.now() - s0) / 1000).toFixed(1)} s`);
    }
  } finally {
    if (ssh instanceof OpenSsh) await ssh.close();
    await Deno.remove(sshDir, { recursive: true }).catch(() => {});
  }
  rows.sort((a, b) => a.item - b.item);
  return {
    schema: RESULTS_SCHEMA,
    startedAt,
    durationS: round((performance.now() - t0) / 1000, 1),
    quick: Boolean(options.quick),
    machine,
    rows,
    sections,
    notes,
  };
}

/**
 * Writes results.json and the Markdown table.
 *
 * @param results The run.
 * @param paths Where to write.
 */
export async function writeResults(results: BenchResults, paths: { json: string; markdown: string }): Promise<void> {
  await Deno.writeTextFile(paths.json, JSON.stringify(results, null, 2) + "\n");
  const existing = await Deno.readTextFile(paths.markdown).catch(() => undefined);
  await Deno.writeTextFile(paths.markdown, spliceMarkdown(existing, renderMarkdown(results)));
  await formatFiles([paths.json, paths.markdown], new URL("..", import.meta.url).pathname);
}

if (import.meta.main) {
  const args = [...Deno.args];
  const take = (flag: string): string | undefined => {
    const at = args.indexOf(flag);
    if (at < 0) return undefined;
    const value = args[at + 1];
    if (value === undefined || value.startsWith("--")) {
      console.error(`bench: ${flag} needs a value`);
      Deno.exit(2);
    }
    args.splice(at, 2);
    return value;
  };
  const quick = args.includes("--quick");
  if (quick) args.splice(args.indexOf("--quick"), 1);
  const out = take("--out");
  const only = take("--only")?.split(",");
  const known: readonly string[] = [...SECTIONS, ...OPTIONAL_SECTIONS];
  const unknown = [...args, ...(only ?? []).filter((s) => !known.includes(s))];
  if (unknown.length) {
    console.error(`bench: unknown argument or section: ${unknown.join(" ")}`);
    console.error(`usage: deno task bench [--quick] [--out DIR] [--only ${known.join(",")}]`);
    Deno.exit(2);
  }
  const root = new URL("..", import.meta.url).pathname;
  const paths = out
    ? { json: `${out}/results.json`, markdown: `${out}/BENCHMARKS.md` }
    : { json: `${root}bench/results.json`, markdown: `${root}docs/BENCHMARKS.md` };
  if (out) await Deno.mkdir(out, { recursive: true });
  const results = await runBench({ quick, only });
  await writeResults(results, paths);
  console.log(renderMarkdown(results));
  console.log(`\nWrote ${paths.json} and ${paths.markdown} (${results.durationS} s).`);
}
