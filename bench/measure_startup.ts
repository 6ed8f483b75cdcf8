/**
 * Item 6 of the bench: start-up. `coder1 --version` under `deno run` with its
 * role's permission flags (cli/permissions.ts, as the tests and tasks run
 * it), and the compiled binary when `DENORT_BIN` names a local denort (deno
 * compile cannot download one here); plus the relay's time to listen. The
 * baselines are `deno run` of an empty module (Deno's own floor) and `ssh -V`.
 *
 * @module
 */
import { compileArgs } from "../tools/compile.ts";
import { coder1Argv, makeTestDirs, ROOT, startRelayProcess } from "../tools/harness.ts";
import { fmtMs } from "./measure_link.ts";
import type { Row } from "./report.ts";
import { ratio, summarize, type Summary } from "./stats.ts";

/** Settings for item 6. */
export interface StartupConfig {
  /** Runs of each command. */
  runs: number;
  /** Relay starts. */
  relayRuns: number;
}

/**
 * Measures item 6.
 *
 * @param config Repetitions.
 * @param sshMissing Why `ssh -V` cannot run, if it cannot.
 * @param log Progress lines.
 * @returns Rows, raw figures and notes.
 */
export async function measureStartup(
  config: StartupConfig,
  sshMissing: string | undefined,
  log: (line: string) => void,
): Promise<{ rows: Row[]; sections: Record<string, unknown>; notes: string[] }> {
  const dirs = await makeTestDirs();
  try {
    const version = coder1Argv(["--version"], { env: dirs.env });
    const noop = [Deno.execPath(), "run", "--no-prompt", `${ROOT}/bench/noop.ts`];
    const samples = { version: [] as number[], noop: [] as number[], ssh: [] as number[], binary: [] as number[] };
    let binary: string | undefined;
    let binarySkipped: string | undefined = "DENORT_BIN is not set (deno compile needs a local denort here)";
    const denort = Deno.env.get("DENORT_BIN");
    if (denort) {
      binary = `${dirs.root}/coder1`;
      const out = await new Deno.Command(Deno.execPath(), {
        args: compileArgs({ output: binary }),
        cwd: ROOT,
        env: { DENORT_BIN: denort },
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (out.success) binarySkipped = undefined;
      else {
        binarySkipped = `deno compile failed: ${new TextDecoder().decode(out.stderr).trim().split("\n").at(-1)}`;
        binary = undefined;
      }
    }
    // Warm the module cache once; users run a cached install too.
    await _time(version, dirs.env);
    await _time(noop, dirs.env);
    for (let i = 0; i < config.runs; i++) {
      samples.version.push(await _time(version, dirs.env));
      samples.noop.push(await _time(noop, dirs.env));
      if (!sshMissing) samples.ssh.push(await _time(["ssh", "-V"], dirs.env));
      if (binary) samples.binary.push(await _time([binary, "--version"], dirs.env));
    }
    const relayStart: number[] = [];
    for (let i = 0; i < config.relayRuns; i++) {
      const t0 = performance.now();
      const relay = await startRelayProcess(dirs);
      relayStart.push(performance.now() - t0);
      await relay.stop();
    }
    const s: Record<string, Summary | null | string> = {
      version: summarize(samples.version),
      denoNoop: summarize(samples.noop),
      sshVersion: samples.ssh.length ? summarize(samples.ssh) : null,
      binaryVersion: samples.binary.length ? summarize(samples.binary) : null,
      relayListening: summarize(relayStart),
      versionFlags: version.slice(1, -2).join(" "),
    };
    if (binarySkipped) s.binarySkipped = binarySkipped;
    const v = s.version as Summary, n = s.denoNoop as Summary;
    log(`startup: coder1 --version ${fmtMs(v)}, deno noop ${fmtMs(n)}`);
    const rows: Row[] = [
      {
        id: "startup-version",
        item: 6,
        measure: "`coder1 --version` under `deno run` with the role's flags",
        coder1: fmtMs(v),
        baseline: `\`deno run\` of an empty module: ${fmtMs(n)}${
          s.sshVersion ? `; \`ssh -V\`: ${fmtMs(s.sshVersion as Summary)}` : ""
        }`,
        ratio: ratio(v.median, n.median),
        target: "none (reported)",
        met: null,
      },
      {
        id: "startup-binary",
        item: 6,
        measure: "`coder1 --version`, compiled binary",
        coder1: s.binaryVersion ? fmtMs(s.binaryVersion as Summary) : "",
        baseline: `\`deno run\` of an empty module: ${fmtMs(n)}`,
        ratio: s.binaryVersion ? ratio((s.binaryVersion as Summary).median, n.median) : null,
        target: "none (reported)",
        met: null,
        ...(binarySkipped ? { skipped: binarySkipped } : {}),
      },
      {
        id: "startup-relay",
        item: 6,
        measure: "`coder1 relay serve` from spawn to listening",
        coder1: fmtMs(s.relayListening as Summary),
        baseline: `\`deno run\` of an empty module: ${fmtMs(n)}`,
        ratio: ratio((s.relayListening as Summary).median, n.median),
        target: "none (reported)",
        met: null,
      },
    ];
    return { rows, sections: { startup: s }, notes: [] };
  } finally {
    await dirs.cleanup();
  }
}

async function _time(argv: string[], env: Record<string, string>): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command(argv[0], { args: argv.slice(1), env, stdout: "piped", stderr: "piped" })
    .output();
  const ms = performance.now() - t0;
  if (!out.success) throw new Error(`${argv.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  return ms;
}
