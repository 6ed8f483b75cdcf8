/**
 * Where the bridge gets its pseudo-terminals: bridge/pty.ts (libc through
 * Deno.dlopen), loaded only when terminals are on, so a bridge started with
 * `--no-terminal`, or on an OS without it, never loads it.
 *
 * The import is a dynamic `import("./pty.ts")` with a literal specifier, on
 * purpose:
 *
 * - Deno counts a literal dynamic import as part of the module graph: the
 *   module loads without `--allow-read` for the source tree (the bridge may
 *   read only its config and working directories), `deno compile` puts it in
 *   the binary, and `deno check` type-checks it.
 * - A computed specifier (`import(name)`) would hide the module from all
 *   three: it would need read permission for the file at run time and be
 *   missing from the compiled binary.
 * - A module that is not there yet (a tree without bridge/pty.ts) still
 *   type-checks (Deno leaves the type of a dynamic import it cannot resolve
 *   loose) and fails only when loaded, with `ERR_MODULE_NOT_FOUND`, which this
 *   function turns into "terminals unsupported" so that commands still work.
 *
 * @module
 */
import type { TerminalsUnavailable } from "./terminal_manager.ts";
import type { PtySpawner } from "./pty_types.ts";

/** What {@linkcode createPtySpawner} found: a spawner, or why there is none. */
export type PtySupport = { spawner: PtySpawner; unavailable?: undefined } | {
  spawner?: undefined;
  unavailable: TerminalsUnavailable;
};

/**
 * Loads the pseudo-terminal layer for this OS.
 *
 * @returns A spawner, or the reason terminals are unsupported (Windows, a
 *   build without bridge/pty.ts, a libc it cannot use).
 *
 * @example
 * ```ts ignore
 * import { createPtySpawner } from "./pty_factory.ts";
 * const pty = await createPtySpawner();
 * console.log(pty.spawner ? "terminals on" : pty.unavailable.message);
 * ```
 */
export async function createPtySpawner(): Promise<PtySupport> {
  if (Deno.build.os === "windows") {
    return {
      unavailable: {
        reason: "unsupported-os",
        message: "terminals are not supported on Windows yet (one-shot commands work)",
      },
    };
  }
  try {
    const { PosixPty } = await import("./pty.ts");
    return { spawner: new PosixPty() as PtySpawner };
  } catch (error) {
    const missing = (error as { code?: string }).code === "ERR_MODULE_NOT_FOUND";
    return {
      unavailable: {
        reason: "unsupported-os",
        message: missing
          ? "this build of coder1 has no pseudo-terminal support (bridge/pty.ts); one-shot commands work"
          : `pseudo-terminals are not available here (${(error as Error).message}); one-shot commands work`,
      },
    };
  }
}
