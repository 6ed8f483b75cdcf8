/// <reference lib="dom" />
/**
 * The web IDE page: pairing (code, countdown, copyable command, new code),
 * approval (name, OS, version, SAS), terminal tabs (web/terminal_tabs.ts) or,
 * for a bridge without terminals, the one-shot command runner
 * (web/command_view.ts), the page's own identity-key fingerprint, forgetting
 * the bridge, and reconnecting by itself. It talks to the relay only through
 * the shared IDE client (shared/ide_client.ts), which seals every byte typed
 * and shown end to end with the identity key kept in IndexedDB
 * (web/browser_store.ts).
 *
 * @module
 */
import { backoffDelay } from "../shared/backoff.ts";
import { bridgeStartCommands } from "../shared/bridge_command.ts";
import { fingerprint, rawPublicKey } from "../shared/e2e_crypto.ts";
import { type ApprovalRequest, type E2eState, IdeClient } from "../shared/ide_client.ts";
import { APPROVAL_TIMEOUT_MS } from "../shared/protocol.ts";
import { IndexedDbPinStore, loadIdentity } from "./browser_store.ts";
import { BridgeList } from "./bridge_list.ts";
import { CommandView } from "./command_view.ts";
import { confirmDialog } from "./confirm_dialog.ts";
import { PairingPanel } from "./pairing_panel.ts";
import { type ApprovalPhase, firstPairingLock, PairingSync, type SharedApproval } from "./pairing_sync.ts";
import { StopControl } from "./stop_control.ts";
import { TerminalForceStop } from "./terminal_force_stop.ts";
import { TerminalTabs } from "./terminal_tabs.ts";

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

/** What the main area shows: nothing yet, terminal tabs, or the one-shot runner. */
type Mode = "none" | "terminals" | "runner";

/** Why the runner stands in for terminals, by the bridge's `terminals` in `e2e.info`. */
const NO_TERMINALS: Record<string, string> = {
  disabled: "This bridge runs with --no-terminal: terminals are turned off. " +
    "Commands run one at a time below, without a terminal (no vim, top or other interactive programs).",
  "unsupported-os": "This bridge's OS has no terminals in coder1 yet (Windows, for now). " +
    "Commands run one at a time below, without a terminal.",
  unknown: "This bridge predates terminals: update coder1 on that machine for terminals. " +
    "Commands run one at a time below, without a terminal.",
};

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

class App {
  #ide: IdeClient;
  #tabs: TerminalTabs;
  #runner?: CommandView;
  #mode: Mode = "none";
  #syncing = false;
  #restored = false;
  /** The bridge Forget last revoked (its button stays hidden while it is the last one named). */
  #forgotten?: string;
  #pairing = false;
  #panel: PairingPanel;
  #sync: PairingSync;
  /** The approval dialog shows another tab's request (this tab waits its turn to pair). */
  #shared?: SharedApproval;
  /** When the current pairing's approval dialog opened (here or in another tab), until it is settled. */
  #approvalSince?: number;
  /** The user approved the current pairing (here or in another tab). */
  #approvedHere = false;
  #stop: StopControl;
  #forceStop?: TerminalForceStop;
  #retryTimer?: ReturnType<typeof setInterval>;
  #reconnects = 0;
  #socketUp = false;
  #running?: ReturnType<IdeClient["run"]>;
  #approval?: ApprovalRequest;
  #closeAnswer?: (close: boolean) => void;
  #fingerprint = "";
  /** The latest session check (ensureSession), which a pairing code needs first. */
  #session?: Promise<unknown>;

  constructor(identity: CryptoKeyPair) {
    this.#ide = new IdeClient({ identity, pins: new IndexedDbPinStore(), firstPairingLock: firstPairingLock() });
    this.#panel = new PairingPanel({
      request: async (replace) => {
        // A click right after the page loaded waits for its session (the code is bound to it).
        await this.#session?.catch(() => {});
        return await this.#ide.requestPairingCode({ replace });
      },
      onCode: ({ code, expiresAt }) => this.#sync.post({ t: "code", code, expiresAt }),
    });
    this.#sync = new PairingSync({
      onCode: (issued) => this.#panel.isOpen && this.#panel.showCode(issued),
      onApproval: (request, phase, status, failed) => this.#onSharedApproval(request, phase, status, failed),
      onDecide: (id, approve) => id === this.#approvalId() && void this.#decide(approve),
      onAsk: () =>
        this.#ide.state === "confirming"
          ? this.#shareApproval("confirming", $("approve-status").textContent ?? undefined)
          : this.#shareApproval("open"),
    });
    this.#stop = new StopControl($("stop-command"), {
      signal: (signal) => this.#running?.signal(signal),
      notice: (text) => this.#notice(text),
    });
    this.#tabs = new TerminalTabs({
      tablist: $("tabs"),
      panels: $("terminals"),
      open: (size) => this.#ide.openTerminal(size),
      attach: (id, size) => this.#ide.attachTerminal(id, size),
      confirmClose: (label) => this.#confirmClose(label),
      onChange: () => this.#drawWorkspace(),
      onSearchKey: () => this.#openSearch(),
      highWaterBytes: _testParam("highwater"),
      onInterrupt: (tab) => this.#forceStop?.interrupted(tab),
      onSearchResults: (index, count) => {
        $("search-count").textContent = count === 0
          ? "No matches"
          : index < 0
          ? `${count}+ matches`
          : `${index + 1} of ${count}`;
      },
    });
    const bridges = new BridgeList(this.#ide, (text) => this.#info(text));
    this.#ide.onStateChange((state, detail) => {
      this.#onState(state, detail);
      bridges.refresh();
    });
    this.#ide.onApprovalRequest((request) => this.#showApproval(request));
    this.#ide.onClose(() => this.#onSocketLost());
    $("connect-bridge").addEventListener("click", () => this.#startPairing());
    $("cancel-pairing").addEventListener("click", () => this.#stopPairing());
    $("copy-command").addEventListener(
      "click",
      () => this.#copy($("bridge-command").textContent ?? "", "copy-command"),
    );
    $("forget-bridge").addEventListener("click", () => this.#askForget());
    $("approve").addEventListener("click", () => this.#decide(true));
    $("reject").addEventListener("click", () => this.#decide(false));
    $("new-terminal").addEventListener("click", () => this.#openTerminal());
    $("clear-terminal").addEventListener("click", () => {
      this.#runner?.clear();
      this.#runner?.focus();
    });
    $("copy-selection").addEventListener("click", async () => {
      const copied = await this.#runner?.copySelection().catch(() => false);
      this.#flash("copy-selection", copied ? "Copied" : "Nothing selected");
    });
    this.#wireSearch();
    this.#wireCloseDialog();
    this.#forceStop = new TerminalForceStop($("force-stop-terminal"), {
      active: () => this.#tabs.active,
      notice: (text) => this.#info(text),
    });
    // Escape on the approval dialog would close it undecided: keep it open.
    $<HTMLDialogElement>("approve-dialog").addEventListener("cancel", (e) => e.preventDefault());
    const start = bridgeStartCommands(location.origin);
    $("bridge-command").textContent = start.installed;
    $("bridge-command-checkout").textContent = start.fromCheckout;
    $("install-command").textContent = start.install;
    this.#setIndicator("disconnected");
    this.#drawWorkspace();
    void this.#showFingerprint(identity);
    // A tab opened while another is pairing shows that tab's approval request.
    this.#sync.post({ t: "ask" });
  }

  /** Test hooks: read-only views of what the page shows. */
  debug() {
    const active = () => this.#tabs.active;
    return {
      /** The text of what the main area shows: the active terminal, or the runner. */
      terminalText: () => (this.#mode === "runner" ? this.#runner?.text() : active()?.text()) ?? "",
      /** The active terminal's visible screen, row by row. */
      screenText: () => active()?.screen() ?? "",
      /** The active terminal's cursor line, left of the cursor (a prompt ends in "$ " or "# "). */
      cursorLine: () => {
        const buffer = active()?.term.buffer.active;
        return buffer?.getLine(buffer.baseY + buffer.cursorY)?.translateToString(false, 0, buffer.cursorX) ?? "";
      },
      /**
       * The cell column just after the first `text` on the active terminal's
       * screen or scrollback (wide characters take two cells), or -1.
       */
      columnAfter: (text: string) => {
        const buffer = active()?.term.buffer.active;
        for (let y = 0; buffer && y < buffer.length; y++) {
          const line = buffer.getLine(y);
          let seen = "";
          for (let x = 0; line && x < line.length; x++) {
            seen += line.getCell(x)?.getChars() ?? "";
            if (seen.endsWith(text)) return x + 1;
          }
        }
        return -1;
      },
      /** Whether the active terminal shows a full-screen program's alternate screen. */
      alternateScreen: () => active()?.term.buffer.active.type === "alternate",
      /** The active terminal's size. */
      size: () => ({ cols: active()?.term.cols ?? 0, rows: active()?.term.rows ?? 0 }),
      tabs: () =>
        this.#tabs.tabs.map((t) => ({
          id: t.id,
          label: this.#tabs.label(t),
          state: t.state,
          exit: t.exit,
          active: t === active(),
          catchUps: t.catchUps,
        })),
      mode: () => this.#mode,
      fingerprint: () => this.#fingerprint,
      state: () => this.#ide.state,
      sas: () => this.#approval?.sas ?? this.#shared?.sas,
    };
  }

  /**
   * Test-only hooks (the page loaded with `?test`): record what the active
   * terminal receives, byte for byte, and hash a stretch of it.
   */
  testHooks() {
    let chunks: Uint8Array[] = [];
    let off: (() => void) | undefined;
    return {
      /** Starts recording the active terminal's output (from the RemoteTerminal, before drawing). */
      record: () => {
        off?.();
        chunks = [];
        off = this.#tabs.active?.remote?.onData((bytes) => chunks.push(bytes));
        return off !== undefined;
      },
      /** Bytes recorded so far. */
      recorded: () => chunks.reduce((n, c) => n + c.byteLength, 0),
      /**
       * The SHA-256 (hex) and length of what came between the first `begin`
       * and the next `end` after it, or undefined while `end` has not come.
       */
      digestBetween: async (begin: string, end: string) => {
        const all = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
        let at = 0;
        for (const c of chunks) all.set(c, (at += c.byteLength) - c.byteLength);
        const enc = new TextEncoder();
        const b = _indexOf(all, enc.encode(begin), 0);
        if (b < 0) return undefined;
        const from = b + enc.encode(begin).byteLength;
        const e = _indexOf(all, enc.encode(end), from);
        if (e < 0) return undefined;
        const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", all.subarray(from, e)));
        return { bytes: e - from, sha256: [...hash].map((x) => x.toString(16).padStart(2, "0")).join("") };
      },
    };
  }

  async start(): Promise<void> {
    await this.#connect();
  }

  async #connect(): Promise<void> {
    try {
      this.#session = this.#ide.ensureSession();
      await this.#session;
      await this.#ide.connect();
      this.#socketUp = true;
      this.#reconnects = 0;
      if (this.#ide.state === "disconnected" && !this.#pairing) this.#setIndicator("disconnected");
      this.#drawWorkspace();
    } catch {
      this.#onSocketLost();
    }
  }

  #onSocketLost(): void {
    if (!this.#socketUp && this.#reconnects > 0 && this.#retryTimer !== undefined) return;
    this.#socketUp = false;
    this.#setIndicator("reconnecting");
    this.#drawWorkspace();
    const delay = backoffDelay(this.#reconnects++, { baseMs: RECONNECT_BASE_MS, maxMs: RECONNECT_MAX_MS });
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      void this.#connect();
    }, delay);
  }

  #onState(state: E2eState, detail?: string): void {
    const forget = $<HTMLButtonElement>("forget-bridge");
    // Offline too: the relay revokes a bridge that is not connected (the last one the relay named).
    const last = this.#ide.bridge?.bridgeId;
    forget.hidden = state !== "ready" && state !== "approval" && state !== "confirming" &&
      (last === undefined || last === this.#forgotten);
    switch (state) {
      case "ready":
        this.#shareApproval("done");
        this.#closeApproval();
        this.#stopPairing();
        this.#setIndicator("connected");
        this.#info(`Connected to ${this.#ide.bridgeInfo?.name ?? "the bridge"} (end-to-end encrypted).`);
        this.#showMode();
        break;
      case "approval":
      case "confirming":
        this.#setIndicator("approve");
        this.#panel.codeUsed(
          "A bridge used this code. Compare the digits in the dialog with the ones on the bridge's terminal.",
        );
        if (state === "confirming") {
          this.#approvedHere = true;
          const status = "Approved. Now type the same digits on the bridge's terminal.";
          $("approve-status").textContent = status;
          this.#shareApproval("confirming", status);
        }
        break;
      case "handshaking":
        if (this.#pairing) this.#panel.codeUsed("A bridge used this code. Setting up the encrypted link…");
        else if (!this.#shared) this.#setIndicator("reconnecting");
        break;
      case "refused":
      case "rejected":
        if (state === "rejected") {
          const why = "The bridge was rejected: its token is revoked and nothing was run. Get a new code to pair.";
          this.#shareApproval("done", why, true);
          this.#pairingEnded(why);
        } else {
          this.#shareApproval("done");
          if (detail) this.#info(`Bridge not used: ${detail}`);
        }
        this.#closeApproval();
        this.#setIndicator("disconnected");
        break;
      case "disconnected": {
        // The bridge left while its pairing waited for approval: the bridge ended it.
        const why = this.#approvalSince !== undefined && this.#socketUp ? this.#whyEnded() : undefined;
        this.#shareApproval("done", why, why !== undefined);
        this.#closeApproval();
        if (!this.#socketUp) break;
        if (why) this.#pairingEnded(why);
        // Waiting only while a code can still be typed (not after a pairing ended, whichever tab heard first).
        this.#setIndicator(this.#pairing && this.#panel.code && !why ? "waiting" : "disconnected");
        if (this.#running) this.#running = undefined;
        this.#stop.ended();
        break;
      }
    }
    this.#drawWorkspace();
  }

  #setIndicator(state: Indicator): void {
    const el = $("bridge-indicator");
    el.dataset.state = state;
    $("bridge-state-text").textContent = INDICATOR_TEXT[state];
  }

  async #startPairing(): Promise<void> {
    this.#pairing = true;
    $("message").textContent = "";
    if (this.#ide.state === "disconnected") this.#setIndicator("waiting");
    await this.#panel.open();
  }

  #stopPairing(): void {
    this.#pairing = false;
    this.#panel.close();
    if (this.#ide.state === "disconnected" && this.#socketUp) this.#setIndicator("disconnected");
  }

  /** The pairing ended without an approved bridge: the panel says why and offers a new code. */
  #pairingEnded(text: string): void {
    this.#pairing = true;
    this.#panel.ended(text);
    // The panel says it; the runner's output says it too.
    if (this.#mode === "runner") this.#runner?.info(text);
  }

  /**
   * Why the bridge went away while its pairing waited for approval. The
   * bridge ends a pairing when the digits typed there do not match, when its
   * approval time runs out (5 minutes, or its --approval-timeout) and when it
   * is stopped; it does not say which to the page, its terminal does.
   */
  #whyEnded(): string {
    const waited = Date.now() - (this.#approvalSince ?? Date.now());
    const after = " Nothing was run. Get a new code to pair again.";
    if (waited >= APPROVAL_TIMEOUT_MS - 5_000) {
      return `The pairing timed out: nobody finished approving within ${APPROVAL_TIMEOUT_MS / 60_000} minutes, ` +
        `so the bridge stopped waiting.${after}`;
    }
    return (this.#approvedHere
      ? "The bridge refused the pairing after it was approved here"
      : "The bridge ended the pairing before it was approved here") +
      ": the digits typed on its terminal did not match, its time to approve ran out, or it was stopped there " +
      `(its terminal says which).${after}`;
  }

  #showApproval(request: ApprovalRequest): void {
    this.#approval = request;
    this.#shared = undefined;
    this.#openApproval(request);
    this.#shareApproval("open");
  }

  /** The id the tabs know the current request by (bridge id and SAS). */
  #approvalId(): string | undefined {
    const r = this.#approval;
    return r ? `${r.bridgeId}/${r.sas}` : undefined;
  }

  /** Tells the other tabs where this tab's approval request stands. */
  #shareApproval(phase: ApprovalPhase, status?: string, failed = false): void {
    const r = this.#approval ?? (phase !== "open" ? this.#lastShared : undefined);
    if (!r) return;
    const request: SharedApproval = {
      id: `${r.bridgeId}/${r.sas}`,
      bridgeId: r.bridgeId,
      sas: r.sas,
      name: r.name,
      os: r.os,
      version: r.version,
      fingerprint: r.fingerprint,
    };
    this.#lastShared = phase === "done" ? undefined : r;
    this.#sync.post({ t: "approval", request, phase, status, failed });
  }

  /** The request this tab holds, kept after approval until it is settled (for the other tabs). */
  #lastShared?: ApprovalRequest;

  /** Another tab's approval request: shown here too, answered from here too. */
  #onSharedApproval(request: SharedApproval, phase: ApprovalPhase, status?: string, failed = false): void {
    if (this.#approval) return; // This tab holds its own request.
    if (phase === "done") {
      if (this.#shared?.id !== request.id) return;
      this.#closeApproval();
      if (failed && status) {
        this.#setIndicator("disconnected");
        this.#pairingEnded(status);
      }
      return;
    }
    if (this.#ide.state === "ready") return;
    this.#shared = request;
    this.#openApproval(request);
    this.#setIndicator("approve");
    this.#panel.codeUsed(
      "A bridge used this code. Compare the digits in the dialog with the ones on the bridge's terminal.",
    );
    if (phase === "confirming") {
      this.#approvedHere = true;
      for (const id of ["approve", "reject"]) $<HTMLButtonElement>(id).disabled = true;
      $("approve-status").textContent = status ?? "";
    }
  }

  #openApproval(request: Omit<SharedApproval, "id">): void {
    this.#approvalSince ??= Date.now();
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
    const shared = this.#shared;
    if (!request && shared) {
      // The tab that runs this handshake acts on it; every tab's dialog follows.
      for (const id of ["approve", "reject"]) $<HTMLButtonElement>(id).disabled = true;
      this.#sync.post({ t: "decide", id: shared.id, approve });
      return;
    }
    if (!request) return;
    for (const id of ["approve", "reject"]) $<HTMLButtonElement>(id).disabled = true;
    try {
      if (approve) await request.approve();
      else {
        // The state listener says so and offers a new code.
        await request.reject();
      }
    } catch (e) {
      // Never claim a revocation that did not happen: say so, and where to retry.
      $("approve-status").textContent = approve
        ? (e as Error).message
        : `Rejected, but the relay did not revoke its token (${(e as Error).message}). Revoke it in the Bridges list.`;
      if (!approve) this.#info("The rejected bridge's token was NOT revoked: use Revoke in the Bridges list.");
    }
  }

  #closeApproval(): void {
    this.#approval = undefined;
    this.#shared = undefined;
    this.#approvalSince = undefined;
    this.#approvedHere = false;
    const dialog = $<HTMLDialogElement>("approve-dialog");
    if (dialog.open) dialog.close();
  }

  /** Forgetting cannot be undone from the page: ask first. */
  async #askForget(): Promise<void> {
    const name = this.#ide.bridgeInfo?.name;
    $("forget-name").textContent = name ? `“${name}”` : "this bridge";
    if (await confirmDialog($<HTMLDialogElement>("forget-dialog"), $("forget-confirm"), $("forget-cancel"))) {
      await this.#forget();
    }
  }

  async #forget(): Promise<void> {
    try {
      const bridgeId = this.#ide.bridge?.bridgeId;
      await this.#ide.revokeBridge();
      this.#forgotten = bridgeId;
      $("forget-bridge").hidden = true;
      this.#tabs.clear();
      this.#restored = false;
      this.#setMode("none");
      this.#info("Forgot the bridge: its token is revoked. Connect a bridge to pair again.");
    } catch (e) {
      this.#info(`Cannot forget the bridge: ${(e as Error).message}`);
    }
  }

  #run(line: string): void {
    const runner = this.#runner!;
    if (this.#ide.state !== "ready") {
      runner.output(new TextEncoder().encode("No approved bridge is connected.\n"), "err");
      runner.finished("not run", true);
      return;
    }
    const started = performance.now();
    const cmd = this.#ide.run(line, {
      onStdout: (b) => runner.output(b, "out"),
      onStderr: (b) => runner.output(b, "err"),
      // The command keeps running on the bridge; its output resumes without loss.
      onSuspended: () => this.#notice("[bridge unreachable; waiting for it, output will resume]"),
      onResumed: () => this.#notice("[bridge back; resuming output]"),
    });
    this.#running = cmd;
    this.#stop.started();
    cmd.exited.then((r) => {
      const status = r.signal ? `killed by ${r.signal}` : `exit ${r.code}`;
      runner.finished(`${status} · ${r.durationMs} ms`, r.code !== 0);
    }, (e: Error) => {
      runner.finished(`not finished: ${e.message} · ${Math.round(performance.now() - started)} ms`, true);
    }).finally(() => {
      if (this.#running !== cmd) return;
      this.#running = undefined;
      this.#stop.ended();
    });
  }

  /** A line of information between a running command's output lines. */
  #notice(text: string): void {
    this.#runner?.output(new TextEncoder().encode(`\r\n${text}\r\n`), "out");
  }

  /** A line of information for the user (the runner prints it too). */
  #info(text: string): void {
    $("message").textContent = text;
    if (this.#mode === "runner") this.#runner?.info(text);
  }

  /** The bridge is ready: terminals if it runs them, the one-shot runner if not. */
  #showMode(): void {
    const support = this.#ide.terminalSupport;
    if (support === "available") {
      this.#setMode("terminals");
      void this.#syncTerminals();
      return;
    }
    // Terminals of an earlier bridge run are gone with it.
    this.#tabs.clear();
    this.#setMode("runner", NO_TERMINALS[support ?? "unknown"] ?? NO_TERMINALS.unknown);
    this.#runner?.focus();
  }

  #setMode(mode: Mode, notice?: string): void {
    this.#mode = mode;
    $("terminal-notice").hidden = !notice;
    $("terminal-notice").textContent = notice ?? "";
    $("workspace").hidden = mode === "runner";
    $("runner").hidden = mode !== "runner";
    if (mode === "runner" && !this.#runner) {
      // Made once it is shown: xterm.js measures its element when it opens.
      this.#runner = new CommandView($("terminal"), {
        onCommand: (line) => this.#run(line),
        onStdin: (text) => this.#running?.write(text),
        onEof: () => this.#running?.closeStdin(),
        onInterrupt: () => this.#stop.interrupt(),
      });
      this.#runner.info("Connected. Commands run one at a time on the bridge.");
    }
    this.#drawWorkspace();
  }

  /**
   * Brings the bridge's terminals back as tabs (after a reload, or after the
   * bridge was away); on the page's first visit to a bridge without any,
   * opens one.
   */
  async #syncTerminals(): Promise<void> {
    if (this.#syncing) return;
    this.#syncing = true;
    try {
      const list = await this.#ide.listTerminals();
      this.#tabs.restore(list);
      if (!this.#restored && this.#tabs.tabs.length === 0) this.#tabs.openNew();
      this.#restored = true;
    } catch (e) {
      this.#info(`Cannot list the bridge's terminals: ${(e as Error).message}`);
    } finally {
      this.#syncing = false;
    }
  }

  #openTerminal(): void {
    if (this.#ide.state !== "ready" || this.#mode !== "terminals") return;
    try {
      this.#tabs.openNew();
    } catch (e) {
      this.#info(`Cannot open a terminal: ${(e as Error).message}`);
    }
  }

  /** The tab strip's buttons and the empty area's words follow the connection and the tabs. */
  #drawWorkspace(): void {
    const ready = this.#ide.state === "ready";
    const terminals = this.#mode === "terminals";
    $<HTMLButtonElement>("new-terminal").disabled = !(ready && terminals);
    $<HTMLButtonElement>("search-toggle").disabled = this.#tabs.tabs.length === 0;
    $("workspace").classList.toggle("offline", !ready);
    const empty = $("terminals-empty");
    empty.hidden = this.#tabs.tabs.length > 0;
    empty.textContent = ready && terminals
      ? "No terminal open. New terminal (+) opens one."
      : this.#ide.state === "disconnected" && !this.#socketUp
      ? "Reaching the relay…"
      : "Connect a bridge to open terminals on your machine. A paired bridge comes back by itself.";
    if (this.#tabs.tabs.length === 0 && !$("search-bar").hidden) this.#closeSearch();
    this.#forceStop?.refresh();
  }

  async #showFingerprint(identity: CryptoKeyPair): Promise<void> {
    this.#fingerprint = await fingerprint(await rawPublicKey(identity.publicKey));
    $("ide-fingerprint").textContent = this.#fingerprint;
  }

  #wireSearch(): void {
    const input = $<HTMLInputElement>("search-input");
    const find = (backwards: boolean) => this.#tabs.active?.find(input.value, backwards);
    $("search-toggle").addEventListener("click", () => this.#openSearch());
    $("search-bar").addEventListener("submit", (e) => {
      e.preventDefault();
      find(false);
    });
    $("search-prev").addEventListener("click", () => find(true));
    $("search-close").addEventListener("click", () => this.#closeSearch());
    input.addEventListener("input", () => {
      if (!input.value) $("search-count").textContent = "";
      find(false);
    });
    input.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.preventDefault();
        this.#closeSearch();
      } else if (e.key === "Enter" && e.shiftKey) {
        e.preventDefault();
        find(true);
      }
    });
    // Ctrl-Shift-F from anywhere on the page (inside a terminal, the tab handles it).
    document.addEventListener("keydown", (e) => {
      if (e.ctrlKey && e.shiftKey && e.code === "KeyF" && this.#mode === "terminals") {
        e.preventDefault();
        this.#openSearch();
      }
    });
  }

  #openSearch(): void {
    if (!this.#tabs.active) return;
    $("search-bar").hidden = false;
    const input = $<HTMLInputElement>("search-input");
    input.focus();
    input.select();
    if (input.value) this.#tabs.active.find(input.value);
  }

  #closeSearch(): void {
    $("search-bar").hidden = true;
    $("search-count").textContent = "";
    for (const tab of this.#tabs.tabs) tab.clearSearch();
    this.#tabs.active?.focus();
  }

  #wireCloseDialog(): void {
    const dialog = $<HTMLDialogElement>("close-dialog");
    const answer = (close: boolean) => {
      this.#closeAnswer?.(close);
      this.#closeAnswer = undefined;
      if (dialog.open) dialog.close();
    };
    $("close-confirm").addEventListener("click", () => answer(true));
    $("close-cancel").addEventListener("click", () => answer(false));
    dialog.addEventListener("close", () => answer(false));
  }

  /** Asks whether to hang up a terminal that is running something. */
  #confirmClose(label: string): Promise<boolean> {
    this.#closeAnswer?.(false);
    const { promise, resolve } = Promise.withResolvers<boolean>();
    this.#closeAnswer = resolve;
    $("close-name").textContent = `“${label}”`;
    const dialog = $<HTMLDialogElement>("close-dialog");
    if (!dialog.open) dialog.showModal();
    $("close-cancel").focus();
    return promise;
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

/** A number from the page's query, honoured only on a test page (`?test`). */
function _testParam(name: string): number | undefined {
  const query = new URLSearchParams(location.search);
  const value = Number(query.get(name));
  return query.has("test") && Number.isSafeInteger(value) && value > 0 ? value : undefined;
}

/** The first index of `needle` in `haystack` at or after `from`, or -1. */
function _indexOf(haystack: Uint8Array, needle: Uint8Array, from: number): number {
  const first = needle[0];
  for (
    let i = haystack.indexOf(first, from);
    i >= 0 && i + needle.length <= haystack.length;
    i = haystack.indexOf(first, i + 1)
  ) {
    let j = 1;
    while (j < needle.length && haystack[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
  }
  return -1;
}

const app = new App(await loadIdentity());
const hooks: Record<string, unknown> = app.debug();
if (new URLSearchParams(location.search).has("test")) Object.assign(hooks, app.testHooks());
(globalThis as unknown as { coder1: unknown }).coder1 = hooks;
await app.start();
