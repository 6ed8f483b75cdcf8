/**
 * The end-to-end handshake and the sealed channel that follows it, for both
 * sides. The IDE starts (`e2e.hello`), the bridge answers (`e2e.reply`, signed),
 * the IDE confirms (`e2e.confirm`, signed); from then on every end-to-end
 * frame body is sealed with {@linkcode E2eChannel}. Everything here is
 * WebCrypto and runs unchanged in Deno and browsers.
 *
 * @module
 */
import { Coder1Error } from "./errors.ts";
import {
  deriveSessionKeys,
  type E2eRole,
  frameAad,
  fromBase64Url,
  generateEphemeral,
  openBody,
  rawPublicKey,
  sealBody,
  type SessionKeys,
  signTranscript,
  toBase64Url,
  transcript,
  verifyTranscript,
} from "./e2e_crypto.ts";
import { encodeFrame } from "./frame_codec.ts";
import { CloseCode, type Frame, PROTOCOL_VERSION } from "./protocol.ts";

/** An end-to-end failure: a bad signature, an unexpected key, or a frame that does not open. */
export class E2eError extends Coder1Error {
  /** @param message What failed. */
  constructor(message: string) {
    super(message, { closeCode: CloseCode.E2eFailure, reason: "e2e-failure" });
    this.name = "E2eError";
  }
}

/** Body of `e2e.hello` (IDE -> bridge, cleartext: public values only). */
export interface HelloBody {
  identity: string;
  ephemeral: string;
  pairingId: string;
}

/** Body of `e2e.reply` (bridge -> IDE, cleartext). */
export interface ReplyBody {
  identity: string;
  ephemeral: string;
  signature: string;
}

/** Body of `e2e.confirm` (IDE -> bridge, cleartext). */
export interface ConfirmBody {
  signature: string;
}

/**
 * A sealed, ordered channel over one IDE socket: per-direction keys and
 * counters. Sealing assigns counters in call order and resolves in that order;
 * opening accepts only the next counter, so replayed, reordered, dropped-then-
 * resumed, altered or truncated frames all fail.
 */
export class E2eChannel {
  /** The SAS both sides derived. */
  readonly sas: string;
  /** The peer's identity key (raw Ed25519). */
  readonly peerIdentity: Uint8Array;
  #keys: SessionKeys;
  #sendSeq = 0;
  #recvSeq = 0;
  #sealing: Promise<unknown> = Promise.resolve();
  #opening: Promise<unknown> = Promise.resolve();

  /**
   * @param keys From the handshake.
   * @param peerIdentity The peer's identity key.
   */
  constructor(keys: SessionKeys, peerIdentity: Uint8Array) {
    this.#keys = keys;
    this.sas = keys.sas;
    this.peerIdentity = peerIdentity;
  }

  /**
   * Seals a frame: assigns the next send counter as `s`, encrypts the body
   * with the header as associated data, and encodes it.
   *
   * @param init Type, channel, id and plaintext body.
   * @returns The encoded frame, in call order.
   */
  seal(init: { t: string; c?: number; id?: string; body?: Uint8Array }): Promise<Uint8Array> {
    const s = this.#sendSeq++;
    const plaintext = init.body ?? new Uint8Array(0);
    const aad = frameAad({ v: PROTOCOL_VERSION, t: init.t, id: init.id, s });
    const sealed = this.#sealing.then(() => sealBody(this.#keys.send, s, aad, plaintext));
    this.#sealing = sealed.catch(() => {});
    return sealed.then((body) => encodeFrame({ t: init.t, c: init.c, id: init.id, s, body }));
  }

  /**
   * Opens a received sealed frame.
   *
   * @param frame The decoded frame.
   * @returns The plaintext body.
   * @throws {E2eError} For a missing, repeated or skipped counter, or a body that does not authenticate.
   */
  open(frame: Frame): Promise<Uint8Array> {
    const expected = this.#recvSeq++;
    const opened = this.#opening.then(async () => {
      if (frame.s !== expected) {
        throw new E2eError(`Cannot open frame: sequence ${frame.s ?? "missing"}, expected ${expected}`);
      }
      try {
        return await openBody(
          this.#keys.receive,
          expected,
          frameAad({ v: frame.v, t: frame.t, id: frame.id, s: expected }),
          frame.body,
        );
      } catch {
        throw new E2eError("Cannot open frame: it was altered, truncated or sealed with other keys");
      }
    });
    this.#opening = opened.catch(() => {});
    return opened;
  }
}

/** The IDE's half of a handshake in progress. */
export class IdeHandshake {
  #identity: CryptoKeyPair;
  #ephemeral: CryptoKeyPair;
  #hello: { identity: Uint8Array; ephemeral: Uint8Array; pairingId: string };
  #finished = false;

  private constructor(
    identity: CryptoKeyPair,
    ephemeral: CryptoKeyPair,
    hello: { identity: Uint8Array; ephemeral: Uint8Array; pairingId: string },
  ) {
    this.#identity = identity;
    this.#ephemeral = ephemeral;
    this.#hello = hello;
  }

  /**
   * Starts a handshake with the bridge `pairingId`.
   *
   * @param identity The IDE's identity key pair.
   * @param pairingId The bridge id from `bridge.status`.
   * @returns The handshake and the `e2e.hello` body to send.
   */
  static async start(
    identity: CryptoKeyPair,
    pairingId: string,
  ): Promise<{ handshake: IdeHandshake; hello: HelloBody }> {
    const ephemeral = await generateEphemeral();
    const hello = {
      identity: await rawPublicKey(identity.publicKey),
      ephemeral: await rawPublicKey(ephemeral.publicKey),
      pairingId,
    };
    return {
      handshake: new IdeHandshake(identity, ephemeral, hello),
      hello: { identity: toBase64Url(hello.identity), ephemeral: toBase64Url(hello.ephemeral), pairingId },
    };
  }

  /**
   * Checks the bridge's signed reply and finishes the exchange.
   *
   * @param reply The `e2e.reply` body.
   * @returns The channel and the `e2e.confirm` body to send.
   * @throws {E2eError} When the reply is malformed or its signature does not verify.
   */
  async finish(reply: unknown): Promise<{ channel: E2eChannel; confirm: ConfirmBody }> {
    // One channel per handshake: a second one with the same keys would reuse nonces.
    if (this.#finished) throw new E2eError("Cannot finish handshake: it is already finished");
    const r = _parse(reply, ["identity", "ephemeral", "signature"]);
    const bridgeIdentity = _key(r.identity, 32);
    const bridgeEphemeral = _key(r.ephemeral, 32);
    const t = transcript({
      pairingId: this.#hello.pairingId,
      ideIdentity: this.#hello.identity,
      ideEphemeral: this.#hello.ephemeral,
      bridgeIdentity,
      bridgeEphemeral,
    });
    const keys = await _derive("ide", this.#ephemeral.privateKey, bridgeEphemeral, t);
    if (!await verifyTranscript("bridge", bridgeIdentity, keys.transcriptHash, _key(r.signature, 64))) {
      throw new E2eError("Cannot trust bridge: its handshake signature does not verify");
    }
    const signature = await signTranscript("ide", this.#identity.privateKey, keys.transcriptHash);
    if (this.#finished) throw new E2eError("Cannot finish handshake: it is already finished");
    this.#finished = true;
    return { channel: new E2eChannel(keys, bridgeIdentity), confirm: { signature: toBase64Url(signature) } };
  }
}

/** The bridge's half of a handshake: answered, waiting for the IDE's confirmation. */
export class BridgeHandshake {
  #keys: SessionKeys;
  #finished = false;
  /** The identity key the IDE presented (raw Ed25519). */
  readonly ideIdentity: Uint8Array;

  private constructor(keys: SessionKeys, ideIdentity: Uint8Array) {
    this.#keys = keys;
    this.ideIdentity = ideIdentity;
  }

  /**
   * Answers an `e2e.hello`.
   *
   * @param identity The bridge's identity key pair.
   * @param pairingId The bridge's own id (from `auth.ok`).
   * @param hello The `e2e.hello` body.
   * @returns The handshake and the `e2e.reply` body to send.
   * @throws {E2eError} When the hello is malformed or names another pairing.
   */
  static async respond(
    identity: CryptoKeyPair,
    pairingId: string,
    hello: unknown,
  ): Promise<{ handshake: BridgeHandshake; reply: ReplyBody }> {
    const h = _parse(hello, ["identity", "ephemeral", "pairingId"]);
    if (h.pairingId !== pairingId) throw new E2eError("Cannot answer handshake: it is for another pairing");
    const ideIdentity = _key(h.identity, 32);
    const ideEphemeral = _key(h.ephemeral, 32);
    const ephemeral = await generateEphemeral();
    const bridgeIdentity = await rawPublicKey(identity.publicKey);
    const bridgeEphemeral = await rawPublicKey(ephemeral.publicKey);
    const t = transcript({ pairingId, ideIdentity, ideEphemeral, bridgeIdentity, bridgeEphemeral });
    const keys = await _derive("bridge", ephemeral.privateKey, ideEphemeral, t);
    const signature = await signTranscript("bridge", identity.privateKey, keys.transcriptHash);
    return {
      handshake: new BridgeHandshake(keys, ideIdentity),
      reply: {
        identity: toBase64Url(bridgeIdentity),
        ephemeral: toBase64Url(bridgeEphemeral),
        signature: toBase64Url(signature),
      },
    };
  }

  /**
   * Checks the IDE's confirmation signature.
   *
   * @param confirm The `e2e.confirm` body.
   * @returns The sealed channel.
   * @throws {E2eError} When the signature does not verify.
   */
  async finish(confirm: unknown): Promise<E2eChannel> {
    // One channel per handshake: a second one with the same keys would reuse nonces.
    if (this.#finished) throw new E2eError("Cannot finish handshake: it is already finished");
    const c = _parse(confirm, ["signature"]);
    if (!await verifyTranscript("ide", this.ideIdentity, this.#keys.transcriptHash, _key(c.signature, 64))) {
      throw new E2eError("Cannot trust IDE: its handshake signature does not verify");
    }
    if (this.#finished) throw new E2eError("Cannot finish handshake: it is already finished");
    this.#finished = true;
    return new E2eChannel(this.#keys, this.ideIdentity);
  }
}

async function _derive(role: E2eRole, ephemeral: CryptoKey, peer: Uint8Array, t: Uint8Array): Promise<SessionKeys> {
  try {
    return await deriveSessionKeys(role, ephemeral, peer, t);
  } catch {
    throw new E2eError("Cannot agree on keys: the peer's ephemeral key is invalid");
  }
}

function _parse(body: unknown, fields: string[]): Record<string, string> {
  if (typeof body !== "object" || body === null) throw new E2eError("Cannot read handshake: body is not an object");
  const b = body as Record<string, unknown>;
  for (const f of fields) if (typeof b[f] !== "string") throw new E2eError(`Cannot read handshake: ${f} missing`);
  return b as Record<string, string>;
}

function _key(text: string, length: number): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = fromBase64Url(text);
  } catch {
    throw new E2eError("Cannot read handshake: a key is not base64url");
  }
  if (bytes.byteLength !== length) {
    throw new E2eError(`Cannot read handshake: expected ${length} bytes, got ${bytes.byteLength}`);
  }
  return bytes;
}
