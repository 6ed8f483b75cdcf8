/**
 * The contract between the bridge's terminals and the pseudo-terminal layer:
 * what a terminal needs of a process running in a PTY. bridge/pty.ts is the
 * real implementation (libc through Deno.dlopen); tests of the terminal
 * manager may pass a fake.
 *
 * @module
 */
import type { ProcessExit } from "./shell_runner.ts";

/** How to start a process in a new pseudo-terminal. */
export interface PtySpawnOptions {
  /** The program (looked up in PATH when it has no `/`). */
  file: string;
  /** Its arguments, without argv[0] (e.g. `["-l"]`). */
  args: string[];
  /** Working directory. */
  cwd: string;
  /** The complete environment of the child (TERM included). */
  env: Record<string, string>;
  /** Initial size in character cells. */
  cols: number;
  /** Initial size in character cells. */
  rows: number;
}

/** A process running in its own pseudo-terminal, as its session leader. */
export interface PtyProcess {
  /** Process id (also its session and process group id). */
  readonly pid: number;
  /**
   * What the program writes to the terminal, as it comes. The stream ends
   * when the terminal closes (the last process holding it exits). Reading
   * slowly pushes back on the program (it blocks on write).
   */
  readonly output: ReadableStream<Uint8Array>;
  /**
   * Writes bytes to the terminal as if typed (keystrokes, pastes), through
   * the line discipline: Ctrl-C becomes SIGINT for the foreground job, and so
   * on. Resolves once all of it was written (large pastes wait for the
   * program to read).
   */
  write(data: Uint8Array): Promise<void>;
  /** Sets the window size (TIOCSWINSZ); the foreground job gets SIGWINCH. */
  resize(cols: number, rows: number): void;
  /** Sends `signal` to the terminal's session (its process group). */
  kill(signal: Deno.Signal): void;
  /**
   * Sends `signal` to the terminal's foreground process group (the job the
   * shell runs now: Ctrl-C's target), unless that is the session leader's own
   * group (the shell at its prompt).
   *
   * @returns The process group signalled, or undefined when none was.
   */
  signalForeground?(signal: Deno.Signal): number | undefined;
  /** Resolves when the session leader exits. */
  readonly exited: Promise<ProcessExit>;
  /** Closes the terminal: SIGHUP to the session, then the master closes. */
  close(): void;
}

/** Starts processes in pseudo-terminals. */
export interface PtySpawner {
  /**
   * Starts a process in a new pseudo-terminal.
   *
   * @throws {Error} When terminals are not supported on this OS, or the spawn fails.
   */
  spawn(options: PtySpawnOptions): PtyProcess;
  /**
   * The environment the bridge process was started with (what its children
   * inherit), where the spawner can read it without Deno's env permission.
   */
  environment?(): Record<string, string>;
}
