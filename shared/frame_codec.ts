/**
 * Encodes and decodes coder1 envelopes: a small cleartext JSON header and an
 * opaque body (layout in protocol.ts). {@linkcode decodeFrame} is the single
 * validator for every untrusted frame.
 *
 * @module
 */
import { Coder1Error } from "./errors.ts";
import {
  CloseCode,
  type Frame,
  type FrameHeader,
  MAX_CONTROL_BODY_BYTES,
  MAX_FRAME_BYTES,
  MAX_HEADER_BYTES,
  MAX_ID_LENGTH,
  PROTOCOL_VERSION,
} from "./protocol.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
const EMPTY = new Uint8Array(0);
const ID_PATTERN = /^[A-Za-z0-9_-]+$/;
const TYPE_PATTERN = /^[a-z][a-z0-9.]{0,31}$/;

/** Fields of a frame to encode; `v` is filled in. */
export interface FrameInit {
  /** Frame type. */
  t: string;
  /** Channel. */
  c?: number;
  /** Command id. */
  id?: string;
  /** Sequence number (AES-GCM counter). */
  s?: number;
  /** Stream sequence number (lossless streams). */
  q?: number;
  /** Body: bytes, a string (UTF-8) or a JSON-serialisable object. */
  body?: Uint8Array | string | Record<string, unknown>;
}

/**
 * Encodes a frame into one binary WebSocket message.
 *
 * @param init Type, ids and body.
 * @returns The message bytes.
 *
 * @example
 * ```ts
 * import { decodeFrame, encodeFrame } from "./frame_codec.ts";
 * const bytes = encodeFrame({ t: "cmd.stdout", id: "a1", body: "hi" });
 * console.log(decodeFrame(bytes).t); // "cmd.stdout"
 * ```
 */
export function encodeFrame(init: FrameInit): Uint8Array {
  const header: FrameHeader = { v: PROTOCOL_VERSION, t: init.t };
  if (init.c !== undefined) header.c = init.c;
  if (init.id !== undefined) header.id = init.id;
  if (init.s !== undefined) header.s = init.s;
  if (init.q !== undefined) header.q = init.q;
  const headerBytes = encoder.encode(JSON.stringify(header));
  if (headerBytes.byteLength > MAX_HEADER_BYTES) {
    throw new RangeError(`Cannot encode frame: header is ${headerBytes.byteLength} bytes`);
  }
  const body = bodyBytes(init.body);
  const out = new Uint8Array(2 + headerBytes.byteLength + body.byteLength);
  out[0] = headerBytes.byteLength >> 8;
  out[1] = headerBytes.byteLength & 0xff;
  out.set(headerBytes, 2);
  out.set(body, 2 + headerBytes.byteLength);
  return out;
}

/**
 * Re-encodes a decoded frame with a different channel, keeping the body bytes
 * untouched (the relay uses it to stamp the channel without reading bodies).
 *
 * @param frame The frame as decoded.
 * @param channel The channel to set, or undefined to remove it.
 * @returns The new message bytes.
 */
export function withChannel(frame: Frame, channel: number | undefined): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = encodeFrame({ t: frame.t, c: channel, id: frame.id, s: frame.s, q: frame.q, body: frame.body });
  } catch {
    throw _bad("header too long once stamped with its channel");
  }
  // The stamp adds a few header bytes: a frame at the limit must not grow past
  // what the receiver accepts.
  if (bytes.byteLength > MAX_FRAME_BYTES) {
    throw new Coder1Error(`Cannot forward frame: ${bytes.byteLength} bytes once stamped is over ${MAX_FRAME_BYTES}`, {
      closeCode: CloseCode.TooBig,
      reason: "too-big",
    });
  }
  return bytes;
}

/**
 * Decodes and validates one untrusted message. Throws a {@linkcode Coder1Error}
 * carrying close code 4400 (malformed) or 4413 (too big).
 *
 * @param data The message as received (text messages are rejected).
 * @returns The frame; its `body` is a view into `data`.
 */
export function decodeFrame(data: unknown): Frame {
  const bytes = _asBytes(data);
  if (bytes.byteLength > MAX_FRAME_BYTES) {
    throw new Coder1Error(`Cannot accept frame: ${bytes.byteLength} bytes is over ${MAX_FRAME_BYTES}`, {
      closeCode: CloseCode.TooBig,
      reason: "too-big",
    });
  }
  if (bytes.byteLength < 2) throw _bad("shorter than its length prefix");
  const headerLength = (bytes[0] << 8) | bytes[1];
  if (headerLength === 0 || headerLength > MAX_HEADER_BYTES || 2 + headerLength > bytes.byteLength) {
    throw _bad("header length out of range");
  }
  let header: unknown;
  try {
    header = JSON.parse(decoder.decode(bytes.subarray(2, 2 + headerLength)));
  } catch {
    throw _bad("header is not JSON");
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw _bad("header is not an object");
  }
  const h = header as Record<string, unknown>;
  if (h.v !== PROTOCOL_VERSION) throw _bad(`unsupported protocol version ${String(h.v)}`);
  if (typeof h.t !== "string" || !TYPE_PATTERN.test(h.t)) throw _bad("bad type");
  const frame: Frame = { v: PROTOCOL_VERSION, t: h.t, body: bytes.subarray(2 + headerLength) };
  if (h.c !== undefined) {
    if (!Number.isSafeInteger(h.c) || (h.c as number) < 0) throw _bad("bad channel");
    frame.c = h.c as number;
  }
  if (h.id !== undefined) {
    if (typeof h.id !== "string" || h.id.length > MAX_ID_LENGTH || !ID_PATTERN.test(h.id)) {
      throw _bad("bad id");
    }
    frame.id = h.id;
  }
  if (h.s !== undefined) {
    if (!Number.isSafeInteger(h.s) || (h.s as number) < 0) throw _bad("bad sequence");
    frame.s = h.s as number;
  }
  if (h.q !== undefined) {
    if (!Number.isSafeInteger(h.q) || (h.q as number) < 1) throw _bad("bad stream sequence");
    frame.q = h.q as number;
  }
  return frame;
}

/**
 * Parses a frame body as a JSON object (for control frames and, in protocol
 * version 1, end-to-end control bodies).
 *
 * @param frame The frame.
 * @returns The parsed object.
 */
export function jsonBody(frame: Frame): Record<string, unknown> {
  if (frame.body.byteLength > MAX_CONTROL_BODY_BYTES && !frame.t.startsWith("cmd.")) {
    throw _bad(`${frame.t} body too large`);
  }
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(frame.body));
  } catch {
    throw _bad(`${frame.t} body is not JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw _bad(`${frame.t} body is not an object`);
  }
  return value as Record<string, unknown>;
}

/** Decodes a body as UTF-8 text (replacing invalid sequences). */
export function textBody(frame: Frame): string {
  return new TextDecoder().decode(frame.body);
}

/**
 * The bytes a frame body encodes to: bytes as they are, strings as UTF-8,
 * objects as JSON (what {@linkcode encodeFrame} does, for callers that seal
 * the body first).
 *
 * @param body The body.
 * @returns Its bytes.
 *
 * @example
 * ```ts
 * import { bodyBytes } from "./frame_codec.ts";
 * console.log(bodyBytes({ a: 1 }).byteLength); // 7
 * ```
 */
export function bodyBytes(body: FrameInit["body"]): Uint8Array {
  if (body === undefined) return EMPTY;
  if (body instanceof Uint8Array) return body;
  if (typeof body === "string") return encoder.encode(body);
  return encoder.encode(JSON.stringify(body));
}

function _asBytes(data: unknown): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  // npm:ws may deliver fragmented messages as a list of buffers.
  if (Array.isArray(data) && data.every((d) => d instanceof Uint8Array)) return concatBytes(data);
  throw _bad("text frames are not accepted");
}

/**
 * Joins byte chunks into one array.
 *
 * @param chunks The chunks, in order.
 * @returns A new array holding all of them.
 */
export function concatBytes(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

function _bad(what: string): Coder1Error {
  return new Coder1Error(`Cannot accept frame: ${what}`, { closeCode: CloseCode.BadFrame, reason: "bad-frame" });
}
