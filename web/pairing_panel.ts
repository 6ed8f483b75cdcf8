/// <reference lib="dom" />
/**
 * The page's "Connect a bridge" panel: the session's pairing code in large
 * type with its countdown, and what became of it. A code is shown only while
 * it can still be typed: once a bridge used it, or it expired, or the pairing
 * it started ended, the code and its countdown go and the panel says what
 * happened, offering a new code. The relay gives every tab of a browser
 * session the same live code (docs/HTTP_API.md, "Pairing codes"); a tab that
 * gets one tells the others (web/pairing_sync.ts), so they all show it.
 *
 * @module
 */
import { IdeClientError } from "../shared/ide_client_error.ts";
import { CODE_TTL_MS } from "../shared/protocol.ts";

/** A pairing code as the relay gives it. */
export interface IssuedCode {
  /** The 6 digits. */
  code: string;
  /** When it stops working (ms since the epoch). */
  expiresAt: number;
}

/** What the panel asks of the page. */
export interface PairingPanelOptions {
  /** Asks the relay for the session's code (`replace`: a new one even while one is live). */
  request: (replace: boolean) => Promise<IssuedCode>;
  /** A code came from the relay (tell the other tabs). */
  onCode?: (issued: IssuedCode) => void;
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** The pairing panel (`#pairing` in index.html). */
export class PairingPanel {
  #opts: PairingPanelOptions;
  #shown?: IssuedCode;
  #countdown?: ReturnType<typeof setInterval>;
  #retry?: ReturnType<typeof setTimeout>;

  /** @param options How to get codes, and who hears of them. */
  constructor(options: PairingPanelOptions) {
    this.#opts = options;
    $("pairing").classList.add("no-code");
    $("new-code").addEventListener("click", () => void this.fetchCode(true));
  }

  /** Whether the panel is open. */
  get isOpen(): boolean {
    return !$("pairing").hidden;
  }

  /** The code shown, while one is. */
  get code(): IssuedCode | undefined {
    return this.#shown;
  }

  /** Opens the panel with the session's code (the live one, or a new one). */
  async open(): Promise<void> {
    $("pairing").hidden = false;
    if (!this.#shown) await this.fetchCode(false);
  }

  /** Closes the panel and forgets the code it showed. */
  close(): void {
    $("pairing").hidden = true;
    this.#clearCode();
    this.#status("");
    $("new-code").hidden = false;
  }

  /**
   * Gets the session's code from the relay and shows it.
   *
   * @param replace A new code even while one is live (the New code button).
   */
  async fetchCode(replace: boolean): Promise<void> {
    const error = $("pairing-error");
    error.textContent = "";
    try {
      const issued = await this.#opts.request(replace);
      this.showCode(issued);
      this.#opts.onCode?.(issued);
    } catch (e) {
      if (e instanceof IdeClientError && e.status === 429) {
        const wait = e.retryAfter ?? Math.ceil(CODE_TTL_MS / 1000);
        const button = $<HTMLButtonElement>("new-code");
        error.textContent = `Too many codes for now. You can get a new code in ${wait} s.`;
        button.disabled = true;
        clearTimeout(this.#retry);
        this.#retry = setTimeout(() => {
          button.disabled = false;
          error.textContent = "";
        }, wait * 1000);
      } else {
        error.textContent = `Cannot get a code: ${(e as Error).message}`;
      }
    }
  }

  /**
   * Shows `issued` with its countdown (a code this tab got, or one another
   * tab of the session got: the same live code, or its replacement).
   */
  showCode(issued: IssuedCode): void {
    if (issued.expiresAt <= Date.now()) return;
    this.#shown = issued;
    this.#status("");
    const { code, expiresAt } = issued;
    $("pairing-code").textContent = `${code.slice(0, 3)} ${code.slice(3)}`;
    $("pairing-code").dataset.code = code;
    $("pairing").classList.remove("no-code");
    $("new-code").textContent = "New code";
    $("new-code").hidden = false;
    clearInterval(this.#countdown);
    const tick = () => {
      const left = Math.max(0, expiresAt - Date.now());
      if (left <= 0) {
        this.#clearCode();
        $("new-code").hidden = false;
        return this.#status("That code expired unused (codes last 5 minutes). Get a new code to pair.", "error");
      }
      const s = Math.ceil(left / 1000);
      $("pairing-expiry").textContent = `Expires in ${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    };
    tick();
    this.#countdown = setInterval(tick, 1000);
  }

  /**
   * A bridge used the code: it cannot be typed again, so it goes.
   *
   * @param text What is going on now (e.g. compare the digits).
   */
  codeUsed(text: string): void {
    if (!this.isOpen) return;
    this.#clearCode();
    this.#status(text);
    // A pairing is under way: a new code now would only confuse; it comes back if this one ends.
    $("new-code").hidden = true;
  }

  /**
   * The pairing this code started ended without an approved bridge: say
   * why and offer a new code (the old one is used up).
   *
   * @param text What happened.
   */
  ended(text: string): void {
    $("pairing").hidden = false;
    this.#clearCode();
    this.#status(text, "error");
    $("new-code").hidden = false;
    $<HTMLButtonElement>("new-code").focus();
  }

  #clearCode(): void {
    clearInterval(this.#countdown);
    this.#shown = undefined;
    $("pairing").classList.add("no-code");
    $("pairing-code").textContent = "";
    delete $("pairing-code").dataset.code;
    $("pairing-expiry").textContent = "";
    $("new-code").textContent = "Get a new code";
  }

  #status(text: string, kind?: "error"): void {
    const el = $("pairing-status");
    el.textContent = text;
    el.hidden = !text;
    el.classList.toggle("error", kind === "error");
  }
}
