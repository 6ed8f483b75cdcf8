/// <reference lib="dom" />
/**
 * The web IDE page: pairing (code, countdown, copyable command, new code),
 * approval (name, OS, version, SAS), the terminal, forgetting the bridge,
 * and reconnecting by itself. It talks to the relay only through the shared
 * IDE client (shared/ide_client.ts), which seals every command byte end to
 * end with the identity key kept in IndexedDB (web/browser_store.ts).
 *
 * @module
 */
import { backoffDelay } from "../shared/backoff.ts";
import { type ApprovalRequest, type E2eState, IdeClient, IdeClientError } from "../shared/ide_client.ts";
import { CODE_TTL_MS } from "../shared/protocol.ts";
import { IndexedDbPinStore, loadIdentity } from "./browser_store.ts";
import { TerminalView } from "./terminal_view.ts";

/** The indicator's states. */
type Indicator = "disconnected" | "waiting" | "approve" | "connected" | "reconnecting";

const INDICATOR_TEXT: Record<Indicator, string> = {
  disconnected: "No bridge",
  waiting: "Waiting for bridge",
  approve: "Approve?",
  connected: "Bridge connected",
  reconnecting: "Reconnecting",
};
/** The page's reconnect backoff (equal jitter): first delay ceiling ... */
const RECONNECT_BASE_MS = 500;
/** ... and its cap (the page retries sooner than the bridge, whose cap is 30 s). */
const RECONNECT_MAX_MS = 10_000;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

class App {
  #ide: IdeClient;
  #terminal: TerminalView;
  #pairing = false;
  #countdown?: ReturnType<typeof setInterval>;
  #retryTimer?: ReturnType<typeof setInterval>;
  #reconnects = 0;
  #socketUp = false;
  #running?: ReturnType<IdeClient["run"]>;
  #approval?: ApprovalRequest;

  constructor(identity: CryptoKeyPair) {
    this.#ide = new IdeClient({ identity, pins: new IndexedDbPinStore() });
    this.#terminal = new TerminalView($("terminal"), {
      onCommand: (line) => this.#run(line),
      onStdin: (text) => this.#running?.write(text),
      onEof: () => this.#running?.closeStdin(),
      onInterrupt: () => this.#running?.signal("SIGINT"),
    });
    this.#ide.onStateChange((state, detail) => this.#onState(state, detail));
    this.#ide.onApprovalRequest((request) => this.#showApproval(request));
    this.#ide.onClose(() => this.#onSocketLost());
    $("connect-bridge").addEventListener("click", () => this.#startPairing());
    $("new-code").addEventListener("click", () => this.#newCode());
    $("cancel-pairing").addEventListener("click", () => this.#stopPairing());
    $("copy-command").addEventListener(
      "click",
      () => this.#copy($("bridge-command").textContent ?? "", "copy-command"),
    );
    $("forget-bridge").addEventListener("click", () => this.#forget());
    $("approve").addEventListener("click", () => this.#decide(true));
    $("reject").addEventListener("click", () => this.#decide(false));
    $("clear-terminal").addEventListener("click", () => {
      this.#terminal.clear();
      this.#terminal.focus();
    });
    $("copy-selection").addEventListener("click", async () => {
      const copied = await this.#terminal.copySelection().catch(() => false);
      this.#flash("copy-selection", copied ? "Copied" : "Nothing selected");
    });
    // Escape on the approval dialog would close it undecided: keep it open.
    $<HTMLDialogElement>("approve-dialog").addEventListener("cancel", (e) => e.preventDefault());
    $("bridge-command").textContent = `coder1 bridge start --relay ${location.origin}`;
    this.#terminal.info("coder1 web IDE. Connect a bridge to run commands on your machine.");
    this.#setIndicator("disconnected");
  }

  /** Test hooks: read-only views of what the page shows. */
  debug() {
    return {
      terminalText: () => this.#terminal.text(),
      state: () => this.#ide.state,
      sas: () => this.#approval?.sas,
    };
  }

  async start(): Promise<void> {
    await this.#connect();
  }

  async #connect(): Promise<void> {
    try {
      await this.#ide.ensureSession();
      await this.#ide.connect();
      this.#socketUp = true;
      this.#reconnects = 0;
      if (this.#ide.state === "disconnected" && !this.#pairing) this.#setIndicator("disconnected");
    } catch {
      this.#onSocketLost();
    }
  }

  #onSocketLost(): void {
    if (!this.#socketUp && this.#reconnects > 0 && this.#retryTimer !== undefined) return;
    this.#socketUp = false;
    this.#setIndicator("reconnecting");
    const delay = backoffDelay(this.#reconnects++, { baseMs: RECONNECT_BASE_MS, maxMs: RECONNECT_MAX_MS });
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      void this.#connect();
    }, delay);
  }

  #onState(state: E2eState, detail?: string): void {
    const forget = $<HTMLButtonElement>("forget-bridge");
    forget.hidden = state !== "ready" && state !== "approval" && state !== "confirming";
    switch (state) {
      case "ready":
        this.#closeApproval();
        this.#stopPairing();
        this.#setIndicator("connected");
        this.#terminal.info(`Connected to ${this.#ide.bridgeInfo?.name ?? "the bridge"} (end-to-end encrypted).`);
        this.#terminal.focus();
        break;
      case "approval":
      case "confirming":
        this.#setIndicator("approve");
        if (state === "confirming") {
          $("approve-status").textContent = "Approved here. Now type the same digits on the bridge's terminal.";
        }
        break;
      case "handshaking":
        if (!this.#pairing) this.#setIndicator("reconnecting");
        break;
      case "refused":
      case "rejected":
        this.#closeApproval();
        this.#setIndicator("disconnected");
        if (detail) this.#terminal.info(`Bridge not used: ${detail}`);
        break;
      case "disconnected":
        this.#closeApproval();
        if (!this.#socketUp) break;
        this.#setIndicator(this.#pairing ? "waiting" : "disconnected");
        if (this.#running) this.#running = undefined;
        break;
    }
  }

  #setIndicator(state: Indicator): void {
    const el = $("bridge-indicator");
    el.dataset.state = state;
    $("bridge-state-text").textContent = INDICATOR_TEXT[state];
  }

  async #startPairing(): Promise<void> {
    this.#pairing = true;
    $("pairing").hidden = false;
    if (this.#ide.state === "disconnected") this.#setIndicator("waiting");
    await this.#newCode();
  }

  #stopPairing(): void {
    this.#pairing = false;
    $("pairing").hidden = true;
    clearInterval(this.#countdown);
    if (this.#ide.state === "disconnected" && this.#socketUp) this.#setIndicator("disconnected");
  }

  async #newCode(): Promise<void> {
    const error = $("pairing-error");
    const button = $<HTMLButtonElement>("new-code");
    error.textContent = "";
    try {
      const { code, expiresAt } = await this.#ide.requestPairingCode();
      $("pairing-code").textContent = `${code.slice(0, 3)} ${code.slice(3)}`;
      $("pairing-code").dataset.code = code;
      clearInterval(this.#countdown);
      const tick = () => {
        const left = Math.max(0, expiresAt - Date.now());
        const s = Math.ceil(left / 1000);
        $("pairing-expiry").textContent = left > 0
          ? `Expires in ${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`
          : "This code has expired: get a new code.";
        if (left <= 0) clearInterval(this.#countdown);
      };
      tick();
      this.#countdown = setInterval(tick, 1000);
    } catch (e) {
      if (e instanceof IdeClientError && e.status === 429) {
        const wait = e.retryAfter ?? Math.ceil(CODE_TTL_MS / 1000);
        error.textContent = `Too many codes for now. You can get a new code in ${wait} s.`;
        button.disabled = true;
        setTimeout(() => {
          button.disabled = false;
          error.textContent = "";
        }, wait * 1000);
      } else {
        error.textContent = `Cannot get a code: ${(e as Error).message}`;
      }
    }
  }

  #showApproval(request: ApprovalRequest): void {
    this.#approval = request;
    $("approve-name").textContent = request.name;
    $("approve-os").textContent = request.os;
    $("approve-version").textContent = request.version;
    $("approve-fingerprint").textContent = request.fingerprint;
    $("sas").textContent = request.sas;
    $("approve-status").textContent = "";
    for (const id of ["approve", "reject"]) $<HTMLButtonElement>(id).disabled = false;
    const dialog = $<HTMLDialogElement>("approve-dialog");
    if (!dialog.open) dialog.showModal();
    $("reject").focus();
  }

  async #decide(approve: boolean): Promise<void> {
    const request = this.#approval;
    if (!request) return;
    for (const id of ["approve", "reject"]) $<HTMLButtonElement>(id).disabled = true;
    try {
      if (approve) await request.approve();
      else {
        await request.reject();
        this.#closeApproval();
        this.#terminal.info("Rejected the bridge; its token is revoked.");
      }
    } catch (e) {
      $("approve-status").textContent = (e as Error).message;
    }
  }

  #closeApproval(): void {
    this.#approval = undefined;
    const dialog = $<HTMLDialogElement>("approve-dialog");
    if (dialog.open) dialog.close();
  }

  async #forget(): Promise<void> {
    try {
      await this.#ide.revokeBridge();
      this.#terminal.info("Forgot the bridge: its token is revoked. Connect a bridge to pair again.");
    } catch (e) {
      this.#terminal.info(`Cannot forget the bridge: ${(e as Error).message}`);
    }
  }

  #run(line: string): void {
    if (this.#ide.state !== "ready") {
      this.#terminal.output(new TextEncoder().encode("No approved bridge is connected.\n"), "err");
      this.#terminal.finished("not run", true);
      return;
    }
    const started = performance.now();
    const cmd = this.#ide.run(line, {
      onStdout: (b) => this.#terminal.output(b, "out"),
      onStderr: (b) => this.#terminal.output(b, "err"),
      // The command keeps running on the bridge; its output resumes without loss.
      onSuspended: () => this.#notice("[bridge unreachable; waiting for it, output will resume]"),
      onResumed: () => this.#notice("[bridge back; resuming output]"),
    });
    this.#running = cmd;
    cmd.exited.then((r) => {
      const status = r.signal ? `killed by ${r.signal}` : `exit ${r.code}`;
      this.#terminal.finished(`${status} · ${r.durationMs} ms`, r.code !== 0);
    }, (e: Error) => {
      this.#terminal.finished(`not finished: ${e.message} · ${Math.round(performance.now() - started)} ms`, true);
    }).finally(() => {
      if (this.#running === cmd) this.#running = undefined;
    });
  }

  /** A line of information between a running command's output lines. */
  #notice(text: string): void {
    this.#terminal.output(new TextEncoder().encode(`\r\n${text}\r\n`), "out");
  }

  async #copy(text: string, buttonId: string): Promise<void> {
    try {
      await navigator.clipboard.writeText(text);
      this.#flash(buttonId, "Copied");
    } catch {
      this.#flash(buttonId, "Select and copy");
    }
  }

  #flash(buttonId: string, text: string): void {
    const button = $(buttonId);
    const original = button.dataset.label ?? button.textContent ?? "";
    button.dataset.label = original;
    button.textContent = text;
    setTimeout(() => (button.textContent = original), 1500);
  }
}

const app = new App(await loadIdentity());
(globalThis as unknown as { coder1: ReturnType<App["debug"]> }).coder1 = app.debug();
await app.start();
