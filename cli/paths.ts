/**
 * Default directories, following the XDG base directory convention:
 * the relay's data under `$XDG_DATA_HOME/coder1` (else `~/.local/share/coder1`),
 * the bridge's config under `$XDG_CONFIG_HOME/coder1` (else `~/.config/coder1`).
 *
 * @module
 */

/** Reads an environment variable (injected so tests and launchers can fake it). */
export type EnvLookup = (name: string) => string | undefined;

/** The default env lookup. */
export const denoEnv: EnvLookup = (name) => Deno.env.get(name);

/**
 * The relay's default data directory.
 *
 * @param env Environment lookup.
 * @returns An absolute path.
 */
export function defaultDataDir(env: EnvLookup = denoEnv): string {
  const xdg = env("XDG_DATA_HOME");
  return xdg ? `${xdg}/coder1` : `${_home(env)}/.local/share/coder1`;
}

/**
 * The bridge's default config directory.
 *
 * @param env Environment lookup.
 * @returns An absolute path.
 */
export function defaultConfigDir(env: EnvLookup = denoEnv): string {
  const xdg = env("XDG_CONFIG_HOME");
  return xdg ? `${xdg}/coder1` : `${_home(env)}/.config/coder1`;
}

function _home(env: EnvLookup): string {
  const home = env("HOME") ?? env("USERPROFILE");
  if (!home) throw new Error("Cannot find a home directory: set HOME (or XDG_DATA_HOME / XDG_CONFIG_HOME)");
  return home;
}
