/**
 * The page's list of bridge credentials this browser session was issued
 * (`GET /api/bridges`): when and from where each was paired, when it was last
 * seen, its version, whether it is approved or connected, and a Revoke button
 * per credential, connected or not, plus Revoke all. A credential the relay
 * revoked because an old token of it was presented again (possible theft) is
 * shown in red and opens the list by itself.
 *
 * @module
 */
import type { BridgeCredentialInfo, IdeClient } from "../shared/ide_client.ts";

const REASONS: Record<string, string> = {
  user: "revoked here",
  logout: "logged out at the bridge",
  replaced: "replaced by a new pairing",
  reuse: "REVOKED: an old token was presented again (possible theft)",
};

/** The bridge list panel (`#bridges` in index.html). */
export class BridgeList {
  #ide: IdeClient;
  #say: (text: string) => void;
  #panel: HTMLElement;
  #rows: HTMLElement;
  #warned = new Set<string>();
  #busy = false;

  /**
   * @param ide The IDE client (its session lists and revokes).
   * @param say Shows a message to the user.
   */
  constructor(ide: IdeClient, say: (text: string) => void) {
    this.#ide = ide;
    this.#say = say;
    this.#panel = _el("bridges");
    this.#rows = _el("bridge-rows");
    _el("show-bridges").addEventListener("click", () => {
      this.#panel.hidden = !this.#panel.hidden;
      if (!this.#panel.hidden) this.refresh();
    });
    _el("revoke-all").addEventListener("click", () => this.#revoke(undefined));
  }

  /** Fetches the list again and redraws it (quietly does nothing without a session). */
  async refresh(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      const bridges = await this.#ide.listBridges();
      this.#draw(bridges);
      const theft = bridges.filter((b) => b.revokedReason === "reuse" && !this.#warned.has(b.bridgeId));
      for (const b of theft) this.#warned.add(b.bridgeId);
      if (theft.length > 0) {
        this.#panel.hidden = false;
        this.#say(
          `The relay revoked bridge ${_short(theft[0].bridgeId)}: an old token of it was presented again, so someone ` +
            "else may hold a copy. Pair it again (coder1 bridge start --pair) and check who can read its config.",
        );
      }
    } catch {
      // No session yet, or the relay is away: the next state change tries again.
    } finally {
      this.#busy = false;
    }
  }

  #draw(bridges: BridgeCredentialInfo[]): void {
    this.#rows.replaceChildren();
    _el("bridge-count").textContent = String(bridges.filter((b) => b.revokedAt === undefined).length);
    if (bridges.length === 0) {
      const empty = document.createElement("li");
      empty.textContent = "No bridge has been paired with this browser session.";
      this.#rows.append(empty);
      return;
    }
    for (const b of bridges) {
      const li = document.createElement("li");
      li.className = "bridge-row";
      li.dataset.bridgeId = b.bridgeId;
      li.dataset.state = b.revokedAt !== undefined
        ? (b.revokedReason === "reuse" ? "theft" : "revoked")
        : b.connected
        ? "connected"
        : "offline";
      const text = document.createElement("span");
      const parts = [
        `bridge ${_short(b.bridgeId)}`,
        b.version ? `v${b.version}` : "",
        `paired ${_when(b.issuedAt)} from ${b.issuedFrom}`,
        b.lastSeen ? `last seen ${_when(b.lastSeen)}${b.lastAddress ? ` from ${b.lastAddress}` : ""}` : "",
        b.approved ? "approved" : "not approved",
        b.revokedAt !== undefined
          ? `${REASONS[b.revokedReason ?? "user"] ?? "revoked"} ${_when(b.revokedAt)}`
          : b.connected
          ? "connected"
          : "offline",
      ];
      text.textContent = parts.filter(Boolean).join(" · ");
      li.append(text);
      if (b.revokedAt === undefined) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = "Revoke";
        button.className = "revoke-bridge";
        button.addEventListener("click", () => this.#revoke(b.bridgeId));
        li.append(button);
      }
      this.#rows.append(li);
    }
  }

  async #revoke(bridgeId: string | undefined): Promise<void> {
    try {
      if (bridgeId) await this.#ide.revokeBridge(bridgeId);
      else await this.#ide.revokeAllBridges();
      this.#say(
        bridgeId
          ? `Revoked bridge ${_short(bridgeId)}: its token no longer works.`
          : "Revoked every bridge of this session.",
      );
    } catch (e) {
      this.#say(`Cannot revoke: ${(e as Error).message}`);
    }
    await this.refresh();
  }
}

function _el<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing from index.html`);
  return el as T;
}

function _short(bridgeId: string): string {
  return bridgeId.slice(0, 8);
}

function _when(ms: number): string {
  return new Date(ms).toLocaleString();
}
