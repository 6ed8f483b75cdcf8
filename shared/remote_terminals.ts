/**
 * The IDE's terminals: a `RemoteTerminal` per terminal this client opened or
 * attached to on the bridge, fed by the `term.*` frames of the client's
 * stream (`term.snapshot`, `term.output`, `term.title`, `term.exit`,
 * `term.error`), and the `term.*` requests it numbers into that stream
 * (`term.open`, `term.attach`, `term.input`, `term.resize`, `term.detach`,
 * `term.close`, `term.list`). It is the IDE's counterpart of
 * bridge/terminal_manager.ts; the stream itself (numbering, acknowledgements,
 * resending, suspend and resume) is shared/remote_commands.ts's, and the
 * `IdeClient` (shared/ide_client.ts) wires the two.
 *
 * A terminal outlives the client's socket: after a reconnect the stream
 * resumes and its output goes on where it stopped. When the stream has to
 * start afresh (the bridge forgot it, or restarted), every terminal is
 * attached again and repainted from a new `term.snapshot`; one the bridge
 * no longer has fails with `unknown-terminal`. Another client (a reloaded
 * page) attaches to a terminal by its id.
 *
 * Every keystroke and paste goes through one method,
 * {@linkcode RemoteTerminals.input}, which paces typing so that the relay
 * cannot read its rhythm (OpenSSH's ObscureKeystrokeTiming): while the user
 * types, a terminal's input leaves as padded `term.keys` frames at a fixed
 * interval, with chaff when no key was typed (shared/keystroke_pacer.ts). It
 * does so with a bridge that takes `term.keys` (its `e2e.info` says so), unless
 * turned off; otherwise, and for pastes, input goes out at once as `term.input`.
 *
 * @module
 */
import { type Clock, systemClock, type Timers } from "./clock.ts";
import { toBase64Url } from "./e2e_crypto.ts";
import { E2eError } from "./e2e_session.ts";
import {
  decodeTermError,
  decodeTermExit,
  decodeTermList,
  decodeTermSnapshot,
  decodeTermTitle,
  encodeTermKeys,
} from "./frame_bodies.ts";
import type { FrameInit } from "./frame_codec.ts";
import { IdeClientError } from "./ide_client_error.ts";
import { KeystrokePacer, type KeystrokeStats } from "./keystroke_pacer.ts";
import {
  type CommandSignal,
  type Frame,
  FrameType,
  MAX_TERMINAL_COLS,
  MAX_TERMINAL_ROWS,
  type TermExitBody,
  type TerminalInfo,
  type TermSizeBody,
  type TermSnapshotBody,
} from "./protocol.ts";

/** `term.input` bodies are at most this large: a bigger paste goes in several frames. */
export const TERMINAL_INPUT_CHUNK_BYTES = 64 * 1024;

/** How a terminal's shell ended. */
export type TerminalResult = TermExitBody;

/** What a terminal shows, to repaint from: reset the terminal to `cols` x `rows` and write `data`. */
export type TerminalSnapshot = TermSnapshotBody;

/** A terminal's size in character cells. */
export type TerminalSize = TermSizeBody;

/**
 * Where a {@linkcode RemoteTerminal} stands: `attaching` (asked, no snapshot
 * yet), `attached`, `exited` (its shell ended; the last screen stays on the
 * bridge until it is closed or detached), `closing`, `detached`, `failed`
 * (a `term.error`, or the client was closed).
 */
export type TerminalState = "attaching" | "attached" | "exited" | "closing" | "detached" | "failed";

/** Numbers a frame into the client's stream; resolves when its window has room. */
export type StreamPush = (frame: FrameInit) => Promise<void>;

type Listeners<T> = Set<(value: T) => void>;

/** A terminal on the bridge, as this client sees it. */
export class RemoteTerminal {
  /** The terminal id (chosen by the client that opened it). */
  readonly id: string;
  /** Resolves with the first snapshot once attached; rejects with {@linkcode IdeClientError} if that fails. */
  readonly ready: Promise<TerminalSnapshot>;
  /**
   * Resolves when the shell ends; rejects with {@linkcode IdeClientError}
   * on a `term.error` (reason as the bridge says), when detached (`detached`)
   * or when the client is closed (`closed`).
   */
  readonly exited: Promise<TerminalResult>;
  #owner: RemoteTerminals;
  #state: TerminalState = "attaching";
  #cols: number;
  #rows: number;
  #title = "";
  #ready = Promise.withResolvers<TerminalSnapshot>();
  #exited = Promise.withResolvers<TerminalResult>();
  #data: Listeners<Uint8Array> = new Set();
  #snapshots: Listeners<TerminalSnapshot> = new Set();
  #titles: Listeners<string> = new Set();
  #exits: Listeners<TerminalResult> = new Set();

  /** @internal Made by {@linkcode RemoteTerminals}. */
  constructor(owner: RemoteTerminals, id: string, size: TerminalSize) {
    this.#owner = owner;
    this.id = id;
    this.#cols = size.cols;
    this.#rows = size.rows;
    this.ready = this.#ready.promise;
    this.exited = this.#exited.promise;
    // Callers that never await them still see no unhandled rejection.
    this.ready.catch(() => {});
    this.exited.catch(() => {});
  }

  /** Where it stands. */
  get state(): TerminalState {
    return this.#state;
  }

  /** Columns: what this client asked for last (the bridge's in the last snapshot). */
  get cols(): number {
    return this.#cols;
  }

  /** Rows, as {@linkcode cols}. */
  get rows(): number {
    return this.#rows;
  }

  /** The title the shell set (OSC 0 or 2), or "". */
  get title(): string {
    return this.#title;
  }

  /** Calls `listener` with every chunk of output (bytes; a UTF-8 character may be split); returns an unsubscribe function. */
  onData(listener: (bytes: Uint8Array) => void): () => void {
    return _listen(this.#data, listener);
  }

  /**
   * Calls `listener` with every snapshot: the first on attaching, and a new
   * one whenever the bridge repaints this client (after the stream started
   * afresh, or after falling a window behind). Reset the terminal to the
   * snapshot's size and write its `data`; output follows from there.
   */
  onSnapshot(listener: (snapshot: TerminalSnapshot) => void): () => void {
    return _listen(this.#snapshots, listener);
  }

  /** Calls `listener` when the title changes; returns an unsubscribe function. */
  onTitle(listener: (title: string) => void): () => void {
    return _listen(this.#titles, listener);
  }

  /** Calls `listener` when the shell ends (as {@linkcode exited}); returns an unsubscribe function. */
  onExit(listener: (result: TerminalResult) => void): () => void {
    return _listen(this.#exits, listener);
  }

  /**
   * Types into the terminal: keystrokes or a paste, as bytes (strings as
   * UTF-8), through the terminal's line discipline (`\x03` is Ctrl-C).
   *
   * @returns Resolves once the stream's window has room: await it to pace a large paste.
   */
  write(data: string | Uint8Array): Promise<void> {
    if (!this.#live) return Promise.resolve();
    return this.#owner.input(this, typeof data === "string" ? new TextEncoder().encode(data) : data);
  }

  /**
   * Sets the terminal's size (the program gets SIGWINCH).
   *
   * @throws {RangeError} For a size outside 2 to `MAX_TERMINAL_COLS` by 1 to `MAX_TERMINAL_ROWS`.
   */
  resize(cols: number, rows: number): Promise<void> {
    _checkSize({ cols, rows }, "resize terminal");
    if (!this.#live || (cols === this.#cols && rows === this.#rows)) return Promise.resolve();
    this.#cols = cols;
    this.#rows = rows;
    return this.#owner.push({ t: FrameType.TermResize, id: this.id, body: { cols, rows } });
  }

  /**
   * Sends `signal` to the process group in the terminal's foreground: the
   * job its shell runs now (Ctrl-C's target), not the shell. SIGKILL is
   * Force stop, for a program that ignores Ctrl-C. Nothing happens when the
   * shell itself is in the foreground.
   *
   * @throws {IdeClientError} `unsupported` when the bridge predates `term.signal`.
   */
  signal(signal: CommandSignal = "SIGKILL"): Promise<void> {
    if (!this.#live) return Promise.resolve();
    if (!this.#owner.signalAccepted) {
      return Promise.reject(
        new IdeClientError("Cannot signal the terminal: this bridge predates term.signal; update it", {
          status: 0,
          reason: "unsupported",
        }),
      );
    }
    // Keystrokes typed before (a Ctrl-C) go first.
    void this.#owner.flushInput(this);
    return this.#owner.push({ t: FrameType.TermSignal, id: this.id, body: { signal } });
  }

  /** Stops receiving this terminal; it keeps running on the bridge (another client may attach). */
  detach(): Promise<void> {
    if (this.#state === "detached" || this.#state === "failed") return Promise.resolve();
    void this.#owner.flushInput(this);
    const sent = this.#owner.push({ t: FrameType.TermDetach, id: this.id });
    this.#end("detached", new IdeClientError(`terminal ${this.id} was detached`, { status: 0, reason: "detached" }));
    return sent;
  }

  /**
   * Hangs the terminal up: SIGHUP to its session. {@linkcode exited}
   * resolves when the shell is gone. An exited terminal is forgotten on the
   * bridge.
   */
  close(): Promise<void> {
    if (this.#state === "detached" || this.#state === "failed" || this.#state === "closing") return Promise.resolve();
    void this.#owner.flushInput(this);
    const sent = this.#owner.push({ t: FrameType.TermClose, id: this.id });
    if (this.#state === "exited") this.#owner.forget(this);
    else this.#state = "closing";
    return sent;
  }

  get #live(): boolean {
    return this.#state === "attaching" || this.#state === "attached";
  }

  /** @internal Attached again (the stream started afresh): a new snapshot follows. */
  reattaching(): void {
    if (this.#live) this.#state = "attaching";
  }

  /** @internal */
  receiveSnapshot(snapshot: TerminalSnapshot): void {
    if (this.#live) this.#state = "attached";
    this.#cols = snapshot.cols;
    this.#rows = snapshot.rows;
    this.#ready.resolve(snapshot);
    for (const fn of this.#snapshots) fn(snapshot);
    this.receiveTitle(snapshot.title);
  }

  /** @internal */
  receiveOutput(bytes: Uint8Array): void {
    for (const fn of this.#data) fn(bytes);
  }

  /** @internal */
  receiveTitle(title: string): void {
    if (title === this.#title) return;
    this.#title = title;
    for (const fn of this.#titles) fn(title);
  }

  /** @internal The shell ended. A terminal being closed is done with. */
  receiveExit(result: TerminalResult): void {
    const closing = this.#state === "closing";
    this.#state = "exited";
    this.#exited.resolve(result);
    for (const fn of this.#exits) fn(result);
    if (closing) this.#owner.forget(this);
  }

  /** @internal Over: a term.error, a detach, or the client closed. */
  fail(error: IdeClientError): void {
    this.#end("failed", error);
  }

  #end(state: "detached" | "failed", error: IdeClientError): void {
    this.#state = state;
    this.#ready.reject(error);
    this.#exited.reject(error);
    this.#owner.forget(this);
  }
}

/** Options for {@linkcode RemoteTerminals}. */
export interface RemoteTerminalsOptions {
  /** Numbers a frame into the client's stream (shared/remote_commands.ts). */
  push: StreamPush;
  /** Random bytes for terminal ids and chaff times (default: `crypto.getRandomValues`). */
  random?: (bytes: Uint8Array) => Uint8Array;
  /** Time and timers for pacing keystrokes (default: the real ones). */
  clock?: Clock & Timers;
  /**
   * Whether keystrokes may be paced now: the bridge takes `term.keys` (its
   * `e2e.info` said `termKeys: true`) and the stream is live. Default: never
   * (all input goes out at once as `term.input`).
   */
  keysAccepted?: () => boolean;
  /** Pace keystrokes when the bridge takes them (default true); see {@linkcode RemoteTerminals.setObscureKeystrokes}. */
  obscureKeystrokes?: boolean;
  /** Whether the bridge takes `term.signal` (its `e2e.info` said `termSignal: true`). Default: no. */
  signalAccepted?: () => boolean;
}

/**
 * One IDE client's terminals.
 *
 * @example
 * ```ts ignore
 * import { RemoteTerminals } from "./remote_terminals.ts";
 * const terminals = new RemoteTerminals({ push: (frame) => commands.push(frame) });
 * const term = terminals.open({ cols: 80, rows: 24 });
 * term.onData((bytes) => xterm.write(bytes));
 * term.write("ls\r");
 * // Stream frames from the bridge: terminals.receive(frame)
 * ```
 */
export class RemoteTerminals {
  #opts: RemoteTerminalsOptions;
  #terminals = new Map<string, RemoteTerminal>();
  #lists = new Map<string, PromiseWithResolvers<TerminalInfo[]>>();
  #nextList = 1;
  #pacers = new Map<RemoteTerminal, KeystrokePacer>();
  #obscure: boolean;
  #paced: KeystrokeStats = { keys: 0, chaff: 0, bulk: 0 };

  /** @param options Where frames go, and how keystrokes are paced. */
  constructor(options: RemoteTerminalsOptions) {
    this.#opts = options;
    this.#obscure = options.obscureKeystrokes ?? true;
  }

  /** Whether keystroke timing is obscured when the bridge takes `term.keys` (the setting). */
  /** Whether the bridge takes `term.signal` now. */
  get signalAccepted(): boolean {
    return this.#opts.signalAccepted?.() ?? false;
  }

  get obscureKeystrokes(): boolean {
    return this.#obscure;
  }

  /** Whether typing is paced now: the setting is on and the bridge takes `term.keys` on a live stream. */
  get pacing(): boolean {
    return this.#obscure && (this.#opts.keysAccepted?.() ?? false);
  }

  /** Frames sent for typed input so far, all terminals: padded keys, chaff, and unpadded sends. */
  get keystrokeStats(): Readonly<KeystrokeStats> {
    const total = { ...this.#paced };
    for (const pacer of this.#pacers.values()) {
      const s = pacer.stats;
      total.keys += s.keys;
      total.chaff += s.chaff;
      total.bulk += s.bulk;
    }
    return total;
  }

  /**
   * Turns keystroke timing obfuscation on or off, at once: off, what waits
   * for the next tick goes out now and input is sent unpaced from then on.
   *
   * @param on Whether to pace typing (with a bridge that takes `term.keys`).
   */
  setObscureKeystrokes(on: boolean): void {
    this.#obscure = on;
    if (!on) { for (const pacer of this.#pacers.values()) void pacer.flush(); }
  }

  /** Terminals this client has open or attached (exited ones until closed or detached). */
  get size(): number {
    return this.#terminals.size;
  }

  /**
   * Opens a new terminal on the bridge: the user's login shell in a
   * pseudo-terminal of `size`.
   *
   * @param size Columns and rows.
   * @param refusal Why it cannot be opened now: it fails at once with it.
   * @returns The terminal (its id is new and random).
   * @throws {RangeError} For a size out of range.
   */
  open(size: TerminalSize, refusal?: IdeClientError): RemoteTerminal {
    _checkSize(size, "open terminal");
    const random = this.#opts.random ?? ((b: Uint8Array) => crypto.getRandomValues(b));
    const id = `t${toBase64Url(random(new Uint8Array(12)))}`;
    const term = new RemoteTerminal(this, id, size);
    if (refusal) {
      term.fail(refusal);
      return term;
    }
    this.#terminals.set(id, term);
    void this.push({ t: FrameType.TermOpen, id, body: { cols: size.cols, rows: size.rows } });
    return term;
  }

  /**
   * Attaches to a terminal that runs on the bridge (opened by this or another
   * client, e.g. before a reload): a snapshot of its screen, then its output.
   * Attaching to one this client has attached already repaints it: the same
   * terminal object comes back, and its `onSnapshot` listeners get the repaint.
   *
   * @param id The terminal id (from {@linkcode list}).
   * @param size This client's size: the terminal takes it.
   * @param refusal Why it cannot be attached now: it fails at once with it.
   * @returns The terminal.
   * @throws {RangeError} For a size out of range, or an id that cannot be one.
   */
  attach(id: string, size: TerminalSize, refusal?: IdeClientError): RemoteTerminal {
    _checkSize(size, "attach terminal");
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new RangeError(`Cannot attach terminal: bad id "${id}"`);
    let term = this.#terminals.get(id);
    if (!term) {
      term = new RemoteTerminal(this, id, size);
      if (refusal) {
        term.fail(refusal);
        return term;
      }
      this.#terminals.set(id, term);
    }
    term.reattaching();
    void this.push({ t: FrameType.TermAttach, id, body: { cols: size.cols, rows: size.rows } });
    return term;
  }

  /**
   * Asks the bridge which terminals it runs.
   *
   * @param refusal Why it cannot ask now: rejects at once with it.
   * @returns Every terminal the bridge keeps, oldest first.
   */
  list(refusal?: IdeClientError): Promise<TerminalInfo[]> {
    if (refusal) return Promise.reject(refusal);
    const id = `l${this.#nextList++}`;
    const waiter = Promise.withResolvers<TerminalInfo[]>();
    this.#lists.set(id, waiter);
    void this.push({ t: FrameType.TermList, id, body: {} });
    return waiter.promise;
  }

  /**
   * An opened `term.*` frame of the stream, delivered once and in order;
   * frames for terminals this client does not have are skipped.
   *
   * @throws {E2eError} For a body that does not decode (the bridge's fault).
   */
  receive(frame: Frame): void {
    const id = frame.id;
    if (id === undefined) return;
    const list = this.#lists.get(id);
    if (list && (frame.t === FrameType.TermList || frame.t === FrameType.TermError)) {
      this.#lists.delete(id);
      if (frame.t === FrameType.TermList) return list.resolve(decodeTermList(frame.body, _e2eFail).terminals);
      const error = decodeTermError(frame.body, _e2eFail);
      return list.reject(new IdeClientError(error.message, { status: 0, reason: error.reason }));
    }
    const term = this.#terminals.get(id);
    if (!term) return;
    switch (frame.t) {
      case FrameType.TermSnapshot:
        return term.receiveSnapshot(decodeTermSnapshot(frame.body, _e2eFail));
      // The body is the freshly opened plaintext, nobody else's: handed over without a copy.
      case FrameType.TermOutput:
        return term.receiveOutput(frame.body);
      case FrameType.TermTitle:
        return term.receiveTitle(decodeTermTitle(frame.body, _e2eFail).title);
      case FrameType.TermExit:
        return term.receiveExit(decodeTermExit(frame.body, _e2eFail));
      case FrameType.TermError: {
        const error = decodeTermError(frame.body, _e2eFail);
        return term.fail(new IdeClientError(error.message, { status: 0, reason: error.reason }));
      }
      default:
        return;
    }
  }

  /**
   * The stream started afresh (the bridge forgot it or restarted): what was
   * in flight is gone. Every running terminal is attached again (a new
   * snapshot repaints it, or `unknown-terminal` says it is gone), and every
   * pending list is asked again.
   */
  streamReset(): void {
    for (const term of this.#terminals.values()) {
      if (term.state === "exited") {
        // Its last screen was kept by the bridge for the old stream only.
        this.#terminals.delete(term.id);
        continue;
      }
      if (term.state === "closing") {
        void this.push({ t: FrameType.TermClose, id: term.id });
        continue;
      }
      term.reattaching();
      void this.push({ t: FrameType.TermAttach, id: term.id, body: { cols: term.cols, rows: term.rows } });
    }
    for (const id of this.#lists.keys()) void this.push({ t: FrameType.TermList, id, body: {} });
  }

  /** The IDE client was closed: every terminal and list fails with reason `closed` (terminals run on). */
  close(): void {
    const error = new IdeClientError("the IDE client was closed", { status: 0, reason: "closed" });
    for (const term of [...this.#terminals.values()]) term.fail(error);
    for (const list of this.#lists.values()) list.reject(error);
    this.#lists.clear();
    for (const term of [...this.#pacers.keys()]) this.#dropPacer(term);
  }

  /**
   * Every byte typed or pasted into any terminal goes out here, in order.
   * While pacing ({@linkcode pacing}), each terminal's typing goes through its
   * {@linkcode KeystrokePacer}: padded `term.keys` frames at a fixed interval,
   * with chaff, while the user types; input too big for one of them (a paste)
   * goes at once as `term.input`. Not pacing, everything goes at once as
   * `term.input`, in frames of at most {@linkcode TERMINAL_INPUT_CHUNK_BYTES}.
   *
   * @param term The terminal.
   * @param data The bytes.
   * @returns Resolves when the bytes went out and the stream's window has room for more.
   */
  input(term: RemoteTerminal, data: Uint8Array): Promise<void> {
    let pacer = this.#pacers.get(term);
    if (!pacer) {
      if (!this.pacing) return this.#sendInput(term, data);
      pacer = new KeystrokePacer({
        clock: this.#opts.clock ?? systemClock,
        pacing: () => this.pacing && (term.state === "attaching" || term.state === "attached"),
        sendKeys: (bytes) => this.push({ t: FrameType.TermKeys, id: term.id, body: encodeTermKeys(bytes) }),
        sendBulk: (bytes) => this.#sendInput(term, bytes),
        random: () => this.#uniform(),
      });
      this.#pacers.set(term, pacer);
    }
    return pacer.input(data);
  }

  /** @internal Sends what waits for `term`'s next tick now (it is being detached or closed). */
  flushInput(term: RemoteTerminal): Promise<void> {
    return this.#pacers.get(term)?.flush() ?? Promise.resolve();
  }

  /** @internal Numbers a frame into the stream. */
  push(frame: FrameInit): Promise<void> {
    return this.#opts.push(frame);
  }

  /** @internal A terminal is done with: frames for it are skipped from now on. */
  forget(term: RemoteTerminal): void {
    if (this.#terminals.get(term.id) === term) this.#terminals.delete(term.id);
    this.#dropPacer(term);
  }

  /** Unpaced input: `term.input` frames of at most {@linkcode TERMINAL_INPUT_CHUNK_BYTES}. */
  #sendInput(term: RemoteTerminal, data: Uint8Array): Promise<void> {
    let last: Promise<void> = Promise.resolve();
    for (let at = 0; at < data.byteLength; at += TERMINAL_INPUT_CHUNK_BYTES) {
      last = this.push({
        t: FrameType.TermInput,
        id: term.id,
        body: data.subarray(at, at + TERMINAL_INPUT_CHUNK_BYTES),
      });
    }
    return last;
  }

  #dropPacer(term: RemoteTerminal): void {
    const pacer = this.#pacers.get(term);
    if (!pacer) return;
    pacer.stop();
    const s = pacer.stats;
    this.#paced.keys += s.keys;
    this.#paced.chaff += s.chaff;
    this.#paced.bulk += s.bulk;
    this.#pacers.delete(term);
  }

  /** A uniform number in [0, 1) from the random source. */
  #uniform(): number {
    const random = this.#opts.random ?? ((b: Uint8Array) => crypto.getRandomValues(b));
    const b = random(new Uint8Array(4));
    return (b[0] * 2 ** 24 + (b[1] << 16) + (b[2] << 8) + b[3]) / 2 ** 32;
  }
}

function _listen<T>(set: Listeners<T>, listener: (value: T) => void): () => void {
  set.add(listener);
  return () => void set.delete(listener);
}

function _checkSize(size: TerminalSize, action: string): void {
  const { cols, rows } = size;
  if (!Number.isSafeInteger(cols) || cols < 2 || cols > MAX_TERMINAL_COLS) {
    throw new RangeError(`Cannot ${action}: cols must be a whole number from 2 to ${MAX_TERMINAL_COLS}, got ${cols}`);
  }
  if (!Number.isSafeInteger(rows) || rows < 1 || rows > MAX_TERMINAL_ROWS) {
    throw new RangeError(`Cannot ${action}: rows must be a whole number from 1 to ${MAX_TERMINAL_ROWS}, got ${rows}`);
  }
}

/** A sealed body that opened but does not parse: the bridge's fault (or a bug); trust nothing more. */
function _e2eFail(message: string): E2eError {
  return new E2eError(`Cannot read ${message}`);
}
