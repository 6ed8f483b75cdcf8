/**
 * The IDE's end-to-end state machine, one bridge connection at a time: it
 * sends `e2e.hello` when the relay announces a bridge, finishes the handshake
 * on `e2e.reply` (refusing a bridge key other than the pinned one), verifies
 * the bridge's transcript signature from the first sealed `e2e.info`, and
 * either trusts a pinned bridge at once or asks the user to compare the SAS
 * and approve. Handshakes abandoned before the bridge proved itself make the
 * next one wait (see {@linkcode HANDSHAKE_BACKOFF_BASE_MS}). It is the IDE's
 * counterpart of bridge/e2e_gate.ts; the socket, the stream and the commands
 * belong to the `IdeClient` that wires it (shared/ide_client.ts).
 *
 * @module
 */
import { backoffDelay } from "./backoff.ts";
import type { Timers } from "./clock.ts";
import { fingerprint, fromBase64Url, generateIdentity, toBase64Url } from "./e2e_crypto.ts";
import { E2eError, e2eFail, type E2eSession, IdeHandshake } from "./e2e_session.ts";
import { decodeE2eInfo } from "./frame_bodies.ts";
import { type FrameInit, parseJsonObject } from "./frame_codec.ts";
import type { PinStore } from "./pin_store.ts";
import {
  type E2eInfoBody,
  type Frame,
  FrameType,
  HANDSHAKE_BACKOFF_BASE_MS,
  HANDSHAKE_BACKOFF_MAX_MS,
} from "./protocol.ts";

export { HANDSHAKE_BACKOFF_BASE_MS, HANDSHAKE_BACKOFF_MAX_MS };

/**
 * Where the end-to-end link to the bridge stands:
 * `disconnected` (no bridge), `handshaking` (keys being agreed),
 * `approval` (first pairing: the user must compare the SAS and approve),
 * `confirming` (approved here; waiting for the user at the bridge to confirm
 * the same SAS there), `ready` (commands may run), `refused` (the bridge's or the IDE's identity
 * key is not the pinned one; nothing runs), `rejected` (the user rejected it).
 */
export type E2eState =
  | "disconnected"
  | "handshaking"
  | "approval"
  | "confirming"
  | "ready"
  | "refused"
  | "rejected";

/** What the IDE shows the user to approve a first pairing. */
export interface ApprovalRequest {
  /** The bridge id (the pairing id). */
  bridgeId: string;
  /** The short authentication string, e.g. "123 456"; the bridge prints the same. */
  sas: string;
  /** Bridge name (name, OS and version are sent sealed by the bridge). */
  name: string;
  /** Bridge OS. */
  os: string;
  /** Bridge coder1 version. */
  version: string;
  /** Fingerprint of the bridge's identity key. */
  fingerprint: string;
  /**
   * Approve: pin the bridge's key and tell the bridge. Commands may run once
   * the user at the bridge has confirmed the same SAS there (state `ready`).
   */
  approve(): Promise<void>;
  /**
   * Reject: end the pairing and revoke the bridge's token at the relay. Rejects
   * when the relay did not revoke it (the page must say so, not claim it is revoked).
   */
  reject(): Promise<void>;
}

/** Options for {@linkcode IdeE2e}. */
export interface IdeE2eOptions {
  /** The IDE's long-term identity key pair (default: one made in memory on first use). */
  identity?: CryptoKeyPair;
  /** Where approved bridge keys are pinned. */
  pins: PinStore;
  /** Timers for the handshake backoff. */
  timers: Timers;
  /** Sends a cleartext frame (the handshake) on the current socket. */
  send: (frame: FrameInit) => void;
  /** Seals a frame with the current session's keys and sends it (dropped without keys). */
  sendSealed: (frame: FrameInit) => Promise<void>;
  /**
   * The bridge proved itself and both sides trust each other's pinned key:
   * resume the stream. Its answer makes the state `ready` ({@linkcode IdeE2e.resumed}).
   */
  onTrusted: () => void;
  /** The user rejected the bridge: revoke it at the relay and forget its pin. */
  revoke: (bridgeId: string) => Promise<void>;
  /** The state changed (with a reason for failures and refusals). */
  onState: (state: E2eState, detail?: string) => void;
  /** A bridge awaits the user's approval (first pairing). */
  onApproval: (request: ApprovalRequest) => void;
  /**
   * Optional: one first pairing at a time among the clients of one browser
   * session (a page's tabs). Before a handshake with a bridge that is not
   * pinned here, the client waits for this lock and holds it until the
   * handshake is settled (ready, refused, rejected or gone), so the bridge
   * sees one handshake to approve, prints one SAS, and the others follow on
   * the pin it leaves. Resolves with the function that releases it; the
   * signal aborts the wait.
   */
  firstPairingLock?: FirstPairingLock;
}

/** Waits for the session's first-pairing lock for `bridgeId`; resolves with its release. */
export type FirstPairingLock = (bridgeId: string, signal: AbortSignal) => Promise<() => void>;

/**
 * The IDE's end-to-end session with the bridge of one IDE socket.
 *
 * @example
 * ```ts ignore
 * import { systemClock } from "./clock.ts";
 * import { IdeE2e } from "./ide_e2e.ts";
 * import { MemoryPinStore } from "./pin_store.ts";
 * const e2e = new IdeE2e({
 *   pins: new MemoryPinStore(),
 *   timers: systemClock,
 *   send: (frame) => socket.send(encodeFrame(frame)),
 *   sendSealed: (frame) => sealAndSend(frame),
 *   onTrusted: () => resumeStream(),
 *   revoke: (bridgeId) => api.revokeBridge(bridgeId),
 *   onState: (state) => console.log(state),
 *   onApproval: (request) => console.log(`compare ${request.sas}`),
 * });
 * e2e.restart("bridge-id"); // bridge.status "connected": sends e2e.hello
 * ```
 */
export class IdeE2e {
  #opts: IdeE2eOptions;
  #identity?: Promise<CryptoKeyPair>;
  #state: E2eState = "disconnected";
  #approval?: ApprovalRequest;
  #bridgeInfo?: E2eInfoBody;
  #bridgeId?: string;
  #handshake?: IdeHandshake;
  #session?: E2eSession;
  #bridgeVerified = false;
  /** Handshakes abandoned before the bridge proved itself, since the last one that got that far. */
  #abandoned = 0;
  /** Bumped on every restart and stop: a handshake started for an older one sends nothing. */
  #epoch = 0;
  #cancelBackoff?: () => void;
  /** Releases the first-pairing lock, while held or awaited. */
  #releaseLock?: () => void;

  /** @param options Identity, pins, timers, senders and listeners. */
  constructor(options: IdeE2eOptions) {
    this.#opts = options;
    if (options.identity) this.#identity = Promise.resolve(options.identity);
  }

  /** Where the end-to-end link stands. */
  get state(): E2eState {
    return this.#state;
  }

  /** The pending approval request, while {@linkcode state} is `approval`. */
  get approval(): ApprovalRequest | undefined {
    return this.#approval;
  }

  /** Bridge name, OS and version from the last sealed `e2e.info`. */
  get bridgeInfo(): E2eInfoBody | undefined {
    return this.#bridgeInfo;
  }

  /** The keys agreed with the bridge, once the handshake finished (whether or not it is trusted yet). */
  get session(): E2eSession | undefined {
    return this.#session;
  }

  /** The IDE's identity key pair (made in memory on first use when none was given). */
  identity(): Promise<CryptoKeyPair> {
    this.#identity ??= generateIdentity(false);
    return this.#identity;
  }

  /**
   * A `bridge.status` arrived: every bridge connection gets fresh keys.
   * Forgets the current ones and, with a bridge connected, starts a new
   * handshake (state `handshaking`), after a wait if earlier ones were
   * abandoned; otherwise the state is `disconnected`.
   *
   * @param bridgeId The connected bridge, or undefined when none is.
   */
  restart(bridgeId: string | undefined): void {
    // A handshake cut short before the bridge proved itself counts against the next one.
    if (this.#handshake || (this.#session && !this.#bridgeVerified)) this.#abandoned++;
    this.#reset();
    if (bridgeId === undefined) return this.#setState("disconnected");
    this.#bridgeId = bridgeId;
    this.#setState("handshaking");
    this.#startHandshake(bridgeId);
  }

  /**
   * The socket is gone or can no longer be trusted: forget the keys and any
   * handshake waiting to start; the state is `disconnected`.
   *
   * @param detail Why, for the state listeners.
   */
  stop(detail?: string): void {
    this.#reset();
    this.#setState("disconnected", detail);
  }

  /**
   * Opens a sealed frame from the bridge with the agreed keys.
   *
   * @param frame The frame as received.
   * @returns Its plaintext body.
   * @throws {E2eError} Without keys, or when it does not open (altered, replayed, reordered).
   */
  async open(frame: Frame): Promise<Uint8Array> {
    if (!this.#session) throw new E2eError(`Cannot accept ${frame.t}: no keys agreed`);
    return await this.#session.open(frame);
  }

  /**
   * `e2e.reply`: agrees on the keys, refuses a bridge whose key is not the
   * pinned one (state `refused`), and sends `e2e.confirm`.
   *
   * @param frame The `e2e.reply` frame.
   * @throws {E2eError} Without a handshake in progress, or for a bad reply.
   */
  async onReply(frame: Frame): Promise<void> {
    const handshake = this.#handshake;
    if (!handshake) throw new E2eError("Cannot accept e2e.reply: no handshake in progress");
    this.#handshake = undefined;
    const { session, confirm } = await handshake.finish(parseJsonObject(frame.body, frame.t, e2eFail));
    const bridgeId = this.#bridgeId!;
    const pinned = await this.#opts.pins.get(bridgeId);
    if (pinned !== undefined && pinned !== toBase64Url(session.peerIdentity)) {
      this.#abandoned++;
      // The relay (or someone) presents another key for an approved bridge: refuse.
      const seen = await fingerprint(session.peerIdentity);
      const expected = await fingerprint(fromBase64Url(pinned));
      this.#setState("refused", `bridge ${bridgeId} presented identity ${seen}, not the approved ${expected}`);
      return;
    }
    this.#session = session;
    this.#opts.send({ t: FrameType.E2eConfirm, body: confirm });
  }

  /**
   * `e2e.info` (opened): verifies the bridge's transcript signature the first
   * time, then trusts a bridge pinned on both sides ({@linkcode IdeE2eOptions.onTrusted})
   * or asks the user to approve it (state `approval`).
   *
   * @param plaintext The opened body.
   * @throws {E2eError} For a bad body or a signature that does not verify.
   */
  async onInfo(plaintext: Uint8Array): Promise<void> {
    const session = this.#session!;
    const info = decodeE2eInfo(plaintext, e2eFail);
    if (!this.#bridgeVerified) {
      // The bridge's transcript signature: until it verifies, nothing from this session is trusted.
      await IdeHandshake.verifyBridge(session, info.signature);
      this.#bridgeVerified = true;
      this.#abandoned = 0;
    }
    this.#bridgeInfo = info;
    if (info.approval === "refused") {
      this.#setState("refused", "the bridge trusts another IDE identity; pair again with coder1 bridge start --pair");
      return;
    }
    const bridgeId = this.#bridgeId!;
    const key = toBase64Url(session.peerIdentity);
    if (info.approval === "pinned" && (await this.#opts.pins.get(bridgeId)) === key) {
      // Ready once the stream is resumed (the bridge answers stream.resume).
      if (this.#state !== "ready") this.#opts.onTrusted();
      return;
    }
    let settled = false;
    const request: ApprovalRequest = {
      bridgeId,
      sas: session.sas,
      name: String(info.name),
      os: String(info.os),
      version: String(info.version),
      fingerprint: await fingerprint(session.peerIdentity),
      approve: async () => {
        if (settled || this.#session !== session) throw new TypeError("Cannot approve: this request is over");
        settled = true;
        await this.#opts.pins.set(bridgeId, key);
        this.#approval = undefined;
        await this.#opts.sendSealed({ t: FrameType.E2eApprove });
        // The bridge answers with e2e.info "pinned" once its user confirmed too.
        if (this.#state === "approval") this.#setState("confirming");
      },
      reject: async () => {
        if (settled || this.#session !== session) throw new TypeError("Cannot reject: this request is over");
        settled = true;
        this.#approval = undefined;
        await this.#opts.sendSealed({ t: FrameType.E2eReject });
        this.#setState("rejected", "rejected by the user");
        // A failed revoke is the caller's to report: the token would still work.
        await this.#opts.revoke(bridgeId);
      },
    };
    this.#approval = request;
    this.#setState("approval");
    this.#opts.onApproval(request);
  }

  /** The bridge answered `stream.resume` on these keys: commands may run (state `ready`). */
  resumed(): void {
    this.#setState("ready");
  }

  /**
   * Sends a hello, at once normally. After handshakes abandoned before the
   * bridge proved itself, each next one waits twice as long (up to
   * {@linkcode HANDSHAKE_BACKOFF_MAX_MS}).
   */
  #startHandshake(bridgeId: string): void {
    const epoch = this.#epoch;
    const go = async () => {
      await this.#firstPairingTurn(bridgeId, epoch);
      const { handshake, hello } = await IdeHandshake.start(await this.identity(), bridgeId);
      if (epoch !== this.#epoch) return; // Restarted or stopped meanwhile.
      this.#handshake = handshake;
      this.#opts.send({ t: FrameType.E2eHello, body: hello });
    };
    if (this.#abandoned === 0) return void go().catch(() => {});
    const delay = backoffDelay(this.#abandoned - 1, {
      baseMs: HANDSHAKE_BACKOFF_BASE_MS,
      maxMs: HANDSHAKE_BACKOFF_MAX_MS,
      jitter: "none",
    });
    this.#cancelBackoff = this.#opts.timers.after(delay, () => {
      this.#cancelBackoff = undefined;
      go().catch(() => {});
    });
  }

  /**
   * With a {@linkcode IdeE2eOptions.firstPairingLock} and no pin for this
   * bridge: waits for this client's turn to pair (another tab may be pairing
   * the same bridge; its approval leaves a pin this handshake then uses).
   */
  async #firstPairingTurn(bridgeId: string, epoch: number): Promise<void> {
    const lock = this.#opts.firstPairingLock;
    if (!lock || (await this.#opts.pins.get(bridgeId)) !== undefined || epoch !== this.#epoch) return;
    const abort = new AbortController();
    this.#releaseLock = () => abort.abort();
    const release = await lock(bridgeId, abort.signal);
    if (epoch !== this.#epoch) return release();
    this.#releaseLock = release;
  }

  #setState(state: E2eState, detail?: string): void {
    // Settled (or gone): the next tab may take its turn.
    if (state !== "handshaking" && state !== "approval" && state !== "confirming") this.#unlock();
    if (this.#state === state && detail === undefined) return;
    this.#state = state;
    this.#opts.onState(state, detail);
  }

  #unlock(): void {
    const release = this.#releaseLock;
    this.#releaseLock = undefined;
    release?.();
  }

  #reset(): void {
    this.#unlock();
    this.#epoch++;
    this.#cancelBackoff?.();
    this.#cancelBackoff = undefined;
    this.#handshake = undefined;
    this.#session = undefined;
    this.#bridgeVerified = false;
    this.#approval = undefined;
  }
}
