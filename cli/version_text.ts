/**
 * What `coder1 --version` prints: the version, the git commit and the build
 * date. Release binaries carry the commit and date (cli/build_info.ts, filled
 * in by tools/compile.ts); run from source, the commit comes from
 * `git rev-parse HEAD` when the process may run git, else it is `dev`, and
 * the date is `dev`.
 *
 * @module
 */
import { VERSION } from "../shared/version.ts";
import { BUILD_COMMIT, BUILD_DATE } from "./build_info.ts";

/** The build facts shown by `--version`. */
export interface VersionInfo {
  /** The coder1 version (shared/version.ts, the same as deno.json). */
  version: string;
  /** A git commit hash, or `dev`. */
  commit: string;
  /** An ISO 8601 build time, or `dev`. */
  date: string;
}

/**
 * Gathers the version facts.
 *
 * @returns Version, commit and build date.
 */
export async function versionInfo(): Promise<VersionInfo> {
  return {
    version: VERSION,
    commit: BUILD_COMMIT ?? (await _gitCommit()) ?? "dev",
    date: BUILD_DATE ?? "dev",
  };
}

/**
 * The `--version` line.
 *
 * @param info The facts.
 * @returns e.g. `coder1 0.3.0 (commit 17674bc..., built 2025-11-25T10:00:00Z)`.
 *
 * @example
 * ```ts
 * import { versionLine } from "./version_text.ts";
 * console.log(versionLine({ version: "1.0.0", commit: "abc", date: "dev" })); // coder1 1.0.0 (commit abc, built dev)
 * ```
 */
export function versionLine(info: VersionInfo): string {
  return `coder1 ${info.version} (commit ${info.commit}, built ${info.date})`;
}

/** `git rev-parse HEAD` in the source tree, if this process may run git and it answers. */
async function _gitCommit(): Promise<string | undefined> {
  const dir = new URL("..", import.meta.url);
  if (dir.protocol !== "file:") return undefined;
  try {
    // The `cli` role has no permissions at all: no prompt, no error, just "dev".
    if ((await Deno.permissions.query({ name: "run", command: "git" })).state !== "granted") return undefined;
    const out = await new Deno.Command("git", {
      args: ["rev-parse", "HEAD"],
      cwd: dir,
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
    const commit = new TextDecoder().decode(out.stdout).trim();
    return out.success && /^[0-9a-f]{7,64}$/.test(commit) ? commit : undefined;
  } catch {
    return undefined;
  }
}
