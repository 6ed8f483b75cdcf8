/**
 * Spawns commands through the user's shell: `$SHELL -c CMD` (else `/bin/sh`),
 * or `%ComSpec% /c CMD` on Windows (documented, untested here). Each child gets
 * its own process group (session), so signals reach everything it starts and
 * the bridge can end the whole group.
 *
 * @module
 */
import type { OrphanGuard } from "./orphan_guard.ts";

/** Exit of a process: a code, or the signal that ended it. */
export interface ProcessExit {
  /** Exit code; null when a signal ended the process. */
  code: number | null;
  /** Signal name, e.g. `SIGINT`, or null. */
  signal: string | null;
}

/** A running command as the bridge drives it. */
export interface RunningProcess {
  /** Process id (and process group id). */
  pid: number;
  /** The child's stdout. */
  stdout: ReadableStream<Uint8Array>;
  /** The child's stderr. */
  stderr: ReadableStream<Uint8Array>;
  /** The child's stdin. */
  stdin: WritableStream<Uint8Array>;
  /** Resolves when the process exits. */
  exited: Promise<ProcessExit>;
  /** Sends a signal to the process group (falls back to the process). */
  kill(signal: Deno.Signal): void;
}

/** Starts commands; tests may pass one that echoes instead of spawning. */
export interface CommandRunner {
  /** Starts `command` in `cwd`. */
  spawn(command: string, options: { cwd: string }): RunningProcess;
}

/**
 * The real runner.
 *
 * @example
 * ```ts ignore
 * import { ShellRunner } from "./shell_runner.ts";
 * const p = new ShellRunner().spawn("echo hi", { cwd: "/tmp" });
 * console.log(await p.exited); // { code: 0, signal: null }
 * ```
 */
export class ShellRunner implements CommandRunner {
  #shell: string;
  #args: (command: string) => string[];

  #guard?: OrphanGuard;

  /**
   * @param env Environment lookup for SHELL / ComSpec.
   * @param guard Told about each command's process group, to end it if the bridge dies.
   */
  constructor(env: (name: string) => string | undefined = (n) => Deno.env.get(n), guard?: OrphanGuard) {
    this.#guard = guard;
    if (Deno.build.os === "windows") {
      this.#shell = env("ComSpec") ?? "cmd.exe";
      this.#args = (c) => ["/d", "/s", "/c", c];
    } else {
      this.#shell = env("SHELL") || "/bin/sh";
      this.#args = (c) => ["-c", c];
    }
  }

  /** The shell this runner uses. */
  get shell(): string {
    return this.#shell;
  }

  spawn(command: string, options: { cwd: string }): RunningProcess {
    const child = new Deno.Command(this.#shell, {
      args: this.#args(command),
      cwd: options.cwd,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      // On Unix this puts the child in a new session and process group.
      detached: Deno.build.os !== "windows",
    }).spawn();
    const pid = child.pid;
    const guard = Deno.build.os === "windows" ? undefined : this.#guard;
    guard?.add(pid);
    return {
      pid,
      stdout: child.stdout,
      stderr: child.stderr,
      stdin: child.stdin,
      exited: child.status.then((s) => {
        guard?.remove(pid);
        return { code: s.signal ? null : s.code, signal: s.signal ?? null };
      }),
      kill(signal) {
        try {
          if (Deno.build.os === "windows") child.kill(signal);
          else Deno.kill(-pid, signal);
        } catch {
          try {
            child.kill(signal);
          } catch {
            // Already gone.
          }
        }
      },
    };
  }
}
