/**
 * The bridge's copy of one terminal's screen: a headless terminal emulator
 * (npm:@xterm/headless) fed with everything the terminal writes, which keeps
 * the current screen, the alternate screen of a full-screen program, modes,
 * the cursor, a bounded scrollback and the title (OSC 0 and 2), and turns
 * them into a `term.snapshot`: escape sequences that repaint a fresh terminal
 * to look the same (npm:@xterm/addon-serialize). That is how a reloaded or
 * second page shows `vim` mid-edit.
 *
 * The emulator parses about 30 MB/s, slower than a PTY and the streams can
 * carry output, and it runs on the thread that forwards the output. It never
 * holds the terminal back: writes queue here, and while output keeps coming
 * the emulator gets at most {@linkcode SCREEN_PARSE_SHARE} of the time (it
 * parses a slice, then rests in proportion), so a flood goes to the IDE at
 * the streams' speed rather than the emulator's. When more than
 * {@linkcode SCREEN_BACKLOG_BYTES} wait, the oldest are dropped but the last
 * {@linkcode SCREEN_KEEP_BYTES} (from a line start). The DEC private modes and
 * the title set in what was dropped are replayed first, so the screen after a
 * flood of output (a big `cat`) is right, the alternate screen included; only
 * its scrollback has a gap. Once the output pauses for
 * {@linkcode SCREEN_QUIET_MS}, or a snapshot is asked for, the emulator
 * catches up at full speed. Live output to the IDE is never affected: only
 * snapshots come from here.
 *
 * @module
 */
import headless from "@xterm/headless";
// The package's own types pull in the browser terminal's DOM types; these are the parts used here.
// @ts-types="./xterm_serialize.d.ts"
import serialize from "@xterm/addon-serialize";
// @ts-types="./xterm_unicode11.d.ts"
import unicode11 from "@xterm/addon-unicode11";
import { bodyBytes, concatBytes } from "../shared/frame_codec.ts";
import {
  MAX_TERMINAL_TITLE_LENGTH,
  TERMINAL_SCROLLBACK_LINES,
  TERMINAL_SNAPSHOT_MAX_BYTES,
  type TermSnapshotBody,
} from "../shared/protocol.ts";

/** Bytes waiting for the emulator before the oldest are dropped. */
export const SCREEN_BACKLOG_BYTES = 4 * 1024 * 1024;
/** What is kept of the waiting bytes when they are dropped: the newest. */
export const SCREEN_KEEP_BYTES = 1024 * 1024;
/** The most the emulator parses in one go (about 2 ms of work). */
export const SCREEN_SLICE_BYTES = 64 * 1024;
/** The share of the time the emulator may take while output keeps coming. */
export const SCREEN_PARSE_SHARE = 0.2;
/** No output for this long: the emulator catches up at full speed. */
export const SCREEN_QUIET_MS = 50;

/** Options for {@linkcode TerminalScreen}. */
export interface TerminalScreenOptions {
  /** Columns. */
  cols: number;
  /** Rows. */
  rows: number;
  /** Lines of scrollback kept (default {@linkcode TERMINAL_SCROLLBACK_LINES}). */
  scrollback?: number;
  /** Bytes that may wait before the oldest are dropped (default {@linkcode SCREEN_BACKLOG_BYTES}). */
  backlogBytes?: number;
  /** Bytes kept when dropping (default {@linkcode SCREEN_KEEP_BYTES}). */
  keepBytes?: number;
  /** The emulator's share of the time while output keeps coming, above 0 and at most 1 (default {@linkcode SCREEN_PARSE_SHARE}; 1: no rests). */
  parseShare?: number;
  /** Milliseconds, for the emulator's rests (default `performance.now()`). */
  now?: () => number;
  /** The title changed (OSC 0 or 2), cut to {@linkcode MAX_TERMINAL_TITLE_LENGTH}. */
  onTitle?: (title: string) => void;
}

/** One queued step, applied in order: bytes to parse, a resize, or a snapshot to take. */
type Op =
  | { kind: "bytes"; data: Uint8Array }
  | { kind: "resize"; cols: number; rows: number }
  | { kind: "snapshot"; maxBytes: number; resolve: (body: Uint8Array) => void; reject: (error: Error) => void };

const { Terminal } = headless;
const { SerializeAddon } = serialize;
const { Unicode11Addon } = unicode11;

/**
 * A terminal's screen, kept by the bridge.
 *
 * @example
 * ```ts
 * import { TerminalScreen } from "./terminal_screen.ts";
 * const screen = new TerminalScreen({ cols: 80, rows: 24 });
 * screen.write(new TextEncoder().encode("\x1b]2;build\x07\x1b[31mred\x1b[0m"));
 * const body = JSON.parse(new TextDecoder().decode(await screen.snapshot()));
 * console.log(body.title, JSON.stringify(body.data)); // build "\u001b[31mred\u001b[0m"
 * screen.dispose();
 * ```
 */
export class TerminalScreen {
  #term: InstanceType<typeof Terminal>;
  #serializer: InstanceType<typeof SerializeAddon>;
  #scrollback: number;
  #backlog: number;
  #keep: number;
  #queue: Op[] = [];
  #pending = 0;
  #busy = false;
  #disposed = false;
  #title = "";
  #skipped = 0;
  #cols: number;
  #rows: number;
  #share: number;
  #now: () => number;
  /** When output last arrived. */
  #lastWrite = -Infinity;
  /** The rest between two slices, while one is due. */
  #rest?: ReturnType<typeof setTimeout>;
  /** Snapshots waiting in the queue (they end any rest). */
  #snapshots = 0;

  /** @param options Size, scrollback, backlog limits and the title listener. */
  constructor(options: TerminalScreenOptions) {
    this.#scrollback = options.scrollback ?? TERMINAL_SCROLLBACK_LINES;
    this.#backlog = options.backlogBytes ?? SCREEN_BACKLOG_BYTES;
    this.#keep = options.keepBytes ?? SCREEN_KEEP_BYTES;
    this.#cols = options.cols;
    this.#rows = options.rows;
    this.#share = options.parseShare ?? SCREEN_PARSE_SHARE;
    if (!(this.#share > 0 && this.#share <= 1)) throw new RangeError("parseShare must be above 0 and at most 1");
    this.#now = options.now ?? (() => performance.now());
    this.#term = new Terminal({
      cols: options.cols,
      rows: options.rows,
      scrollback: this.#scrollback,
      allowProposedApi: true,
    });
    this.#serializer = new SerializeAddon();
    this.#term.loadAddon(this.#serializer);
    // The page's terminal counts cells with Unicode 11 widths (emoji and CJK take
    // two); the bridge's copy must agree, or a repaint shifts every line with one.
    this.#term.loadAddon(new Unicode11Addon());
    this.#term.unicode.activeVersion = "11";
    this.#term.onTitleChange((title) => {
      this.#title = title.slice(0, MAX_TERMINAL_TITLE_LENGTH);
      options.onTitle?.(this.#title);
    });
  }

  /** Where the cursor is, as far as the emulator has got, in cells from the top left (0-based). */
  get cursor(): { x: number; y: number } {
    const buffer = this.#term.buffer.active;
    return { x: buffer.cursorX, y: buffer.cursorY };
  }

  /** The title, as far as the emulator has got. */
  get title(): string {
    return this.#title;
  }

  /** Columns, as of the last resize queued. */
  get cols(): number {
    return this.#cols;
  }

  /** Rows, as of the last resize queued. */
  get rows(): number {
    return this.#rows;
  }

  /** Bytes dropped unparsed so far because the emulator was behind. */
  get skipped(): number {
    return this.#skipped;
  }

  /** Bytes waiting for the emulator. */
  get pending(): number {
    return this.#pending;
  }

  /**
   * Queues output of the terminal. The bytes are kept (not copied) until
   * parsed: the caller must not change them.
   */
  write(data: Uint8Array): void {
    if (this.#disposed || data.byteLength === 0) return;
    this.#queue.push({ kind: "bytes", data });
    this.#pending += data.byteLength;
    this.#lastWrite = this.#now();
    if (this.#pending > this.#backlog) this.#skipAhead();
    this.#run();
  }

  /** Queues a resize, in order with the output around it. */
  resize(cols: number, rows: number): void {
    if (this.#disposed) return;
    this.#cols = cols;
    this.#rows = rows;
    this.#queue.push({ kind: "resize", cols, rows });
    this.#run();
  }

  /**
   * The screen once everything queued before this call is parsed, as the
   * encoded JSON body of a `term.snapshot` ({@linkcode TermSnapshotBody}) of
   * at most `maxBytes`: the screen and as much scrollback as fits; when even
   * the screen does not fit, its plain text, cut to fit (`truncated: true`).
   *
   * @param maxBytes The largest body (default {@linkcode TERMINAL_SNAPSHOT_MAX_BYTES}).
   * @returns The body bytes; rejects once the screen is disposed.
   */
  snapshot(maxBytes: number = TERMINAL_SNAPSHOT_MAX_BYTES): Promise<Uint8Array> {
    if (this.#disposed) return Promise.reject(new Error("Cannot take a snapshot: the screen is disposed"));
    const { promise, resolve, reject } = Promise.withResolvers<Uint8Array>();
    this.#queue.push({ kind: "snapshot", maxBytes, resolve, reject });
    this.#snapshots++;
    this.#endRest();
    this.#run();
    return promise;
  }

  /** Frees the emulator; snapshots still waiting reject. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#rest !== undefined) clearTimeout(this.#rest);
    for (const op of this.#queue) if (op.kind === "snapshot") op.reject(new Error("Cannot take a snapshot: disposed"));
    this.#queue = [];
    this.#pending = 0;
    this.#term.dispose();
  }

  /**
   * Applies queued steps one at a time; parsing is asynchronous (a slice at
   * a time, with rests while output keeps coming), the rest is not.
   */
  #run(): void {
    while (!this.#busy && this.#rest === undefined && !this.#disposed && this.#queue.length) {
      const op = this.#queue.shift()!;
      switch (op.kind) {
        case "bytes": {
          let slice = op.data;
          if (slice.byteLength > SCREEN_SLICE_BYTES) {
            this.#queue.unshift({ kind: "bytes", data: slice.subarray(SCREEN_SLICE_BYTES) });
            slice = slice.subarray(0, SCREEN_SLICE_BYTES);
          }
          this.#busy = true;
          const started = this.#now();
          this.#term.write(slice, () => {
            this.#busy = false;
            this.#pending -= slice.byteLength;
            this.#restAfter(this.#now() - started);
            this.#run();
          });
          break;
        }
        case "resize":
          this.#term.resize(op.cols, op.rows);
          break;
        case "snapshot":
          this.#snapshots--;
          try {
            op.resolve(this.#serialize(op.maxBytes));
          } catch (error) {
            op.reject(error as Error);
          }
          break;
      }
    }
  }

  /**
   * After a slice that took `ms`: rests so that parsing takes at most its
   * share of the time, unless nothing more waits, a snapshot does, or the
   * output has paused.
   */
  #restAfter(ms: number): void {
    if (this.#share >= 1 || this.#snapshots > 0 || this.#pending === 0 || this.#disposed) return;
    if (this.#now() - this.#lastWrite >= SCREEN_QUIET_MS) return;
    const restMs = Math.min(SCREEN_QUIET_MS, ms * (1 - this.#share) / this.#share);
    this.#rest = setTimeout(() => {
      this.#rest = undefined;
      this.#run();
    }, restMs);
  }

  #endRest(): void {
    if (this.#rest === undefined) return;
    clearTimeout(this.#rest);
    this.#rest = undefined;
  }

  #serialize(maxBytes: number): Uint8Array {
    const base = { cols: this.#term.cols, rows: this.#term.rows, title: this.#title };
    let lines = this.#scrollback;
    for (let attempt = 0; attempt < 8; attempt++) {
      const body: TermSnapshotBody = { ...base, data: this.#serializer.serialize({ scrollback: lines }) };
      const bytes = bodyBytes(body);
      if (bytes.byteLength <= maxBytes) return bytes;
      if (lines === 0) break;
      // Size is about linear in lines: aim a little below the cap.
      lines = Math.floor(lines * (maxBytes / bytes.byteLength) * 0.9);
    }
    // A huge screen full of attributes: its text still shows what is there.
    const buffer = this.#term.buffer.active;
    const text: string[] = [];
    for (let y = 0; y < this.#term.rows; y++) {
      text.push(buffer.getLine(buffer.viewportY + y)?.translateToString(true) ?? "");
    }
    let data = `\x1b[H\x1b[2J${text.join("\r\n")}`;
    for (;;) {
      const bytes = bodyBytes({ ...base, data, truncated: true } satisfies TermSnapshotBody);
      if (bytes.byteLength <= maxBytes || data.length === 0) return bytes;
      data = data.slice(0, Math.floor(data.length * (maxBytes / bytes.byteLength) * 0.9));
    }
  }

  /**
   * The emulator is more than the backlog behind: drop the oldest waiting
   * bytes, keeping the newest {@linkcode SCREEN_KEEP_BYTES} from a line start,
   * and replay the modes and title set in what was dropped before them.
   * Resizes and snapshots stay queued, in order.
   */
  #skipAhead(): void {
    let excess = this.#pending - this.#keep;
    const modes = new _ModeTracker();
    const kept: Op[] = [];
    let at = -1;
    for (const op of this.#queue) {
      if (op.kind !== "bytes" || excess <= 0) {
        kept.push(op);
        continue;
      }
      let cut = op.data.byteLength;
      if (cut > excess) {
        // Start the kept part at a line start, so it rarely begins inside an escape sequence.
        const newline = op.data.indexOf(0x0a, excess);
        cut = newline === -1 ? op.data.byteLength : newline + 1;
      }
      modes.scan(op.data.subarray(0, cut));
      this.#skipped += cut;
      this.#pending -= cut;
      excess -= cut;
      at = kept.length;
      if (cut < op.data.byteLength) kept.push({ kind: "bytes", data: op.data.subarray(cut) });
    }
    const replay = modes.replay();
    if (at >= 0 && replay.byteLength) {
      kept.splice(at, 0, { kind: "bytes", data: replay });
      this.#pending += replay.byteLength;
    }
    this.#queue = kept;
  }
}

/**
 * Finds the DEC private modes (`ESC [ ? n h` / `l`: alternate screen, cursor
 * keys, bracketed paste, mouse, cursor visibility ...) and the title
 * (`ESC ] 0;` or `2;`, ended by BEL or `ESC \`) in bytes that are dropped
 * unparsed, and rebuilds the sequences that set them as they were last set.
 * It looks only at escape characters (`indexOf`), so it costs little next to
 * the output it skips.
 */
class _ModeTracker {
  #modes = new Map<string, string>();
  #title?: Uint8Array;
  /** The end of the previous chunk, so a sequence split between two is still found. */
  #carry = new Uint8Array(0);

  scan(bytes: Uint8Array): void {
    const data = this.#carry.byteLength ? concatBytes([this.#carry, bytes]) : bytes;
    for (let at = data.indexOf(ESC); at !== -1; at = data.indexOf(ESC, at + 1)) {
      if (data[at + 1] === 0x5b && data[at + 2] === 0x3f) { // ESC [ ?
        let end = at + 3;
        while (end < data.byteLength && ((data[end] >= 0x30 && data[end] <= 0x39) || data[end] === 0x3b)) end++;
        const set = data[end];
        if (end === at + 3 || (set !== 0x68 && set !== 0x6c)) continue; // Not (yet) a whole h or l.
        for (const mode of String.fromCharCode(...data.subarray(at + 3, end)).split(";")) {
          if (!mode) continue;
          this.#modes.delete(mode);
          this.#modes.set(mode, set === 0x68 ? "h" : "l");
        }
      } else if (data[at + 1] === 0x5d && (data[at + 2] === 0x30 || data[at + 2] === 0x32) && data[at + 3] === 0x3b) {
        // ESC ] 0 ; or ESC ] 2 ;
        let end = at + 4;
        while (end < data.byteLength && data[end] !== 0x07 && data[end] !== ESC) end++;
        if (data[end] === 0x07 || (data[end] === ESC && data[end + 1] === 0x5c)) this.#title = data.slice(at + 4, end);
      }
    }
    this.#carry = data.slice(Math.max(0, data.byteLength - 256));
  }

  replay(): Uint8Array {
    let text = "";
    for (const [mode, set] of this.#modes) text += `\x1b[?${mode}${set}`;
    const modes = new TextEncoder().encode(text);
    if (this.#title === undefined) return modes;
    return concatBytes([modes, new TextEncoder().encode("\x1b]2;"), this.#title, new Uint8Array([0x07])]);
  }
}

const ESC = 0x1b;
