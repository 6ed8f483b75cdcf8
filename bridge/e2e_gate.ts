/**
 * The bridge's end-to-end gate: for each IDE channel of one relay
 * connection it answers the handshake, checks the IDE's identity key against
 * the pinned one, on a first pairing waits for two confirmations (the user
 * at this machine says the IDE shows the same SAS, and the IDE user approves:
 * a relay in the middle can forge the second, never the first), opens
 * sealed frames in order and seals outgoing ones. Nothing reaches the command
 * manager unless its channel is approved and its frame authenticated; any
 * end-to-end failure throws {@linkcode E2eError}, on which the caller closes
 * the connection with {@linkcode CloseCode.E2eFailure} and reconnects.
 *
 * @module
 */
import { fingerprint } from "../shared/e2e_crypto.ts";
import { BridgeHandshake, type E2eChannel, E2eError } from "../shared/e2e_session.ts";
import { bodyBytes, encodeFrame, type FrameInit } from "../shared/frame_codec.ts";
import { type E2eInfoBody, type Frame, FrameType, HANDSHAKE } from "../shared/protocol.ts";

/** What a channel is waiting for. */
type ChannelState =
  | { phase: "confirming"; handshake: BridgeHandshake }
  | { phase: "approval"; channel: E2eChannel; local?: boolean; ide?: boolean }
  | { phase: "ready" | "refused"; channel: E2eChannel };

/** Options for {@linkcode E2eGate}. */
export interface E2eGateOptions {
  /** The bridge's long-term identity key pair. */
  identity: CryptoKeyPair;
  /** The bridge id from `auth.ok` (the handshake's pairing id). */
  bridgeId: string;
  /** Name, OS and version, sent sealed in `e2e.info`. */
  info: { name: string; os: string; version: string };
  /** The IDE identity key pinned at approval, if any. */
  pinned: () => Uint8Array | undefined;
  /** The user approved the IDE with this identity key: pin it (persist, then resolve). */
  onApproved: (ideIdentity: Uint8Array) => Promise<void>;
  /** The IDE user rejected (or forgot) this bridge. */
  onRejected: () => void;
  /**
   * A channel reached the approval step: tell the user the SAS to compare.
   * Returns false to refuse it (too many attempts: the caller ends the link).
   */
  onApprovalNeeded: (sas: string, ideFingerprint: string) => boolean;
  /**
   * Asks the user at this machine to type the digits the IDE shows; resolves
   * with the line typed (undefined at end of input). The IDE's approval alone
   * is not enough, because a relay in the middle holds the keys of the channel
   * it arrives on; typing the digits (not just "yes") ties the answer to one
   * handshake even when several wait.
   */
  askSas: () => Promise<string | undefined>;
  /** The user at this machine typed digits that no waiting handshake shows. */
  onMismatch: () => void;
  /**
   * A hello arrived while no IDE key is pinned (each answer reveals a fresh
   * SAS to whoever sent it). Returns false to leave it unanswered: the caller
   * caps these per run and ends the link.
   */
  onUnpinnedHello: () => boolean;
  /** An IDE with an identity other than the pinned one was refused. */
  onRefused: (ideFingerprint: string) => void;
  /** Authenticated, approved command frames (bodies in plaintext). */
  deliver: (frame: Frame) => void;
  /** Sends bytes on the relay socket, in call order. */
  send: (bytes: Uint8Array) => Promise<void>;
  /** Verbose events (no content). */
  debug: (message: string) => void;
}

/** End-to-end state for one relay connection. */
export class E2eGate {
  #opts: E2eGateOptions;
  #channels = new Map<number, ChannelState>();
  /** The bridge's transcript signature per channel, sent sealed in every `e2e.info`. */
  #signatures = new WeakMap<E2eChannel, string>();
  #asking = false;

  /** @param options Identity, pin, callbacks and sender. */
  constructor(options: E2eGateOptions) {
    this.#opts = options;
  }

  /** Whether any channel is approved (ready for commands). */
  get hasReadyChannel(): boolean {
    return [...this.#channels.values()].some((s) => s.phase === "ready");
  }

  /**
   * Handles one end-to-end frame from an IDE channel.
   *
   * @param frame The decoded frame (channel `c` stamped by the relay).
   * @throws {E2eError} On a bad handshake, a frame that does not open, or a frame out of place.
   */
  async handle(frame: Frame): Promise<void> {
    const c = frame.c;
    if (c === undefined) throw new E2eError(`Cannot accept ${frame.t}: no channel`);
    if (frame.t === FrameType.E2eHello) {
      if (!this.#opts.pinned() && !this.#opts.onUnpinnedHello()) return;
      // A new hello starts over on this channel (the IDE re-keys after any bridge reconnect).
      const { handshake, reply } = await BridgeHandshake.respond(
        this.#opts.identity,
        this.#opts.bridgeId,
        _json(frame),
      );
      this.#channels.set(c, { phase: "confirming", handshake });
      this.#opts.debug(`IDE channel ${c}: handshake started`);
      await this.#opts.send(encodeFrame({ t: FrameType.E2eReply, c, body: { ...reply } }));
      return;
    }
    const state = this.#channels.get(c);
    if (frame.t === FrameType.E2eConfirm) {
      if (state?.phase !== "confirming") throw new E2eError(`Cannot accept e2e.confirm on channel ${c}: no handshake`);
      const { channel, signature } = await state.handshake.finish(_json(frame));
      this.#signatures.set(channel, signature);
      await this.#confirmed(c, channel);
      return;
    }
    if (HANDSHAKE.has(frame.t)) throw new E2eError(`Cannot accept ${frame.t} from an IDE`);
    if (!state || state.phase === "confirming") {
      throw new E2eError(`Cannot accept ${frame.t} on channel ${c}: no keys yet`);
    }
    const plaintext = await state.channel.open(frame);
    if (state.phase === "refused") return;
    switch (frame.t) {
      case FrameType.E2eApprove:
        // Already trusted (pinned earlier): say so again, so the IDE moves on.
        if (state.phase === "ready") return await this.#sendInfo(c, state.channel, "pinned");
        if (state.phase !== "approval") return;
        state.ide = true;
        if (state.local) await this.#approved(state.channel.peerIdentity);
        return;
      case FrameType.E2eReject:
        this.#opts.onRejected();
        return;
      default:
        if (state.phase !== "ready") throw new E2eError(`Cannot accept ${frame.t} on channel ${c}: not approved`);
        this.#opts.deliver({ ...frame, body: plaintext });
    }
  }

  /**
   * Seals a frame for the IDE channel `frame.c` and sends it. Frames for a
   * channel that is not approved are dropped: nothing but the handshake and
   * `e2e.info` goes to an unapproved IDE.
   */
  async send(frame: FrameInit): Promise<void> {
    const state = frame.c === undefined ? undefined : this.#channels.get(frame.c);
    if (state?.phase !== "ready") return;
    await this.#opts.send(
      await state.channel.seal({ t: frame.t, c: frame.c, id: frame.id, body: bodyBytes(frame.body) }),
    );
  }

  /** Forgets a channel whose IDE socket left. */
  closeChannel(c: number): void {
    this.#channels.delete(c);
  }

  async #confirmed(c: number, channel: E2eChannel): Promise<void> {
    const pinned = this.#opts.pinned();
    const print = await fingerprint(channel.peerIdentity);
    let approval: E2eInfoBody["approval"];
    if (!pinned) approval = "needed";
    else approval = _equal(pinned, channel.peerIdentity) ? "pinned" : "refused";
    const state: ChannelState = approval === "needed"
      ? { phase: "approval", channel }
      : { phase: approval === "pinned" ? "ready" : "refused", channel };
    this.#channels.set(c, state);
    await this.#sendInfo(c, channel, approval);
    this.#opts.debug(`IDE channel ${c}: keys agreed (${approval})`);
    if (approval === "refused") this.#opts.onRefused(print);
    if (approval !== "needed" || state.phase !== "approval") return;
    if (!this.#opts.onApprovalNeeded(channel.sas, print)) {
      this.#channels.set(c, { phase: "refused", channel });
      return;
    }
    this.#ask();
  }

  /** One question at a time; the typed digits pick the handshake they confirm. */
  #ask(): void {
    if (this.#asking) return;
    this.#asking = true;
    this.#opts.askSas().then(async (answer) => {
      this.#asking = false;
      if (answer === undefined) return; // The caller ends the link.
      const digits = answer.replace(/\s/g, "");
      const waiting = [...this.#channels.values()].filter((s) => s.phase === "approval");
      const match = waiting.find((s) => s.phase === "approval" && s.channel.sas.replace(" ", "") === digits);
      if (!match || match.phase !== "approval") return this.#opts.onMismatch();
      match.local = true;
      if (match.ide) await this.#approved(match.channel.peerIdentity);
      // Another handshake still waiting (a new SAS printed meanwhile): ask again.
      if ([...this.#channels.values()].some((s) => s.phase === "approval" && !s.local)) this.#ask();
    }).catch((error) => this.#opts.debug(`SAS confirmation failed: ${error}`));
  }

  async #approved(ideIdentity: Uint8Array): Promise<void> {
    await this.#opts.onApproved(ideIdentity);
    // Every channel of this IDE identity waiting for approval is approved with
    // it, and learns so from a fresh e2e.info ("pinned"): only then does the
    // IDE send commands.
    for (const [c, state] of this.#channels) {
      if (state.phase !== "approval") continue;
      if (!_equal(state.channel.peerIdentity, ideIdentity)) {
        this.#channels.set(c, { phase: "refused", channel: state.channel });
        continue;
      }
      this.#channels.set(c, { phase: "ready", channel: state.channel });
      await this.#sendInfo(c, state.channel, "pinned");
    }
  }

  async #sendInfo(c: number, channel: E2eChannel, approval: E2eInfoBody["approval"]): Promise<void> {
    const signature = this.#signatures.get(channel) ?? "";
    const info: E2eInfoBody = approval === "refused"
      ? { name: "", os: "", version: "", approval, signature }
      : { ...this.#opts.info, approval, signature };
    await this.#opts.send(await channel.seal({ t: FrameType.E2eInfo, c, body: bodyBytes({ ...info }) }));
  }
}

function _json(frame: Frame): unknown {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(frame.body));
  } catch {
    throw new E2eError(`Cannot read ${frame.t}: body is not JSON`);
  }
}

function _equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((x, i) => x === b[i]);
}
