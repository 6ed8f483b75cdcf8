/**
 * The one list of Deno permission flags per role. `deno task relay`,
 * `deno task coder1` (through tools/launch.ts), the tests and
 * `deno task compile` all take their flags from here.
 *
 * - relay: net; read/write only its data dir (read also its TLS and key
 *   files); env by name; no run, no ffi, no import.
 * - bridge: net; read/write only its config dir (read also its CA file and
 *   its working directory); env by name; sys by API; run (its purpose: it
 *   spawns the user's shell, and a shell is not sandboxed by Deno); ffi,
 *   unscoped, for its terminals (bridge/pty.ts calls libc; the
 *   `Deno.UnsafePointer` helpers it needs check unscoped ffi).
 * - `doctor` runs as the bridge (it checks the bridge's machine), reading its
 *   config dir and CA file and writing nothing.
 * - cli (`help`, `--version`): nothing.
 *
 * The compiled binary serves every role, so it carries the union with
 * read/write unscoped (home directories are not known at build time); at
 * start each role revokes the whole permissions it does not use
 * ({@linkcode dropUnusedPermissions}).
 *
 * @module
 */
import { parseFlags } from "./args.ts";
import { defaultConfigDir, defaultDataDir, type EnvLookup } from "./paths.ts";
import { BRIDGE_LOGOUT, BRIDGE_START, BRIDGE_STATUS, DOCTOR, RELAY_SERVE, RELAY_TELEMETRY } from "./specs.ts";

/** Which part of coder1 a process plays. */
export type Role = "relay" | "bridge" | "cli";

/** Environment variables each role may read. `WS_*` are read by npm:ws at load. */
export const ENV_NAMES: Record<Role, string[]> = {
  relay: ["HOME", "XDG_DATA_HOME", "CODER1_TELEMETRY", "WS_NO_BUFFER_UTIL", "WS_NO_UTF_8_VALIDATE"],
  bridge: [
    "HOME",
    "XDG_CONFIG_HOME",
    "SHELL",
    "ComSpec",
    "CODER1_RELAY_URL",
    "CODER1_TELEMETRY",
    "WS_NO_BUFFER_UTIL",
    "WS_NO_UTF_8_VALIDATE",
  ],
  cli: [],
};

/** System-information APIs each role may call. */
export const SYS_APIS: Record<Role, string[]> = {
  relay: [],
  bridge: ["hostname", "uid"],
  cli: [],
};

/** Whole permissions each role uses; the rest are revoked at start. */
const USED: Record<Role, Deno.PermissionName[]> = {
  relay: ["net", "read", "write", "env"],
  bridge: ["net", "read", "write", "env", "sys", "run", "ffi"],
  cli: [],
};
const ALL: Deno.PermissionName[] = ["net", "read", "write", "env", "sys", "run", "ffi"];

/**
 * The flags of the launcher (tools/launch.ts), which only reads the command
 * line, the environment and paths, then starts `deno run` with the role's
 * own flags ({@linkcode permissionFlags}). `deno task coder1`, `deno task
 * relay` and the `coder1` command that `deno task install` writes all start
 * it with exactly these.
 */
export const LAUNCHER_FLAGS: readonly string[] = ["--allow-env", "--allow-run", "--allow-read", "--no-prompt"];

/** Paths a process may read and write. */
export interface PathScope {
  /** Readable paths. */
  read: string[];
  /** Writable paths. */
  write: string[];
}

/**
 * The `deno run` flags for a role, scoped to `scope`.
 *
 * @param role The role.
 * @param scope Readable and writable paths.
 * @returns Flags such as `--allow-net`, `--allow-read=/a,/b`, `--no-prompt`.
 *
 * @example
 * ```ts
 * import { permissionFlags } from "./permissions.ts";
 * console.log(permissionFlags("relay", { read: ["/d"], write: ["/d"] }).includes("--allow-read=/d")); // true
 * ```
 */
export function permissionFlags(role: Role, scope: PathScope = { read: [], write: [] }): string[] {
  const flags: string[] = [];
  if (USED[role].includes("net")) flags.push("--allow-net");
  if (scope.read.length) flags.push(`--allow-read=${_list(scope.read)}`);
  if (scope.write.length) flags.push(`--allow-write=${_list(scope.write)}`);
  if (ENV_NAMES[role].length) flags.push(`--allow-env=${ENV_NAMES[role].join(",")}`);
  if (SYS_APIS[role].length) flags.push(`--allow-sys=${SYS_APIS[role].join(",")}`);
  if (USED[role].includes("run")) flags.push("--allow-run");
  if (USED[role].includes("ffi")) flags.push("--allow-ffi");
  flags.push("--no-prompt");
  return flags;
}

/**
 * The flags `deno compile` bakes into the single binary: the union of the
 * roles, with read and write unscoped because the user's directories are not
 * known at build time. `--allow-ffi` is there for the bridge's terminals; the
 * relay revokes it at start ({@linkcode dropUnusedPermissions}).
 *
 * @returns Flags for `deno compile`.
 */
export function compileFlags(): string[] {
  const env = [...new Set(Object.values(ENV_NAMES).flat())];
  const sys = [...new Set(Object.values(SYS_APIS).flat())];
  return [
    "--allow-net",
    "--allow-read",
    "--allow-write",
    `--allow-env=${env.join(",")}`,
    `--allow-sys=${sys.join(",")}`,
    "--allow-run",
    "--allow-ffi",
    "--no-prompt",
  ];
}

/**
 * Which role a command line plays and which paths it will touch, resolved the
 * way the command itself resolves them.
 *
 * @param args The coder1 arguments, e.g. `["relay", "serve", "--data-dir", "x"]`.
 * @param options Environment lookup and current directory.
 * @returns The role and its path scope.
 */
export function roleFor(args: string[], options: { env: EnvLookup; cwd: string }): { role: Role; scope: PathScope } {
  const abs = (p: string) => (p.startsWith("/") ? p : `${options.cwd}/${p}`);
  const [group, command, ...rest] = args;
  const tryParse = (spec: typeof RELAY_SERVE) => {
    try {
      return parseFlags(spec, rest);
    } catch {
      return {}; // main.ts reports the usage error itself.
    }
  };
  if (group === "relay" && command === "serve") {
    const f = tryParse(RELAY_SERVE);
    const dataDir = abs((f["data-dir"] as string | undefined) ?? defaultDataDir(options.env));
    const files = ["tls-cert", "tls-key", "jwt-key-file", "metrics-token-file", "mesh-key-file"].map((k) =>
      f[k] as string | undefined
    )
      .filter((v) => v !== undefined).map(abs);
    return { role: "relay", scope: { read: [dataDir, ...files], write: [dataDir] } };
  }
  if (group === "bridge") {
    const spec = command === "start" ? BRIDGE_START : command === "status" ? BRIDGE_STATUS : BRIDGE_LOGOUT;
    const f = tryParse(spec);
    const configDir = defaultConfigDir(options.env);
    const read = [configDir];
    if (typeof f["ca-file"] === "string") read.push(abs(f["ca-file"]));
    if (command === "start") read.push(abs((f.cwd as string | undefined) ?? options.cwd));
    return { role: "bridge", scope: { read, write: [configDir] } };
  }
  if (group === "doctor") {
    // Checks the bridge's config dir and CA file read-only; writes nothing.
    let f: ReturnType<typeof parseFlags> = {};
    try {
      f = parseFlags(DOCTOR, args.slice(1));
    } catch {
      // main.ts reports the usage error itself.
    }
    const read = [defaultConfigDir(options.env)];
    if (typeof f["ca-file"] === "string") read.push(abs(f["ca-file"]));
    return { role: "bridge", scope: { read, write: [] } };
  }
  if (group === "relay" && command === "telemetry") {
    // Reads the telemetry file (read-only SQLite); writes nothing.
    const f = tryParse(RELAY_TELEMETRY);
    const dataDir = abs((f["data-dir"] as string | undefined) ?? defaultDataDir(options.env));
    return { role: "relay", scope: { read: [dataDir], write: [] } };
  }
  if (group === "relay") return { role: "relay", scope: { read: [], write: [] } };
  return { role: "cli", scope: { read: [], write: [] } };
}

/**
 * Revokes, for the rest of the process, every whole permission the role does
 * not use. Under `deno run` with {@linkcode permissionFlags} most are absent
 * already; in the compiled binary (the union) this is what narrows a role.
 *
 * @param role The role this process plays.
 */
export async function dropUnusedPermissions(role: Role): Promise<void> {
  for (const name of ALL) {
    if (USED[role].includes(name)) continue;
    try {
      await Deno.permissions.revoke({ name } as Deno.PermissionDescriptor);
    } catch {
      // A runtime without this permission kind has nothing to revoke.
    }
  }
}

function _list(paths: string[]): string {
  for (const p of paths) {
    if (p.includes(",")) {
      throw new TypeError(`Cannot grant access to "${p}": Deno permission lists cannot hold a comma`);
    }
  }
  return [...new Set(paths)].join(",");
}
