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
import {
  type E2eInfoBody,
  type Frame,
  FrameType,
  HANDSHAKE,
  STREAM_TYPES,
  type StreamAckBody,
  type StreamResumeBody,
} from "../shared/protocol.ts";
import type { StreamFrame } from "../shared/stream.ts";
import type { StreamTable } from "./stream_table.ts";

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
  /** The bridge's streams (they outlive this connection). */
  streams: StreamTable;
  /**
   * Authenticated, approved command frames (bodies in plaintext), each once
   * and in order; `c` is the stream's local number.
   */
  deliver: (frame: Frame) => void;
  /** Sends bytes on the relay socket for IDE channel `channel`, in call order. */
  send: (bytes: Uint8Array, channel?: number) => Promise<void>;
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
      await this.#opts.send(encodeFrame({ t: FrameType.E2eReply, c, body: { ...reply } }), c);
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
    }
    if (state.phase !== "ready") throw new E2eError(`Cannot accept ${frame.t} on channel ${c}: not approved`);
    switch (frame.t) {
      case FrameType.StreamResume:
        return await this.#resume(c, state.channel, plaintext);
      case FrameType.StreamAck: {
        const received = _object(frame.t, plaintext).received as StreamAckBody["received"];
        const stream = this.#opts.streams.byChannel(c);
        if (!stream) throw new E2eError(`Cannot accept stream.ack on channel ${c}: no stream resumed`);
        stream.sender.ack(received);
        return;
      }
      case FrameType.StreamClose:
        this.#opts.debug(`IDE channel ${c}: stream closed by the IDE`);
        this.#opts.streams.close(c);
        return;
    }
    if (!STREAM_TYPES.has(frame.t)) return; // A newer IDE's frame type: skipped.
    const stream = this.#opts.streams.byChannel(c);
    if (!stream) throw new E2eError(`Cannot accept ${frame.t} on channel ${c}: no stream resumed`);
    if (!stream.receiver.accept({ t: frame.t, q: frame.q, body: plaintext })) return; // Already had it.
    this.#opts.deliver({ ...frame, c: stream.handle, body: plaintext });
  }

  /** Forgets a channel whose IDE socket left (its stream lingers). */
  closeChannel(c: number): void {
    this.#channels.delete(c);
    this.#opts.streams.detachChannel(c);
  }

  /**
   * `stream.resume` from an approved channel: attach the IDE's stream here,
   * answer with what this side has received (and whether it knew the
   * stream), then resend what the IDE has not received.
   */
  async #resume(c: number, channel: E2eChannel, plaintext: Uint8Array): Promise<void> {
    const body = _object(FrameType.StreamResume, plaintext);
    const id = body.stream, received = body.received;
    if (typeof id !== "string" || !/^[A-Za-z0-9_-]{16,64}$/.test(id)) {
      throw new E2eError("Cannot accept stream.resume: bad stream id");
    }
    if (!Number.isSafeInteger(received) || (received as number) < 0) {
      throw new E2eError("Cannot accept stream.resume: bad received count");
    }
    const { stream, known } = this.#opts.streams.open(id, channel.peerIdentity, c);
    this.#opts.debug(`IDE channel ${c}: stream ${stream.handle} ${known ? "resumed" : "started"}`);
    const reply: StreamResumeBody = { stream: id, received: stream.receiver.received, known };
    await this.#opts.send(
      await channel.seal({ t: FrameType.StreamResume, c, body: bodyBytes({ ...reply }) }),
      c,
    );
    stream.receiver.setAckSender((n) => {
      const ack: StreamAckBody = { received: n };
      this.#sealAndSend(c, channel, { t: FrameType.StreamAck, body: bodyBytes({ ...ack }) }).catch(() => {});
    });
    // A new stream has sent nothing: the IDE's count refers to an earlier bridge run.
    stream.sender.attach((f: StreamFrame) => this.#sealAndSend(c, channel, f), known ? received as number : 0);
  }

  #sealAndSend(c: number, channel: E2eChannel, frame: FrameInit & { q?: number }): Promise<void> {
    // Only while this channel still has these keys: a re-keyed channel gets the resent frames instead.
    const state = this.#channels.get(c);
    if (!state || state.phase === "confirming" || state.channel !== channel) return Promise.resolve();
    return channel.seal({ t: frame.t, c, id: frame.id, q: frame.q, body: bodyBytes(frame.body) })
      .then((bytes) => this.#opts.send(bytes, c));
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
    await this.#opts.send(await channel.seal({ t: FrameType.E2eInfo, c, body: bodyBytes({ ...info }) }), c);
  }
}

function _object(type: string, plaintext: Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plaintext));
  } catch {
    throw new E2eError(`Cannot read ${type}: body is not JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new E2eError(`Cannot read ${type}: body is not an object`);
  }
  return value as Record<string, unknown>;
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
