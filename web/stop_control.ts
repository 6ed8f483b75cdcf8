/// <reference lib="dom" />
/**
 * The runner's Stop button. While a command runs it reads "Stop (Ctrl-C)"
 * and sends SIGINT, like Ctrl-C in the runner. A command may ignore SIGINT
 * (a `trap '' INT`, a program that catches it): if it still runs
 * {@linkcode FORCE_STOP_AFTER_MS} after an interrupt, the button turns into
 * "Force stop (SIGKILL)", and a line in the output says so; that sends
 * SIGKILL to the command's process group on the bridge, which no program
 * can catch.
 *
 * @module
 */

/** After an interrupt, how long a command may take to end before Force stop is offered. */
export const FORCE_STOP_AFTER_MS = 3_000;

/** What the button asks of the page. */
export interface StopControlOptions {
  /** Sends a signal to the running command's process group. */
  signal: (signal: "SIGINT" | "SIGKILL") => void;
  /** Writes a line of information between the command's output lines. */
  notice: (text: string) => void;
}

/** The Stop / Force stop button (`#stop-command`). */
export class StopControl {
  #button: HTMLButtonElement;
  #opts: StopControlOptions;
  #timer?: ReturnType<typeof setTimeout>;
  #force = false;

  /**
   * @param button The button.
   * @param options How to signal, and where to say so.
   */
  constructor(button: HTMLElement, options: StopControlOptions) {
    this.#button = button as HTMLButtonElement;
    this.#opts = options;
    this.#button.addEventListener("click", () => this.#force ? this.#kill() : this.interrupt());
    this.ended();
  }

  /** A command started: Stop is offered. */
  started(): void {
    this.#set(false);
    this.#button.hidden = false;
  }

  /** Ctrl-C or Stop: SIGINT now, Force stop if the command is still running a little later. */
  interrupt(): void {
    if (this.#button.hidden) return;
    this.#opts.signal("SIGINT");
    if (this.#timer !== undefined || this.#force) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#button.hidden) return;
      this.#set(true);
      this.#opts.notice(
        `[still running ${FORCE_STOP_AFTER_MS / 1000} s after Ctrl-C: Force stop (SIGKILL) in the toolbar ends it]`,
      );
    }, FORCE_STOP_AFTER_MS);
  }

  /** The command ended (or is no longer this page's): the button goes. */
  ended(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#set(false);
    this.#button.hidden = true;
  }

  #kill(): void {
    this.#opts.signal("SIGKILL");
    this.#button.disabled = true;
    this.#button.textContent = "Stopping…";
  }

  #set(force: boolean): void {
    this.#force = force;
    this.#button.disabled = false;
    this.#button.textContent = force ? "Force stop (SIGKILL)" : "Stop (Ctrl-C)";
    this.#button.classList.toggle("danger", force);
    this.#button.title = force
      ? "Send SIGKILL to the command's process group: it ends at once, without cleaning up"
      : "Send SIGINT to the command, as Ctrl-C does";
  }
}
