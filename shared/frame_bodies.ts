/**
 * Body decoders: one per frame type with a JSON body. Each validates an
 * untrusted body and returns a typed value, or throws through `fail` (a 4400
 * bad frame by default; the end-to-end callers pass their own failure, since
 * a sealed body that opens but does not parse is the peer's fault, not the
 * relay's). Nothing else in the code reads a JSON body.
 *
 * @module
 */
import { Coder1Error } from "./errors.ts";
import { parseJsonObject } from "./frame_codec.ts";
import {
  type AuthBody,
  type AuthOkBody,
  type BridgeStatusBody,
  CloseCode,
  type CmdErrorBody,
  type CmdExitBody,
  type CmdSignalBody,
  type CmdStartBody,
  type E2eInfoBody,
  type FlowBody,
  MAX_COMMAND_LENGTH,
  MAX_COMMAND_TIMEOUT_MS,
  MAX_FRAME_BYTES,
  MAX_TERMINAL_COLS,
  MAX_TERMINAL_ROWS,
  MAX_TERMINAL_TITLE_LENGTH,
  MAX_TERMINALS,
  SIGNALS,
  type StreamAckBody,
  type StreamResumeBody,
  type TermErrorBody,
  type TermExitBody,
  TERMINAL_KEYS_BODY_BYTES,
  TERMINAL_SNAPSHOT_MAX_BYTES,
  type TerminalInfo,
  type TerminalSupport,
  type TermListBody,
  type TermSignalBody,
  type TermSizeBody,
  type TermSnapshotBody,
  type TermTitleBody,
} from "./protocol.ts";

/** Makes the error a decoder throws, from a message without the "Cannot read" prefix. */
export type Fail = (message: string) => Error;

/** Longest version string a bridge may announce. */
const MAX_VERSION_CHARS = 32;
/** Stream ids are random base64url, 16 to 64 characters. */
const STREAM_ID = /^[A-Za-z0-9_-]{16,64}$/;
/** Terminal ids are header ids: letters, digits, `-` and `_`, 1 to 64 characters. */
const TERMINAL_ID = /^[A-Za-z0-9_-]{1,64}$/;
/**
 * A routing key (`auth.ok` `routingKey`, `GET /api/session`): URL-safe, since
 * clients put it in `?r=` as it is. Today's relays send 16 hex characters.
 */
const ROUTING_KEY = /^[A-Za-z0-9_-]{1,64}$/;
/** The values of {@linkcode TerminalSupport}. */
const TERMINAL_SUPPORT: readonly TerminalSupport[] = ["available", "disabled", "unsupported-os"];

/**
 * `auth` (bridge -> relay): exactly one of `code` and `token`, a version, and
 * an optional `telemetry: false`.
 *
 * @param body The frame body.
 * @param fail Makes the error to throw (default: 4400).
 * @returns The typed body.
 *
 * @example
 * ```ts
 * import { decodeAuth } from "./frame_bodies.ts";
 * const body = new TextEncoder().encode('{"code":"123456","version":"0.4.0"}');
 * console.log(decodeAuth(body).code); // "123456"
 * ```
 */
export function decodeAuth(body: Uint8Array, fail: Fail = badFrame): AuthBody {
  const o = parseJsonObject(body, "auth", fail);
  const { code, token, version, telemetry, rotate } = o;
  if ((code === undefined) === (token === undefined)) throw fail("auth needs exactly one of code and token");
  if (code !== undefined && typeof code !== "string") throw fail("auth code must be a string");
  if (token !== undefined && typeof token !== "string") throw fail("auth token must be a string");
  if (telemetry !== undefined && typeof telemetry !== "boolean") throw fail("auth telemetry must be a boolean");
  if (rotate !== undefined && typeof rotate !== "boolean") throw fail("auth rotate must be a boolean");
  const out: AuthBody = { version: _text(version, MAX_VERSION_CHARS, "auth version", fail) };
  if (code !== undefined) out.code = code as string;
  if (token !== undefined) out.token = token as string;
  if (telemetry === false) out.telemetry = false;
  if (rotate === true) out.rotate = true;
  return out;
}

/** `auth.ok` (relay -> bridge). */
export function decodeAuthOk(body: Uint8Array, fail: Fail = badFrame): AuthOkBody {
  const o = parseJsonObject(body, "auth.ok", fail);
  const out: AuthOkBody = {
    bridgeId: _text(o.bridgeId, 128, "auth.ok bridgeId", fail),
    expiresAt: _whole(o.expiresAt, "auth.ok expiresAt", fail),
  };
  if (o.token !== undefined) out.token = _text(o.token, 8192, "auth.ok token", fail);
  if (o.crashReports === true) out.crashReports = true;
  if (o.routingKey !== undefined) {
    if (!isRoutingKey(o.routingKey)) throw fail("auth.ok routingKey must be 1 to 64 letters, digits, - or _");
    out.routingKey = o.routingKey;
  }
  return out;
}

/**
 * Whether `v` is a routing key a client may put in `?r=` (1 to 64 letters,
 * digits, `-` or `_`).
 *
 * @param v A value from the relay (`auth.ok`, `GET /api/session`) or a credentials file.
 * @returns True when it is a well-formed routing key.
 */
export function isRoutingKey(v: unknown): v is string {
  return typeof v === "string" && ROUTING_KEY.test(v);
}

/** `bridge.status` (relay -> IDE). */
export function decodeBridgeStatus(body: Uint8Array, fail: Fail = badFrame): BridgeStatusBody {
  const o = parseJsonObject(body, "bridge.status", fail);
  if (o.state !== "connected" && o.state !== "disconnected") throw fail("bridge.status state unknown");
  const out: BridgeStatusBody = { state: o.state, route: _whole(o.route, "bridge.status route", fail) };
  if (o.bridgeId !== undefined) out.bridgeId = _text(o.bridgeId, 128, "bridge.status bridgeId", fail);
  if (o.version !== undefined) out.version = _text(o.version, MAX_VERSION_CHARS, "bridge.status version", fail);
  return out;
}

/** `flow` (relay -> peer). */
export function decodeFlow(body: Uint8Array, fail: Fail = badFrame): FlowBody {
  const o = parseJsonObject(body, "flow", fail);
  if (typeof o.paused !== "boolean") throw fail("flow paused must be a boolean");
  return { paused: o.paused };
}

/** `e2e.info` plaintext (bridge -> IDE). */
export function decodeE2eInfo(body: Uint8Array, fail: Fail = badFrame): E2eInfoBody {
  const o = parseJsonObject(body, "e2e.info", fail);
  if (o.approval !== "needed" && o.approval !== "pinned" && o.approval !== "refused") {
    throw fail("e2e.info approval unknown");
  }
  const field = (v: unknown, name: string) => {
    if (typeof v !== "string" || v.length > 256) throw fail(`e2e.info ${name} must be a string`);
    return v;
  };
  const out: E2eInfoBody = {
    name: field(o.name, "name"),
    os: field(o.os, "os"),
    version: field(o.version, "version"),
    approval: o.approval,
    signature: field(o.signature, "signature"),
  };
  if (o.terminals !== undefined) {
    if (typeof o.terminals !== "string") throw fail("e2e.info terminals must be a string");
    // A value this version does not know (a newer bridge's) means: no terminals it can use.
    const known = TERMINAL_SUPPORT.find((v) => v === o.terminals);
    out.terminals = known ?? "unsupported-os";
  }
  if (o.termKeys === true) out.termKeys = true;
  if (o.termSignal === true) out.termSignal = true;
  return out;
}

/** `stream.resume` plaintext (both ways). */
export function decodeStreamResume(body: Uint8Array, fail: Fail = badFrame): StreamResumeBody {
  const o = parseJsonObject(body, "stream.resume", fail);
  if (typeof o.stream !== "string" || !STREAM_ID.test(o.stream)) throw fail("stream.resume: bad stream id");
  const out: StreamResumeBody = { stream: o.stream, received: _whole(o.received, "stream.resume received", fail) };
  if (o.known !== undefined) {
    if (typeof o.known !== "boolean") throw fail("stream.resume known must be a boolean");
    out.known = o.known;
  }
  return out;
}

/** `stream.ack` plaintext (both ways). */
export function decodeStreamAck(body: Uint8Array, fail: Fail = badFrame): StreamAckBody {
  const o = parseJsonObject(body, "stream.ack", fail);
  return { received: _whole(o.received, "stream.ack received", fail) };
}

/** `cmd.start` plaintext (IDE -> bridge). */
export function decodeCmdStart(body: Uint8Array, fail: Fail = badFrame): CmdStartBody {
  const o = parseJsonObject(body, "cmd.start", fail, MAX_FRAME_BYTES);
  const { command, cwd, timeoutMs } = o;
  if (typeof command !== "string" || command.length === 0 || command.length > MAX_COMMAND_LENGTH) {
    throw fail("command must be a non-empty string of at most 64 KiB");
  }
  const out: CmdStartBody = { command };
  if (cwd !== undefined) {
    if (typeof cwd !== "string") throw fail("cwd must be a string");
    out.cwd = cwd;
  }
  if (timeoutMs !== undefined) {
    if (
      !(Number.isSafeInteger(timeoutMs) && (timeoutMs as number) > 0 && (timeoutMs as number) <= MAX_COMMAND_TIMEOUT_MS)
    ) {
      throw fail(`timeoutMs must be a whole number from 1 to ${MAX_COMMAND_TIMEOUT_MS}`);
    }
    out.timeoutMs = timeoutMs as number;
  }
  return out;
}

/** `cmd.signal` plaintext (IDE -> bridge). */
export function decodeCmdSignal(body: Uint8Array, fail: Fail = badFrame): CmdSignalBody {
  const o = parseJsonObject(body, "cmd.signal", fail);
  const signal = SIGNALS.find((s) => s === o.signal);
  if (!signal) throw fail("cmd.signal: unsupported signal");
  return { signal };
}

/** `term.signal` plaintext (IDE -> bridge). */
export function decodeTermSignal(body: Uint8Array, fail: Fail = badFrame): TermSignalBody {
  const o = parseJsonObject(body, "term.signal", fail);
  const signal = SIGNALS.find((s) => s === o.signal);
  if (!signal) throw fail("term.signal: unsupported signal");
  return { signal };
}

/** `cmd.exit` plaintext (bridge -> IDE). */
export function decodeCmdExit(body: Uint8Array, fail: Fail = badFrame): CmdExitBody {
  const o = parseJsonObject(body, "cmd.exit", fail);
  if (o.code !== null && !Number.isSafeInteger(o.code)) throw fail("cmd.exit code must be a whole number or null");
  if (o.signal !== null && typeof o.signal !== "string") throw fail("cmd.exit signal must be a string or null");
  const out: CmdExitBody = {
    code: o.code as number | null,
    signal: o.signal as string | null,
    durationMs: _whole(o.durationMs, "cmd.exit durationMs", fail),
  };
  if (o.timedOut === true) out.timedOut = true;
  return out;
}

/** `cmd.error` plaintext (bridge -> IDE). */
export function decodeCmdError(body: Uint8Array, fail: Fail = badFrame): CmdErrorBody {
  const o = parseJsonObject(body, "cmd.error", fail);
  return {
    reason: _text(o.reason, 64, "cmd.error reason", fail),
    message: typeof o.message === "string" ? o.message : "",
  };
}

/**
 * `term.open`, `term.attach` and `term.resize` plaintext (IDE -> bridge): a
 * size of 2 to {@linkcode MAX_TERMINAL_COLS} columns and 1 to
 * {@linkcode MAX_TERMINAL_ROWS} rows.
 *
 * @param body The frame body.
 * @param type The frame type, for messages.
 * @param fail Makes the error to throw (default: 4400).
 * @returns The typed body.
 *
 * @example
 * ```ts
 * import { decodeTermSize } from "./frame_bodies.ts";
 * const body = new TextEncoder().encode('{"cols":80,"rows":24}');
 * console.log(decodeTermSize(body, "term.open")); // { cols: 80, rows: 24 }
 * ```
 */
export function decodeTermSize(body: Uint8Array, type: string, fail: Fail = badFrame): TermSizeBody {
  const o = parseJsonObject(body, type, fail);
  return {
    cols: _size(o.cols, 2, MAX_TERMINAL_COLS, `${type} cols`, fail),
    rows: _size(o.rows, 1, MAX_TERMINAL_ROWS, `${type} rows`, fail),
  };
}

/**
 * Makes a `term.keys` plaintext body: a u16 length (big-endian), the bytes,
 * and zeros up to `size`. Empty bytes make chaff.
 *
 * @param bytes The input, at most `size - 2` bytes (none for chaff).
 * @param size The body's length (default {@linkcode TERMINAL_KEYS_BODY_BYTES}).
 * @returns The padded body.
 * @throws {RangeError} When the bytes do not fit.
 *
 * @example
 * ```ts
 * import { decodeTermKeys, encodeTermKeys } from "./frame_bodies.ts";
 * const body = encodeTermKeys(new TextEncoder().encode("ls"));
 * console.log(body.byteLength, decodeTermKeys(body).byteLength); // 128 2
 * ```
 */
export function encodeTermKeys(bytes: Uint8Array, size: number = TERMINAL_KEYS_BODY_BYTES): Uint8Array {
  if (bytes.byteLength > size - 2 || size > 0xffff + 2) {
    throw new RangeError(`Cannot encode term.keys: ${bytes.byteLength} bytes do not fit in a body of ${size}`);
  }
  const body = new Uint8Array(size);
  body[0] = bytes.byteLength >>> 8;
  body[1] = bytes.byteLength & 0xff;
  body.set(bytes, 2);
  return body;
}

/**
 * `term.keys` plaintext (IDE -> bridge): the input it carries, a view into
 * `body` (empty for chaff). Any body length is taken (a later IDE may pad to
 * another size); the padding is not read.
 *
 * @param body The frame body.
 * @param fail Makes the error to throw (default: 4400).
 * @returns The input bytes.
 */
export function decodeTermKeys(body: Uint8Array, fail: Fail = badFrame): Uint8Array {
  if (body.byteLength < 2) throw fail("term.keys body shorter than its length");
  const length = (body[0] << 8) | body[1];
  if (length > body.byteLength - 2) throw fail("term.keys length beyond its body");
  return body.subarray(2, 2 + length);
}

/** `term.snapshot` plaintext (bridge -> IDE). */
export function decodeTermSnapshot(body: Uint8Array, fail: Fail = badFrame): TermSnapshotBody {
  const o = parseJsonObject(body, "term.snapshot", fail, TERMINAL_SNAPSHOT_MAX_BYTES);
  if (typeof o.data !== "string") throw fail("term.snapshot data must be a string");
  const out: TermSnapshotBody = {
    cols: _size(o.cols, 2, MAX_TERMINAL_COLS, "term.snapshot cols", fail),
    rows: _size(o.rows, 1, MAX_TERMINAL_ROWS, "term.snapshot rows", fail),
    title: _title(o.title, "term.snapshot", fail),
    data: o.data,
  };
  if (o.truncated === true) out.truncated = true;
  return out;
}

/** `term.title` plaintext (bridge -> IDE). */
export function decodeTermTitle(body: Uint8Array, fail: Fail = badFrame): TermTitleBody {
  return { title: _title(parseJsonObject(body, "term.title", fail).title, "term.title", fail) };
}

/** `term.exit` plaintext (bridge -> IDE). */
export function decodeTermExit(body: Uint8Array, fail: Fail = badFrame): TermExitBody {
  const o = parseJsonObject(body, "term.exit", fail);
  if (o.code !== null && !Number.isSafeInteger(o.code)) throw fail("term.exit code must be a whole number or null");
  if (o.signal !== null && (typeof o.signal !== "string" || o.signal.length > 32)) {
    throw fail("term.exit signal must be a short string or null");
  }
  return { code: o.code as number | null, signal: o.signal as string | null };
}

/** `term.error` plaintext (bridge -> IDE). */
export function decodeTermError(body: Uint8Array, fail: Fail = badFrame): TermErrorBody {
  const o = parseJsonObject(body, "term.error", fail);
  return {
    reason: _text(o.reason, 64, "term.error reason", fail),
    message: typeof o.message === "string" ? o.message : "",
  };
}

/** The bridge's `term.list` answer (bridge -> IDE): at most twice {@linkcode MAX_TERMINALS} entries. */
export function decodeTermList(body: Uint8Array, fail: Fail = badFrame): TermListBody {
  const o = parseJsonObject(body, "term.list", fail, MAX_FRAME_BYTES);
  // Running terminals, and as many exited ones the bridge keeps for attached pages.
  if (!Array.isArray(o.terminals) || o.terminals.length > 2 * MAX_TERMINALS) {
    throw fail("term.list terminals must be a list");
  }
  const terminals = o.terminals.map((t: unknown): TerminalInfo => {
    if (typeof t !== "object" || t === null || Array.isArray(t)) throw fail("term.list entry must be an object");
    const e = t as Record<string, unknown>;
    if (typeof e.id !== "string" || !TERMINAL_ID.test(e.id)) throw fail("term.list entry: bad id");
    if (typeof e.alive !== "boolean") throw fail("term.list entry: alive must be a boolean");
    return {
      id: e.id,
      title: _title(e.title, "term.list", fail),
      alive: e.alive,
      cols: _size(e.cols, 2, MAX_TERMINAL_COLS, "term.list cols", fail),
      rows: _size(e.rows, 1, MAX_TERMINAL_ROWS, "term.list rows", fail),
      created: _whole(e.created, "term.list created", fail),
      attached: _whole(e.attached, "term.list attached", fail),
    };
  });
  return { terminals };
}

/** The default failure: a 4400 bad frame, "Cannot accept frame: ...". */
export function badFrame(message: string): Coder1Error {
  return new Coder1Error(`Cannot accept frame: ${message}`, { closeCode: CloseCode.BadFrame, reason: "bad-frame" });
}

function _text(v: unknown, max: number, field: string, fail: Fail): string {
  if (typeof v !== "string" || v.length === 0 || v.length > max) throw fail(`${field} missing or too long`);
  return v;
}

function _size(v: unknown, min: number, max: number, field: string, fail: Fail): number {
  if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) {
    throw fail(`${field} must be a whole number from ${min} to ${max}`);
  }
  return v as number;
}

function _title(v: unknown, type: string, fail: Fail): string {
  if (typeof v !== "string" || v.length > MAX_TERMINAL_TITLE_LENGTH) throw fail(`${type} title must be a short string`);
  return v;
}

function _whole(v: unknown, field: string, fail: Fail): number {
  if (!Number.isSafeInteger(v) || (v as number) < 0) throw fail(`${field} must be a whole number`);
  return v as number;
}
