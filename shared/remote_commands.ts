/**
 * The IDE's commands and the lossless stream they travel on: the command
 * table, the stream's sender (`cmd.start`, `cmd.stdin`, `cmd.eof`,
 * `cmd.signal`, numbered, kept until acknowledged and resent after a
 * reconnect) and receiver (`cmd.stdout`, `cmd.stderr`, `cmd.exit`,
 * `cmd.error`, each delivered once, in order), and what happens while no
 * bridge is reachable: commands wait, suspended, for the resume timeout, and
 * then fail with reason `bridge-lost`. It is the IDE's counterpart of
 * bridge/stream_table.ts and bridge/command_manager.ts; sealing and the
 * socket belong to the `IdeClient` that wires it (shared/ide_client.ts).
 * Terminals (shared/remote_terminals.ts) travel on the same stream: they
 * number their frames into it with {@linkcode RemoteCommands.push} and get
 * theirs through {@linkcode RemoteCommandsOptions.onStreamFrame}.
 *
 * @module
 */
import type { Timers } from "./clock.ts";
import { toBase64Url } from "./e2e_crypto.ts";
import { E2eError, e2eFail } from "./e2e_session.ts";
import { decodeCmdError, decodeCmdExit, decodeStreamAck, decodeStreamResume } from "./frame_bodies.ts";
import { bodyBytes, type FrameInit } from "./frame_codec.ts";
import { IdeClientError } from "./ide_client_error.ts";
import {
  BRIDGE_RESUME_TIMEOUT_MS,
  type CmdExitBody,
  type CmdStartBody,
  type CommandSignal,
  type Frame,
  FrameType,
  type StreamAckBody,
  type StreamResumeBody,
  TERMINAL_TYPES,
} from "./protocol.ts";
import { StreamReceiver, StreamSender } from "./stream.ts";

/** How a command ended. */
export type CommandResult = CmdExitBody;

/**
 * Seals a frame with the keys it was made for and sends it; once those keys
 * are replaced it sends nothing (the stream resends on the new ones).
 */
export type SealedSender = (frame: FrameInit & { q?: number }) => Promise<void>;

/** Callbacks and settings for `IdeClient.run` ({@linkcode RemoteCommands.run}). */
export interface RunOptions {
  /** Directory relative to the bridge's root. */
  cwd?: string;
  /** Ask the bridge to kill the command after this long. */
  timeoutMs?: number;
  /** Receives stdout bytes as they arrive. */
  onStdout?: (bytes: Uint8Array) => void;
  /** Receives stderr bytes as they arrive. */
  onStderr?: (bytes: Uint8Array) => void;
  /**
   * The bridge became unreachable while the command runs (bridge, relay or
   * network away): the command stays pending, and its output resumes without
   * loss when the bridge is back, or it fails with `bridge-lost` after the
   * resume timeout (`IdeClientOptions.resumeTimeoutMs`).
   */
  onSuspended?: () => void;
  /** The bridge is reachable again; missed output follows. */
  onResumed?: () => void;
}

/** A command running on the bridge. */
export class RemoteCommand {
  /** The command id (unique per IDE client). */
  readonly id: string;
  /** Resolves with the exit status; rejects with {@linkcode IdeClientError} if it could not run or the bridge was lost. */
  readonly exited: Promise<CommandResult>;
  #send: (frame: FrameInit) => Promise<void>;
  #settle: PromiseWithResolvers<CommandResult>;
  /** @internal */
  readonly options: RunOptions;

  /** @internal Created by {@linkcode RemoteCommands.run}. */
  constructor(id: string, options: RunOptions, send: (frame: FrameInit) => Promise<void>) {
    this.id = id;
    this.options = options;
    this.#send = send;
    this.#settle = Promise.withResolvers<CommandResult>();
    this.exited = this.#settle.promise;
    this.exited.catch(() => {}); // Callers that never await still see no unhandled rejection.
  }

  /**
   * Writes to the command's stdin. Awaiting the result keeps a writer within
   * the send window (the bridge acknowledges what it received).
   */
  write(data: string | Uint8Array): Promise<void> {
    return this.#send({
      t: FrameType.CmdStdin,
      id: this.id,
      body: typeof data === "string" ? new TextEncoder().encode(data) : data,
    });
  }

  /** Closes the command's stdin (end of input). */
  closeStdin(): Promise<void> {
    return this.#send({ t: FrameType.CmdEof, id: this.id });
  }

  /** Sends a signal to the command's process group (`SIGINT` is Ctrl-C). */
  signal(signal: CommandSignal = "SIGINT"): Promise<void> {
    return this.#send({ t: FrameType.CmdSignal, id: this.id, body: { signal } });
  }

  /** @internal */
  resolve(result: CommandResult): void {
    this.#settle.resolve(result);
  }

  /** @internal */
  reject(error: IdeClientError): void {
    this.#settle.reject(error);
  }
}

/** Options for {@linkcode RemoteCommands}. */
export interface RemoteCommandsOptions {
  /** Timers for the resume timeout. */
  timers: Timers;
  /**
   * How long commands stay pending while no bridge is reachable; after it
   * they fail with reason `bridge-lost`. Default {@linkcode BRIDGE_RESUME_TIMEOUT_MS}.
   */
  resumeTimeoutMs?: number;
  /**
   * The stream resumed on fresh keys: commands may run (the IDE client's state
   * becomes `ready`). Called before the commands' own `onResumed`.
   */
  onResumed?: () => void;
  /** A stream frame that is not a command's (`term.*`), opened, once and in order. */
  onStreamFrame?: (frame: Frame) => void;
  /**
   * The stream starts afresh: the bridge has no record of it, or the resume
   * timeout passed. What others pushed into it and had not been acknowledged
   * is gone; they may push again (it goes out once the stream resumes).
   */
  onStreamReset?: () => void;
}

/**
 * One IDE client's commands, on its stream (a random id, kept across
 * sockets and bridge reconnects until the bridge has lost it).
 *
 * @example
 * ```ts ignore
 * import { systemClock } from "./clock.ts";
 * import { RemoteCommands } from "./remote_commands.ts";
 * const commands = new RemoteCommands({ timers: systemClock });
 * const cmd = commands.run("echo hi"); // queued until the stream resumes
 * commands.requestResume(send); // send: a SealedSender on the agreed keys
 * // ... the bridge answers: commands.resume(plaintext, send); cmd.start goes out.
 * ```
 */
export class RemoteCommands {
  #opts: RemoteCommandsOptions;
  #commands = new Map<string, RemoteCommand>();
  #nextId = 1;
  #streamId = _newStreamId();
  #sender = new StreamSender();
  #receiver = new StreamReceiver();
  #suspended = false;
  #resumeTimeoutMs: number;
  #cancelResumeTimer?: () => void;

  /** @param options Timers, the resume timeout and the resumed callback. */
  constructor(options: RemoteCommandsOptions) {
    this.#opts = options;
    this.#resumeTimeoutMs = options.resumeTimeoutMs ?? BRIDGE_RESUME_TIMEOUT_MS;
  }

  /** Commands started and not yet ended. */
  get size(): number {
    return this.#commands.size;
  }

  /**
   * Starts `command`: numbers a `cmd.start` into the stream (sent now, or
   * once the stream resumes).
   *
   * @param command The command line.
   * @param options cwd, timeout and callbacks.
   * @param refusal Why it cannot run now: the command fails at once with it.
   * @returns The command.
   */
  run(command: string, options: RunOptions = {}, refusal?: IdeClientError): RemoteCommand {
    const id = `c${this.#nextId++}`;
    const cmd = new RemoteCommand(id, options, (frame) => this.push(frame));
    if (refusal) {
      cmd.reject(refusal);
      return cmd;
    }
    this.#commands.set(id, cmd);
    const body: CmdStartBody = { command };
    if (options.cwd !== undefined) body.cwd = options.cwd;
    if (options.timeoutMs !== undefined) body.timeoutMs = options.timeoutMs;
    void this.push({ t: FrameType.CmdStart, id, body });
    return cmd;
  }

  /**
   * Keys agreed and the bridge trusts this IDE: asks the bridge to pick up
   * the stream where it stopped (`stream.resume` with what this side received).
   *
   * @param send Sends on the agreed keys.
   */
  requestResume(send: SealedSender): void {
    const body: StreamResumeBody = { stream: this.#streamId, received: this.#receiver.received };
    send({ t: FrameType.StreamResume, body }).catch(() => {});
  }

  /**
   * The bridge's answer to `stream.resume`: resend what it missed (or, when it
   * no longer knows the stream, fail what ran there and start afresh); then
   * commands may run.
   *
   * @param plaintext The opened `stream.resume` body.
   * @param send Sends on the keys it arrived with (the stream's transport from now on).
   * @throws {E2eError} For a bad body or another client's stream.
   */
  resume(plaintext: Uint8Array, send: SealedSender): void {
    const body = decodeStreamResume(plaintext, e2eFail);
    if (body.stream !== this.#streamId) throw new E2eError("Cannot accept stream.resume: not this client's stream");
    if (!body.known && (this.#sender.nextSeq > 1 || this.#receiver.received > 0)) {
      // The bridge has no record of this stream: it restarted (or kept it past
      // its linger time). What ran there is gone; say so, and start afresh.
      this.#failAll("bridge-lost", "the bridge restarted; the command's outcome is unknown");
      this.#sender.reset();
      this.#receiver.reset();
      this.#opts.onStreamReset?.();
    }
    this.#receiver.setAckSender((received) => {
      const ack: StreamAckBody = { received };
      send({ t: FrameType.StreamAck, body: ack }).catch(() => {});
    });
    this.#sender.attach(send, body.known ? body.received : 0);
    this.#cancelResumeTimer?.();
    this.#cancelResumeTimer = undefined;
    this.#opts.onResumed?.();
    if (this.#suspended) {
      this.#suspended = false;
      for (const cmd of this.#commands.values()) cmd.options.onResumed?.();
    }
  }

  /**
   * An opened frame of the stream from the bridge: `stream.ack`, or a
   * `cmd.*` frame for the command it names (resent duplicates are dropped;
   * frames for unknown ids are skipped).
   *
   * @param frame The frame, its body opened.
   * @throws {E2eError} For a gap in the numbering, a bad body or an acknowledgement of frames never sent.
   */
  receive(frame: Frame): void {
    if (frame.t === FrameType.StreamAck) return this.#sender.ack(decodeStreamAck(frame.body, e2eFail).received);
    if (!this.#receiver.accept(frame)) return; // A resent duplicate.
    if (TERMINAL_TYPES.has(frame.t)) return this.#opts.onStreamFrame?.(frame);
    const cmd = frame.id === undefined ? undefined : this.#commands.get(frame.id);
    if (!cmd) return;
    switch (frame.t) {
      // The body is the freshly opened plaintext, nobody else's: handed over without a copy.
      case FrameType.CmdStdout:
        cmd.options.onStdout?.(frame.body);
        break;
      case FrameType.CmdStderr:
        cmd.options.onStderr?.(frame.body);
        break;
      case FrameType.CmdExit:
        this.#commands.delete(cmd.id);
        cmd.resolve(decodeCmdExit(frame.body, e2eFail));
        break;
      case FrameType.CmdError: {
        this.#commands.delete(cmd.id);
        const body = decodeCmdError(frame.body, e2eFail);
        cmd.reject(new IdeClientError(body.message, { status: 0, reason: body.reason }));
        break;
      }
    }
  }

  /**
   * No bridge reachable (or no keys yet): frames wait in the stream, and
   * pending commands wait for the resume timeout at most.
   */
  suspend(): void {
    this.#sender.detach();
    this.#receiver.setAckSender(undefined);
    if (this.#commands.size === 0) return;
    if (!this.#suspended) {
      this.#suspended = true;
      for (const cmd of this.#commands.values()) cmd.options.onSuspended?.();
    }
    this.#cancelResumeTimer ??= this.#opts.timers.after(this.#resumeTimeoutMs, () => this.#lost());
  }

  /** Fails every pending command with reason `closed` (the IDE client was closed). */
  close(): void {
    this.#cancelResumeTimer?.();
    this.#cancelResumeTimer = undefined;
    this.#failAll("closed", "the IDE client was closed");
  }

  /** The resume timeout passed: what ran is lost, and so is the stream. */
  #lost(): void {
    this.#cancelResumeTimer = undefined;
    this.#suspended = false;
    this.#failAll(
      "bridge-lost",
      `the bridge was unreachable for ${Math.round(this.#resumeTimeoutMs / 1000)} s; the command's outcome is unknown`,
    );
    this.#sender.reset();
    this.#receiver.reset();
    // A bridge that still has the stream must not run anything more of it.
    this.#streamId = _newStreamId();
    this.#opts.onStreamReset?.();
  }

  /**
   * Numbers a frame into the stream: sent now, or once the stream resumes,
   * and resent after a reconnect until acknowledged.
   *
   * @param frame A stream type (`cmd.*`, `term.*`), its id and body.
   * @returns Resolves once the stream's window has room.
   */
  push(frame: FrameInit): Promise<void> {
    return this.#sender.push({ t: frame.t, id: frame.id, body: bodyBytes(frame.body) });
  }

  #failAll(reason: string, message: string): void {
    for (const cmd of this.#commands.values()) cmd.reject(new IdeClientError(message, { status: 0, reason }));
    this.#commands.clear();
  }
}

function _newStreamId(): string {
  return toBase64Url(crypto.getRandomValues(new Uint8Array(16)));
}
