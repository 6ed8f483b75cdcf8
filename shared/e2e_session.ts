/**
 * The end-to-end handshake and the sealed session that follows it, for both
 * sides. The IDE starts with a commitment to its keys (`e2e.hello`), the
 * bridge answers with its keys (`e2e.reply`), the IDE reveals its keys and
 * signs (`e2e.confirm`), and the bridge's signature comes back in its first
 * sealed `e2e.info`. From then on every end-to-end frame body is sealed with
 * {@linkcode E2eSession}. The commitment keeps a relay in the middle from
 * searching for keys that make the two sides' SAS equal: it must pick its
 * keys towards the IDE before it can know the IDE's. Everything here is
 * WebCrypto and runs unchanged in Deno and browsers.
 *
 * @module
 */
import { Coder1Error } from "./errors.ts";
import {
  commitment,
  deriveSessionKeys,
  type E2eRole,
  fromBase64Url,
  generateEphemeral,
  nonceFor,
  openBody,
  rawPublicKey,
  sealBody,
  type SessionKeys,
  signTranscript,
  SYNC_AEAD_MAX_BYTES,
  syncAead,
  toBase64Url,
  transcript,
  verifyTranscript,
} from "./e2e_crypto.ts";
import { encodeHeader, headerAad, joinFrame } from "./frame_codec.ts";
import { CloseCode, type Frame, type FrameTypeName } from "./protocol.ts";

/** An end-to-end failure: a bad signature, an unexpected key, or a frame that does not open. */
export class E2eError extends Coder1Error {
  /** @param message What failed. */
  constructor(message: string) {
    super(message, { closeCode: CloseCode.E2eFailure, reason: "e2e-failure" });
    this.name = "E2eError";
  }
}

/**
 * The failure for an end-to-end body that opened (or a handshake body) but
 * does not parse: the peer's fault or a bug, so nothing more on that session
 * is trusted. Pass it to the body decoders (shared/frame_bodies.ts).
 *
 * @param message What could not be read, e.g. `stream.ack received must be a whole number`.
 * @returns The error to throw.
 */
export function e2eFail(message: string): E2eError {
  return new E2eError(`Cannot read ${message}`);
}

/** Body of `e2e.hello` (IDE -> bridge, cleartext): the pairing id and a commitment to the IDE's keys. */
export interface HelloBody {
  pairingId: string;
  commitment: string;
}

/** Body of `e2e.reply` (bridge -> IDE, cleartext): the bridge's identity and ephemeral keys. */
export interface ReplyBody {
  identity: string;
  ephemeral: string;
}

/**
 * Body of `e2e.confirm` (IDE -> bridge, cleartext): the IDE reveals the keys it
 * committed to and signs the transcript. The bridge's signature travels back
 * sealed, in `e2e.info`.
 */
export interface ConfirmBody {
  identity: string;
  ephemeral: string;
  signature: string;
}

/**
 * A sealed, ordered session over one route (IDE socket): per-direction keys and
 * counters. Sealing assigns counters in call order and resolves in that order;
 * opening accepts only the next counter, so replayed, reordered, dropped-then-
 * resumed, altered or truncated frames all fail.
 */
export class E2eSession {
  /** The SAS both sides derived. */
  readonly sas: string;
  /** The peer's identity key (raw Ed25519). */
  readonly peerIdentity: Uint8Array;
  /** SHA-256 of the handshake transcript (what both sides sign). */
  readonly transcriptHash: Uint8Array;
  #keys: SessionKeys;
  #sendSeq = 0;
  #recvSeq = 0;
  #sealing: Promise<unknown> = Promise.resolve();
  #opening: Promise<unknown> = Promise.resolve();
  /** WebCrypto calls not yet settled: while there are some, small bodies queue behind them to keep the order. */
  #sealsInFlight = 0;
  #opensInFlight = 0;

  /**
   * @param keys From the handshake.
   * @param peerIdentity The peer's identity key.
   */
  constructor(keys: SessionKeys, peerIdentity: Uint8Array) {
    this.#keys = keys;
    this.sas = keys.sas;
    this.peerIdentity = peerIdentity;
    this.transcriptHash = keys.transcriptHash;
  }

  /**
   * Seals a frame: assigns the next send counter as `s`, encrypts the body
   * with the header (route zeroed) as associated data, and encodes it.
   *
   * @param init Type, route, id, stream sequence number and plaintext body.
   * @returns The encoded frame, in call order.
   */
  seal(init: { t: FrameTypeName; r?: number; id?: string; q?: number; body?: Uint8Array }): Promise<Uint8Array> {
    const s = this.#sendSeq++;
    const plaintext = init.body ?? new Uint8Array(0);
    const header = encodeHeader({ t: init.t, id: init.id, s, q: init.q });
    const aead = syncAead();
    if (aead && this.#keys.raw && this.#sealsInFlight === 0 && plaintext.byteLength <= SYNC_AEAD_MAX_BYTES) {
      try {
        return Promise.resolve(
          joinFrame(header, aead.seal(this.#keys.raw.send, nonceFor(s), header, plaintext), init.r),
        );
      } catch (error) {
        return Promise.reject(error);
      }
    }
    this.#sealsInFlight++;
    const sealed = this.#sealing.then(() => sealBody(this.#keys.send, s, header, plaintext));
    this.#sealing = sealed.catch(() => {});
    const frame = sealed.then((body) => joinFrame(header, body, init.r));
    // Counted out only once the caller's own reactions to it ran: a sealed frame returned later never overtakes it.
    frame.catch(() => {}).finally(() => this.#sealsInFlight--);
    return frame;
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
    const aead = syncAead();
    if (aead && this.#keys.raw && this.#opensInFlight === 0 && frame.body.byteLength <= SYNC_AEAD_MAX_BYTES + 16) {
      if (frame.s !== expected) {
        return Promise.reject(
          new E2eError(`Cannot open frame: sequence ${frame.s ?? "missing"}, expected ${expected}`),
        );
      }
      try {
        return Promise.resolve(
          aead.open(this.#keys.raw.receive, nonceFor(expected), headerAad(frame.header), frame.body),
        );
      } catch {
        return Promise.reject(new E2eError("Cannot open frame: it was altered, truncated or sealed with other keys"));
      }
    }
    this.#opensInFlight++;
    const opened = this.#opening.then(async () => {
      if (frame.s !== expected) {
        throw new E2eError(`Cannot open frame: sequence ${frame.s ?? "missing"}, expected ${expected}`);
      }
      try {
        return await openBody(this.#keys.receive, expected, headerAad(frame.header), frame.body);
      } catch {
        throw new E2eError("Cannot open frame: it was altered, truncated or sealed with other keys");
      }
    });
    this.#opening = opened.catch(() => {}).finally(() => this.#opensInFlight--);
    return opened;
  }
}

/** The IDE's half of a handshake in progress. */
export class IdeHandshake {
  #identity: CryptoKeyPair;
  #ephemeral: CryptoKeyPair;
  #mine: { identity: Uint8Array; ephemeral: Uint8Array; pairingId: string };
  #finished = false;

  private constructor(
    identity: CryptoKeyPair,
    ephemeral: CryptoKeyPair,
    mine: { identity: Uint8Array; ephemeral: Uint8Array; pairingId: string },
  ) {
    this.#identity = identity;
    this.#ephemeral = ephemeral;
    this.#mine = mine;
  }

  /**
   * Starts a handshake with the bridge `pairingId`: the hello carries only a
   * commitment to the IDE's keys, which the confirm reveals.
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
    const mine = {
      identity: await rawPublicKey(identity.publicKey),
      ephemeral: await rawPublicKey(ephemeral.publicKey),
      pairingId,
    };
    const commit = await commitment({ pairingId, ideIdentity: mine.identity, ideEphemeral: mine.ephemeral });
    return {
      handshake: new IdeHandshake(identity, ephemeral, mine),
      hello: { pairingId, commitment: toBase64Url(commit) },
    };
  }

  /**
   * Takes the bridge's keys, agrees on the session keys, signs the
   * transcript and reveals the IDE's keys. The bridge is not yet
   * authenticated: its signature arrives sealed in `e2e.info` and must pass
   * {@linkcode IdeHandshake.verifyBridge} before anything it says is trusted.
   *
   * @param reply The `e2e.reply` body.
   * @returns The session, the bridge's identity key and the `e2e.confirm` body to send.
   * @throws {E2eError} When the reply is malformed or a key is invalid.
   */
  async finish(reply: unknown): Promise<{ session: E2eSession; bridgeIdentity: Uint8Array; confirm: ConfirmBody }> {
    // One session per handshake: a second one with the same keys would reuse nonces.
    if (this.#finished) throw new E2eError("Cannot finish handshake: it is already finished");
    const r = _parse(reply, ["identity", "ephemeral"]);
    const bridgeIdentity = _key(r.identity, 32);
    const bridgeEphemeral = _key(r.ephemeral, 32);
    const t = transcript({
      pairingId: this.#mine.pairingId,
      ideIdentity: this.#mine.identity,
      ideEphemeral: this.#mine.ephemeral,
      bridgeIdentity,
      bridgeEphemeral,
    });
    const keys = await _derive("ide", this.#ephemeral.privateKey, bridgeEphemeral, t);
    const signature = await signTranscript("ide", this.#identity.privateKey, keys.transcriptHash);
    if (this.#finished) throw new E2eError("Cannot finish handshake: it is already finished");
    this.#finished = true;
    return {
      session: new E2eSession(keys, bridgeIdentity),
      bridgeIdentity,
      confirm: {
        identity: toBase64Url(this.#mine.identity),
        ephemeral: toBase64Url(this.#mine.ephemeral),
        signature: toBase64Url(signature),
      },
    };
  }

  /**
   * Checks the bridge's transcript signature (from the sealed `e2e.info`).
   *
   * @param session The session {@linkcode IdeHandshake.finish} returned.
   * @param signature The bridge's signature, base64url.
   * @throws {E2eError} When it does not verify.
   */
  static async verifyBridge(session: E2eSession, signature: unknown): Promise<void> {
    if (typeof signature !== "string") throw new E2eError("Cannot trust bridge: no handshake signature");
    if (!await verifyTranscript("bridge", session.peerIdentity, session.transcriptHash, _key(signature, 64))) {
      throw new E2eError("Cannot trust bridge: its handshake signature does not verify");
    }
  }
}

/** The bridge's half of a handshake: answered, waiting for the IDE to reveal its keys. */
export class BridgeHandshake {
  #identity: CryptoKeyPair;
  #ephemeral: CryptoKeyPair;
  #pairingId: string;
  #commitment: Uint8Array;
  #reply: { identity: Uint8Array; ephemeral: Uint8Array };
  #finished = false;

  private constructor(
    identity: CryptoKeyPair,
    ephemeral: CryptoKeyPair,
    pairingId: string,
    commit: Uint8Array,
    reply: { identity: Uint8Array; ephemeral: Uint8Array },
  ) {
    this.#identity = identity;
    this.#ephemeral = ephemeral;
    this.#pairingId = pairingId;
    this.#commitment = commit;
    this.#reply = reply;
  }

  /**
   * Answers an `e2e.hello` with the bridge's public keys (nothing is derived
   * yet: the IDE's keys are only committed to).
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
    const h = _parse(hello, ["pairingId", "commitment"]);
    if (h.pairingId !== pairingId) throw new E2eError("Cannot answer handshake: it is for another pairing");
    const commit = _key(h.commitment, 32);
    const ephemeral = await generateEphemeral();
    const mine = {
      identity: await rawPublicKey(identity.publicKey),
      ephemeral: await rawPublicKey(ephemeral.publicKey),
    };
    return {
      handshake: new BridgeHandshake(identity, ephemeral, pairingId, commit, mine),
      reply: { identity: toBase64Url(mine.identity), ephemeral: toBase64Url(mine.ephemeral) },
    };
  }

  /**
   * Checks the IDE's revealed keys against its commitment and its transcript
   * signature, agrees on the session keys and signs the transcript.
   *
   * @param confirm The `e2e.confirm` body.
   * @returns The sealed session and the bridge's signature (base64url) for `e2e.info`.
   * @throws {E2eError} When the keys do not match the commitment or the signature does not verify.
   */
  async finish(confirm: unknown): Promise<{ session: E2eSession; signature: string }> {
    // One session per handshake: a second one with the same keys would reuse nonces.
    if (this.#finished) throw new E2eError("Cannot finish handshake: it is already finished");
    const c = _parse(confirm, ["identity", "ephemeral", "signature"]);
    const ideIdentity = _key(c.identity, 32);
    const ideEphemeral = _key(c.ephemeral, 32);
    const expected = await commitment({ pairingId: this.#pairingId, ideIdentity, ideEphemeral });
    if (!_equalBytes(expected, this.#commitment)) {
      throw new E2eError("Cannot trust IDE: its keys do not match the commitment in its hello");
    }
    const t = transcript({
      pairingId: this.#pairingId,
      ideIdentity,
      ideEphemeral,
      bridgeIdentity: this.#reply.identity,
      bridgeEphemeral: this.#reply.ephemeral,
    });
    const keys = await _derive("bridge", this.#ephemeral.privateKey, ideEphemeral, t);
    if (!await verifyTranscript("ide", ideIdentity, keys.transcriptHash, _key(c.signature, 64))) {
      throw new E2eError("Cannot trust IDE: its handshake signature does not verify");
    }
    const signature = await signTranscript("bridge", this.#identity.privateKey, keys.transcriptHash);
    if (this.#finished) throw new E2eError("Cannot finish handshake: it is already finished");
    this.#finished = true;
    return { session: new E2eSession(keys, ideIdentity), signature: toBase64Url(signature) };
  }
}

function _equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  let diff = 0;
  for (let i = 0; i < a.byteLength; i++) diff |= a[i] ^ b[i];
  return diff === 0;
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
