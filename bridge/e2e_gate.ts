/**
 * The bridge's end-to-end gate: for each IDE route (socket) of one relay
 * connection it answers the handshake, checks the IDE's identity key against
 * the pinned one, on a first pairing waits for two confirmations (the user
 * at this machine says the IDE shows the same SAS, and the IDE user approves:
 * a relay in the middle can forge the second, never the first), opens
 * sealed frames in order and seals outgoing ones. Nothing reaches the command
 * or terminal manager unless its route is approved and its frame authenticated; any
 * end-to-end failure throws {@linkcode E2eError}, on which the caller closes
 * the connection with {@linkcode CloseCode.E2eFailure} and reconnects.
 *
 * @module
 */
import { fingerprint } from "../shared/e2e_crypto.ts";
import { BridgeHandshake, E2eError, e2eFail, type E2eSession } from "../shared/e2e_session.ts";
import { decodeStreamAck, decodeStreamResume } from "../shared/frame_bodies.ts";
import { bodyBytes, encodeFrame, type FrameInit, parseJsonObject } from "../shared/frame_codec.ts";
import {
  type E2eInfoBody,
  type Frame,
  FrameType,
  type StreamAckBody,
  type StreamResumeBody,
} from "../shared/protocol.ts";
import type { StreamFrame } from "../shared/stream.ts";
import type { StreamTable } from "./stream_table.ts";

/** What a route is waiting for. */
type RouteState =
  | { phase: "confirming"; handshake: BridgeHandshake }
  | { phase: "approval"; session: E2eSession; local?: boolean; ide?: boolean }
  | { phase: "ready" | "refused"; session: E2eSession };

/** Options for {@linkcode E2eGate}. */
export interface E2eGateOptions {
  /** The bridge's long-term identity key pair. */
  identity: CryptoKeyPair;
  /** The bridge id from `auth.ok` (the handshake's pairing id). */
  bridgeId: string;
  /** Name, OS, version, whether terminals run here and whether it takes `term.keys`, sent sealed in `e2e.info`. */
  info: Pick<E2eInfoBody, "name" | "os" | "version" | "terminals" | "termKeys" | "termSignal">;
  /** The IDE identity key pinned at approval, if any. */
  pinned: () => Uint8Array | undefined;
  /** The user approved the IDE with this identity key: pin it (persist, then resolve). */
  onApproved: (ideIdentity: Uint8Array) => Promise<void>;
  /** The IDE user rejected (or forgot) this bridge. */
  onRejected: () => void;
  /**
   * A session reached the approval step: tell the user the SAS to compare.
   * Returns false to refuse it (too many attempts: the caller ends the link).
   */
  onApprovalNeeded: (sas: string, ideFingerprint: string) => boolean;
  /**
   * Asks the user at this machine to type the digits the IDE shows; resolves
   * with the line typed (undefined at end of input). The IDE's approval alone
   * is not enough, because a relay in the middle holds the keys of the session
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
   * Authenticated, approved stream frames (`cmd.*`, `term.*`; bodies in
   * plaintext), each once and in order, with the handle of the stream they
   * belong to.
   */
  deliver: (handle: number, frame: Frame) => void;
  /** Sends bytes on the relay socket for the IDE socket at `route`, in call order. */
  send: (bytes: Uint8Array, route?: number) => Promise<void>;
  /** Verbose events (no content). */
  debug: (message: string) => void;
}

/** End-to-end state for one relay connection. */
export class E2eGate {
  #opts: E2eGateOptions;
  #routes = new Map<number, RouteState>();
  /** The bridge's transcript signature per session, sent sealed in every `e2e.info`. */
  #signatures = new WeakMap<E2eSession, string>();
  #asking = false;

  /** @param options Identity, pin, callbacks and sender. */
  constructor(options: E2eGateOptions) {
    this.#opts = options;
  }

  /**
   * Handles one end-to-end frame from an IDE route.
   *
   * @param frame The decoded frame (route `r` stamped by the relay).
   * @throws {E2eError} On a bad handshake, a frame that does not open, or a frame out of place.
   */
  async handle(frame: Frame): Promise<void> {
    const route = frame.r;
    if (route === undefined) throw new E2eError(`Cannot accept ${frame.t}: no route`);
    switch (frame.t) {
      case FrameType.E2eHello:
        return await this.#onHello(route, frame);
      case FrameType.E2eConfirm:
        return await this.#onConfirm(route, frame);
      case FrameType.E2eApprove:
      case FrameType.E2eReject:
      case FrameType.StreamResume:
      case FrameType.StreamAck:
      case FrameType.StreamClose:
      case FrameType.CmdStart:
      case FrameType.CmdStdin:
      case FrameType.CmdEof:
      case FrameType.CmdSignal:
      case FrameType.TermOpen:
      case FrameType.TermAttach:
      case FrameType.TermInput:
      case FrameType.TermResize:
      case FrameType.TermDetach:
      case FrameType.TermClose:
      case FrameType.TermList:
      case FrameType.TermKeys:
      case FrameType.TermSignal:
        return await this.#onSealed(route, frame);
      default:
        // A type IDEs do not send (types this version does not know were
        // skipped when decoded): whoever forged it, the route is not trusted.
        throw new E2eError(`Cannot accept ${frame.t} from an IDE`);
    }
  }

  async #onHello(route: number, frame: Frame): Promise<void> {
    if (!this.#opts.pinned() && !this.#opts.onUnpinnedHello()) return;
    // A new hello starts over on this route (the IDE re-keys after any bridge reconnect).
    const { handshake, reply } = await BridgeHandshake.respond(this.#opts.identity, this.#opts.bridgeId, _json(frame));
    this.#routes.set(route, { phase: "confirming", handshake });
    this.#opts.debug(`IDE route ${route}: handshake started`);
    await this.#opts.send(encodeFrame({ t: FrameType.E2eReply, r: route, body: reply }), route);
  }

  async #onConfirm(route: number, frame: Frame): Promise<void> {
    const state = this.#routes.get(route);
    if (state?.phase !== "confirming") throw new E2eError(`Cannot accept e2e.confirm on route ${route}: no handshake`);
    const { session, signature } = await state.handshake.finish(_json(frame));
    this.#signatures.set(session, signature);
    await this.#confirmed(route, session);
  }

  /** A sealed frame: opened in order, then acted on by type. */
  async #onSealed(route: number, frame: Frame): Promise<void> {
    const state = this.#routes.get(route);
    if (!state || state.phase === "confirming") {
      throw new E2eError(`Cannot accept ${frame.t} on route ${route}: no keys yet`);
    }
    const plaintext = await state.session.open(frame);
    if (state.phase === "refused") return;
    if (frame.t === FrameType.E2eApprove) {
      // Already trusted (pinned earlier): say so again, so the IDE moves on.
      if (state.phase === "ready") return await this.#sendInfo(route, state.session, "pinned");
      if (state.phase !== "approval") return;
      state.ide = true;
      if (state.local) await this.#approved(state.session.peerIdentity);
      return;
    }
    if (frame.t === FrameType.E2eReject) return this.#opts.onRejected();
    if (state.phase !== "ready") throw new E2eError(`Cannot accept ${frame.t} on route ${route}: not approved`);
    if (frame.t === FrameType.StreamResume) return await this.#resume(route, state.session, plaintext);
    if (frame.t === FrameType.StreamClose) {
      this.#opts.debug(`IDE route ${route}: stream closed by the IDE`);
      return this.#opts.streams.close(route);
    }
    const stream = this.#opts.streams.byRoute(route);
    if (!stream) throw new E2eError(`Cannot accept ${frame.t} on route ${route}: no stream resumed`);
    if (frame.t === FrameType.StreamAck) return stream.sender.ack(decodeStreamAck(plaintext, e2eFail).received);
    if (!stream.receiver.accept({ t: frame.t, q: frame.q, body: plaintext })) return; // Already had it.
    this.#opts.deliver(stream.handle, { ...frame, body: plaintext });
  }

  /** Forgets a route whose IDE socket left (its stream lingers). */
  closeRoute(route: number): void {
    this.#routes.delete(route);
    this.#opts.streams.detachRoute(route);
  }

  /**
   * `stream.resume` from an approved route: attach the IDE's stream here,
   * answer with what this side has received (and whether it knew the
   * stream), then resend what the IDE has not received.
   */
  async #resume(route: number, session: E2eSession, plaintext: Uint8Array): Promise<void> {
    const { stream: id, received } = decodeStreamResume(plaintext, e2eFail);
    const { stream, known } = this.#opts.streams.open(id, session.peerIdentity, route);
    this.#opts.debug(`IDE route ${route}: stream ${stream.handle} ${known ? "resumed" : "started"}`);
    const reply: StreamResumeBody = { stream: id, received: stream.receiver.received, known };
    await this.#opts.send(
      await session.seal({ t: FrameType.StreamResume, r: route, body: bodyBytes(reply) }),
      route,
    );
    stream.receiver.setAckSender((n) => {
      const ack: StreamAckBody = { received: n };
      this.#sealAndSend(route, session, { t: FrameType.StreamAck, body: bodyBytes(ack) }).catch(() => {});
    });
    // A new stream has sent nothing: the IDE's count refers to an earlier bridge run.
    stream.sender.attach((f: StreamFrame) => this.#sealAndSend(route, session, f), known ? received : 0);
  }

  #sealAndSend(route: number, session: E2eSession, frame: FrameInit & { q?: number }): Promise<void> {
    // Only while this session still has these keys: a re-keyed session gets the resent frames instead.
    const state = this.#routes.get(route);
    if (!state || state.phase === "confirming" || state.session !== session) return Promise.resolve();
    return session.seal({ t: frame.t, r: route, id: frame.id, q: frame.q, body: bodyBytes(frame.body) })
      .then((bytes) => this.#opts.send(bytes, route));
  }

  async #confirmed(route: number, session: E2eSession): Promise<void> {
    const pinned = this.#opts.pinned();
    const print = await fingerprint(session.peerIdentity);
    let approval: E2eInfoBody["approval"];
    if (!pinned) approval = "needed";
    else approval = _equal(pinned, session.peerIdentity) ? "pinned" : "refused";
    const state: RouteState = approval === "needed"
      ? { phase: "approval", session }
      : { phase: approval === "pinned" ? "ready" : "refused", session };
    this.#routes.set(route, state);
    await this.#sendInfo(route, session, approval);
    this.#opts.debug(`IDE route ${route}: keys agreed (${approval})`);
    if (approval === "refused") this.#opts.onRefused(print);
    if (approval !== "needed" || state.phase !== "approval") return;
    if (!this.#opts.onApprovalNeeded(session.sas, print)) {
      this.#routes.set(route, { phase: "refused", session });
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
      const waiting = [...this.#routes.values()].filter((s) => s.phase === "approval");
      const match = waiting.find((s) => s.phase === "approval" && s.session.sas.replace(" ", "") === digits);
      if (!match || match.phase !== "approval") return this.#opts.onMismatch();
      match.local = true;
      if (match.ide) await this.#approved(match.session.peerIdentity);
      // Another handshake still waiting (a new SAS printed meanwhile): ask again.
      if ([...this.#routes.values()].some((s) => s.phase === "approval" && !s.local)) this.#ask();
    }).catch((error) => this.#opts.debug(`SAS confirmation failed: ${error}`));
  }

  async #approved(ideIdentity: Uint8Array): Promise<void> {
    await this.#opts.onApproved(ideIdentity);
    // Every session of this IDE identity waiting for approval is approved with
    // it, and learns so from a fresh e2e.info ("pinned"): only then does the
    // IDE send commands.
    for (const [route, state] of this.#routes) {
      if (state.phase !== "approval") continue;
      if (!_equal(state.session.peerIdentity, ideIdentity)) {
        this.#routes.set(route, { phase: "refused", session: state.session });
        continue;
      }
      this.#routes.set(route, { phase: "ready", session: state.session });
      await this.#sendInfo(route, state.session, "pinned");
    }
  }

  async #sendInfo(route: number, session: E2eSession, approval: E2eInfoBody["approval"]): Promise<void> {
    const signature = this.#signatures.get(session) ?? "";
    const info: E2eInfoBody = approval === "refused"
      ? { name: "", os: "", version: "", approval, signature }
      : { ...this.#opts.info, approval, signature };
    await this.#opts.send(await session.seal({ t: FrameType.E2eInfo, r: route, body: bodyBytes(info) }), route);
  }
}

function _json(frame: Frame): Record<string, unknown> {
  return parseJsonObject(frame.body, frame.t, e2eFail);
}

function _equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((x, i) => x === b[i]);
}
