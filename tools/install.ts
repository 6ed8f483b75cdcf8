/**
 * `deno task install`: puts a `coder1` command on the PATH that runs this
 * checkout, for machines without a release binary. The command is a small
 * shell script that starts tools/launch.ts with {@linkcode LAUNCHER_FLAGS};
 * the launcher then runs each role with its own permission flags from
 * cli/permissions.ts, exactly as `deno task coder1` does. The script names
 * the Deno that ran the install (from npm, `npx -y deno@2.9.6`) and falls back
 * to `npx` should that copy be cleaned away, so a machine with only Node.js
 * and npm needs nothing else.
 *
 *     npx -y deno@2.9.6 task install                  # ~/.local/bin/coder1
 *     npx -y deno@2.9.6 task install --root /opt/c1   # /opt/c1/bin/coder1
 *     npx -y deno@2.9.6 task install --uninstall
 *
 * @module
 */
import { LAUNCHER_FLAGS } from "../cli/permissions.ts";
import { DENO_FROM_NPM } from "../shared/bridge_command.ts";

/** The line that marks a file as ours (so a foreign `coder1` is never overwritten silently). */
export const SHIM_MARKER = "# coder1 command, written by tools/install.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * The shell script that runs the checkout at `checkout` with the Deno binary `deno`.
 *
 * @param checkout The coder1 checkout (absolute).
 * @param deno The Deno executable to use while it exists.
 * @returns The script's text.
 *
 * @example
 * ```ts
 * import { shimScript } from "./install.ts";
 * console.log(shimScript("/src/coder1", "/usr/bin/deno").includes("tools/launch.ts")); // true
 * ```
 */
export function shimScript(checkout: string, deno: string): string {
  const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  const run = `run --config ${q(`${checkout}/deno.json`)} ${LAUNCHER_FLAGS.join(" ")} ${
    q(`${checkout}/tools/launch.ts`)
  } "$@"`;
  return [
    "#!/bin/sh",
    SHIM_MARKER,
    `# from the checkout ${checkout}; install again after moving it.`,
    "# tools/launch.ts starts each role with its own Deno permission flags (cli/permissions.ts).",
    `deno=${q(deno)}`,
    `if [ -x "$deno" ]; then exec "$deno" ${run}; fi`,
    `exec ${DENO_FROM_NPM} ${run}`,
    "",
  ].join("\n");
}

/**
 * Installs (or with `--uninstall` removes) the `coder1` command.
 *
 * @param args `--root DIR` (default `~/.local`: the command goes to DIR/bin), `--force`, `--uninstall`.
 * @returns The exit code.
 */
export async function install(args: string[]): Promise<number> {
  const usage = "Usage: deno task install [--root DIR] [--force] [--uninstall]\n\n" +
    "Puts a coder1 command that runs this checkout in DIR/bin (default ~/.local/bin).\n" +
    "--force replaces a coder1 there that this script did not write; --uninstall removes it.";
  let root: string | undefined;
  let force = false, uninstall = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--help" || a === "-h") {
      console.log(usage);
      return 0;
    } else if (a === "--force") force = true;
    else if (a === "--uninstall") uninstall = true;
    else if (a === "--root" && i + 1 < args.length) root = args[++i];
    else if (a.startsWith("--root=")) root = a.slice("--root=".length);
    else {
      console.error(`install: ${a === "--root" ? "--root needs a directory" : `unknown argument "${a}"`}\n\n${usage}`);
      return 2;
    }
  }
  if (Deno.build.os === "windows") {
    console.error("install: this writes a POSIX shell script; on Windows use a release binary, or deno task coder1.");
    return 1;
  }
  const home = Deno.env.get("HOME");
  if (root === undefined) {
    if (!home) {
      console.error("install: HOME is not set: pass --root DIR");
      return 2;
    }
    root = `${home}/.local`;
  }
  if (!root.startsWith("/")) root = `${Deno.cwd()}/${root}`;
  const bin = `${root.replace(/\/$/, "")}/bin`;
  const target = `${bin}/coder1`;

  let existing: string | undefined;
  try {
    existing = await Deno.readTextFile(target);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const ours = existing?.includes(SHIM_MARKER) ?? false;
  if (uninstall) {
    if (existing === undefined) console.log(`No coder1 command at ${target}; nothing to remove.`);
    else if (!ours && !force) {
      console.error(`install: ${target} was not written by this script; remove it yourself (or pass --force).`);
      return 1;
    } else {
      await Deno.remove(target);
      console.log(`Removed ${target}.`);
    }
    return 0;
  }
  if (existing !== undefined && !ours && !force) {
    console.error(`install: ${target} exists and was not written by this script (a release binary?).`);
    console.error("Keep it, pick another place with --root DIR, or replace it with --force.");
    return 1;
  }

  await Deno.mkdir(bin, { recursive: true });
  const tmp = `${target}.${crypto.randomUUID()}.tmp`;
  await Deno.writeTextFile(tmp, shimScript(ROOT, Deno.execPath()), { mode: 0o755, createNew: true });
  await Deno.chmod(tmp, 0o755);
  await Deno.rename(tmp, target);
  console.log(`Installed ${target}: runs the coder1 checkout in ${ROOT}`);
  console.log(`  with Deno ${Deno.version.deno} (${Deno.execPath()}; if that copy goes away, ${DENO_FROM_NPM}).`);

  const path = (Deno.env.get("PATH") ?? "").split(":").filter(Boolean);
  const first = path.find((dir) => {
    try {
      return Deno.statSync(`${dir}/coder1`).isFile;
    } catch {
      return false;
    }
  });
  if (!path.includes(bin)) {
    const shown = home && bin.startsWith(`${home}/`) ? `$HOME${bin.slice(home.length)}` : bin;
    console.log(`${bin} is not on your PATH yet. Add it, for example for bash:`);
    console.log(`  echo 'export PATH="${shown}:$PATH"' >> ~/.bashrc`);
    console.log("then open a new terminal and run: coder1 --version");
  } else if (first && first !== bin) {
    console.log(`Note: ${first}/coder1 comes first on your PATH and will run instead of this one.`);
  } else console.log("Try it: coder1 --version");
  return 0;
}

if (import.meta.main) Deno.exit(await install(Deno.args));
