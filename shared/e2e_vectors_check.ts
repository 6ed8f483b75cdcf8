/**
 * Runs the known-answer vectors (shared/e2e_vectors.json) against the shared
 * crypto modules with nothing but WebCrypto, so the same checks run in Deno
 * (shared/e2e_vectors_test.ts) and in the browser page (issue: web IDE).
 *
 * @module
 */
import {
  commitment,
  deriveSessionKeys,
  fingerprint,
  fromBase64Url,
  type SessionKeys,
  signTranscript,
  toBase64Url,
  transcript,
  verifyTranscript,
} from "./e2e_crypto.ts";
import { E2eSession, IdeHandshake } from "./e2e_session.ts";
import { decodeFrame, headerAad, routeFrame } from "./frame_codec.ts";
import { type FrameTypeName, PROTOCOL_VERSION, ROUTE_OFFSET } from "./protocol.ts";

/** An Ed25519 or X25519 private key as a JWK. */
interface VectorJwk {
  kty: string;
  crv: string;
  x: string;
  d: string;
}

/** The parts of the vector file the checker reads. */
export interface E2eVectors {
  protocolVersion: number;
  pairingId: string;
  keys: { ideIdentity: VectorJwk; bridgeIdentity: VectorJwk; ideEphemeral: VectorJwk; bridgeEphemeral: VectorJwk };
  handshake: {
    hello: { pairingId: string; commitment: string };
    reply: { identity: string; ephemeral: string };
    confirm: { identity: string; ephemeral: string; signature: string };
  };
  commitment: string;
  transcript: string;
  transcriptHash: string;
  sas: string;
  signatures: { ide: string; bridge: string };
  fingerprints: { ide: string; bridge: string };
  frames: {
    name: string;
    direction: "ide->bridge" | "bridge->ide";
    header: { t: FrameTypeName; r?: number; id?: string; s: number; q?: number };
    bodyText?: string;
    bodyHex?: string;
    aad: string;
    frame: string;
    sameSealedBodyAs?: string;
  }[];
  badFrames: { name: string; basedOn: string; direction: "ide->bridge" | "bridge->ide"; frame: string }[];
}

/** One check's outcome. */
export interface VectorCheck {
  /** What was checked. */
  name: string;
  /** Whether it held. */
  ok: boolean;
  /** Why not. */
  detail?: string;
}

/**
 * Checks every vector; never throws for a failed check (it is reported).
 *
 * @param vectors The parsed vector file.
 * @returns One entry per check.
 *
 * @example
 * ```ts ignore
 * import vectors from "./e2e_vectors.json" with { type: "json" };
 * import { checkVectors } from "./e2e_vectors_check.ts";
 * console.log((await checkVectors(vectors)).every((c) => c.ok));
 * ```
 */
export async function checkVectors(vectors: E2eVectors): Promise<VectorCheck[]> {
  const results: VectorCheck[] = [];
  const check = async (name: string, fn: () => Promise<boolean | string> | boolean | string) => {
    try {
      const r = await fn();
      results.push(r === true ? { name, ok: true } : { name, ok: false, detail: r === false ? "mismatch" : r });
    } catch (error) {
      results.push({ name, ok: false, detail: String(error) });
    }
  };
  const subtle = globalThis.crypto.subtle;
  const raw = (jwk: VectorJwk) => fromBase64Url(jwk.x);
  const priv = (jwk: VectorJwk, usages: KeyUsage[]) =>
    subtle.importKey("jwk", { kty: jwk.kty, crv: jwk.crv, x: jwk.x, d: jwk.d }, { name: jwk.crv }, false, usages);
  const pub = {
    ideIdentity: raw(vectors.keys.ideIdentity),
    ideEphemeral: raw(vectors.keys.ideEphemeral),
    bridgeIdentity: raw(vectors.keys.bridgeIdentity),
    bridgeEphemeral: raw(vectors.keys.bridgeEphemeral),
  };

  await check("protocol version", () => vectors.protocolVersion === PROTOCOL_VERSION);
  await check("commitment", async () => {
    const commit = await commitment({
      pairingId: vectors.pairingId,
      ideIdentity: pub.ideIdentity,
      ideEphemeral: pub.ideEphemeral,
    });
    return _hex(commit) === vectors.commitment && toBase64Url(commit) === vectors.handshake.hello.commitment;
  });
  await check("handshake bodies", () => {
    const { hello, reply, confirm } = vectors.handshake;
    return hello.pairingId === vectors.pairingId &&
      reply.identity === vectors.keys.bridgeIdentity.x && reply.ephemeral === vectors.keys.bridgeEphemeral.x &&
      confirm.identity === vectors.keys.ideIdentity.x && confirm.ephemeral === vectors.keys.ideEphemeral.x &&
      confirm.signature === vectors.signatures.ide;
  });
  const t = transcript({ pairingId: vectors.pairingId, ...pub });
  await check("transcript", () => _hex(t) === vectors.transcript);
  let keys: Record<"ide" | "bridge", SessionKeys> | undefined;
  await check("key agreement, transcript hash and SAS", async () => {
    keys = {
      ide: await deriveSessionKeys(
        "ide",
        await priv(vectors.keys.ideEphemeral, ["deriveBits"]),
        pub.bridgeEphemeral,
        t,
      ),
      bridge: await deriveSessionKeys(
        "bridge",
        await priv(vectors.keys.bridgeEphemeral, ["deriveBits"]),
        pub.ideEphemeral,
        t,
      ),
    };
    return _hex(keys.ide.transcriptHash) === vectors.transcriptHash && keys.ide.sas === vectors.sas &&
      keys.bridge.sas === vectors.sas;
  });
  await check("fingerprints", async () =>
    (await fingerprint(pub.ideIdentity)) === vectors.fingerprints.ide &&
    (await fingerprint(pub.bridgeIdentity)) === vectors.fingerprints.bridge);
  for (const role of ["ide", "bridge"] as const) {
    await check(`${role} signature`, async () => {
      const hash = _unhex(vectors.transcriptHash);
      const key = await priv(role === "ide" ? vectors.keys.ideIdentity : vectors.keys.bridgeIdentity, ["sign"]);
      const signature = await signTranscript(role, key, hash);
      const publicKey = role === "ide" ? pub.ideIdentity : pub.bridgeIdentity;
      const other = role === "ide" ? "bridge" : "ide";
      return _b64(signature) === vectors.signatures[role] &&
        await verifyTranscript(role, publicKey, hash, signature) &&
        !await verifyTranscript(other, publicKey, hash, signature);
    });
  }
  if (!keys) return results;
  const k = keys;
  await check("e2e.info carries the bridge signature, and the IDE verifies it", async () => {
    const info = vectors.frames.find((f) => f.header.t === "e2e.info" && f.direction === "bridge->ide");
    if (!info?.bodyText) return "no e2e.info frame";
    const signature = (JSON.parse(info.bodyText) as { signature?: unknown }).signature;
    if (signature !== vectors.signatures.bridge) return "signature is not signatures.bridge";
    await IdeHandshake.verifyBridge(new E2eSession(k.ide, pub.bridgeIdentity), signature);
    // The IDE's own signature is no bridge signature.
    return await IdeHandshake.verifyBridge(new E2eSession(k.ide, pub.bridgeIdentity), vectors.signatures.ide)
      .then(() => "the IDE signature passed as the bridge's", () => true);
  });
  const sender = (direction: string) =>
    direction === "ide->bridge" ? new E2eSession(k.ide, pub.bridgeIdentity) : new E2eSession(k.bridge, pub.ideIdentity);
  const receiver = (direction: string) =>
    direction === "ide->bridge" ? new E2eSession(k.bridge, pub.ideIdentity) : new E2eSession(k.ide, pub.bridgeIdentity);
  const originals = vectors.frames.filter((f) => f.sameSealedBodyAs === undefined);
  /** A fresh receiver that has opened every original frame of `direction` before counter `s`. */
  const receiverAt = async (direction: string, s: number) => {
    const session = receiver(direction);
    const before = originals.filter((f) => f.direction === direction && f.header.s < s);
    for (const f of before.sort((a, b) => a.header.s - b.header.s)) await session.open(decodeFrame(_unhex(f.frame)));
    return session;
  };
  const plaintext = (f: { bodyHex?: string; bodyText?: string }) =>
    f.bodyHex !== undefined ? _unhex(f.bodyHex) : new TextEncoder().encode(f.bodyText ?? "");
  // Frames are sealed in counter order per direction.
  for (const direction of ["ide->bridge", "bridge->ide"] as const) {
    const seal = sender(direction);
    const open = receiver(direction);
    const inOrder = originals.filter((f) => f.direction === direction).sort((a, b) => a.header.s - b.header.s);
    for (const f of inOrder) {
      const body = plaintext(f);
      await check(`seal: ${f.name}`, async () => {
        const { t, r, id, q } = f.header;
        return _hex(await seal.seal({ t, r, id, q, body })) === f.frame;
      });
      await check(`associated data: ${f.name}`, () => _hex(headerAad(decodeFrame(_unhex(f.frame)).header)) === f.aad);
      await check(`open: ${f.name}`, async () => _hex(await open.open(decodeFrame(_unhex(f.frame)))) === _hex(body));
    }
  }
  // A relayed copy is its original with the route re-stamped in place, and opens the same.
  for (const f of vectors.frames.filter((f) => f.sameSealedBodyAs !== undefined)) {
    await check(`open relayed copy: ${f.name}`, async () => {
      const original = originals.find((g) => g.name === f.sameSealedBodyAs);
      if (!original) return "no original";
      const restamped = _unhex(original.frame);
      routeFrame(restamped, f.header.r ?? 0);
      if (_hex(restamped) !== f.frame) return "not the original with only the route re-stamped";
      if (f.aad !== original.aad) return "the associated data changed with the route";
      const session = await receiverAt(f.direction, f.header.s);
      return _hex(await session.open(decodeFrame(_unhex(f.frame)))) === _hex(plaintext(f));
    });
  }
  for (const bad of vectors.badFrames) {
    await check(`reject: ${bad.name}`, async () => {
      const bytes = _unhex(bad.frame);
      const original = originals.find((g) => g.name === bad.basedOn);
      if (!original) return "no good frame it is based on";
      // A bad frame keeps the good frame's route: what it changes, the relay may not.
      const good = _unhex(original.frame);
      for (let i = ROUTE_OFFSET; i < ROUTE_OFFSET + 4; i++) if (bytes[i] !== good[i]) return "the route changed";
      const frame = decodeFrame(bytes);
      const session = await receiverAt(bad.direction, frame.s ?? 0);
      return await session.open(frame).then(() => "opened", () => true);
    });
  }
  return results;
}

function _hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function _unhex(text: string): Uint8Array {
  return Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));
}

function _b64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
