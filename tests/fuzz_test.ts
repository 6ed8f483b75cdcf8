/**
 * Frame fuzzing against a real relay process. A seeded fuzzer sends at least
 * 100,000 frames over hundreds of `/ws/bridge` sockets (logged in with a
 * token in the upgrade request; bridges without a credential are refused with
 * 401 before any socket exists) and `/ws/ide` sockets, from many addresses in 127.0.0.0/8: random
 * bytes, truncated and bit-flipped real frames, binary headers with unknown
 * type codes or flags, bad id lengths or bytes, bad `s`/`q` fields, frames of
 * protocols 1-3 and other version bytes, oversized frames, text messages,
 * valid types in the wrong state or direction, bridge frames without a route,
 * bad `auth` and `crash` bodies. Every socket first sends a run of frames the
 * protocol lets it survive (including header fields the relay does not read
 * on frames it forwards), then one bad frame, and must be closed with the
 * close code shared/protocol.ts gives for that frame, within a bound. Meanwhile a paired IDE and bridge process keep
 * running commands whose output must stay exact, and the relay's RSS is
 * sampled. At the end the relay process is alive and `/healthz` answers.
 *
 * The seed is printed; `CODER1_FUZZ_SEED=<n>` replays it. Socket number k
 * draws its scenario and frames from its own generator (seed, k), so a
 * reported socket can be reproduced whatever the scheduling was.
 *
 * @module
 */
import assert from "node:assert/strict";
import WebSocket from "ws";
import { bridgeCredentialHeaders } from "../shared/bridge_credential.ts";
import { decodeAuthOk } from "../shared/frame_bodies.ts";
import { decodeFrame, encodeFrame, type FrameInit, peekRoute, peekType } from "../shared/frame_codec.ts";
import type { IdeClient } from "../shared/ide_client.ts";
import {
  BRIDGE_SENDS,
  CloseCode,
  END_TO_END,
  FLAG_SEQ,
  FLAG_STREAM_SEQ,
  FRAME_NAME_BY_CODE,
  FRAME_TABLE,
  FrameType,
  type FrameTypeName,
  HEADER_BYTES,
  IDE_SENDS,
  MAX_CONTROL_BODY_BYTES,
  MAX_FRAME_BYTES,
  MAX_ID_LENGTH,
  PROTOCOL_VERSION,
  ROUTE_OFFSET,
  STREAM_TYPES,
  WS_SUBPROTOCOL,
} from "../shared/protocol.ts";
import { sanitizeCrash } from "../shared/scrub.ts";
import { makeTestDirs, pairedSetup, type RelayProcess, runCollect, startRelayProcess } from "./helpers.ts";

/** Frames the fuzzer must send (survivable runs plus the final bad frame of each socket). */
const FRAME_TARGET = 100_000;
/**
 * The fuzz goes on at least this long, past the frame target, so the healthy
 * session and the memory bound are tested under sustained abuse.
 */
const FUZZ_MIN_MS = Number(Deno.env.get("CODER1_FUZZ_MIN_MS") ?? 15_000);
/** No new fuzz sockets after this long, reached or not (the test then fails on the count). */
const FUZZ_BUDGET_MS = Math.max(35_000, FUZZ_MIN_MS + 5_000);
/** Fuzz sockets open at once. */
const WORKERS = 16;
/** A bad peer must be closed within this long of its bad frame. */
const CLOSE_BOUND_MS = 10_000;
/** Bridge sockets that open and never send anything (closed at the auth deadline). */
const SILENT_BRIDGES = 24;
/**
 * Sessions (each with a bridge token) that the fuzz sockets use: enough that
 * few logins meet the per-credential login limit, at most the 20 codes an
 * address may ask for in a minute.
 */
const POOL_SIZE = 18;
/** Bound on the relay's RSS growth over the fuzz, in MiB (docs/RELIABILITY.md, "Abuse limits"). */
const RSS_GROWTH_BOUND_MIB = 128;

const DOCUMENTED_CODES: ReadonlySet<number> = new Set(Object.values(CloseCode));
const MiB = 1024 * 1024;

/**
 * A small seeded generator: a murmur3-style scramble of (seed, stream), then
 * xorshift32. Not for secrets; good enough to spread fuzz cases.
 */
class Rng {
  #state: number;

  constructor(seed: number, stream = 0) {
    let s = (seed ^ Math.imul(stream + 1, 0x9e3779b1)) >>> 0;
    s = Math.imul(s ^ (s >>> 16), 0x85ebca6b) >>> 0;
    s = Math.imul(s ^ (s >>> 13), 0xc2b2ae35) >>> 0;
    this.#state = (s ^ (s >>> 16)) >>> 0 || 0x2545f491;
  }

  u32(): number {
    let x = this.#state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#state = x >>> 0;
    return this.#state;
  }

  /** 0 <= n < max. */
  int(max: number): number {
    return Math.floor((this.u32() / 2 ** 32) * max);
  }

  /** lo <= n <= hi. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.u32() / 2 ** 32 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }

  text(n: number, alphabet: string): string {
    let s = "";
    for (let i = 0; i < n; i++) s += alphabet[this.int(alphabet.length)];
    return s;
  }
}

// ---------------------------------------------------------------------------
// The oracle: what the relay does with one message. It is written out from the
// header layout (at HEADER_BYTES in shared/protocol.ts) and the close codes
// (CloseCode), not by calling the codec, so a codec or hub that drifts from
// the layout fails here.

/** Which socket a message goes to, and in what state. */
type Role = "ide" | "bridge-post";

/** What the relay must do with a message. */
type Verdict =
  | { kind: "ok" }
  /** Close the socket with one of these codes. */
  | { kind: "bad"; codes: number[] };

const OK: Verdict = { kind: "ok" };
const bad = (...codes: number[]): Verdict => ({ kind: "bad", codes });

/** The first version with a binary header: older frames start with a u16 header length, then `{`. */
const FIRST_BINARY_VERSION = 4;
const ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const ID_BYTES: ReadonlySet<number> = new Set([...ID_ALPHABET].map((c) => c.charCodeAt(0)));
const MAX_U53 = BigInt(Number.MAX_SAFE_INTEGER);
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** End-to-end types an IDE socket may send (forwarded to the bridge). */
const IDE_FORWARDS: ReadonlySet<FrameTypeName> = new Set([...IDE_SENDS].filter((t) => END_TO_END.has(t)));
/** End-to-end types a bridge may send (forwarded to the IDE socket of the route). */
const BRIDGE_FORWARDS: ReadonlySet<FrameTypeName> = new Set([...BRIDGE_SENDS].filter((t) => END_TO_END.has(t)));

/**
 * The fixed prefix, which the relay checks on every message before anything
 * else: size (4413), version (4426, older JSON-header frames too), type code,
 * flags and id length (4400). Returns the type, or the verdict.
 */
function checkPrefix(b: Uint8Array): FrameTypeName | Verdict {
  if (b.length > MAX_FRAME_BYTES) return bad(CloseCode.TooBig);
  const older = b.length >= 3 && b[0] < FIRST_BINARY_VERSION && b[2] === 0x7b;
  if (b.length < HEADER_BYTES) return bad(older ? CloseCode.UnsupportedVersion : CloseCode.BadFrame);
  if (b[0] !== PROTOCOL_VERSION) return bad(CloseCode.UnsupportedVersion);
  const t = FRAME_NAME_BY_CODE[b[1]];
  if (t === undefined) return bad(CloseCode.BadFrame);
  if (b[2] & ~(FLAG_SEQ | FLAG_STREAM_SEQ)) return bad(CloseCode.BadFrame);
  if (b[3] > MAX_ID_LENGTH || HEADER_BYTES + b[3] > b.length) return bad(CloseCode.BadFrame);
  return t;
}

/**
 * The rest of the header, which the relay reads only where it decodes a whole
 * frame (a bridge's `auth` and `crash`): `s` and `q` below 2^53 and zero
 * without their flag, `q` at least 1 with it, the id's bytes from
 * {@linkcode ID_ALPHABET}. Frames it forwards are routed by bytes 0-7 alone;
 * the endpoints check the rest.
 */
function fieldsOk(b: Uint8Array): boolean {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const s = view.getBigUint64(8), q = view.getBigUint64(16);
  if (s > MAX_U53 || q > MAX_U53) return false;
  if (!(b[2] & FLAG_SEQ) && s !== 0n) return false;
  if (b[2] & FLAG_STREAM_SEQ ? q < 1n : q !== 0n) return false;
  for (let i = HEADER_BYTES; i < HEADER_BYTES + b[3]; i++) if (!ID_BYTES.has(b[i])) return false;
  return true;
}

/** A control body: UTF-8 JSON, an object, at most {@linkcode MAX_CONTROL_BODY_BYTES}; undefined otherwise. */
function controlBody(body: Uint8Array): Record<string, unknown> | undefined {
  if (body.length > MAX_CONTROL_BODY_BYTES) return undefined;
  try {
    const value = JSON.parse(utf8.decode(body));
    return typeof value === "object" && value !== null && !Array.isArray(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The outcome of `data` on a socket of `role`: the prefix checks, which types
 * each side may send (an `auth` frame is no longer one of them), a route
 * required on bridges' end-to-end frames, the whole-frame checks and body
 * rules of `crash`.
 */
function judge(role: Role, data: Uint8Array | string): Verdict {
  // Every coder1 frame is a binary message.
  if (typeof data === "string") return bad(CloseCode.BadFrame);
  const t = checkPrefix(data);
  if (typeof t !== "string") return t;
  const body = data.subarray(HEADER_BYTES + data[3]);
  if (role === "bridge-post") {
    if (t === FrameType.Pong) return OK;
    if (t === FrameType.Crash) {
      const o = fieldsOk(data) ? controlBody(body) : undefined;
      return o && sanitizeCrash(o) ? OK : bad(CloseCode.BadFrame);
    }
    if (!BRIDGE_FORWARDS.has(t)) return bad(CloseCode.BadFrame);
    return routeOf(data) === 0 ? bad(CloseCode.BadFrame) : OK;
  }
  // An IDE socket's route is stamped in place, whatever it sent there.
  return t === FrameType.Pong || IDE_FORWARDS.has(t) ? OK : bad(CloseCode.BadFrame);
}

/** The route field (bytes 4-7) of a message whose prefix passed. */
function routeOf(b: Uint8Array): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(ROUTE_OFFSET);
}

// ---------------------------------------------------------------------------
// Frame generators.

const IDE_TYPES = [...IDE_SENDS];
const BRIDGE_TYPES = [...BRIDGE_SENDS].filter((t) => t !== FrameType.Auth && t !== FrameType.Crash);
const ALL_TYPES = Object.keys(FRAME_TABLE) as FrameTypeName[];
const UNKNOWN_CODES = Array.from({ length: 256 }, (_, c) => c).filter((c) => FRAME_NAME_BY_CODE[c] === undefined);

function randomBody(rng: Rng): Uint8Array {
  const r = rng.u32() / 2 ** 32;
  return rng.bytes(r < 0.7 ? rng.int(256) : r < 0.97 ? rng.range(256, 4096) : rng.range(4096, 65536));
}

/** A route: a u32 other than 0. */
function randomRoute(rng: Rng): number {
  return rng.u32() || 1;
}

/** A sequence number, now and then next to the largest one the header may carry (2^53 - 1). */
function randomSeq(rng: Rng, lo: number): number {
  return rng.chance(0.02) ? Number.MAX_SAFE_INTEGER - rng.int(1000) : rng.range(lo, 1_000_000);
}

/** Header fields a valid frame of type `t` might carry. */
function validFields(rng: Rng, t: FrameTypeName, route?: number): Omit<FrameInit, "t" | "body"> {
  const fields: Omit<FrameInit, "t" | "body"> = {};
  if (route !== undefined) fields.r = route;
  if (STREAM_TYPES.has(t) || rng.chance(0.1)) fields.id = rng.text(rng.range(1, MAX_ID_LENGTH), ID_ALPHABET);
  if (t !== FrameType.Pong && rng.chance(0.8)) fields.s = randomSeq(rng, 0);
  if (STREAM_TYPES.has(t) || rng.chance(0.05)) fields.q = randomSeq(rng, 1);
  return fields;
}

/** A valid crash report body. */
function crashBody(rng: Rng): Record<string, unknown> {
  return { errorClass: "TypeError", message: `fuzz ${rng.int(1000)}`, version: "0.0.0", os: "linux" };
}

/**
 * Header faults that only a whole-frame decode sees, applied to a copy of
 * `frame` (which has an id). On an IDE socket or a bridge's forwarded frame
 * the relay passes them on (it routes by bytes 0-7); in a bridge's `auth` or
 * `crash` they close the socket with 4400.
 */
const FIELD_FAULTS: Record<string, (rng: Rng, frame: Uint8Array) => void> = {
  "bad id byte": (rng, f) => {
    const bad = [0x00, 0x20, 0x2e, 0x2f, 0x2b, 0x7e, 0x7f, 0x80, 0xc3, 0xff];
    f[HEADER_BYTES + rng.int(f[3])] = rng.pick(bad);
  },
  "q flag with q = 0": (_rng, f) => {
    f[2] |= FLAG_STREAM_SEQ;
    f.fill(0, 16, 24);
  },
  "s or q bits without their flag": (rng, f) => {
    const field = rng.pick([{ flag: FLAG_SEQ, at: 8 }, { flag: FLAG_STREAM_SEQ, at: 16 }]);
    f[2] &= ~field.flag;
    f[field.at + rng.int(8)] |= 1 << rng.int(8);
  },
  "s or q above 2^53": (rng, f) => {
    const field = rng.pick([{ flag: FLAG_SEQ, at: 8 }, { flag: FLAG_STREAM_SEQ, at: 16 }]);
    f[2] |= field.flag;
    // High word 2^21 or more: the value is 2^53 or more.
    new DataView(f.buffer, f.byteOffset).setUint32(field.at, rng.range(2 ** 21, 2 ** 32 - 1));
  },
};
const FIELD_FAULT_NAMES = Object.keys(FIELD_FAULTS);

/** `frame` with one of {@linkcode FIELD_FAULTS}. */
function withFieldFault(rng: Rng, init: FrameInit, fault = rng.pick(FIELD_FAULT_NAMES)): Uint8Array {
  const f = encodeFrame({ ...init, id: init.id ?? rng.text(rng.range(1, MAX_ID_LENGTH), ID_ALPHABET) });
  FIELD_FAULTS[fault](rng, f);
  return f;
}

/** A valid frame of the socket's own side and state. */
function validInit(rng: Rng, role: Role, routes: number[]): FrameInit {
  if (role === "ide") {
    const t = rng.pick(IDE_TYPES);
    // Any route an IDE sends is overwritten by the relay.
    const r = rng.chance(0.1) ? randomRoute(rng) : undefined;
    return { t, ...validFields(rng, t, r), body: t === FrameType.Pong ? undefined : randomBody(rng) };
  }
  if (rng.chance(0.005)) return { t: FrameType.Crash, body: crashBody(rng) };
  const t = rng.pick(BRIDGE_TYPES);
  // A route of an IDE socket of this session, or one that does not exist (dropped).
  const r = t === FrameType.Pong
    ? undefined
    : routes.length > 0 && rng.chance(0.5)
    ? rng.pick(routes)
    : randomRoute(rng);
  return { t, ...validFields(rng, t, r), body: t === FrameType.Pong ? undefined : randomBody(rng) };
}

/**
 * A frame the socket survives: a frame of its side with random fields and a
 * random body; a tenth of them with a header fault the relay does not read on
 * frames it forwards (counted in `flips.junk`), and a third bit-flipped (kept
 * when still survivable; counted in `flips.kept`).
 */
function survivable(
  rng: Rng,
  role: "ide" | "bridge-post",
  routes: number[],
  flips = { kept: 0, junk: 0 },
): Uint8Array {
  const init = validInit(rng, role, routes);
  let frame = encodeFrame(init);
  if (init.t !== FrameType.Crash && rng.chance(0.1)) {
    const junk = withFieldFault(rng, init);
    if (judge(role, junk).kind === "ok") {
      frame = junk;
      flips.junk++;
    }
  }
  if (rng.chance(0.3)) {
    const flipped = bitFlip(rng, frame);
    if (judge(role, flipped).kind === "ok") {
      flips.kept++;
      return flipped;
    }
  }
  return frame;
}

/** Flips one to four bits, mostly in the header. */
function bitFlip(rng: Rng, frame: Uint8Array): Uint8Array {
  const out = frame.slice();
  const headerEnd = Math.min(out.length, HEADER_BYTES + out[3]);
  for (let i = rng.range(1, 4); i > 0; i--) {
    const at = rng.chance(0.7) ? rng.int(headerEnd) : rng.int(out.length);
    out[at] ^= 1 << rng.int(8);
  }
  return out;
}

/** A protocol 1-3 frame: a u16 header length, a JSON header, the body. */
function olderFrame(header: unknown, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(2 + h.length + body.length);
  out[0] = (h.length >> 8) & 0xff;
  out[1] = h.length & 0xff;
  out.set(h, 2);
  out.set(body, 2 + h.length);
  return out;
}

/** The type a control body goes in: `crash` on a bridge socket after `auth`, else `auth`. */
function controlType(role: Role): FrameTypeName {
  return role === "bridge-post" ? FrameType.Crash : FrameType.Auth;
}

/**
 * The kinds of bad frame, each a generator (the oracle decides the exact close
 * code); undefined where the kind does not apply to the socket's role.
 */
const BAD_KINDS: Record<string, (rng: Rng, role: Role, routes: number[]) => Uint8Array | string | undefined> = {
  "random bytes": (rng) => rng.bytes(rng.int(rng.chance(0.5) ? 16 : 600)),
  "empty message": () => new Uint8Array(0),
  "truncated prefix": (rng, role, routes) => encodeFrame(validInit(rng, role, routes)).slice(0, rng.int(HEADER_BYTES)),
  "truncated id": (rng, role, routes) => {
    const init = validInit(rng, role, routes);
    const id = init.id ?? rng.text(rng.range(1, MAX_ID_LENGTH), ID_ALPHABET);
    return encodeFrame({ ...init, id }).slice(0, HEADER_BYTES + rng.int(id.length));
  },
  "bit flips": (rng, role, routes) => bitFlip(rng, encodeFrame(validInit(rng, role, routes))),
  "unknown type code": (rng, role, routes) => {
    const f = encodeFrame(validInit(rng, role, routes));
    f[1] = rng.pick(UNKNOWN_CODES);
    return f;
  },
  "unknown flag bits": (rng, role, routes) => {
    const f = encodeFrame(validInit(rng, role, routes));
    f[2] |= 1 << rng.range(2, 7);
    return f;
  },
  "id length over 64": (rng, role, routes) => {
    const f = encodeFrame(validInit(rng, role, routes));
    const length = rng.range(MAX_ID_LENGTH + 1, 255);
    // Half of them long enough to hold such an id.
    const out = rng.chance(0.5) && f.length < HEADER_BYTES + length ? new Uint8Array(HEADER_BYTES + length + 4) : f;
    out.set(f.subarray(0, HEADER_BYTES));
    out.fill(0x61, HEADER_BYTES, Math.min(out.length, HEADER_BYTES + length));
    out[3] = length;
    return out;
  },
  "id length past the end": (rng, role, routes) => {
    const init = validInit(rng, role, routes);
    const f = encodeFrame({ ...init, id: rng.chance(0.5) ? "i" : undefined, body: rng.bytes(rng.int(16)) });
    f[3] = rng.range(f.length - HEADER_BYTES + 1, MAX_ID_LENGTH);
    return f;
  },
  "protocol 1-3 frame (JSON header)": (rng, role) => {
    const t = rng.pick(["pong", "auth", "cmd.stdin", "e2e.hello"]);
    const header = { v: rng.range(1, 3), t, ...(role === "bridge-post" ? { c: 1 } : {}), id: "a", s: 0, q: 1 };
    const body = t === "auth" ? new TextEncoder().encode('{"code":"123456","version":"0.3.0"}') : rng.bytes(8);
    return olderFrame(header, body);
  },
  "another version byte": (rng, role, routes) => {
    const f = encodeFrame(validInit(rng, role, routes));
    f[0] = rng.pick([0, 1, 2, 3, PROTOCOL_VERSION + 1, 6, 0x7b, 0xff]);
    return f;
  },
  "oversized frame": (rng) => {
    const size = rng.chance(0.95) ? MAX_FRAME_BYTES + rng.range(1, 65536) : rng.range(2 * MiB, 4 * MiB);
    const out = new Uint8Array(size);
    out.set(encodeFrame({ t: FrameType.CmdStdin, id: "big", q: 1 }));
    return out;
  },
  "text message": (rng) =>
    rng.pick(["", "hello", JSON.stringify({ v: 3, t: "pong" }), "\u0004\u0004\u0000\u0000", "x".repeat(5000)]),
  "wrong type for the state": (rng, role) => {
    const types = role === "ide"
      ? ALL_TYPES.filter((t) => !IDE_SENDS.has(t))
      : role === "bridge-post"
      ? ALL_TYPES.filter((t) => !BRIDGE_FORWARDS.has(t) && t !== FrameType.Pong && t !== FrameType.Crash)
      : ALL_TYPES.filter((t) => t !== FrameType.Auth);
    const t = rng.pick(types);
    const body = t === FrameType.Auth ? { token: "x", version: "0.4.0" } : randomBody(rng);
    return encodeFrame({ t, r: 1, id: "w", body });
  },
  "bridge e2e frame with route 0": (rng, role) => {
    if (role !== "bridge-post") return undefined;
    const t = rng.pick([...BRIDGE_FORWARDS]);
    return encodeFrame({ t, r: rng.chance(0.5) ? 0 : undefined, id: "n", s: 0, body: randomBody(rng) });
  },
  "control body not JSON": (rng, role) =>
    encodeFrame({
      t: controlType(role),
      body: rng.pick<string | Uint8Array>([
        "{nope",
        "",
        '{"code":"123456"}}',
        "{'code':'123456'}",
        new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]),
      ]),
    }),
  "control body not an object": (rng, role) =>
    encodeFrame({ t: controlType(role), body: rng.pick(["[]", "null", "3", '"auth"', "true", '[{"code":"1"}]']) }),
  "bad auth body": (rng) => {
    const bodies: (string | Record<string, unknown>)[] = [
      { version: "1" },
      { code: "123456", token: "t", version: "1" },
      { code: 123456, version: "1" },
      { token: 5, version: "1" },
      { code: "123456" },
      { code: "123456", version: "" },
      { code: "123456", version: "v".repeat(33) },
      { code: "123456", version: "1", telemetry: "no" },
      JSON.stringify({ code: "1", version: "1", pad: "x".repeat(9000) }),
    ];
    // After auth (and on an IDE socket) any auth is a wrong-state frame, whatever its body.
    return encodeFrame({ t: FrameType.Auth, body: rng.pick(bodies) });
  },
  "guessed code or forged token": (rng) =>
    encodeFrame({
      t: FrameType.Auth,
      body: rng.chance(0.5)
        ? { code: rng.text(rng.chance(0.9) ? 6 : rng.range(1, 12), "0123456789"), version: "0.4.0" }
        : {
          token: rng.chance(0.9) ? `eyJ${rng.text(rng.range(10, 300), ID_ALPHABET)}` : "t".repeat(5000),
          version: "1",
        },
    }),
  "bad crash body": (rng, role) =>
    role !== "bridge-post" ? undefined : encodeFrame({
      t: FrameType.Crash,
      body: rng.pick<string | Record<string, unknown>>([
        { errorClass: 1, message: "m", version: "v", os: "o" },
        { message: "m" },
        { errorClass: "E", message: "m", version: "v", os: "o", stack: 3 },
        JSON.stringify({ errorClass: "E", message: "x".repeat(9000), version: "v", os: "o" }),
      ]),
    }),
};
// The header faults only a whole-frame decode sees: where the relay decodes
// the whole frame (the first `auth`, or a `crash`); IDE sockets survive them.
for (const fault of FIELD_FAULT_NAMES) {
  BAD_KINDS[fault] = (rng, role) => {
    if (role === "ide") return undefined;
    const t = controlType(role);
    const body = role === "bridge-post" ? crashBody(rng) : { code: rng.text(6, "0123456789"), version: "0.4.0" };
    return withFieldFault(rng, { t, ...validFields(rng, t), body }, fault);
  };
}
const BAD_KIND_NAMES = Object.keys(BAD_KINDS);

/** A bad frame for `role`: a kind drawn at random, regenerated until the oracle says it closes the socket. */
function badFrame(
  rng: Rng,
  role: Role,
  routes: number[],
): { kind: string; data: Uint8Array | string; codes: number[] } {
  for (let attempt = 0; attempt < 100; attempt++) {
    const kind = rng.pick(BAD_KIND_NAMES);
    const data = BAD_KINDS[kind](rng, role, routes);
    if (data === undefined) continue;
    const verdict = judge(role, data);
    if (verdict.kind === "bad") return { kind, data, codes: verdict.codes };
  }
  return { kind: "text message", data: "fallback", codes: [CloseCode.BadFrame] };
}

// ---------------------------------------------------------------------------
// Fuzz sockets.

/** What one fuzz socket saw. */
interface SocketResult {
  index: number;
  role: Role;
  kind: string;
  expected: (number | string)[];
  /** The close code, or "hung" (not closed within the bound), or "refused <status>". */
  got: number | string;
  reason: string;
  frames: number;
  /** Of those, bit-flipped frames the socket survived. */
  flipped: number;
  /** Of those, frames forwarded with a header fault the relay does not read. */
  junk: number;
}

/** A session the fuzz sockets use: its cookie, and its bridge token (checked out by one bridge at a time). */
interface PoolEntry {
  cookie: string;
  token: string;
  busy: boolean;
}

/** A source address in 127.0.0.0/8 other than 127.0.0.1 (drawn from 127.16.0.0 to 127.255.255.254). */
function sourceAddress(rng: Rng): string {
  return `127.${rng.range(16, 255)}.${rng.int(256)}.${rng.range(1, 254)}`;
}

function openSocket(url: string, headers: Record<string, string>, localAddress: string) {
  const ws = new WebSocket(url, [WS_SUBPROTOCOL], {
    headers,
    perMessageDeflate: false,
    localAddress,
    handshakeTimeout: 5_000,
  });
  ws.binaryType = "arraybuffer";
  const opened = Promise.withResolvers<void>();
  const closed = Promise.withResolvers<{ code: number | string; reason: string }>();
  opened.promise.catch(() => {});
  const messages: Uint8Array[] = [];
  let onMessage: ((bytes: Uint8Array) => void) | undefined;
  ws.on("open", () => opened.resolve());
  ws.on("unexpected-response", (_req, res) => {
    opened.reject(new Error(`HTTP ${res.statusCode}`));
    closed.resolve({ code: `refused ${res.statusCode}`, reason: "" });
    ws.terminate();
  });
  ws.on("error", (error) => opened.reject(error));
  ws.on("message", (data: ArrayBuffer) => {
    const bytes = new Uint8Array(data);
    if (onMessage) onMessage(bytes);
    else messages.push(bytes);
  });
  ws.on("close", (code, reason) => closed.resolve({ code, reason: new TextDecoder().decode(reason) }));
  /** The first message of type `t` (others are skipped), within `ms`. */
  const first = (t: string, ms: number) =>
    new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${t} in ${ms} ms`)), ms);
      const look = (bytes: Uint8Array) => {
        if (_typeOf(bytes) !== t) return false;
        clearTimeout(timer);
        resolve(bytes);
        return true;
      };
      while (messages.length > 0) if (look(messages.shift()!)) return;
      onMessage = (bytes) => {
        if (look(bytes)) onMessage = undefined;
      };
    });
  return { ws, opened: opened.promise, closed: closed.promise, first, messages };
}

/** The type of a message the relay sent, or undefined when its prefix does not pass (a forwarded fuzz frame). */
function _typeOf(bytes: Uint8Array): FrameTypeName | undefined {
  try {
    return peekType(bytes);
  } catch {
    return undefined;
  }
}

async function closedWithin(
  closed: Promise<{ code: number | string; reason: string }>,
  ms: number,
): Promise<{ code: number | string; reason: string }> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<{ code: string; reason: string }>((resolve) => {
    timer = setTimeout(() => resolve({ code: "hung", reason: `not closed within ${ms} ms` }), ms);
  });
  const result = await Promise.race([closed, late]);
  clearTimeout(timer);
  return result;
}

/** Runs fuzz socket number `index`: a run of survivable frames, then one bad frame. */
async function fuzzSocket(
  wsBase: string,
  origin: string,
  seed: number,
  index: number,
  pool: PoolEntry[],
): Promise<SocketResult> {
  const rng = new Rng(seed, index);
  const draw = rng.u32() / 2 ** 32;
  // (Bridges present their credential in the upgrade request: no bridge socket exists before it is checked.)
  const role: Role = draw < 0.55 ? "ide" : "bridge-post";
  const address = sourceAddress(rng);
  const preferred = rng.int(pool.length);
  const entry = role === "bridge-post" ? await checkout(pool, preferred) : pool[preferred];
  const result: SocketResult = {
    index,
    role,
    kind: "",
    expected: [],
    got: "",
    reason: "",
    frames: 0,
    flipped: 0,
    junk: 0,
  };
  const flips = { kept: 0, junk: 0 };
  const s = role === "ide"
    ? openSocket(`${wsBase}/ws/ide`, { cookie: entry.cookie, origin }, address)
    : openSocket(`${wsBase}/ws/bridge`, bridgeCredentialHeaders({ token: entry.token, version: "fuzz" }), address);
  try {
    try {
      await s.opened;
    } catch (error) {
      result.got = (await closedWithin(s.closed, 1_000)).code;
      result.reason = String(error);
      if (role === "bridge-post" && result.got === "refused 429") {
        // Token logins are rate-limited per credential (20 a minute): a pool token used that
        // often is refused before the upgrade with 429, a documented answer, and this socket ends there.
        result.kind = "token login past the per-credential limit";
        result.expected = ["refused 429"];
      }
      return result;
    }
    // Routes of this session's IDE sockets, learnt from `ide.open` and from their forwarded frames.
    const routes: number[] = [];
    if (role === "bridge-post") {
      await s.first(FrameType.AuthOk, 10_000);
      s.ws.on("message", (data: ArrayBuffer) => {
        const bytes = new Uint8Array(data);
        const route = _typeOf(bytes) === undefined ? 0 : peekRoute(bytes);
        if (route !== 0 && !routes.includes(route)) routes.push(route);
      });
    } else if (role === "ide") {
      await s.first(FrameType.BridgeStatus, 10_000);
    }
    for (let n = rng.range(50, 400); n > 0; n--) {
      s.ws.send(survivable(rng, role, routes, flips));
      result.frames++;
    }
    const terminal = badFrame(rng, role, routes);
    result.kind = terminal.kind;
    result.expected = terminal.codes;
    s.ws.send(terminal.data);
    result.frames++;
    result.flipped = flips.kept;
    result.junk = flips.junk;
    const closed = await closedWithin(s.closed, CLOSE_BOUND_MS);
    result.got = closed.code;
    result.reason = closed.reason;
    return result;
  } catch (error) {
    result.got = "error";
    result.reason = String(error);
    return result;
  } finally {
    if (s.ws.readyState !== WebSocket.CLOSED) s.ws.terminate();
    if (role === "bridge-post") entry.busy = false;
  }
}

/**
 * A pool entry no other fuzz bridge is using (two at once would replace each
 * other: 4409): `preferred`, or the next free one. No random draws here, so a
 * socket's frames do not depend on scheduling.
 */
async function checkout(pool: PoolEntry[], preferred: number): Promise<PoolEntry> {
  for (;;) {
    for (let i = 0; i < pool.length; i++) {
      const entry = pool[(preferred + i) % pool.length];
      if (entry.busy) continue;
      entry.busy = true;
      return entry;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Browser sessions, each with a bridge token, made the way a user would (code, then `auth`). */
async function makePool(relay: RelayProcess, size: number): Promise<PoolEntry[]> {
  const pool: PoolEntry[] = [];
  const wsBase = relay.url.replace("http", "ws");
  for (let i = 0; i < size; i++) {
    const res = await fetch(`${relay.url}/api/sessions`, { method: "POST", headers: { origin: relay.url } });
    await res.body?.cancel();
    assert.equal(res.status, 201);
    const cookie = res.headers.getSetCookie()[0].split(";")[0];
    const codeRes = await fetch(`${relay.url}/api/pairing-codes`, {
      method: "POST",
      headers: { cookie, origin: relay.url },
    });
    const { code } = await codeRes.json();
    // Each redemption from its own address: 10 a minute per address is the budget.
    const s = openSocket(`${wsBase}/ws/bridge`, bridgeCredentialHeaders({ code, version: "fuzz" }), `127.0.9.${i + 1}`);
    await s.opened;
    const ok = decodeAuthOk(decodeFrame(await s.first(FrameType.AuthOk, 10_000)).body);
    s.ws.close(1000);
    await s.closed;
    assert.ok(ok.token, "a redeemed code brings a token");
    pool.push({ cookie, token: ok.token, busy: false });
  }
  return pool;
}

function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))![1]);
}

/** Runs commands through the healthy session until `stop()`, checking every output byte. */
function keepRunning(ide: IdeClient): { stop(): Promise<{ ok: number; failures: string[] }> } {
  let stopped = false;
  const failures: string[] = [];
  let ok = 0;
  const loop = (async () => {
    for (let i = 0; !stopped && failures.length < 5; i++) {
      const nonce = `fuzz-${i}-${crypto.randomUUID().slice(0, 8)}`;
      const lines = 1 + (i % 40) * 50;
      const expected = `${nonce}\n${Array.from({ length: lines }, (_, k) => k + 1).join("\n")}\n`;
      try {
        const r = await runCollect(ide, `printf '%s\\n' ${nonce}; seq 1 ${lines}`);
        if (r.stdout !== expected || r.code !== 0) {
          failures.push(
            `command ${i}: code ${r.code}, ${r.stdout.length} bytes of stdout, expected ${expected.length}`,
          );
        } else ok++;
      } catch (error) {
        failures.push(`command ${i}: ${error}`);
      }
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { ok, failures };
    },
  };
}

Deno.test({
  name: "fuzz: 100,000+ malformed, truncated, oversized, wrong-state and random frames on both sockets",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const envSeed = Deno.env.get("CODER1_FUZZ_SEED");
    const seed = envSeed !== undefined ? Number(envSeed) >>> 0 : crypto.getRandomValues(new Uint32Array(1))[0];
    console.log(`fuzz seed ${seed} (replay: CODER1_FUZZ_SEED=${seed})`);
    const dirs = await makeTestDirs();
    const relay = await startRelayProcess(dirs);
    const { ide, bridge } = await pairedSetup(dirs, relay.url);
    let ideClosed = 0;
    ide.onClose(() => ideClosed++);
    const wsBase = relay.url.replace("http", "ws");
    try {
      const pool = await makePool(relay, POOL_SIZE);
      const healthy = keepRunning(ide);
      const baseline = rssKiB(relay.child.pid);
      let peak = baseline;
      const series: number[] = [];
      const sampler = setInterval(() => {
        try {
          const now = rssKiB(relay.child.pid);
          peak = Math.max(peak, now);
          series.push(now);
        } catch {
          // The process is gone; the liveness check below says so.
        }
      }, 100);
      const started = performance.now();

      // Bridges without a credential: refused (401) before any socket exists.
      const silent = Array.from({ length: SILENT_BRIDGES }, async (_, i) => {
        const t0 = performance.now();
        const s = openSocket(`${wsBase}/ws/bridge`, {}, `127.0.8.${i + 1}`);
        await s.opened.catch(() => {});
        const closed = await closedWithin(s.closed, 5_000);
        return { ...closed, afterMs: performance.now() - t0 };
      });

      let nextIndex = 0;
      let frames = 0, flipped = 0, junk = 0;
      const results: SocketResult[] = [];
      const worker = async () => {
        for (;;) {
          const elapsed = performance.now() - started;
          if (elapsed >= FUZZ_BUDGET_MS || (frames >= FRAME_TARGET && elapsed >= FUZZ_MIN_MS)) break;
          const r = await fuzzSocket(wsBase, relay.url, seed, nextIndex++, pool);
          frames += r.frames;
          flipped += r.flipped;
          junk += r.junk;
          results.push(r);
        }
      };
      await Promise.all(Array.from({ length: WORKERS }, worker));
      const fuzzMs = performance.now() - started;
      const silentResults = await Promise.all(silent);
      clearInterval(sampler);
      const health = await healthy.stop();
      await new Promise((r) => setTimeout(r, 1_000));
      const after = rssKiB(relay.child.pid);

      // Report.
      const codes: Record<string, number> = {};
      const byKind: Record<string, number> = {};
      for (const r of results) {
        codes[r.got] = (codes[r.got] ?? 0) + 1;
        byKind[`${r.role}: ${r.kind}`] = (byKind[`${r.role}: ${r.kind}`] ?? 0) + 1;
      }
      for (const r of silentResults) codes[`${r.code} (silent bridge)`] = (codes[`${r.code} (silent bridge)`] ?? 0) + 1;
      const growth = (peak - baseline) / 1024;
      console.log(
        `fuzz: ${frames} frames (${results.length} bad ones ending a socket, ${flipped} bit-flipped ones the socket survived, ` +
          `${junk} forwarded with header faults only the endpoints check, ` +
          `the rest with random fields and bodies) over ${results.length} sockets (+${SILENT_BRIDGES} bridges without a credential) in ${
            (fuzzMs / 1000).toFixed(1)
          } s; close codes ${JSON.stringify(codes)}`,
      );
      console.log(`fuzz: bad frames by socket kind ${JSON.stringify(byKind)}`);
      console.log(
        `fuzz: relay RSS ${(baseline / 1024).toFixed(1)} MiB before, ${(peak / 1024).toFixed(1)} MiB at most (+${
          growth.toFixed(1)
        } MiB), ${(after / 1024).toFixed(1)} MiB after; healthy commands ${health.ok}`,
      );
      const tenths = Array.from({ length: 10 }, (_, i) => series[Math.floor((series.length * (i + 1)) / 10) - 1]);
      console.log(
        `fuzz: relay RSS at each tenth of the fuzz (MiB): ${tenths.map((k) => (k / 1024).toFixed(0)).join(" ")}`,
      );

      // Every bad peer was closed, within the bound, with the documented code for its bad frame.
      const wrong = results.filter((r) => !r.expected.includes(r.got));
      assert.deepEqual(
        wrong.slice(0, 10).map((r) =>
          `#${r.index} ${r.role} ${r.kind}: expected ${r.expected}, got ${r.got} ${r.reason}`
        ),
        [],
        `${wrong.length} sockets closed otherwise than documented (seed ${seed})`,
      );
      // A documented close code, or the documented refusal of a token login past its limit (before any socket).
      for (const r of results) {
        assert.ok(DOCUMENTED_CODES.has(r.got as number) || r.got === "refused 429", `#${r.index}: ${r.got}`);
      }
      for (const r of silentResults) {
        assert.equal(r.code, "refused 401", `bridge without a credential: ${r.code} ${r.reason}`);
        assert.ok(r.afterMs <= 5_000, `${r.afterMs} ms`);
      }
      assert.ok(frames >= FRAME_TARGET, `only ${frames} frames in ${FUZZ_BUDGET_MS} ms`);
      // Memory stayed bounded.
      assert.ok(growth < RSS_GROWTH_BOUND_MIB, `relay RSS grew by ${growth.toFixed(1)} MiB`);
      // The other session kept working throughout, on its first connections.
      assert.deepEqual(health.failures, []);
      assert.ok(health.ok >= 10, `only ${health.ok} healthy commands`);
      assert.equal(ideClosed, 0, "the healthy IDE socket was never closed");
      assert.equal(bridge.stdout.text.match(/Bridge reconnected/g), null, "the healthy bridge never reconnected");
      // The relay is alive, answers, and logged no unexpected error.
      const exited = await Promise.race([relay.status.then(() => true), new Promise((r) => setTimeout(r, 0, false))]);
      assert.equal(exited, false, "relay process alive");
      const res = await fetch(`${relay.url}/healthz`);
      assert.equal(res.status, 200);
      assert.equal((await res.json()).status, "ok");
      const r = await runCollect(ide, "echo still-here");
      assert.equal(r.stdout, "still-here\n");
      assert.doesNotMatch(relay.stderr.text, /socket\.error|http\.error/);
    } finally {
      ide.close();
      await bridge.stop();
      await relay.stop();
      await dirs.cleanup();
    }
  },
});
