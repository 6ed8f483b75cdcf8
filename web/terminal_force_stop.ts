/// <reference lib="dom" />
/**
 * Force stop in the terminal tabs. Ctrl-C in a terminal goes to its
 * foreground job through the line discipline, as in any terminal; a program
 * may ignore it. When the tab is still busy (see `TerminalTab.busy`: not back
 * at a prompt) {@linkcode FORCE_STOP_AFTER_MS} after a Ctrl-C, the toolbar
 * offers "Force stop (SIGKILL)", which sends SIGKILL to the terminal's
 * foreground process group on the bridge (`term.signal`): the job ends, the
 * shell stays.
 *
 * @module
 */
import { FORCE_STOP_AFTER_MS } from "./stop_control.ts";
import type { TerminalTab } from "./terminal_tab.ts";

/** While the button shows, how often it checks whether the job ended by itself. */
const RECHECK_MS = 500;

/** The terminal toolbar's Force stop button (`#force-stop-terminal`). */
export class TerminalForceStop {
  #button: HTMLButtonElement;
  #active: () => TerminalTab | undefined;
  #notice: (text: string) => void;
  #timer?: ReturnType<typeof setTimeout>;
  #recheck?: ReturnType<typeof setInterval>;
  /** The tab the button is for (shown or pending). */
  #tab?: TerminalTab;

  /**
   * @param button The button.
   * @param options Which tab is active, and where to say what went wrong.
   */
  constructor(
    button: HTMLElement,
    options: { active: () => TerminalTab | undefined; notice: (text: string) => void },
  ) {
    this.#button = button as HTMLButtonElement;
    this.#active = options.active;
    this.#notice = options.notice;
    this.#button.addEventListener("click", () => void this.#kill());
    this.#hide();
  }

  /** Ctrl-C was typed into `tab`: offer Force stop if it is still busy a little later. */
  interrupted(tab: TerminalTab): void {
    if (this.#tab === tab && !this.#button.hidden) return;
    clearTimeout(this.#timer);
    this.#tab = tab;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.refresh(true);
    }, FORCE_STOP_AFTER_MS);
  }

  /** The tabs changed: the button shows only for the active tab, while it is busy. */
  refresh(show = false): void {
    const tab = this.#tab;
    const ok = tab !== undefined && tab === this.#active() && tab.remote !== undefined && tab.busy();
    if (!ok) return this.#hide(tab !== this.#active());
    if (!show && this.#button.hidden) return;
    this.#button.hidden = false;
    this.#button.disabled = false;
    this.#recheck ??= setInterval(() => this.refresh(), RECHECK_MS);
  }

  async #kill(): Promise<void> {
    const tab = this.#tab;
    if (!tab?.remote) return this.#hide(true);
    this.#button.disabled = true;
    try {
      await tab.remote.signal("SIGKILL");
    } catch (e) {
      this.#notice(`Cannot force-stop: ${(e as Error).message}. Closing the tab (×) hangs the terminal up.`);
    }
    this.#hide(true);
    tab.focus();
  }

  #hide(forget = true): void {
    clearInterval(this.#recheck);
    this.#recheck = undefined;
    this.#button.hidden = true;
    if (forget) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#tab = undefined;
    }
  }
}
