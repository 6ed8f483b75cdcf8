/// <reference lib="dom" />
/**
 * The one-shot command runner, for a bridge without terminals (started with
 * `--no-terminal`, or on an OS coder1 has no pseudo-terminals for): xterm.js
 * with a small line editor in front of it. Typing edits a line; Enter runs it
 * as a command through the bridge's `sh -c` (or, while a command runs, sends
 * the line to its stdin); Ctrl-C interrupts the running command; Ctrl-D ends
 * its input; up and down walk the history; Ctrl-L clears. Output is written
 * as it arrives, stderr tinted, and every command ends with its exit status.
 * No program sees a terminal here: interactive programs need the terminal
 * tabs (web/terminal_tabs.ts).
 *
 * @module
 */
import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";

/** What the runner asks of the page. */
export interface CommandCallbacks {
  /** Run a command line. */
  onCommand(line: string): void;
  /** Send a line to the running command's stdin. */
  onStdin(text: string): void;
  /** End the running command's stdin. */
  onEof(): void;
  /** Interrupt the running command (SIGINT). */
  onInterrupt(): void;
}

const PROMPT = "\x1b[1;32m$\x1b[0m ";
const HISTORY_MAX = 200;

/** The runner's terminal and its line editor. */
export class CommandView {
  readonly term: Terminal;
  #callbacks: CommandCallbacks;
  #line = "";
  #running = false;
  #history: string[] = [];
  #historyAt = 0;
  #decoders = { out: new TextDecoder(), err: new TextDecoder() };

  /**
   * @param element Where the terminal goes.
   * @param callbacks What Enter, Ctrl-C and Ctrl-D do.
   */
  constructor(element: HTMLElement, callbacks: CommandCallbacks) {
    this.#callbacks = callbacks;
    this.term = new Terminal({
      convertEol: false,
      cursorBlink: true,
      fontSize: 15,
      scrollback: 5000,
      screenReaderMode: true,
      theme: { background: "#111418", foreground: "#e6e6e6" },
    });
    // Columns and rows follow the element's size (window resizes, zoom).
    const fit = new FitAddon();
    this.term.loadAddon(fit);
    this.term.open(element);
    const refit = () => {
      try {
        fit.fit();
      } catch {
        // Not laid out yet.
      }
    };
    refit();
    new ResizeObserver(refit).observe(element);
    this.term.onData((data) => this.#input(data));
    // Ctrl-Shift-C copies the selection (plain Ctrl-C interrupts, as in a shell).
    this.term.attachCustomKeyEventHandler((event) => {
      if (event.type === "keydown" && event.ctrlKey && event.shiftKey && event.code === "KeyC") {
        void this.copySelection();
        return false;
      }
      return true;
    });
  }

  /** Whether a command is running. */
  get running(): boolean {
    return this.#running;
  }

  /** Prints a line of information (dim), then the prompt if idle. */
  info(text: string): void {
    this.term.write(`\r\x1b[2K\x1b[2m${text}\x1b[0m\r\n`);
    if (!this.#running) this.#prompt();
  }

  /** Shows the prompt (after start-up or a reconnect). */
  ready(): void {
    this.#prompt();
  }

  /** Writes command output; stderr is tinted. */
  output(bytes: Uint8Array, stream: "out" | "err"): void {
    const text = this.#decoders[stream].decode(bytes, { stream: true }).replace(/\r?\n/g, "\r\n");
    this.term.write(stream === "err" ? `\x1b[31m${text}\x1b[0m` : text);
  }

  /** Ends the running command with its status line and shows the prompt. */
  finished(status: string, failed: boolean): void {
    this.#running = false;
    this.#decoders = { out: new TextDecoder(), err: new TextDecoder() };
    // Start the status on its own line if the output did not end with one.
    const buffer = this.term.buffer.active;
    const cursorAtStart = buffer.cursorX === 0;
    this.term.write(`${cursorAtStart ? "" : "\r\n"}\x1b[${failed ? "33" : "2"}m[${status}]\x1b[0m\r\n`);
    this.#prompt();
  }

  /** Clears the screen and scrollback. */
  clear(): void {
    this.term.clear();
    this.term.write("\r\x1b[2K");
    if (!this.#running) this.term.write(PROMPT + this.#line);
  }

  /** Copies the selection to the clipboard; returns whether there was one. */
  async copySelection(): Promise<boolean> {
    const text = this.term.getSelection();
    if (!text) return false;
    await navigator.clipboard.writeText(text);
    return true;
  }

  /** The visible text and scrollback, for tests and screen readers' users who copy it. */
  text(): string {
    const buffer = this.term.buffer.active;
    const lines: string[] = [];
    for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i)?.translateToString(true) ?? "");
    return lines.join("\n").replace(/\n+$/, "");
  }

  /** Focuses the terminal. */
  focus(): void {
    this.term.focus();
  }

  #prompt(): void {
    this.#line = "";
    this.term.write(PROMPT);
  }

  #input(data: string): void {
    // Escape sequences: history keys; the rest (cursor keys, function keys) are ignored.
    if (data.startsWith("\x1b")) {
      if (this.#running) return;
      if (data === "\x1b[A") this.#walkHistory(-1);
      else if (data === "\x1b[B") this.#walkHistory(1);
      return;
    }
    for (const ch of data.replace(/\r\n/g, "\r").replace(/\n/g, "\r")) {
      switch (ch) {
        case "\r":
          this.#enter();
          break;
        case "\x7f":
        case "\b":
          if (this.#line.length > 0) {
            this.#line = [...this.#line].slice(0, -1).join("");
            this.term.write("\b \b");
          }
          break;
        case "\x03": // Ctrl-C
          if (this.#running) {
            this.term.write("^C");
            this.#callbacks.onInterrupt();
          } else {
            this.term.write("^C\r\n");
            this.#prompt();
          }
          break;
        case "\x04": // Ctrl-D
          if (this.#running && this.#line === "") this.#callbacks.onEof();
          break;
        case "\x0c": // Ctrl-L
          this.clear();
          break;
        default:
          if (ch >= " " || ch === "\t") {
            this.#line += ch;
            this.term.write(ch);
          }
      }
    }
  }

  #enter(): void {
    const line = this.#line;
    this.#line = "";
    this.term.write("\r\n");
    if (this.#running) {
      this.#callbacks.onStdin(`${line}\n`);
      return;
    }
    if (line.trim() === "") {
      this.term.write(PROMPT);
      return;
    }
    if (this.#history.at(-1) !== line) this.#history.push(line);
    if (this.#history.length > HISTORY_MAX) this.#history.shift();
    this.#historyAt = this.#history.length;
    this.#running = true;
    this.#callbacks.onCommand(line);
  }

  #walkHistory(step: number): void {
    if (this.#history.length === 0) return;
    this.#historyAt = Math.max(0, Math.min(this.#history.length, this.#historyAt + step));
    const line = this.#history[this.#historyAt] ?? "";
    this.term.write(`\r\x1b[2K${PROMPT}${line}`);
    this.#line = line;
  }
}
