/**
 * Runs the IDE's commands: one entry per (stream, command id), output
 * streamed as it arrives (stdout and stderr apart), stdin and signals passed
 * through, a cap on concurrent commands, an optional timeout, and an exit
 * report with code or signal and duration.
 *
 * @module
 */
import { decodeCmdSignal, decodeCmdStart } from "../shared/frame_bodies.ts";
import { concatBytes, type FrameInit } from "../shared/frame_codec.ts";
import {
  type CmdErrorBody,
  type CmdExitBody,
  type CmdSignalBody,
  type Frame,
  FrameType,
  OUTPUT_CHUNK_BYTES,
} from "../shared/protocol.ts";
import type { CommandRunner, RunningProcess } from "./shell_runner.ts";

/** What one read of a child's pipe returns at most (Linux's default pipe capacity). */
const PIPE_READ_BYTES = 64 * 1024;
/** After the shell exits, output still in flight is read for this long. */
const DRAIN_GRACE_MS = 250;
/** Time between SIGTERM and SIGKILL when stopping a command. */
export const KILL_GRACE_MS = 2_000;

/** A frame for the IDE of stream `handle`. */
export interface CommandFrame extends FrameInit {
  /** The stream (bridge/stream_table.ts) whose IDE gets it. */
  handle: number;
}

/** Sends one frame towards the IDE; resolves when the socket can take more. */
export type FrameSender = (frame: CommandFrame) => Promise<void>;

/** Options for {@linkcode CommandManager}. */
export interface CommandManagerOptions {
  /** Spawns processes. */
  runner: CommandRunner;
  /** Absolute, resolved directory commands run in by default; `cwd` must stay inside it. */
  root: string;
  /** Cap on concurrent commands. */
  maxCommands: number;
  /** Kill commands after this long unless the IDE asks for less. */
  defaultTimeoutMs?: number;
  /** Where frames go. */
  send: FrameSender;
  /** Monotonic-ish clock for durations. */
  now?: () => number;
  /** Called with events for --verbose output (ids and statuses, never content). */
  onEvent?: (message: string) => void;
}

interface Running {
  key: string;
  handle: number;
  id: string;
  proc: RunningProcess;
  stdin: WritableStreamDefaultWriter<Uint8Array>;
  stdinChain: Promise<void>;
  timer?: ReturnType<typeof setTimeout>;
  killTimer?: ReturnType<typeof setTimeout>;
  timedOut: boolean;
  /** Resolves once the exit report went out and the entry is gone. */
  done?: Promise<void>;
}

/** Executes `cmd.*` frames. */
export class CommandManager {
  #opts: CommandManagerOptions;
  #running = new Map<string, Running>();
  #now: () => number;

  /** @param options Runner, root, cap and sender. */
  constructor(options: CommandManagerOptions) {
    this.#opts = options;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Number of commands running. */
  get size(): number {
    return this.#running.size;
  }

  /**
   * Handles one authenticated command frame (plaintext body) from the IDE of
   * stream `handle`: one switch; types it does not run are ignored.
   */
  handle(handle: number, frame: Frame): void {
    const id = frame.id;
    if (id === undefined) return; // Nothing to answer to.
    const key = `${handle}:${id}`;
    const running = this.#running.get(key);
    switch (frame.t) {
      case FrameType.CmdStart:
        this.#start(handle, id, key, frame);
        break;
      case FrameType.CmdStdin:
        if (running) {
          const data = frame.body.slice();
          running.stdinChain = running.stdinChain.then(() => running.stdin.write(data)).catch(() => {});
        }
        break;
      case FrameType.CmdEof:
        if (running) running.stdinChain = running.stdinChain.then(() => running.stdin.close()).catch(() => {});
        break;
      case FrameType.CmdSignal: {
        if (!running) break;
        let signal: CmdSignalBody["signal"];
        try {
          ({ signal } = decodeCmdSignal(frame.body));
        } catch (error) {
          // cmd.error means "this id is not running"; a bad signal must not say
          // that about a command that is, so it is ignored.
          this.#opts.onEvent?.(`command ${id}: ignored a bad signal frame (${(error as Error).message})`);
          break;
        }
        running.proc.kill(signal);
        break;
      }
      default:
        // Other stream types (the bridge's own output types) are not commands to it.
        break;
    }
  }

  /** Hangs up every command of stream `handle`, whose IDE is gone for good. */
  closeStream(handle: number): void {
    for (const r of this.#running.values()) if (r.handle === handle) this.#terminate(r, "SIGHUP");
  }

  /**
   * Stops every command: SIGTERM to each process group, SIGKILL after
   * {@linkcode KILL_GRACE_MS}, and waits for all of them to exit.
   */
  async stopAll(): Promise<void> {
    const all = [...this.#running.values()];
    for (const r of all) this.#terminate(r, "SIGTERM");
    await Promise.all(all.map((r) => r.done));
  }

  #start(handle: number, id: string, key: string, frame: Frame): void {
    if (this.#running.has(key)) return this.#error(handle, id, "duplicate-id", `command ${id} is already running`);
    let command: string, cwd: string | undefined, timeoutMs: number | undefined;
    try {
      ({ command, cwd, timeoutMs } = decodeCmdStart(frame.body, (message) => new Error(message)));
    } catch (error) {
      return this.#error(handle, id, "bad-request", (error as Error).message);
    }
    if (this.#running.size >= this.#opts.maxCommands) {
      return this.#error(
        handle,
        id,
        "busy",
        `${this.#running.size} commands are running already (the cap is ${this.#opts.maxCommands})`,
      );
    }
    let dir: string;
    try {
      dir = this.#resolveCwd(cwd);
    } catch (error) {
      return this.#error(handle, id, "bad-cwd", (error as Error).message);
    }
    let proc: RunningProcess;
    const started = this.#now();
    try {
      proc = this.#opts.runner.spawn(command, { cwd: dir });
    } catch (error) {
      return this.#error(handle, id, "spawn-failed", `cannot start the shell: ${(error as Error).message}`);
    }
    const r: Running = {
      key,
      handle,
      id,
      proc,
      stdin: proc.stdin.getWriter(),
      stdinChain: Promise.resolve(),
      timedOut: false,
    };
    this.#running.set(key, r);
    this.#opts.onEvent?.(`command ${id} started (pid ${proc.pid})`);
    const limit = [timeoutMs, this.#opts.defaultTimeoutMs].filter((v): v is number => v !== undefined);
    if (limit.length) {
      r.timer = setTimeout(() => {
        r.timedOut = true;
        this.#terminate(r, "SIGTERM");
      }, Math.min(...limit));
    }
    r.done = this.#finish(r, started).catch((error) => {
      this.#running.delete(key);
      this.#opts.onEvent?.(`command ${id} failed: ${error}`);
    });
  }

  async #finish(r: Running, started: number): Promise<void> {
    const out = this.#pump(r, r.proc.stdout, FrameType.CmdStdout);
    const err = this.#pump(r, r.proc.stderr, FrameType.CmdStderr);
    const exit = await r.proc.exited;
    const durationMs = Math.round(this.#now() - started);
    clearTimeout(r.timer);
    clearTimeout(r.killTimer);
    // A background grandchild may hold the pipes open; read what is in flight, then stop.
    const drained = Promise.all([out.done, err.done]);
    const grace = new Promise<"late">((resolve) => setTimeout(() => resolve("late"), DRAIN_GRACE_MS));
    if ((await Promise.race([drained, grace])) === "late") {
      out.cancel();
      err.cancel();
      await drained;
    }
    r.stdin.close().catch(() => {});
    this.#running.delete(r.key);
    const body: CmdExitBody = {
      code: exit.code,
      signal: exit.signal,
      durationMs,
      ...(r.timedOut ? { timedOut: true } : {}),
    };
    this.#opts.onEvent?.(`command ${r.id} exited (${exit.signal ?? exit.code})`);
    await this.#opts.send({ t: FrameType.CmdExit, handle: r.handle, id: r.id, body });
  }

  #pump(
    r: Running,
    stream: ReadableStream<Uint8Array>,
    type: typeof FrameType.CmdStdout | typeof FrameType.CmdStderr,
  ): { done: Promise<void>; cancel(): void } {
    const reader = stream.getReader();
    const done = (async () => {
      try {
        let next = reader.read();
        for (;;) {
          const first = await next;
          if (first.done) break;
          next = reader.read();
          let body = first.value;
          // A full pipe (a read of PIPE_READ_BYTES) means the child writes faster than
          // we send: output already waiting joins this frame, up to OUTPUT_CHUNK_BYTES,
          // so bulk output travels in fewer, larger frames (less work per MiB for the
          // bridge, the relay and the IDE). A short read is sent at once: interactive
          // output never waits.
          if (body.byteLength >= PIPE_READ_BYTES) {
            const parts = [body];
            let size = body.byteLength;
            let ended = false;
            while (size + PIPE_READ_BYTES <= OUTPUT_CHUNK_BYTES) {
              const more = await Promise.race([next, _nextTurn()]);
              if (more === undefined) break; // Nothing waiting right now.
              if (more.done) {
                ended = true;
                break;
              }
              parts.push(more.value);
              size += more.value.byteLength;
              next = reader.read();
              if (more.value.byteLength < PIPE_READ_BYTES) break;
            }
            if (parts.length > 1) body = concatBytes(parts);
            if (ended) next = Promise.resolve({ done: true, value: undefined });
          }
          for (let at = 0; at < body.byteLength; at += OUTPUT_CHUNK_BYTES) {
            // Waiting here pushes back on the child when the relay is slow.
            await this.#opts.send({
              t: type,
              handle: r.handle,
              id: r.id,
              body: body.subarray(at, at + OUTPUT_CHUNK_BYTES),
            });
          }
        }
      } catch {
        // Cancelled or the pipe broke: the exit report still goes out.
      }
    })();
    return { done, cancel: () => reader.cancel().catch(() => {}) };
  }

  #terminate(r: Running, signal: Deno.Signal): void {
    r.proc.kill(signal);
    clearTimeout(r.killTimer);
    r.killTimer = setTimeout(() => r.proc.kill("SIGKILL"), KILL_GRACE_MS);
  }

  #resolveCwd(cwd: string | undefined): string {
    const root = this.#opts.root;
    if (cwd === undefined || cwd === "" || cwd === ".") return root;
    const joined = cwd.startsWith("/") ? cwd : `${root}/${cwd}`;
    let real: string;
    try {
      real = Deno.realPathSync(joined);
    } catch {
      throw new Error(`no such directory: ${cwd}`);
    }
    if (real !== root && !real.startsWith(root.endsWith("/") ? root : `${root}/`)) {
      throw new Error(`${cwd} is outside the bridge's directory`);
    }
    if (!Deno.statSync(real).isDirectory) throw new Error(`not a directory: ${cwd}`);
    return real;
  }

  #error(handle: number, id: string, reason: string, message: string): void {
    const body: CmdErrorBody = { reason, message };
    this.#opts.send({ t: FrameType.CmdError, handle, id, body }).catch(() => {});
  }
}

/** Resolves (with undefined) after the event loop has had one more turn: completed reads are in by then. */
function _nextTurn(): Promise<undefined> {
  return new Promise((resolve) => setTimeout(() => resolve(undefined), 0));
}
