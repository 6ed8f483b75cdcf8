/// <reference lib="dom" />
/**
 * The page's terminal tabs: a tab strip (each tab with the terminal's title,
 * a dot for alive, exited or lost, the exit status, and a close button) over
 * one panel per terminal, stacked in the same place so every terminal keeps
 * the size of the area. New terminals open on the bridge at the area's size;
 * after a reload the bridge's list brings them back (attached and repainted
 * from their snapshots). Closing a terminal that is busy ({@linkcode
 * TerminalTab.busy}) asks first. The search box searches the active tab.
 *
 * @module
 */
import type { RemoteTerminal, TerminalSize } from "../shared/remote_terminals.ts";
import type { TerminalInfo } from "../shared/protocol.ts";
import { TerminalTab } from "./terminal_tab.ts";

/** sessionStorage key of the active terminal's id, so a reload shows the same tab. */
const ACTIVE_KEY = "coder1.activeTerminal";

/** Where the tabs live on the page, and how they reach the bridge. */
export interface TerminalTabsOptions {
  /** The tab strip (`role="tablist"`). */
  tablist: HTMLElement;
  /** Where the terminal panels go (stacked). */
  panels: HTMLElement;
  /** Opens a terminal on the bridge (`IdeClient.openTerminal`). */
  open(size: TerminalSize): RemoteTerminal;
  /** Attaches to one (`IdeClient.attachTerminal`). */
  attach(id: string, size: TerminalSize): RemoteTerminal;
  /** Asks whether to close a busy terminal. */
  confirmClose(label: string): Promise<boolean>;
  /** The set of tabs or the active one changed. */
  onChange(): void;
  /** Ctrl-Shift-F in a terminal. */
  onSearchKey(): void;
  /** The active tab's search results changed. */
  onSearchResults(index: number, count: number): void;
  /** Tests only: how far drawing may fall behind before it skips to a fresh snapshot. */
  highWaterBytes?: number;
  /** Ctrl-C was typed into a tab. */
  onInterrupt?(tab: TerminalTab): void;
}

/** The tabs and their terminals. */
export class TerminalTabs {
  #opts: TerminalTabsOptions;
  #tabs: TerminalTab[] = [];
  #labels = new Map<TerminalTab, number>();
  #buttons = new Map<TerminalTab, HTMLElement>();
  #active?: TerminalTab;
  #next = 1;

  /** @param options The elements and the bridge. */
  constructor(options: TerminalTabsOptions) {
    this.#opts = options;
    // Every terminal follows the area's size (window resizes, zoom, the pairing panel opening).
    new ResizeObserver(() => {
      for (const tab of this.#tabs) tab.fit();
    }).observe(options.panels);
  }

  /** The tabs, left to right. */
  get tabs(): readonly TerminalTab[] {
    return this.#tabs;
  }

  /** The tab shown. */
  get active(): TerminalTab | undefined {
    return this.#active;
  }

  /** The tab's label: the terminal's title, or "Terminal N". */
  label(tab: TerminalTab): string {
    return tab.title || `Terminal ${this.#labels.get(tab)}`;
  }

  /** Opens a new terminal on the bridge in a new tab, and shows it. */
  openNew(): TerminalTab {
    const tab = this.#add();
    tab.bind(this.#opts.open(tab.size()));
    this.activate(tab);
    return tab;
  }

  /**
   * Brings back the bridge's running terminals (after a reload, or ones
   * another page opened): attaches to every alive one that has no tab yet.
   *
   * @param list The bridge's terminals (`IdeClient.listTerminals`), oldest first.
   * @returns How many tabs were added.
   */
  restore(list: TerminalInfo[]): number {
    let added = 0;
    const remembered = sessionStorage.getItem(ACTIVE_KEY);
    for (const info of list) {
      if (!info.alive || this.#tabs.some((t) => t.id === info.id)) continue;
      const tab = this.#add();
      tab.bind(this.#opts.attach(info.id, tab.size()));
      added++;
      if (info.id === remembered || !this.#active) this.activate(tab);
    }
    return added;
  }

  /** Shows `tab` and focuses it. */
  activate(tab: TerminalTab): void {
    this.#active = tab;
    for (const t of this.#tabs) {
      const shown = t === tab;
      t.element.classList.toggle("active", shown);
      t.element.setAttribute("aria-hidden", String(!shown));
      const button = this.#buttons.get(t)!.querySelector<HTMLElement>("[role=tab]")!;
      button.setAttribute("aria-selected", String(shown));
      button.tabIndex = shown ? 0 : -1;
    }
    if (tab.id) sessionStorage.setItem(ACTIVE_KEY, tab.id);
    tab.fit();
    tab.focus();
    this.#opts.onChange();
  }

  /**
   * Closes a tab: hangs its terminal up on the bridge (SIGHUP), or forgets
   * an exited one. Asks first when the terminal is busy.
   *
   * @returns Whether it was closed.
   */
  async close(tab: TerminalTab): Promise<boolean> {
    if (tab.busy() && !(await this.#opts.confirmClose(this.label(tab)))) {
      if (this.#active === tab) tab.focus();
      return false;
    }
    if (tab.state !== "lost") void tab.remote?.close();
    this.#remove(tab);
    return true;
  }

  /** Drops every tab without touching the bridge's terminals (the bridge was forgotten). */
  clear(): void {
    for (const tab of [...this.#tabs]) this.#remove(tab);
    this.#next = 1;
  }

  /** Shows the tab left or right of the active one (`step` -1 or 1). */
  cycle(step: number): void {
    if (!this.#active || this.#tabs.length < 2) return;
    const at = this.#tabs.indexOf(this.#active);
    this.activate(this.#tabs[(at + step + this.#tabs.length) % this.#tabs.length]);
  }

  #add(): TerminalTab {
    const panel = document.createElement("div");
    panel.className = "terminal-pane";
    panel.setAttribute("role", "tabpanel");
    this.#opts.panels.append(panel);
    const number = this.#next++;
    const tab: TerminalTab = new TerminalTab(panel, {
      onChange: (t) => this.#draw(t),
      onSearchKey: () => this.#opts.onSearchKey(),
      repaint: (t) => {
        if (t.remote?.state === "attached") this.#opts.attach(t.remote.id, t.size());
      },
      onSearchResults: (t, index, count) => {
        if (t === this.#active) this.#opts.onSearchResults(index, count);
      },
      highWaterBytes: this.#opts.highWaterBytes,
      onInterrupt: (t) => this.#opts.onInterrupt?.(t),
    });
    this.#labels.set(tab, number);
    panel.id = `terminal-pane-${number}`;

    const item = document.createElement("div");
    item.className = "tab";
    item.setAttribute("role", "presentation");
    const button = document.createElement("button");
    button.type = "button";
    button.id = `terminal-tab-${number}`;
    button.className = "tab-main";
    button.setAttribute("role", "tab");
    button.setAttribute("aria-controls", panel.id);
    button.innerHTML = '<span class="tab-dot" aria-hidden="true"></span><span class="tab-title"></span>' +
      '<span class="tab-status"></span>';
    button.addEventListener("click", () => this.activate(tab));
    button.addEventListener("keydown", (e) => {
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
        e.preventDefault();
        this.cycle(e.key === "ArrowRight" ? 1 : -1);
        this.#buttons.get(this.#active!)?.querySelector<HTMLElement>("[role=tab]")?.focus();
      }
    });
    const close = document.createElement("button");
    close.type = "button";
    close.className = "tab-close";
    close.textContent = "×";
    close.addEventListener("click", () => void this.close(tab));
    item.append(button, close);
    panel.setAttribute("aria-labelledby", button.id);
    this.#opts.tablist.append(item);
    this.#buttons.set(tab, item);
    this.#tabs.push(tab);
    this.#draw(tab);
    return tab;
  }

  #remove(tab: TerminalTab): void {
    const at = this.#tabs.indexOf(tab);
    if (at < 0) return;
    this.#tabs.splice(at, 1);
    this.#buttons.get(tab)?.remove();
    this.#buttons.delete(tab);
    this.#labels.delete(tab);
    tab.dispose();
    if (this.#active === tab) {
      this.#active = undefined;
      const next = this.#tabs[Math.min(at, this.#tabs.length - 1)];
      if (next) this.activate(next);
      else sessionStorage.removeItem(ACTIVE_KEY);
    }
    this.#opts.onChange();
  }

  /** Redraws a tab's label: title, state and exit status. */
  #draw(tab: TerminalTab): void {
    const item = this.#buttons.get(tab);
    if (!item) return;
    const state = tab.state;
    const label = this.label(tab);
    item.dataset.state = state;
    item.dataset.terminalId = tab.id ?? "";
    item.querySelector(".tab-title")!.textContent = label;
    let status = "";
    if (state === "exited" && tab.exit) {
      status = tab.exit.signal ? `killed by ${tab.exit.signal}` : `exit ${tab.exit.code}`;
    } else if (state === "lost") status = "lost";
    else if (state === "starting") status = "starting";
    item.querySelector(".tab-status")!.textContent = status;
    const main = item.querySelector<HTMLElement>(".tab-main")!;
    main.title = `${label}${status ? ` (${status})` : " (running)"}`;
    item.querySelector(".tab-close")!.setAttribute("aria-label", `Close ${label}`);
    if (tab === this.#active && tab.id) sessionStorage.setItem(ACTIVE_KEY, tab.id);
    this.#opts.onChange();
  }
}
