/**
 * The bridge's side of a first pairing, as rules rather than wiring: ask the
 * user at this machine to type the SAS digits the IDE shows, give the IDE user
 * a visible deadline to approve (with a reminder every minute), cap the
 * handshakes a relay may start before any IDE is approved
 * ({@linkcode MAX_UNPINNED_HELLOS}) and those that ask for approval
 * ({@linkcode MAX_APPROVAL_ATTEMPTS}), and end the link on mismatched digits,
 * a rejection or a timeout. On approval it pins the IDE's identity key in the
 * credential store; when a pairing code is redeemed it saves the new token.
 * The {@linkcode E2eGate} calls it through {@linkcode FirstPairing.callbacks};
 * the security reasoning is docs/PROTOCOL.md ("Pairing" and "Why the
 * commitment").
 *
 * @module
 */
import type { Clock } from "../shared/clock.ts";
import { systemClock } from "../shared/clock.ts";
import { fingerprint, toBase64Url } from "../shared/e2e_crypto.ts";
import {
  APPROVAL_TIMEOUT_MS,
  type AuthOkBody,
  MAX_APPROVAL_ATTEMPTS,
  MAX_UNPINNED_HELLOS,
} from "../shared/protocol.ts";
import type { CredentialStore } from "./credentials.ts";
import type { E2eGateOptions } from "./e2e_gate.ts";
import type { LinkExit } from "./relay_link.ts";

/** While waiting for approval, the bridge says how long is left this often. */
const APPROVAL_REMINDER_MS = 60_000;

/**
 * Runs `callback` once after `ms` milliseconds.
 *
 * @returns A function that cancels it.
 */
export type Schedule = (callback: () => void, ms: number) => () => void;

/** The {@linkcode E2eGate} callbacks a {@linkcode FirstPairing} answers. */
export type PairingCallbacks = Pick<
  E2eGateOptions,
  | "pinned"
  | "askSas"
  | "onMismatch"
  | "onUnpinnedHello"
  | "onApprovalNeeded"
  | "onApproved"
  | "onRejected"
  | "onRefused"
>;

/** Options for {@linkcode FirstPairing}. */
export interface FirstPairingOptions {
  /** Where the token and the IDE pin are kept. */
  store: Pick<CredentialStore, "put" | "pin" | "rotate">;
  /** The relay's URL: the credential's key in the store. */
  relay: string;
  /** The IDE identity key an earlier pairing pinned (none: this is a first pairing). */
  pinned?: Uint8Array;
  /** How long the IDE user has to approve (default {@linkcode APPROVAL_TIMEOUT_MS}). */
  approvalTimeoutMs?: number;
  /** Ends the link with this outcome (bridge/relay_link.ts `endLink`). */
  end: (exit: LinkExit) => void;
  /** Writes a question without a line ending (the SAS prompt). */
  prompt: (text: string) => Promise<void>;
  /** Reads the next line the user typed; undefined at end of input. */
  readLine: () => Promise<string | undefined>;
  /** Prints a line for the user (standard output). */
  say: (message: string) => void;
  /** Prints a warning (standard error). */
  warn: (message: string) => void;
  /** Verbose details (the IDE's key fingerprint). */
  debug?: (message: string) => void;
  /** The time, for the deadline and what is left of it (default: the system clock). */
  clock?: Clock;
  /** Timers (default: `setTimeout`); tests fire them by hand. */
  schedule?: Schedule;
}

/**
 * One bridge run's pairing state: the pinned IDE key, the approval deadline
 * and the per-run caps.
 *
 * @example
 * ```ts
 * import { FirstPairing } from "./first_pairing.ts";
 * const pairing = new FirstPairing({
 *   store: { put: () => Promise.resolve(), pin: () => Promise.resolve(), rotate: () => Promise.resolve(false) },
 *   relay: "https://relay.example",
 *   end: (exit) => console.error(exit.message),
 *   prompt: () => Promise.resolve(),
 *   readLine: () => Promise.resolve("123 456"),
 *   say: console.log,
 *   warn: console.error,
 * });
 * pairing.onApprovalNeeded("123 456", "ide-fingerprint"); // Prints the SAS and the deadline.
 * pairing.stop();
 * ```
 */
export class FirstPairing {
  #opts: FirstPairingOptions;
  #clock: Clock;
  #schedule: Schedule;
  #pinned?: Uint8Array;
  #approvalAttempts = 0;
  #unpinnedHellos = 0;
  /** Set while the approval clock runs. */
  #deadline?: number;
  #nextReminder = 0;
  #cancelTimer?: () => void;

  /** @param options Store, user I/O, deadline, clock and how to end the link. */
  constructor(options: FirstPairingOptions) {
    this.#opts = options;
    this.#clock = options.clock ?? systemClock;
    this.#schedule = options.schedule ?? _setTimeout;
    this.#pinned = options.pinned;
  }

  /** The approved IDE's identity key, once there is one. */
  get pinned(): Uint8Array | undefined {
    return this.#pinned;
  }

  /**
   * The callbacks for {@linkcode E2eGateOptions}, bound to this pairing.
   *
   * @returns The gate's pairing callbacks.
   */
  callbacks(): PairingCallbacks {
    return {
      pinned: () => this.#pinned,
      askSas: () => this.askSas(),
      onMismatch: () => this.onMismatch(),
      onUnpinnedHello: () => this.onUnpinnedHello(),
      onApprovalNeeded: (sas, ideFingerprint) => this.onApprovalNeeded(sas, ideFingerprint),
      onApproved: (ideIdentity) => this.onApproved(ideIdentity),
      onRejected: () => this.onRejected(),
      onRefused: (ideFingerprint) => this.onRefused(ideFingerprint),
    };
  }

  /**
   * Saves the token an `auth.ok` brings, with its routing key: a rotated token of the stored
   * credential replaces its token (the pin stays); a token for another bridge
   * id (a redeemed pairing code) becomes a new credential. An `auth.ok`
   * without a token changes nothing.
   *
   * @param ok The relay's `auth.ok`.
   */
  async saveCredential(ok: AuthOkBody): Promise<void> {
    if (!ok.token) return;
    const { relay } = this.#opts;
    if (await this.#opts.store.rotate(relay, ok.bridgeId, ok.token, ok.expiresAt, ok.routingKey)) return;
    await this.#opts.store.put(relay, {
      token: ok.token,
      bridgeId: ok.bridgeId,
      expiresAt: ok.expiresAt,
      pairedAt: this.#clock.now(),
      ...(ok.routingKey ? { routingKey: ok.routingKey } : {}),
    });
  }

  /**
   * Asks the user at this machine to type the digits the IDE shows. At end of
   * input the link ends: nobody can confirm.
   *
   * @returns The line typed, or undefined at end of input.
   */
  async askSas(): Promise<string | undefined> {
    await this.#opts.prompt("Type the 6 digits the IDE shows to confirm (anything else refuses): ");
    const answer = await this.#opts.readLine();
    if (answer === undefined) {
      this.#end({
        code: 1,
        message:
          "Cannot confirm the pairing: standard input ended before an answer. Run the bridge in a terminal and type the digits the IDE shows.",
      });
    } else if (/^\d{3} ?\d{3}$/.test(answer.trim())) this.#opts.say("Typed here; approve the bridge in the IDE too.");
    return answer;
  }

  /** The digits typed match no waiting handshake: someone may be in the middle, so the pairing is over. */
  onMismatch(): void {
    this.#end({
      code: 1,
      dropToken: true,
      message:
        "Pairing refused: the digits typed are not the ones this bridge computed, so someone (possibly the relay) may be in the middle. Nothing was run and the token was dropped; pair again with a new code.",
    });
  }

  /**
   * A hello arrived while no IDE key is pinned.
   *
   * @returns False (and the link ends) past {@linkcode MAX_UNPINNED_HELLOS} in this run.
   */
  onUnpinnedHello(): boolean {
    if (++this.#unpinnedHellos <= MAX_UNPINNED_HELLOS) return true;
    this.#end({
      code: 1,
      message:
        `Pairing stopped: ${MAX_UNPINNED_HELLOS} handshakes were started before any IDE was approved, more than pairing needs; someone (possibly the relay) may be hunting for matching digits. Nothing was run. Pair again with a new code.`,
    });
    return false;
  }

  /**
   * A handshake needs approval: show its SAS and, the first time, start the
   * approval deadline.
   *
   * @param sas The short authentication string both sides show.
   * @param ideFingerprint The IDE identity key's fingerprint (printed when verbose).
   * @returns False (and the link ends) past {@linkcode MAX_APPROVAL_ATTEMPTS} in this run.
   */
  onApprovalNeeded(sas: string, ideFingerprint: string): boolean {
    if (++this.#approvalAttempts > MAX_APPROVAL_ATTEMPTS) {
      this.#end({
        code: 1,
        message:
          `Pairing stopped: ${MAX_APPROVAL_ATTEMPTS} handshakes asked for approval in this run, more than pairing needs; someone (possibly the relay) may be trying to get in the middle. Nothing was run. Pair again with a new code.`,
      });
      return false;
    }
    this.#opts.say(`Check that the IDE shows: ${sas}`);
    this.#opts.debug?.(`IDE identity fingerprint: ${ideFingerprint}`);
    if (this.#deadline !== undefined) return true;
    const now = this.#clock.now();
    const deadline = this.#deadline = now + (this.#opts.approvalTimeoutMs ?? APPROVAL_TIMEOUT_MS);
    this.#nextReminder = now + APPROVAL_REMINDER_MS;
    this.#opts.say(
      `If the IDE shows the same digits, type them here and approve in the IDE (waiting ${
        _minutes(deadline - now)
      }, until ${_time(deadline)}).`,
    );
    this.#arm();
    return true;
  }

  /**
   * Both confirmations are in: pin the IDE's identity key (saved before this
   * resolves) and say so.
   *
   * @param ideIdentity The approved IDE's public identity key.
   */
  async onApproved(ideIdentity: Uint8Array): Promise<void> {
    this.stop();
    this.#pinned = ideIdentity;
    await this.#opts.store.pin(this.#opts.relay, toBase64Url(ideIdentity));
    this.#opts.say(
      `Approved in the IDE (IDE key ${await fingerprint(ideIdentity)}). Waiting for commands; Ctrl-C stops.`,
    );
  }

  /** The IDE user rejected this bridge: the pairing is over and its token is dropped. */
  onRejected(): void {
    this.#end({
      code: 1,
      dropToken: true,
      message: "The IDE rejected this bridge: the pairing is over and its token was dropped. Nothing was run.",
    });
  }

  /**
   * An IDE whose key is not the pinned one was refused (the link goes on).
   *
   * @param ideFingerprint Its identity key's fingerprint.
   */
  onRefused(ideFingerprint: string): void {
    this.#opts.warn(
      `coder1: refused an IDE whose identity key (${ideFingerprint}) is not the one approved for this bridge; ` +
        "it can run nothing. If you changed browsers on purpose, pair again: coder1 bridge start --pair",
    );
  }

  /** Stops the approval clock (approved, or the bridge is stopping). */
  stop(): void {
    this.#cancelTimer?.();
    this.#cancelTimer = this.#deadline = undefined;
  }

  #end(exit: LinkExit): void {
    this.stop();
    this.#opts.end(exit);
  }

  /** One timer at a time, for whichever comes first: the next reminder or the deadline. */
  #arm(): void {
    const at = Math.min(this.#deadline!, this.#nextReminder);
    this.#cancelTimer = this.#schedule(() => this.#tick(), Math.max(0, at - this.#clock.now()));
  }

  #tick(): void {
    this.#cancelTimer = undefined;
    const deadline = this.#deadline;
    if (deadline === undefined) return;
    const now = this.#clock.now();
    if (now >= deadline) {
      return this.#end({
        code: 1,
        message:
          "No approval from the IDE in time, so nothing was run. Run `coder1 bridge start` again to retry, or `--pair` to start over.",
      });
    }
    if (now >= this.#nextReminder) {
      this.#opts.say(`Still waiting for approval in the IDE (${_minutes(deadline - now)} left)`);
      while (this.#nextReminder <= now) this.#nextReminder += APPROVAL_REMINDER_MS;
    }
    // Early (a timer is not the clock): wait for what is left.
    this.#arm();
  }
}

function _setTimeout(callback: () => void, ms: number): () => void {
  const id = setTimeout(callback, ms);
  return () => clearTimeout(id);
}

/** m:ss */
function _minutes(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** HH:MM:SS local time. */
function _time(epochMs: number): string {
  return new Date(epochMs).toTimeString().slice(0, 8);
}
