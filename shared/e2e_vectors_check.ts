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
import { E2eChannel, IdeHandshake } from "./e2e_session.ts";
import { decodeFrame } from "./frame_codec.ts";
import { PROTOCOL_VERSION } from "./protocol.ts";

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
    header: { t: string; c?: number; id?: string; s: number };
    bodyText?: string;
    bodyHex?: string;
    frame: string;
  }[];
  badFrames: { name: string; direction: "ide->bridge" | "bridge->ide"; frame: string }[];
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
    await IdeHandshake.verifyBridge(new E2eChannel(k.ide, pub.bridgeIdentity), signature);
    // The IDE's own signature is no bridge signature.
    return await IdeHandshake.verifyBridge(new E2eChannel(k.ide, pub.bridgeIdentity), vectors.signatures.ide)
      .then(() => "the IDE signature passed as the bridge's", () => true);
  });
  const sender = (direction: string) =>
    direction === "ide->bridge" ? new E2eChannel(k.ide, pub.bridgeIdentity) : new E2eChannel(k.bridge, pub.ideIdentity);
  const receiver = (direction: string) =>
    direction === "ide->bridge" ? new E2eChannel(k.bridge, pub.ideIdentity) : new E2eChannel(k.ide, pub.bridgeIdentity);
  // Frames are sealed in counter order per direction; a relayed copy has the same counter as its original.
  for (const direction of ["ide->bridge", "bridge->ide"] as const) {
    const originals = new Map<number, (typeof vectors.frames)[number]>();
    for (const f of vectors.frames) {
      if (f.direction === direction && !originals.has(f.header.s)) originals.set(f.header.s, f);
    }
    const seal = sender(direction);
    const open = receiver(direction);
    for (const s of [...originals.keys()].sort((a, b) => a - b)) {
      const f = originals.get(s)!;
      const body = f.bodyHex !== undefined ? _unhex(f.bodyHex) : new TextEncoder().encode(f.bodyText ?? "");
      await check(`seal: ${f.name}`, async () => {
        const bytes = await seal.seal({ t: f.header.t, c: f.header.c, id: f.header.id, body });
        return _hex(bytes) === f.frame;
      });
      await check(`open: ${f.name}`, async () => _hex(await open.open(decodeFrame(_unhex(f.frame)))) === _hex(body));
    }
    for (const f of vectors.frames.filter((f) => f.direction === direction && originals.get(f.header.s) !== f)) {
      await check(`open relayed copy: ${f.name}`, async () => {
        const ch = receiver(direction);
        for (const s of [...originals.keys()].sort((a, b) => a - b)) {
          if (s === f.header.s) break;
          await ch.open(decodeFrame(_unhex(originals.get(s)!.frame)));
        }
        const expected = f.bodyHex !== undefined ? f.bodyHex : _hex(new TextEncoder().encode(f.bodyText ?? ""));
        return _hex(await ch.open(decodeFrame(_unhex(f.frame)))) === expected;
      });
    }
  }
  for (const bad of vectors.badFrames) {
    await check(`reject: ${bad.name}`, async () => {
      let frame;
      try {
        frame = decodeFrame(_unhex(bad.frame));
      } catch {
        return true; // Refused before decryption.
      }
      const ch = receiver(bad.direction);
      // Bring the receiver to the bad frame's claimed counter with the good frames before it.
      const before = vectors.frames.filter((f) =>
        f.direction === bad.direction && f.header.s < (frame.s ?? 0) && !f.name.includes("as the")
      ).sort((a, b) => a.header.s - b.header.s);
      for (const f of before) await ch.open(decodeFrame(_unhex(f.frame)));
      try {
        await ch.open(frame);
        return "opened";
      } catch {
        return true;
      }
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
