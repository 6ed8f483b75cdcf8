/**
 * Encodes and decodes coder1 frames: a fixed-width binary header, the command
 * id and an opaque body (layout at `HEADER_BYTES` in protocol.ts).
 * {@linkcode decodeFrame} is the single validator for every untrusted frame;
 * {@linkcode routeFrame} is the relay's fast path, which reads only the fixed
 * prefix and re-stamps the route in place; {@linkcode parseJsonObject} is the
 * one parser for JSON bodies.
 *
 * @module
 */
import { Coder1Error } from "./errors.ts";
import {
  CloseCode,
  FLAG_SEQ,
  FLAG_STREAM_SEQ,
  type Frame,
  FRAME_NAME_BY_CODE,
  FRAME_TABLE,
  type FrameTypeName,
  HEADER_BYTES,
  MAX_CONTROL_BODY_BYTES,
  MAX_FRAME_BYTES,
  MAX_ID_LENGTH,
  PROTOCOL_VERSION,
  ROUTE_OFFSET,
} from "./protocol.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
const EMPTY = new Uint8Array(0);
/** Largest route, `s` or `q` value: what a JavaScript number holds exactly. */
const MAX_U53 = Number.MAX_SAFE_INTEGER;
/** Which bytes may appear in an id: letters, digits, `-`, `_`. */
const ID_BYTE: Uint8Array = (() => {
  const ok = new Uint8Array(256);
  for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ok[c.charCodeAt(0)] = 1;
  return ok;
})();

/** Fields of a frame to encode; `v` is filled in. */
export interface FrameInit {
  /** Frame type. */
  t: FrameTypeName;
  /** Route (the relay's number for an IDE socket). */
  r?: number;
  /** Command id. */
  id?: string;
  /** Sequence number (AES-GCM counter). */
  s?: number;
  /** Stream sequence number (lossless streams). */
  q?: number;
  /** Body: bytes, a string (UTF-8) or a JSON-serialisable object. */
  body?: Uint8Array | string | object;
}

/**
 * Encodes the header of a frame: the fixed part and the id.
 *
 * @param init Type, route, id, `s` and `q` (the body is ignored).
 * @returns The header bytes.
 *
 * @example
 * ```ts
 * import { encodeHeader } from "./frame_codec.ts";
 * console.log(encodeHeader({ t: "cmd.stdout", id: "a1", s: 0 }).byteLength); // 26
 * ```
 */
export function encodeHeader(init: Omit<FrameInit, "body">): Uint8Array {
  const id = init.id ?? "";
  if (id.length > MAX_ID_LENGTH) throw new RangeError(`Cannot encode frame: id is ${id.length} characters`);
  const out = new Uint8Array(HEADER_BYTES + id.length);
  _writeHeader(out, init, id);
  return out;
}

/**
 * Encodes a frame into one binary WebSocket message.
 *
 * @param init Type, route, ids and body.
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
  const id = init.id ?? "";
  if (id.length > MAX_ID_LENGTH) throw new RangeError(`Cannot encode frame: id is ${id.length} characters`);
  const body = bodyBytes(init.body);
  const out = new Uint8Array(HEADER_BYTES + id.length + body.byteLength);
  _writeHeader(out, init, id);
  out.set(body, HEADER_BYTES + id.length);
  return out;
}

/**
 * Joins a header (from {@linkcode encodeHeader}) and a body into one message,
 * with the route stamped. Sealing uses it: the header is the associated data,
 * so it is encoded once, before the body is sealed.
 *
 * @param header The header bytes (route zero).
 * @param body The body bytes.
 * @param route The route to stamp, if any.
 * @returns The message bytes.
 */
export function joinFrame(header: Uint8Array, body: Uint8Array, route?: number): Uint8Array {
  const out = new Uint8Array(header.byteLength + body.byteLength);
  out.set(header, 0);
  out.set(body, header.byteLength);
  if (route !== undefined) _setU32(out, ROUTE_OFFSET, route);
  return out;
}

function _writeHeader(out: Uint8Array, init: Omit<FrameInit, "body">, id: string): void {
  const spec = FRAME_TABLE[init.t];
  if (!spec) throw new TypeError(`Cannot encode frame: unknown type ${String(init.t)}`);
  out[0] = PROTOCOL_VERSION;
  out[1] = spec.code;
  out[2] = (init.s !== undefined ? FLAG_SEQ : 0) | (init.q !== undefined ? FLAG_STREAM_SEQ : 0);
  out[3] = id.length;
  if (init.r !== undefined) _setU32(out, ROUTE_OFFSET, init.r);
  if (init.s !== undefined) _setU64(out, 8, init.s);
  if (init.q !== undefined) _setU64(out, 16, init.q);
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i);
    if (c > 255 || !ID_BYTE[c]) throw new TypeError("Cannot encode frame: bad id");
    out[HEADER_BYTES + i] = c;
  }
}

/** Options for {@linkcode decodeFrame}. */
export interface DecodeOptions {
  /**
   * Return undefined for a type code this version does not know, instead of
   * throwing. Endpoints skip such frames (a newer peer's additions); the relay
   * cannot route what it does not know and refuses them.
   */
  skipUnknown?: boolean;
}

/**
 * Decodes and validates one untrusted message. Throws a {@linkcode Coder1Error}
 * carrying close code 4400 (malformed), 4413 (too big) or 4426 (another
 * protocol version).
 *
 * @param data The message as received (text messages are rejected).
 * @param options Whether unknown types are skipped.
 * @returns The frame (its `header` and `body` are views into `data`), or
 *   undefined for an unknown type with `skipUnknown`.
 */
export function decodeFrame(data: unknown, options: DecodeOptions & { skipUnknown: true }): Frame | undefined;
export function decodeFrame(data: unknown, options?: DecodeOptions): Frame;
export function decodeFrame(data: unknown, options: DecodeOptions = {}): Frame | undefined {
  const bytes = asBytes(data);
  const name = _checkPrefix(bytes, options.skipUnknown === true);
  if (name === undefined) return undefined;
  const flags = bytes[2];
  const idLength = bytes[3];
  const end = HEADER_BYTES + idLength;
  const frame: Frame = {
    v: PROTOCOL_VERSION,
    t: name,
    header: bytes.subarray(0, end),
    body: bytes.subarray(end),
  };
  const route = _getU32(bytes, ROUTE_OFFSET);
  if (route !== 0) frame.r = route;
  const s = _getU64(bytes, 8), q = _getU64(bytes, 16);
  if (flags & FLAG_SEQ) frame.s = s;
  else if (s !== 0) throw _bad("s set without its flag");
  if (flags & FLAG_STREAM_SEQ) {
    if (q < 1) throw _bad("bad stream sequence");
    frame.q = q;
  } else if (q !== 0) throw _bad("q set without its flag");
  if (idLength > 0) {
    let id = "";
    for (let i = HEADER_BYTES; i < end; i++) {
      if (!ID_BYTE[bytes[i]]) throw _bad("bad id");
      id += String.fromCharCode(bytes[i]);
    }
    frame.id = id;
  }
  return frame;
}

/**
 * The relay's fast path for a frame it forwards: checks the fixed prefix
 * (version, known type, flags, id length, size) without decoding the rest,
 * and stamps `route` into the message in place (no copy, no parse).
 *
 * @param bytes The message as received; its route bytes are overwritten.
 * @param route The route to stamp (0 for none).
 * @returns The frame's type name.
 */
export function routeFrame(bytes: Uint8Array, route: number): FrameTypeName {
  const name = _checkPrefix(bytes, false)!;
  _setU32(bytes, ROUTE_OFFSET, route);
  return name;
}

/**
 * Reads the type of a message from its fixed prefix (checked as
 * {@linkcode decodeFrame} does).
 *
 * @param bytes The message.
 * @returns The type name.
 */
export function peekType(bytes: Uint8Array): FrameTypeName {
  return _checkPrefix(bytes, false)!;
}

/** Reads the route of a message whose prefix was checked (0 for none). */
export function peekRoute(bytes: Uint8Array): number {
  return _getU32(bytes, ROUTE_OFFSET);
}

/**
 * The associated data of a sealed frame: its header with the route zeroed
 * (the relay may re-stamp the route and nothing else).
 *
 * @param header The header bytes of a decoded frame.
 * @returns A copy with bytes 4-7 zero.
 */
export function headerAad(header: Uint8Array): Uint8Array {
  const aad = header.slice();
  _setU32(aad, ROUTE_OFFSET, 0);
  return aad;
}

function _checkPrefix(bytes: Uint8Array, skipUnknown: boolean): FrameTypeName | undefined {
  if (bytes.byteLength > MAX_FRAME_BYTES) {
    throw new Coder1Error(`Cannot accept frame: ${bytes.byteLength} bytes is over ${MAX_FRAME_BYTES}`, {
      closeCode: CloseCode.TooBig,
      reason: "too-big",
    });
  }
  if (bytes.byteLength < HEADER_BYTES) {
    // Protocol 1-3 started with a 2-byte length and a JSON header.
    if (bytes.byteLength >= 3 && bytes[0] < 4 && bytes[2] === 0x7b) throw _version(undefined);
    throw _bad("shorter than its header");
  }
  if (bytes[0] !== PROTOCOL_VERSION) {
    throw bytes[0] < 4 && bytes[2] === 0x7b ? _version(undefined) : _version(bytes[0]);
  }
  const name = FRAME_NAME_BY_CODE[bytes[1]];
  if (name === undefined) {
    if (skipUnknown && bytes[3] <= MAX_ID_LENGTH && HEADER_BYTES + bytes[3] <= bytes.byteLength) return undefined;
    throw _bad(`unknown type ${bytes[1]}`);
  }
  if (bytes[2] & ~(FLAG_SEQ | FLAG_STREAM_SEQ)) throw _bad("unknown flags");
  if (bytes[3] > MAX_ID_LENGTH || HEADER_BYTES + bytes[3] > bytes.byteLength) throw _bad("bad id length");
  return name;
}

/**
 * Parses bytes as a JSON object: the one parser for every JSON body (control
 * bodies and end-to-end plaintexts).
 *
 * @param bytes The body.
 * @param what What is being read, for the message, e.g. `auth`.
 * @param fail Makes the error to throw (default: a 4400 bad frame).
 * @param maxBytes Largest body accepted (default {@linkcode MAX_CONTROL_BODY_BYTES}).
 * @returns The object.
 */
export function parseJsonObject(
  bytes: Uint8Array,
  what: string,
  fail: (message: string) => Error = _bad,
  maxBytes: number = MAX_CONTROL_BODY_BYTES,
): Record<string, unknown> {
  if (bytes.byteLength > maxBytes) throw fail(`${what} body too large`);
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(bytes));
  } catch {
    throw fail(`${what} body is not JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw fail(`${what} body is not an object`);
  }
  return value as Record<string, unknown>;
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

/**
 * A received WebSocket message as bytes (a view, not a copy, where possible).
 * Text messages are refused: every coder1 frame is binary.
 *
 * @param data What the socket delivered.
 * @returns The bytes.
 */
export function asBytes(data: unknown): Uint8Array {
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

function _setU32(out: Uint8Array, at: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`Cannot encode frame: route ${value} out of range`);
  }
  out[at] = value >>> 24;
  out[at + 1] = (value >>> 16) & 0xff;
  out[at + 2] = (value >>> 8) & 0xff;
  out[at + 3] = value & 0xff;
}

function _getU32(bytes: Uint8Array, at: number): number {
  return ((bytes[at] << 24) >>> 0) + (bytes[at + 1] << 16) + (bytes[at + 2] << 8) + bytes[at + 3];
}

function _setU64(out: Uint8Array, at: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`Cannot encode frame: ${value} out of range`);
  _setU32(out, at, Math.floor(value / 0x1_0000_0000));
  _setU32(out, at + 4, value % 0x1_0000_0000);
}

function _getU64(bytes: Uint8Array, at: number): number {
  const high = _getU32(bytes, at);
  if (high > MAX_U53 / 0x1_0000_0000) throw _bad("sequence number beyond 2^53");
  return high * 0x1_0000_0000 + _getU32(bytes, at + 4);
}

function _bad(what: string): Coder1Error {
  return new Coder1Error(`Cannot accept frame: ${what}`, { closeCode: CloseCode.BadFrame, reason: "bad-frame" });
}

function _version(version: number | undefined): Coder1Error {
  return new Coder1Error(
    `Cannot accept frame: protocol ${version ?? "older than 4"}; this side speaks protocol ${PROTOCOL_VERSION}`,
    { closeCode: CloseCode.UnsupportedVersion, reason: "unsupported-version" },
  );
}
