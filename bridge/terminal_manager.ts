/**
 * The bridge's terminals: the user's login shell (`$SHELL -l`, else
 * `/bin/sh -l`) in a pseudo-terminal, in the bridge's root directory, with
 * `TERM=xterm-256color`, at the size the IDE asks for. A terminal belongs to
 * no stream: any stream (any IDE client of the paired IDE identity) may attach
 * to it by its id, and it keeps running while none is attached, for the linger
 * time ({@linkcode TERMINAL_LINGER_MS}) after the last one detached.
 *
 * Per terminal:
 *
 * - **Output** is read from the PTY and goes, as it comes, to the terminal's
 *   screen copy (bridge/terminal_screen.ts) and, as `term.output`, to every
 *   attached stream (bridge/stream_table.ts: numbered, kept until
 *   acknowledged, resent after reconnects).
 * - **Attach** (`term.open`, `term.attach`): the stream gets a `term.snapshot`
 *   of the screen exactly as of the output it has not been sent, then live
 *   output. While the snapshot is taken, output for that stream waits in order.
 *   An attach with another size resizes the terminal first (the last size asked
 *   for wins, as in tmux's `latest`).
 * - **Backpressure**: the next read waits until every attached stream has room
 *   in its window, so a terminal whose IDE is behind or away (its stream kept,
 *   not yet forgotten) blocks its program, and nothing is lost. With several
 *   streams attached, one that stays a window behind for
 *   {@linkcode TERMINAL_STALL_MS} while another is ready is left behind: it
 *   gets no more output until it has room again, and then a fresh snapshot
 *   instead of what it missed. So one stalled page never freezes the others for
 *   long, and a page alone keeps byte-exact output.
 * - **Exit**: `term.exit` to every attached stream once the shell ended and its
 *   output is read (at most {@linkcode TERMINAL_DRAIN_MS} after). An exited
 *   terminal is kept while a stream is attached (a reloaded page can still show
 *   its last screen), and forgotten when the last one detaches.
 * - **Close** (`term.close`, linger over, bridge stopping): hang up (SIGHUP to
 *   the session, the master closes), SIGKILL after {@linkcode KILL_GRACE_MS}.
 *
 * @module
 */
import { type Clock, systemClock, type Timers } from "../shared/clock.ts";
import { decodeTermKeys, decodeTermSignal, decodeTermSize } from "../shared/frame_bodies.ts";
import { concatBytes } from "../shared/frame_codec.ts";
import {
  type Frame,
  FrameType,
  IDE_SENDS,
  MAX_TERMINALS,
  OUTPUT_CHUNK_BYTES,
  type TermErrorBody,
  type TermExitBody,
  TERMINAL_LINGER_MS,
  TERMINAL_TYPES,
  type TerminalErrorReason,
  type TerminalInfo,
  type TerminalSupport,
  type TermListBody,
  type TermTitleBody,
} from "../shared/protocol.ts";
import { type FrameSender, KILL_GRACE_MS } from "./command_manager.ts";
import type { PtyProcess, PtySpawner } from "./pty_types.ts";
import { TerminalScreen } from "./terminal_screen.ts";

/**
 * With several streams attached, one that has been a window behind for this
 * long while another could take more is left behind (and repainted later).
 */
export const TERMINAL_STALL_MS = 5_000;
/** After the shell exits, output still in flight is read for this long before `term.exit`. */
export const TERMINAL_DRAIN_MS = 250;
/**
 * A read this large suggests more is waiting: what is already there joins it
 * (up to {@linkcode OUTPUT_CHUNK_BYTES}), so bulk output takes fewer frames.
 */
// A Linux PTY master hands out at most 4095 bytes per read (its line buffer), so that is a "full" read.
const FULL_READ_BYTES = 4095;
/** The `term.*` types an IDE sends. */
const IDE_REQUESTS: ReadonlySet<string> = new Set([...TERMINAL_TYPES].filter((t) => IDE_SENDS.has(t)));
/** Environment variables a terminal gets when the bridge may not read its whole environment. */
const FALLBACK_ENV = ["HOME", "USER", "LOGNAME", "SHELL", "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];

/** Why terminals are off, when they are. */
export interface TerminalsUnavailable {
  /** `disabled` (`--no-terminal`) or `unsupported-os`. */
  reason: Exclude<TerminalSupport, "available">;
  /** What to tell the IDE. */
  message: string;
}

/** Options for {@linkcode TerminalManager}. */
export interface TerminalManagerOptions {
  /** Starts processes in pseudo-terminals; undefined: terminals are off (see `unavailable`). */
  spawner?: PtySpawner;
  /** Why terminals are off (default: unsupported on this OS). */
  unavailable?: TerminalsUnavailable;
  /** Absolute directory terminals start in. */
  root: string;
  /** The login shell (default: `$SHELL`, else `/bin/sh`). */
  shell?: string;
  /** The environment terminals inherit (default: the bridge's). `TERM` is set on top. */
  env?: Record<string, string>;
  /** Where frames for the IDEs go; resolves when the stream has room. */
  send: FrameSender;
  /**
   * Whether stream `handle`'s IDE socket is there now (default: always). A
   * page that went away (a reload, a closed laptop) does not hold the output
   * of a terminal back from the pages still there: its stream falls behind at
   * once and gets a repaint when it is back and has caught up.
   */
  connected?: (handle: number) => boolean;
  /** How long a terminal no stream is attached to keeps running (default {@linkcode TERMINAL_LINGER_MS}). */
  lingerMs?: number;
  /** Most terminals running at once (default {@linkcode MAX_TERMINALS}). */
  maxTerminals?: number;
  /** Lines of scrollback per terminal (default `TERMINAL_SCROLLBACK_LINES`). */
  scrollback?: number;
  /** Time (`created`) and timers (linger, stall, drain, kill grace); default the real ones. */
  clock?: Clock & Timers;
  /** Told each terminal's process group, to end it if the bridge dies (bridge/orphan_guard.ts). */
  guard?: { add(pgid: number): void; remove(pgid: number): void };
  /** Events for --verbose output (ids and states, never content). */
  onEvent?: (message: string) => void;
}

/** One stream's attachment to a terminal. */
interface Attachment {
  handle: number;
  /** `snapshot`: being painted, output waits in `queued`; `live`; `behind`: gets nothing until it has room. */
  state: "snapshot" | "live" | "behind";
  queued: Uint8Array[];
  /** Resolves once the snapshot went out: output read meanwhile waits for it, as for room. */
  painted: Promise<void>;
  exitSent: boolean;
  /** Resolves when it detaches: an output read waiting for its room goes on. */
  released: PromiseWithResolvers<void>;
}

interface Term {
  id: string;
  pty: PtyProcess;
  screen: TerminalScreen;
  created: number;
  attached: Map<number, Attachment>;
  input: Promise<void>;
  exit?: TermExitBody;
  /** Hung up on purpose (close, linger, stop): forgotten as soon as it exits. */
  closing: boolean;
  cancelLinger?: () => void;
  cancelKill?: () => void;
  /** Resolves once the exit went out and the terminal was dealt with. */
  done: Promise<void>;
  /** Resolved once the shell has exited and its output is late: reads stop waiting for room. */
  unblocked: PromiseWithResolvers<void>;
  /**
   * With several streams attached, the one whose answers to the program's
   * terminal queries go through ({@linkcode isTerminalReport}): the last
   * one to type, else the first one to answer.
   */
  answerer?: number;
}

/**
 * Whether `data` is nothing but answers a terminal sends by itself to a
 * program's queries: device attributes (`ESC [ ? … c`, `ESC [ > … c`), the
 * cursor position (`ESC [ row ; col R`), device status (`ESC [ 0 n`), mode
 * reports (`ESC [ ? … $ y`), colour reports (`ESC ] 10/11/12/4 ; rgb:…`),
 * the terminal's version (`ESC P > | … ESC \`) and window reports
 * (`ESC [ … t`). Every attached page's terminal answers the same query; the
 * program must get one answer, or the others arrive as typed text (in `vim`,
 * as commands). A modified F3 (`ESC [ 1 ; 5 R`) looks like a cursor report,
 * so a page that has not typed yet may lose it while another page is attached.
 */
export function isTerminalReport(data: Uint8Array): boolean {
  if (data.byteLength < 3 || data[0] !== 0x1b) return false;
  return _REPORTS.test(new TextDecoder().decode(data));
}

const _REPORTS =
  // The escape character is the point: these are escape sequences.
  // deno-lint-ignore no-control-regex
  /^(?:\x1b\[[?>]?[\d;]*c|\x1b\[\d+;\d+R|\x1b\[[03]n|\x1b\[\??[\d;]*\$y|\x1b\](?:1[0-2]|4;\d+);rgb:[\da-fA-F/]+(?:\x07|\x1b\\)|\x1bP[>!]\|[^\x1b]*\x1b\\|\x1b\[\d+(?:;\d+)*t)+$/;

/** Runs the IDE's terminals: one switch for every `term.*` frame. */
export class TerminalManager {
  #opts: TerminalManagerOptions;
  #clock: Clock & Timers;
  #terms = new Map<string, Term>();
  #shell: string;

  /** @param options Spawner, root, sender, limits, clock and guard. */
  constructor(options: TerminalManagerOptions) {
    this.#opts = options;
    this.#clock = options.clock ?? systemClock;
    this.#shell = options.shell ?? (_env("SHELL") || "/bin/sh");
  }

  /** Whether terminals run here, as `e2e.info` tells the IDE. */
  get support(): TerminalSupport {
    return this.#opts.spawner ? "available" : (this.#opts.unavailable?.reason ?? "unsupported-os");
  }

  /** The shell terminals run. */
  get shell(): string {
    return this.#shell;
  }

  /** Terminals running now. */
  get running(): number {
    let n = 0;
    for (const t of this.#terms.values()) if (!t.exit) n++;
    return n;
  }

  /** Terminals kept (running, or exited and still attached). */
  get size(): number {
    return this.#terms.size;
  }

  /**
   * Handles one authenticated `term.*` frame (plaintext body) from the IDE of
   * stream `handle`: one switch; other types are ignored.
   */
  handle(handle: number, frame: Frame): void {
    const id = frame.id;
    if (id === undefined) return; // Nothing to answer to.
    let keys: Uint8Array | undefined;
    if (frame.t === FrameType.TermKeys) {
      try {
        keys = decodeTermKeys(frame.body, (m) => new Error(m));
      } catch (error) {
        return this.#error(handle, id, "bad-request", (error as Error).message);
      }
      // Chaff: sent only so that typing has no rhythm. Numbered and acknowledged like any stream frame, and nothing else.
      if (keys.byteLength === 0) return;
    }
    if (!this.#opts.spawner) {
      // Terminals are off: every request but a detach (which needs no answer) is told why.
      if (FrameType.TermDetach !== frame.t && IDE_REQUESTS.has(frame.t)) this.#unavailable(handle, id);
      return;
    }
    const t = this.#terms.get(id);
    switch (frame.t) {
      case FrameType.TermOpen:
        return this.#open(handle, id, frame);
      case FrameType.TermAttach:
        return this.#attachFrame(handle, id, t, frame);
      case FrameType.TermInput:
      case FrameType.TermKeys: {
        if (!t) return this.#unknown(handle, id);
        if (t.exit) return;
        // Paced keystrokes (term.keys) are input like any other, once unpadded.
        const data = (keys ?? frame.body).slice();
        if (!this.#mayAnswer(t, handle, data)) return;
        // In order, each write after the last: a large paste waits for the program to read.
        t.input = t.input.then(() => t.pty.write(data)).catch(() => {});
        return;
      }
      case FrameType.TermResize: {
        if (!t) return this.#unknown(handle, id);
        let size;
        try {
          size = decodeTermSize(frame.body, frame.t, (m) => new Error(m));
        } catch (error) {
          return this.#error(handle, id, "bad-request", (error as Error).message);
        }
        if (!t.exit) this.#resize(t, size.cols, size.rows);
        return;
      }
      case FrameType.TermDetach:
        if (t) this.#detach(t, handle);
        return;
      case FrameType.TermClose:
        if (!t) return this.#unknown(handle, id);
        if (t.exit) return this.#forget(t);
        this.#opts.onEvent?.(`terminal ${id}: hung up by the IDE`);
        return this.#hangUp(t);
      case FrameType.TermList:
        return this.#list(handle, id);
      case FrameType.TermSignal: {
        if (!t) return this.#unknown(handle, id);
        if (t.exit) return;
        let signal;
        try {
          ({ signal } = decodeTermSignal(frame.body, (m) => new Error(m)));
        } catch (error) {
          // term.error would end the IDE's view of a terminal that still runs: ignored instead.
          this.#opts.onEvent?.(`terminal ${id}: ignored a bad signal frame (${(error as Error).message})`);
          return;
        }
        const group = t.pty.signalForeground?.(signal);
        this.#opts.onEvent?.(
          group === undefined
            ? `terminal ${id}: ${signal} not sent (only its shell is in the foreground)`
            : `terminal ${id}: ${signal} to its foreground process group ${group}`,
        );
        return;
      }
      default:
        // The bridge's own types, and anything else, are not requests.
        return;
    }
  }

  /**
   * Stream `handle` is gone for good (closed by its IDE, or forgotten after
   * its linger time): it detaches from every terminal, which keep running.
   */
  closeStream(handle: number): void {
    for (const t of [...this.#terms.values()]) if (t.attached.has(handle)) this.#detach(t, handle);
  }

  /**
   * Ends every terminal (the bridge is stopping): hangs each up, SIGKILL
   * after {@linkcode KILL_GRACE_MS}, and waits until each has exited and its
   * `term.exit` went to its streams.
   */
  async stopAll(): Promise<void> {
    const all = [...this.#terms.values()];
    for (const t of all) {
      if (t.exit) this.#forget(t);
      else this.#hangUp(t);
    }
    await Promise.all(all.map((t) => t.done));
  }

  #open(handle: number, id: string, frame: Frame): void {
    if (!this.#opts.spawner) return;
    if (this.#terms.has(id)) return this.#error(handle, id, "bad-request", `terminal ${id} exists already`);
    let size;
    try {
      size = decodeTermSize(frame.body, frame.t, (m) => new Error(m));
    } catch (error) {
      return this.#error(handle, id, "bad-request", (error as Error).message);
    }
    const max = this.#opts.maxTerminals ?? MAX_TERMINALS;
    if (this.running >= max) {
      return this.#error(handle, id, "limit", `${this.running} terminals are running already (the limit is ${max})`);
    }
    let pty: PtyProcess;
    try {
      pty = this.#opts.spawner.spawn({
        file: this.#shell,
        args: ["-l"],
        cwd: this.#opts.root,
        env: { ...(this.#opts.env ?? _environment(this.#opts.spawner)), TERM: "xterm-256color" },
        cols: size.cols,
        rows: size.rows,
      });
    } catch (error) {
      return this.#error(handle, id, "spawn-failed", `cannot start ${this.#shell}: ${(error as Error).message}`);
    }
    this.#opts.guard?.add(pty.pid);
    const t: Term = {
      id,
      pty,
      screen: new TerminalScreen({
        cols: size.cols,
        rows: size.rows,
        scrollback: this.#opts.scrollback,
        onTitle: (title) => this.#title(t, title),
      }),
      created: this.#clock.now(),
      attached: new Map(),
      input: Promise.resolve(),
      closing: false,
      done: Promise.resolve(),
      unblocked: Promise.withResolvers<void>(),
    };
    this.#terms.set(id, t);
    this.#opts.onEvent?.(`terminal ${id} started (pid ${pty.pid}, ${size.cols}x${size.rows})`);
    this.#attach(t, handle);
    t.done = this.#run(t).catch((error) => this.#opts.onEvent?.(`terminal ${id} failed: ${error}`));
  }

  #attachFrame(handle: number, id: string, t: Term | undefined, frame: Frame): void {
    if (!t) return this.#unknown(handle, id);
    let size;
    try {
      size = decodeTermSize(frame.body, frame.t, (m) => new Error(m));
    } catch (error) {
      return this.#error(handle, id, "bad-request", (error as Error).message);
    }
    if (!t.exit) this.#resize(t, size.cols, size.rows);
    this.#attach(t, handle);
  }

  /** Attaches stream `handle` (again): a snapshot of everything it was not sent, then live output. */
  #attach(t: Term, handle: number): void {
    const old = t.attached.get(handle);
    if (old) old.released.resolve();
    const a: Attachment = {
      handle,
      state: "snapshot",
      queued: [],
      painted: Promise.resolve(),
      exitSent: false,
      released: Promise.withResolvers<void>(),
    };
    t.attached.set(handle, a);
    t.cancelLinger?.();
    t.cancelLinger = undefined;
    this.#paint(t, a);
  }

  /**
   * Sends `a` a snapshot of the screen as of now: output read after this
   * point waits in `a.queued` and follows it, in order. The screen applies
   * writes in order, so its snapshot holds exactly the output before.
   */
  #paint(t: Term, a: Attachment): void {
    a.state = "snapshot";
    a.queued = [];
    a.painted = t.screen.snapshot().then((body) => {
      if (t.attached.get(a.handle) !== a) return;
      this.#opts.send({ t: FrameType.TermSnapshot, handle: a.handle, id: t.id, body }).catch(() => {});
      for (const chunk of a.queued) this.#output(t, a, chunk);
      a.queued = [];
      a.state = "live";
      if (t.exit) this.#sendExit(t, a);
    }).catch(() => {
      // Disposed meanwhile: the terminal is being forgotten.
    });
  }

  /**
   * Whether input from stream `handle` goes to the program. Answers to
   * terminal queries go through from one attached stream only (every page's
   * terminal answers); anything else always does, and makes its stream the
   * one that answers.
   */
  #mayAnswer(t: Term, handle: number, data: Uint8Array): boolean {
    if (!isTerminalReport(data)) {
      t.answerer = handle;
      return true;
    }
    if (t.attached.size < 2 || t.answerer === undefined || !t.attached.has(t.answerer)) {
      t.answerer = handle;
      return true;
    }
    return t.answerer === handle;
  }

  #detach(t: Term, handle: number): void {
    const a = t.attached.get(handle);
    if (!a) return;
    t.attached.delete(handle);
    a.released.resolve();
    if (t.attached.size > 0) return;
    if (t.exit) return this.#forget(t);
    if (t.closing) return;
    const linger = this.#opts.lingerMs ?? TERMINAL_LINGER_MS;
    t.cancelLinger = this.#clock.after(linger, () => {
      t.cancelLinger = undefined;
      this.#opts.onEvent?.(`terminal ${t.id}: nobody attached for ${Math.round(linger / 1000)} s; hanging up`);
      this.#hangUp(t);
    });
  }

  #resize(t: Term, cols: number, rows: number): void {
    if (t.screen.cols === cols && t.screen.rows === rows) return;
    try {
      t.pty.resize(cols, rows);
    } catch {
      // The terminal is closing.
    }
    t.screen.resize(cols, rows);
  }

  /** Reads output until the terminal closes, then reports the exit. */
  async #run(t: Term): Promise<void> {
    const reader = t.pty.output.getReader();
    const pumped = this.#pump(t, reader);
    const exit = await t.pty.exited;
    this.#opts.guard?.remove(t.pty.pid);
    // A background job may hold the terminal open: read what is in flight, then stop.
    const grace = Promise.withResolvers<"late">();
    const cancelGrace = this.#clock.after(TERMINAL_DRAIN_MS, () => grace.resolve("late"));
    if ((await Promise.race([pumped, grace.promise])) === "late") {
      // The program is gone: nothing to hold back any more. What was read goes
      // into the streams past their windows, and the reads stop.
      t.unblocked.resolve();
      reader.cancel().catch(() => {});
      await pumped;
    }
    cancelGrace();
    t.cancelKill?.();
    t.cancelLinger?.();
    t.exit = { code: exit.code, signal: exit.signal };
    this.#opts.onEvent?.(`terminal ${t.id} exited (${exit.signal ?? exit.code})`);
    for (const a of t.attached.values()) if (a.state === "live") this.#sendExit(t, a);
    if (t.closing || t.attached.size === 0) return this.#forget(t);
    // Kept for its attached pages; exited terminals beyond the limit go, oldest first.
    const exited = [...this.#terms.values()].filter((x) => x.exit);
    const max = this.#opts.maxTerminals ?? MAX_TERMINALS;
    for (const old of exited.slice(0, Math.max(0, exited.length - max))) this.#forget(old);
  }

  async #pump(t: Term, reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
    try {
      let next = reader.read();
      for (;;) {
        const first = await next;
        if (first.done) break;
        next = reader.read();
        let data = first.value;
        if (data.byteLength >= FULL_READ_BYTES) {
          // Output is coming fast: join what is already waiting into this frame.
          const parts = [data];
          let size = data.byteLength;
          while (size < OUTPUT_CHUNK_BYTES) {
            const more = await Promise.race([next, _nextTurn()]);
            if (more === undefined) break;
            if (more.done) {
              next = Promise.resolve(more);
              break;
            }
            parts.push(more.value);
            size += more.value.byteLength;
            next = reader.read();
          }
          if (parts.length > 1) data = concatBytes(parts);
        }
        for (let at = 0; at < data.byteLength; at += OUTPUT_CHUNK_BYTES) {
          await this.#deliver(t, data.subarray(at, at + OUTPUT_CHUNK_BYTES));
        }
      }
    } catch {
      // Cancelled, or the terminal went away: the exit report still goes out.
    }
  }

  /**
   * One chunk of output to the screen and every attached stream (in the same
   * turn, so a snapshot is never ahead or behind the streams), then waits
   * until their windows have room.
   */
  async #deliver(t: Term, chunk: Uint8Array): Promise<void> {
    t.screen.write(chunk);
    const waits: { a: Attachment; room: Promise<void> }[] = [];
    for (const a of t.attached.values()) {
      if (a.state === "snapshot") {
        a.queued.push(chunk);
        waits.push({ a, room: a.painted });
      } else if (a.state === "live") waits.push({ a, room: this.#output(t, a, chunk) });
    }
    await this.#room(t, waits);
  }

  #output(t: Term, a: Attachment, chunk: Uint8Array): Promise<void> {
    return this.#opts.send({ t: FrameType.TermOutput, handle: a.handle, id: t.id, body: chunk });
  }

  /**
   * Waits until every stream just sent to has room (or detached). With
   * several, after {@linkcode TERMINAL_STALL_MS} the ones still full are left
   * behind as soon as one has room.
   */
  async #room(t: Term, waits: { a: Attachment; room: Promise<void> }[]): Promise<void> {
    if (waits.length === 0) return;
    const full = new Set(waits);
    const settled = waits.map((w) =>
      Promise.race([w.room, w.a.released.promise, t.unblocked.promise]).then(() => void full.delete(w))
    );
    if (waits.length === 1) return void await Promise.all(settled);
    // Streams whose page is gone wait for nobody while another page is there.
    const present = this.#opts.connected ? settled.filter((_, i) => this.#opts.connected!(waits[i].a.handle)) : settled;
    const waitFor = present.length > 0 ? present : settled;
    const stall = Promise.withResolvers<"stalled">();
    const cancel = this.#clock.after(TERMINAL_STALL_MS, () => stall.resolve("stalled"));
    try {
      if ((await Promise.race([Promise.all(waitFor), stall.promise])) === "stalled") await Promise.race(waitFor);
      for (const w of full) this.#fallBehind(t, w.a, w.room);
    } finally {
      cancel();
    }
  }

  /** `a` gets no output until its window has room; then a fresh snapshot instead of what it missed. */
  #fallBehind(t: Term, a: Attachment, room: Promise<void>): void {
    if (t.attached.get(a.handle) !== a || a.state !== "live") return;
    a.state = "behind";
    this.#opts.onEvent?.(`terminal ${t.id}: stream ${a.handle} is behind; it gets a repaint when it catches up`);
    room.then(() => {
      if (t.attached.get(a.handle) === a && a.state === "behind") this.#paint(t, a);
    });
  }

  #title(t: Term, title: string): void {
    const body: TermTitleBody = { title };
    for (const a of t.attached.values()) {
      // A stream being painted gets the title in its snapshot.
      if (a.state === "live") this.#opts.send({ t: FrameType.TermTitle, handle: a.handle, id: t.id, body });
    }
  }

  #sendExit(t: Term, a: Attachment): void {
    if (a.exitSent || !t.exit) return;
    a.exitSent = true;
    this.#opts.send({ t: FrameType.TermExit, handle: a.handle, id: t.id, body: t.exit }).catch(() => {});
  }

  /** SIGHUP to the session (the master closes); SIGKILL if it is still there after the grace. */
  #hangUp(t: Term): void {
    t.closing = true;
    t.cancelLinger?.();
    t.cancelLinger = undefined;
    if (t.cancelKill) return;
    try {
      t.pty.close();
    } catch {
      // Already closed.
    }
    t.cancelKill = this.#clock.after(KILL_GRACE_MS, () => {
      try {
        t.pty.kill("SIGKILL");
      } catch {
        // Gone.
      }
    });
  }

  /** Forgets an exited terminal: its streams that were not told of the exit are told now. */
  #forget(t: Term): void {
    if (this.#terms.get(t.id) !== t) return;
    this.#terms.delete(t.id);
    for (const a of t.attached.values()) {
      this.#sendExit(t, a);
      a.released.resolve();
    }
    t.attached.clear();
    t.screen.dispose();
  }

  #list(handle: number, id: string): void {
    const terminals: TerminalInfo[] = [...this.#terms.values()].map((t) => ({
      id: t.id,
      title: t.screen.title,
      alive: !t.exit,
      cols: t.screen.cols,
      rows: t.screen.rows,
      created: t.created,
      attached: t.attached.size,
    }));
    const body: TermListBody = { terminals };
    this.#opts.send({ t: FrameType.TermList, handle, id, body }).catch(() => {});
  }

  #unavailable(handle: number, id: string): void {
    const reason = this.support === "available" ? "unsupported-os" : this.support;
    const message = this.#opts.unavailable?.message ?? "terminals are not supported on this bridge";
    this.#error(handle, id, reason, message);
  }

  #unknown(handle: number, id: string): void {
    this.#error(handle, id, "unknown-terminal", `no terminal ${id} on this bridge (it ended, or the bridge restarted)`);
  }

  #error(handle: number, id: string, reason: TerminalErrorReason, message: string): void {
    const body: TermErrorBody = { reason, message };
    this.#opts.send({ t: FrameType.TermError, handle, id, body }).catch(() => {});
  }
}

/**
 * The bridge's environment for a terminal: all of it (from Deno, or from the
 * spawner, which reads the process's own table), else the usual variables.
 */
function _environment(spawner: PtySpawner): Record<string, string> {
  try {
    return Deno.env.toObject();
  } catch {
    try {
      const inherited = spawner.environment?.();
      if (inherited && Object.keys(inherited).length > 0) return inherited;
    } catch {
      // Fall back to the variables the bridge may read.
    }
    const env: Record<string, string> = {};
    for (const name of FALLBACK_ENV) {
      const value = _env(name);
      if (value !== undefined) env[name] = value;
    }
    env.PATH ??= "/usr/local/bin:/usr/bin:/bin";
    return env;
  }
}

function _env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** Resolves (with undefined) after the event loop has had one more turn: completed reads are in by then. */
function _nextTurn(): Promise<undefined> {
  return new Promise((resolve) => setTimeout(() => resolve(undefined), 0));
}
