/**
 * AES-256-GCM on the calling thread through `node:crypto`: the
 * {@linkcode SyncAead} that Deno processes (the bridge, Deno IDE clients)
 * give shared/e2e_crypto.ts for small bodies. Never bundled into the web
 * page, which keeps WebCrypto alone.
 *
 * @example
 * ```ts
 * import { useSyncAead } from "./e2e_crypto.ts";
 * import { nodeAead } from "./node_aead.ts";
 * useSyncAead(nodeAead);
 * ```
 *
 * @module
 */
import { createCipheriv, createDecipheriv } from "node:crypto";
import type { SyncAead } from "./e2e_crypto.ts";

const TAG_BYTES = 16;

/** AES-256-GCM with a 12-byte nonce and a 16-byte tag appended, as WebCrypto does it. */
export const nodeAead: SyncAead = {
  seal(key, nonce, aad, plaintext) {
    const cipher = createCipheriv("aes-256-gcm", key, nonce);
    cipher.setAAD(aad);
    const head = cipher.update(plaintext);
    const tail = cipher.final();
    const tag = cipher.getAuthTag();
    const out = new Uint8Array(head.byteLength + tail.byteLength + TAG_BYTES);
    out.set(head, 0);
    out.set(tail, head.byteLength);
    out.set(tag, head.byteLength + tail.byteLength);
    return out;
  },
  open(key, nonce, aad, sealed) {
    if (sealed.byteLength < TAG_BYTES) throw new Error("Cannot open: shorter than the tag");
    const decipher = createDecipheriv("aes-256-gcm", key, nonce);
    decipher.setAAD(aad);
    decipher.setAuthTag(sealed.subarray(sealed.byteLength - TAG_BYTES));
    const head = decipher.update(sealed.subarray(0, sealed.byteLength - TAG_BYTES));
    const tail = decipher.final(); // Throws when the tag does not verify.
    // Copied: Node may hand out a view of a shared pool.
    if (tail.byteLength === 0) return new Uint8Array(head);
    const out = new Uint8Array(head.byteLength + tail.byteLength);
    out.set(head, 0);
    out.set(tail, head.byteLength);
    return out;
  },
};
