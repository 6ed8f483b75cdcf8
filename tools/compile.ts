/**
 * `deno task compile`: builds the single coder1 binary with `deno compile`,
 * baking in exactly the permission flags of {@linkcode compileFlags} from
 * cli/permissions.ts (the one list; nothing is added here).
 *
 * ```sh
 * deno task compile                           # dist/coder1 for this machine
 * deno task compile --target aarch64-apple-darwin
 * deno task compile --all                     # dist/coder1-<target>[.exe] for the five release targets
 * deno task compile --dry-run --all           # print the deno compile command lines only
 * DENORT_BIN=/path/to/denort deno task compile
 * ```
 *
 * `deno compile` downloads `denort` (the runtime it embeds) for each target
 * unless the `DENORT_BIN` environment variable names a local one; it reads
 * that variable itself, this script only checks and reports it.
 *
 * The binaries carry the git commit and the build date for
 * `coder1 --version`: this script writes them into cli/build_info.ts before
 * `deno compile` and restores the file afterwards. The commit is
 * `git rev-parse HEAD` (else `$GITHUB_SHA`), with `-dirty` when the tree has
 * changes; the date is `$SOURCE_DATE_EPOCH` when set (reproducible builds),
 * else now.
 *
 * @module
 */
import { compileFlags } from "../cli/permissions.ts";

/** The release targets, in the order `--all` builds them. */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

/** The repository root (absolute). */
const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
/** The module the binary reads its commit and build date from. */
const BUILD_INFO = `${ROOT}/cli/build_info.ts`;

/** What `coder1 --version` of a built binary reports. */
export interface BuildInfo {
  /** The git commit (maybe with `-dirty`), or `unknown`. */
  commit: string;
  /** The build time, ISO 8601 UTC to the second. */
  date: string;
}

/**
 * The source of cli/build_info.ts for a build. Pure.
 *
 * @param info Commit and date.
 * @returns TypeScript source with the two constants.
 *
 * @example
 * ```ts
 * import { buildInfoSource } from "./compile.ts";
 * console.log(buildInfoSource({ commit: "abc", date: "2030-01-01T00:00:00Z" }).includes('"abc"')); // true
 * ```
 */
export function buildInfoSource(info: BuildInfo): string {
  return [
    "/**",
    " * Build facts baked into this binary by tools/compile.ts (generated; the",
    " * committed version of this file leaves both undefined).",
    " *",
    " * @module",
    " */",
    "",
    "/** The git commit the binary was built from. */",
    `export const BUILD_COMMIT: string | undefined = ${JSON.stringify(info.commit)};`,
    "/** When the binary was built (ISO 8601, UTC). */",
    `export const BUILD_DATE: string | undefined = ${JSON.stringify(info.date)};`,
    "",
  ].join("\n");
}

/**
 * The build date: `SOURCE_DATE_EPOCH` (seconds) when given, else `now`.
 *
 * @param sourceDateEpoch The variable's value, if set.
 * @param now The current time (ms).
 * @returns ISO 8601 UTC to the second, e.g. `2030-01-01T00:00:00Z`.
 */
export function buildDate(sourceDateEpoch: string | undefined, now = Date.now()): string {
  const ms = sourceDateEpoch !== undefined && /^\d+$/.test(sourceDateEpoch) ? Number(sourceDateEpoch) * 1000 : now;
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * The commit of the repository at `root`, with `-dirty` if it has changes.
 *
 * @param root The repository.
 * @param env Fallback environment (`GITHUB_SHA`).
 * @returns The commit, or `unknown` without git.
 */
export async function gitCommit(
  root = ROOT,
  env: (name: string) => string | undefined = Deno.env.get,
): Promise<string> {
  const git = async (...args: string[]) => {
    try {
      const out = await new Deno.Command("git", { args, cwd: root, stdin: "null", stdout: "piped", stderr: "null" })
        .output();
      return out.success ? new TextDecoder().decode(out.stdout).trim() : undefined;
    } catch {
      return undefined;
    }
  };
  const head = await git("rev-parse", "HEAD");
  if (!head) return env("GITHUB_SHA") ?? "unknown";
  const dirty = await git("status", "--porcelain", "--untracked-files=no");
  return dirty ? `${head}-dirty` : head;
}

/** Where one binary goes and how `deno compile` is asked for it. */
export interface CompileJob {
  /** The target triple, or undefined for the host. */
  target?: string;
  /** The output file, relative to the repository root unless absolute. */
  output: string;
  /** The arguments after the deno executable, starting with `compile`. */
  args: string[];
}

/**
 * The output file for a target: `<outDir>/coder1` for the host,
 * `<outDir>/coder1-<target>` for a target, with `.exe` for Windows.
 *
 * @param target A target triple, or undefined for the host.
 * @param outDir The output directory.
 * @param hostOs The host's OS (for the `.exe` of a host build on Windows).
 * @returns The output path.
 */
export function outputFor(target: string | undefined, outDir = "dist", hostOs: string = Deno.build.os): string {
  const windows = target === undefined ? hostOs === "windows" : target.includes("windows");
  return `${outDir}/coder1${target === undefined ? "" : `-${target}`}${windows ? ".exe" : ""}`;
}

/**
 * The `deno compile` arguments for one binary: exactly {@linkcode compileFlags},
 * then the output, the target (if any) and the entry point. Pure: no I/O.
 *
 * @param options The target (undefined for the host), output file and entry point.
 * @returns Arguments for the deno executable, starting with `compile`.
 *
 * @example
 * ```ts
 * import { compileArgs } from "./compile.ts";
 * console.log(compileArgs({ output: "dist/coder1" }).at(-1)); // "main.ts"
 * ```
 */
export function compileArgs(options: { target?: string; output: string; entry?: string }): string[] {
  return [
    "compile",
    ...compileFlags(),
    "--output",
    options.output,
    ...(options.target === undefined ? [] : ["--target", options.target]),
    options.entry ?? "main.ts",
  ];
}

/** What the command line asks for. */
export interface CompileRequest {
  /** Print usage and stop. */
  help: boolean;
  /** Print the command lines, build nothing. */
  dryRun: boolean;
  /** The targets; empty means the host. */
  targets: string[];
  /** The output directory. */
  outDir: string;
}

/** A bad command line (exit 2). */
export class CompileUsageError extends Error {}

/**
 * Parses the tool's command line.
 *
 * @param args e.g. `["--target", "x86_64-apple-darwin", "--dry-run"]`.
 * @returns The request.
 * @throws {CompileUsageError} On an unknown flag or target.
 */
export function parseCompileArgs(args: string[]): CompileRequest {
  const request: CompileRequest = { help: false, dryRun: false, targets: [], outDir: "dist" };
  const value = (i: number, flag: string): string => {
    const v = args[i + 1];
    if (v === undefined || v.startsWith("-")) throw new CompileUsageError(`${flag} needs a value`);
    return v;
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const [flag, inline] = arg.startsWith("--") && arg.includes("=")
      ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)]
      : [arg, undefined];
    if (arg === "--") continue; // `deno task compile -- ...` may pass it on.
    else if (arg === "--help" || arg === "-h") request.help = true;
    else if (arg === "--dry-run") request.dryRun = true;
    else if (arg === "--all") request.targets.push(...TARGETS);
    else if (flag === "--target") {
      const target = inline ?? value(i++, "--target");
      if (!(TARGETS as readonly string[]).includes(target)) {
        throw new CompileUsageError(`unknown target "${target}"; one of: ${TARGETS.join(", ")}`);
      }
      request.targets.push(target);
    } else if (flag === "--out-dir") {
      request.outDir = (inline ?? value(i++, "--out-dir")).replace(/\/+$/, "") || "/";
    } else throw new CompileUsageError(`unknown argument "${arg}"`);
  }
  request.targets = [...new Set(request.targets)];
  return request;
}

/**
 * The jobs for a request: one host build, or one per target.
 *
 * @param request The parsed command line.
 * @returns The jobs, in order.
 */
export function planJobs(request: Pick<CompileRequest, "targets" | "outDir">): CompileJob[] {
  const targets: (string | undefined)[] = request.targets.length ? request.targets : [undefined];
  return targets.map((target) => {
    const output = outputFor(target, request.outDir);
    return { target, output, args: compileArgs({ target, output }) };
  });
}

/**
 * One command line as a shell would take it (single quotes where needed).
 *
 * @param argv The words.
 * @returns The line.
 */
export function shellLine(argv: string[]): string {
  return argv.map((w) => (/^[A-Za-z0-9_/.,=:@%+-]+$/.test(w) ? w : `'${w.replaceAll("'", `'\\''`)}'`)).join(" ");
}

const USAGE = `Usage: deno task compile [--target TARGET]... [--all] [--out-dir DIR] [--dry-run]

Builds coder1 into one binary with deno compile, with the permission flags of
compileFlags() in cli/permissions.ts, from main.ts.

  (no target)        dist/coder1 for this machine (${Deno.build.target})
  --target TARGET    dist/coder1-TARGET (.exe for Windows); repeatable. Targets:
                       ${TARGETS.join("\n                       ")}
  --all              every target above
  --out-dir DIR      write the binaries to DIR instead of dist/ (relative
                     to the repository root)
  --dry-run          print the exact deno compile command lines (run from the
                     repository root), build nothing
  -h, --help         this help

Environment:
  DENORT_BIN         a local denort binary (the runtime deno compile embeds);
                     without it deno compile downloads denort ${Deno.version.deno} for each
                     target. It must match the target, so it goes with one target.

Exit: 0 built (or printed), 1 deno compile failed, 2 bad command line.`;

/**
 * Runs the tool.
 *
 * @param args The tool's arguments.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  let request: CompileRequest;
  try {
    request = parseCompileArgs(args);
  } catch (error) {
    if (!(error instanceof CompileUsageError)) throw error;
    console.error(`compile: ${error.message}\n\n${USAGE}`);
    return 2;
  }
  if (request.help) {
    console.log(USAGE);
    return 0;
  }
  const jobs = planJobs(request);
  const denort = Deno.env.get("DENORT_BIN");
  if (denort !== undefined) {
    if (jobs.length > 1) {
      console.error(
        `compile: DENORT_BIN names one denort binary, which runs on one target; build one --target at a time with it`,
      );
      return 2;
    }
    let isFile = false;
    try {
      isFile = Deno.statSync(denort).isFile;
    } catch {
      // Reported below.
    }
    if (!isFile) {
      console.error(
        `compile: DENORT_BIN=${denort} is not a file (it should name a denort ${Deno.version.deno} binary)`,
      );
      return 1;
    }
    console.error(`compile: using DENORT_BIN=${denort} (deno compile embeds it instead of downloading denort)`);
  }
  const deno = Deno.execPath();
  const info: BuildInfo = {
    commit: await gitCommit(),
    date: buildDate(Deno.env.get("SOURCE_DATE_EPOCH")),
  };
  if (request.dryRun) {
    console.error(`compile: would embed commit ${info.commit}, built ${info.date} (cli/build_info.ts)`);
    for (const job of jobs) {
      console.log(shellLine([...(denort === undefined ? [] : [`DENORT_BIN=${denort}`]), deno, ...job.args]));
    }
    return 0;
  }
  const original = await Deno.readTextFile(BUILD_INFO);
  await Deno.writeTextFile(BUILD_INFO, buildInfoSource(info));
  console.error(`compile: embedding commit ${info.commit}, built ${info.date}`);
  try {
    return await _compileAll(jobs, deno, denort);
  } finally {
    await Deno.writeTextFile(BUILD_INFO, original);
  }
}

async function _compileAll(jobs: CompileJob[], deno: string, denort: string | undefined): Promise<number> {
  for (const job of jobs) {
    const label = job.target ?? `this machine (${Deno.build.target})`;
    const outDir = job.output.slice(0, job.output.lastIndexOf("/")) || "/";
    await Deno.mkdir(outDir.startsWith("/") ? outDir : `${ROOT}/${outDir}`, { recursive: true });
    console.error(`compile: building ${job.output} for ${label}`);
    let status: Deno.CommandStatus;
    try {
      status = await new Deno.Command(deno, {
        args: job.args,
        cwd: ROOT,
        stdin: "null",
        stdout: "inherit",
        stderr: "inherit",
      }).output();
    } catch (error) {
      console.error(`compile: cannot run ${deno}: ${(error as Error).message}`);
      return 1;
    }
    if (!status.success) {
      console.error(`compile: deno compile failed for ${label} (exit ${status.code}); nothing more was built.`);
      if (denort === undefined) {
        console.error(
          `compile: deno compile downloads denort ${Deno.version.deno} for the target unless DENORT_BIN names a ` +
            `local one; without network access, set DENORT_BIN to a denort binary for ${label}.`,
        );
      } else console.error(`compile: check that DENORT_BIN=${denort} is a denort ${Deno.version.deno} for ${label}.`);
      return 1;
    }
    console.error(`compile: built ${job.output}`);
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
