/// <reference lib="dom" />
/**
 * One terminal tab: an xterm.js terminal bound to a terminal on the bridge
 * (a `RemoteTerminal` from shared/remote_terminals.ts). Every keystroke,
 * paste (bracketed when the program asked for it), IME composition and
 * mouse report goes to the bridge through `RemoteTerminal.write`; output is
 * written as it comes; a `term.snapshot` resets the terminal to the
 * snapshot's size and repaints it. The size follows the element (fit addon
 * -> `RemoteTerminal.resize`), links open in a new tab (web-links addon),
 * the scrollback can be searched (search addon), and characters take the
 * widths Unicode 11 gives them (unicode11 addon), as programs' wcwidth does.
 *
 * @module
 */
import { FitAddon } from "@xterm/addon-fit";
import { type ISearchOptions, SearchAddon } from "@xterm/addon-search";
import { Unicode11Addon } from "@xterm/addon-unicode11";
import { WebLinksAddon } from "@xterm/addon-web-links";
import { Terminal } from "@xterm/xterm";
import type { RemoteTerminal, TerminalResult, TerminalSnapshot } from "../shared/remote_terminals.ts";

/**
 * Output waiting for xterm.js to parse it, past which the tab stops writing
 * and asks the bridge for a fresh snapshot once xterm has caught up (xterm
 * throws data away past 50 MB pending, and a background browser tab parses
 * slowly). What the page receives is not affected, only what it draws.
 */
export const OUTPUT_HIGH_WATER_BYTES = 8 * 1024 * 1024;

/** A terminal that wrote something this recently is busy: closing it asks first. */
export const BUSY_OUTPUT_MS = 1000;

/** The end of a shell prompt (sh, bash, zsh, fish as `$ `, `# `, `% `, `❯ `) left of the cursor. */
const PROMPT_END = /[$#%❯] $/;

/** Search highlights (the addon wants #RRGGBB). */
const SEARCH_DECORATIONS: ISearchOptions["decorations"] = {
  matchBackground: "#3a4a5c",
  matchOverviewRuler: "#4aa3ff",
  activeMatchBackground: "#9e6a03",
  activeMatchColorOverviewRuler: "#ffd33d",
};

/**
 * Where a tab stands: `starting` (asked for, no snapshot yet), `live`,
 * `exited` (its shell ended), `lost` (the bridge no longer has it, or it
 * could not start).
 */
export type TabState = "starting" | "live" | "exited" | "lost";

/** What a tab asks of its owner. */
export interface TerminalTabHooks {
  /** The title, state or activity changed: redraw the tab's label. */
  onChange(tab: TerminalTab): void;
  /** Ctrl-Shift-F: open the search box. */
  onSearchKey(): void;
  /** Attach again for a fresh snapshot (after drawing fell too far behind). */
  repaint(tab: TerminalTab): void;
  /** Search results changed (index is -1 past the highlight limit). */
  onSearchResults(tab: TerminalTab, index: number, count: number): void;
  /** Tests only: another {@linkcode OUTPUT_HIGH_WATER_BYTES}. */
  highWaterBytes?: number;
  /** Ctrl-C was typed (it went to the terminal as usual). */
  onInterrupt?(tab: TerminalTab): void;
}

/** A terminal tab's xterm.js and the bridge's terminal behind it. */
export class TerminalTab {
  /** The panel the terminal is drawn in. */
  readonly element: HTMLElement;
  /** The xterm.js terminal. */
  readonly term: Terminal;
  /** The bridge's terminal, once bound. */
  remote?: RemoteTerminal;
  /** How the shell ended, once it has. */
  exit?: TerminalResult;
  /** Why the terminal is lost, if it is. */
  failure?: string;
  /** When output last came (performance.now()). */
  lastOutputAt = 0;
  /** How often drawing fell {@linkcode OUTPUT_HIGH_WATER_BYTES} behind and asked for a fresh snapshot. */
  catchUps = 0;
  #hooks: TerminalTabHooks;
  #fit = new FitAddon();
  #search = new SearchAddon({ highlightLimit: 1000 });
  #pending = 0;
  #dropping = false;
  #unbind: (() => void)[] = [];

  /**
   * @param element The (empty) panel to draw in; it must be laid out (not `display: none`).
   * @param hooks What the tab tells its owner.
   */
  constructor(element: HTMLElement, hooks: TerminalTabHooks) {
    this.element = element;
    this.#hooks = hooks;
    this.term = new Terminal({
      allowProposedApi: true, // The unicode API and the search highlights are "proposed".
      cursorBlink: true,
      fontSize: 15,
      scrollback: 10_000,
      theme: { background: "#111418", foreground: "#e6e6e6" },
    });
    this.term.loadAddon(this.#fit);
    this.term.loadAddon(this.#search);
    this.term.loadAddon(new Unicode11Addon());
    this.term.unicode.activeVersion = "11";
    this.term.loadAddon(
      new WebLinksAddon((event, uri) => {
        event.preventDefault();
        globalThis.open(uri, "_blank", "noopener,noreferrer");
      }),
    );
    this.term.open(element);
    this.fit();
    // Every byte typed, pasted or composed goes to the bridge, nowhere else.
    this.term.onData((data) => {
      void this.remote?.write(data);
      if (data.includes("\x03")) this.#hooks.onInterrupt?.(this);
    });
    // Mouse reports in X10 mode are bytes (one per character), not UTF-8.
    this.term.onBinary((data) => void this.remote?.write(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
    this.term.onResize(({ cols, rows }) => this.#sendSize(cols, rows));
    this.#search.onDidChangeResults(({ resultIndex, resultCount }) =>
      this.#hooks.onSearchResults(this, resultIndex, resultCount)
    );
    this.term.attachCustomKeyEventHandler((event) => {
      if (event.type !== "keydown" || !event.ctrlKey || !event.shiftKey) return true;
      if (event.code === "KeyF") {
        event.preventDefault();
        this.#hooks.onSearchKey();
        return false;
      }
      if (event.code === "KeyC") {
        // Ctrl-Shift-C copies; plain Ctrl-C is the shell's interrupt.
        const text = this.term.getSelection();
        if (text) void navigator.clipboard.writeText(text).catch(() => {});
        return false;
      }
      // Ctrl-Shift-V: the browser pastes (a paste event xterm.js turns into input, bracketed
      // if the program asked); plain Ctrl-V is the shell's literal-next (and vim's block mode).
      return event.code !== "KeyV";
    });
  }

  /** Where it stands. */
  get state(): TabState {
    if (this.failure !== undefined) return "lost";
    if (this.exit) return "exited";
    return this.remote?.state === "attached" ? "live" : "starting";
  }

  /** The terminal id on the bridge, once bound. */
  get id(): string | undefined {
    return this.remote?.id;
  }

  /** The title the shell set (OSC 0 or 2), or "". */
  get title(): string {
    return this.remote?.title ?? "";
  }

  /** The size the element has room for (the terminal's own size before it is laid out). */
  size(): { cols: number; rows: number } {
    const proposed = this.#fit.proposeDimensions();
    if (!proposed || !Number.isFinite(proposed.cols) || !Number.isFinite(proposed.rows)) {
      return { cols: this.term.cols, rows: this.term.rows };
    }
    return { cols: Math.max(2, proposed.cols), rows: Math.max(1, proposed.rows) };
  }

  /** Sizes the terminal to its element (the bridge's terminal follows). */
  fit(): void {
    const { cols, rows } = this.size();
    if (cols !== this.term.cols || rows !== this.term.rows) this.term.resize(cols, rows);
  }

  /**
   * Binds the bridge's terminal: snapshots repaint, output is drawn, the
   * title and the exit status reach the tab's label.
   */
  bind(remote: RemoteTerminal): void {
    this.remote = remote;
    this.#unbind.push(
      remote.onSnapshot((snapshot) => this.#paint(snapshot)),
      remote.onData((bytes) => this.#output(bytes)),
      remote.onTitle(() => this.#hooks.onChange(this)),
      remote.onExit((result) => {
        this.exit = result;
        const how = result.signal ? `killed by ${result.signal}` : `exit status ${result.code}`;
        this.#write(`\r\n\x1b[0;2m[The shell ended: ${how}. Close the tab to forget it.]\x1b[0m\r\n\x1b[?25l`);
        this.#hooks.onChange(this);
      }),
    );
    const failed = (error: { message: string; reason?: string }) => {
      if (error.reason === "detached" || error.reason === "closed" || this.exit) return;
      this.failure = error.reason === "unknown-terminal"
        ? "The bridge no longer has this terminal (it restarted, or the terminal was closed elsewhere)."
        : error.message;
      this.#write(`\r\n\x1b[0;33m[${this.failure}]\x1b[0m\r\n`);
      this.#hooks.onChange(this);
    };
    remote.exited.catch(failed);
    this.#hooks.onChange(this);
  }

  /**
   * Whether closing should ask first: the shell is alive and not idle at a
   * prompt. Idle means: the normal screen (no full-screen program), the text
   * left of the cursor ends like a shell prompt (`$ `, `# `, `% `, `❯ `), and
   * no output for {@linkcode BUSY_OUTPUT_MS}.
   */
  busy(): boolean {
    if (this.state === "exited" || this.state === "lost") return false;
    const buffer = this.term.buffer.active;
    if (buffer.type === "alternate") return true;
    if (performance.now() - this.lastOutputAt < BUSY_OUTPUT_MS) return true;
    const line = buffer.getLine(buffer.baseY + buffer.cursorY)?.translateToString(false, 0, buffer.cursorX) ?? "";
    return !PROMPT_END.test(line);
  }

  /** Finds the next (or previous) match of `query` in the scrollback and screen. */
  find(query: string, backwards = false): boolean {
    if (!query) {
      this.#search.clearDecorations();
      this.term.clearSelection();
      return false;
    }
    const options: ISearchOptions = { decorations: SEARCH_DECORATIONS, incremental: !backwards };
    return backwards ? this.#search.findPrevious(query, options) : this.#search.findNext(query, options);
  }

  /** Removes the search highlights. */
  clearSearch(): void {
    this.#search.clearDecorations();
  }

  /** The scrollback and screen as text (trailing blank lines dropped). */
  text(): string {
    const buffer = this.term.buffer.active;
    const lines: string[] = [];
    for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i)?.translateToString(true) ?? "");
    return lines.join("\n").replace(/\n+$/, "");
  }

  /** The visible screen as text, one line per row. */
  screen(): string {
    const buffer = this.term.buffer.active;
    const lines: string[] = [];
    for (let y = 0; y < this.term.rows; y++) {
      lines.push(buffer.getLine(buffer.viewportY + y)?.translateToString(true) ?? "");
    }
    return lines.join("\n");
  }

  /** Focuses the terminal. */
  focus(): void {
    this.term.focus();
  }

  /** Stops drawing and frees the terminal (the bridge's terminal is closed or detached by the owner). */
  dispose(): void {
    for (const off of this.#unbind.splice(0)) off();
    this.term.dispose();
    this.element.remove();
  }

  #sendSize(cols: number, rows: number): void {
    if (!this.remote || this.state !== "live") return;
    try {
      void this.remote.resize(cols, rows);
    } catch {
      // Too small to be a terminal (a collapsed element): keep the last size.
    }
  }

  /** A snapshot: reset to its size, draw it; output follows. Ordered after what xterm still has to parse. */
  #paint(snapshot: TerminalSnapshot): void {
    this.#dropping = false;
    this.#write("\x1bc", () => {
      if (snapshot.cols !== this.term.cols || snapshot.rows !== this.term.rows) {
        this.term.resize(snapshot.cols, snapshot.rows);
      }
    });
    this.#write(snapshot.data, () => this.fit());
    this.#hooks.onChange(this);
  }

  #output(bytes: Uint8Array): void {
    this.lastOutputAt = performance.now();
    if (this.#dropping) return;
    if (this.#pending > (this.#hooks.highWaterBytes ?? OUTPUT_HIGH_WATER_BYTES)) {
      // Too far behind to draw it all: skip to a fresh snapshot once xterm has caught up.
      this.#dropping = true;
      this.catchUps++;
      this.term.write("", () => this.#hooks.repaint(this));
      return;
    }
    this.#write(bytes);
  }

  #write(data: string | Uint8Array, then?: () => void): void {
    const size = data.length;
    this.#pending += size;
    this.term.write(data, () => {
      this.#pending -= size;
      then?.();
    });
  }
}
