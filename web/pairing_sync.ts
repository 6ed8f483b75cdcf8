/// <reference lib="dom" />
/**
 * One pairing in flight per browser session, across the page's tabs. The
 * relay gives every tab the same live code; this keeps the rest in step:
 *
 * - {@linkcode firstPairingLock}: a Web Lock per bridge that only one tab at
 *   a time holds while it runs the handshake with a bridge it has not pinned,
 *   so the bridge sees one handshake and prints one SAS. The other tabs wait,
 *   and follow on the pin that tab's approval leaves (IndexedDB is shared).
 * - {@linkcode PairingSync}: a BroadcastChannel. The tab that holds the
 *   handshake shows its approval request to the others, which show the same
 *   dialog; whichever tab answers, the holder acts and every tab's dialog
 *   follows. A code one tab gets appears in the others' open panels.
 *
 * Both are same-origin browser features: only this relay's pages of this
 * browser profile (the cookie jar the session lives in) take part.
 *
 * @module
 */
import type { FirstPairingLock } from "../shared/ide_client.ts";
import type { IssuedCode } from "./pairing_panel.ts";

/** An approval request as the tabs share it (no keys: only what the dialog shows). */
export interface SharedApproval {
  /** Which request (the holder's bridge id and SAS). */
  id: string;
  bridgeId: string;
  sas: string;
  name: string;
  os: string;
  version: string;
  fingerprint: string;
}

/** Where a shared approval request stands. */
export type ApprovalPhase = "open" | "confirming" | "done";

/** The messages between tabs. */
export type SyncMessage =
  | { t: "code"; code: string; expiresAt: number }
  | { t: "approval"; request: SharedApproval; phase: ApprovalPhase; status?: string; failed?: boolean }
  | { t: "decide"; id: string; approve: boolean }
  | { t: "ask" };

/** What the page does with the other tabs' messages. */
export interface PairingSyncHandlers {
  /** Another tab got a code. */
  onCode: (issued: IssuedCode) => void;
  /**
   * Another tab's approval request opened, moved on, or is over (`failed`:
   * it ended without an approved bridge, `status` says why).
   */
  onApproval: (request: SharedApproval, phase: ApprovalPhase, status?: string, failed?: boolean) => void;
  /** Another tab answered the request this tab holds. */
  onDecide: (id: string, approve: boolean) => void;
  /** A tab opened and asks what is in flight. */
  onAsk: () => void;
}

/** The page's BroadcastChannel to its other tabs. */
export class PairingSync {
  #channel?: BroadcastChannel;

  /** @param handlers What to do with the other tabs' messages. */
  constructor(handlers: PairingSyncHandlers) {
    if (typeof BroadcastChannel === "undefined") return;
    this.#channel = new BroadcastChannel("coder1-pairing");
    this.#channel.onmessage = (event: MessageEvent<SyncMessage>) => {
      const m = event.data;
      switch (m?.t) {
        case "code":
          return handlers.onCode({ code: String(m.code), expiresAt: Number(m.expiresAt) });
        case "approval":
          return handlers.onApproval(m.request, m.phase, m.status, m.failed === true);
        case "decide":
          return handlers.onDecide(String(m.id), m.approve === true);
        case "ask":
          return handlers.onAsk();
        default:
          return;
      }
    };
  }

  /** Tells the other tabs. */
  post(message: SyncMessage): void {
    this.#channel?.postMessage(message);
  }
}

/**
 * The first-pairing lock as a Web Lock (`navigator.locks`), or undefined
 * where the browser has none (each tab then pairs on its own, as before).
 */
export function firstPairingLock(): FirstPairingLock | undefined {
  const locks = (navigator as Navigator & { locks?: LockManager }).locks;
  if (!locks) return undefined;
  return (bridgeId, signal) =>
    new Promise((granted, refused) => {
      locks.request(`coder1-first-pairing:${bridgeId}`, { signal }, () =>
        new Promise<void>((release) =>
          granted(release)
        )).catch(refused);
    });
}
