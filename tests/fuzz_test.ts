/**
 * Frame fuzzing against a real relay process. A seeded fuzzer sends at least
 * 100,000 frames over hundreds of `/ws/bridge` sockets (before and after
 * `auth`) and `/ws/ide` sockets, from many addresses in 127.0.0.0/8: random
 * bytes, truncated and bit-flipped real frames, bad header JSON, oversized
 * frames and headers, text messages, valid types in the wrong state or
 * direction, bad `c`/`id`/`s`/`q` fields, bad `auth` and `crash` bodies. Every
 * socket first sends a run of frames the protocol lets it survive, then one
 * bad frame, and must be closed with the close code docs/PROTOCOL.md gives for
 * that frame, within a bound. Meanwhile a paired IDE and bridge process keep
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
import { decodeFrame, encodeFrame, type FrameInit, jsonBody } from "../shared/frame_codec.ts";
import type { IdeClient } from "../shared/ide_client.ts";
import {
  AUTH_DEADLINE_MS,
  BRIDGE_TO_RELAY,
  CloseCode,
  FrameType,
  IDE_TO_RELAY,
  MAX_FRAME_BYTES,
  MAX_HEADER_BYTES,
  PROTOCOL_VERSION,
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
/** Sessions (each with a bridge token) that the fuzz sockets use. */
const POOL_SIZE = 12;
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
// The oracle: what docs/PROTOCOL.md says the relay does with one message.

/** Which socket a message goes to, and in what state. */
type Role = "ide" | "bridge-pre" | "bridge-post";

/** What the relay must do with a message. */
type Verdict =
  | { kind: "ok" }
  /** Close the socket with one of these codes. */
  | { kind: "bad"; codes: number[] }
  /** Depends on state the fuzzer does not track (a bridge connected to the session); never sent. */
  | { kind: "maybe" };

const OK: Verdict = { kind: "ok" };
const bad = (...codes: number[]): Verdict => ({ kind: "bad", codes });

/**
 * The documented outcome of `data` on a socket of `role`: the frame checks
 * (4400, 4413), which types each side may send, `c` required from bridges,
 * the `auth` and `crash` body rules. `token` is the one token this socket may
 * log in with.
 */
function judge(role: Role, data: Uint8Array | string, token?: string): Verdict {
  if (typeof data === "string") return bad(CloseCode.BadFrame);
  let frame;
  try {
    frame = decodeFrame(data);
  } catch (error) {
    return bad((error as { closeCode: number }).closeCode);
  }
  if (role === "bridge-pre") {
    if (frame.t !== FrameType.Auth) return bad(CloseCode.BadFrame);
    let body;
    try {
      body = jsonBody(frame);
    } catch {
      return bad(CloseCode.BadFrame);
    }
    const { code, token: given, version, telemetry } = body;
    if ((code === undefined) === (given === undefined)) return bad(CloseCode.BadFrame);
    if (code !== undefined && typeof code !== "string") return bad(CloseCode.BadFrame);
    if (given !== undefined && typeof given !== "string") return bad(CloseCode.BadFrame);
    if (telemetry !== undefined && typeof telemetry !== "boolean") return bad(CloseCode.BadFrame);
    if (typeof version !== "string" || version.length === 0 || version.length > 32) return bad(CloseCode.BadFrame);
    // A code spends a redemption budget first (4429), then is looked up (no live code: 4401).
    if (code !== undefined) return bad(CloseCode.AuthFailed, CloseCode.RateLimited);
    return given === token ? OK : bad(CloseCode.AuthFailed);
  }
  if (role === "bridge-post") {
    if (!BRIDGE_TO_RELAY.has(frame.t)) return bad(CloseCode.BadFrame);
    if (frame.t === FrameType.Pong) return OK;
    if (frame.t === FrameType.Crash) {
      try {
        return sanitizeCrash(jsonBody(frame)) ? OK : bad(CloseCode.BadFrame);
      } catch {
        return bad(CloseCode.BadFrame);
      }
    }
    return frame.c === undefined ? bad(CloseCode.BadFrame) : OK;
  }
  if (!IDE_TO_RELAY.has(frame.t)) return bad(CloseCode.BadFrame);
  if (frame.t === FrameType.Pong) return OK;
  // Forwarded with the socket's channel stamped in (when a bridge is connected):
  // a frame that would outgrow the limits then is closed, otherwise dropped.
  try {
    const stamped = encodeFrame({ t: frame.t, c: 2 ** 32, id: frame.id, s: frame.s, q: frame.q, body: frame.body });
    return stamped.byteLength > MAX_FRAME_BYTES ? { kind: "maybe" } : OK;
  } catch {
    return { kind: "maybe" };
  }
}

// ---------------------------------------------------------------------------
// Frame generators.

const IDE_TYPES = [...IDE_TO_RELAY];
const BRIDGE_TYPES = [...BRIDGE_TO_RELAY].filter((t) => t !== FrameType.Crash);
const RELAY_ONLY_TYPES = [
  FrameType.AuthOk,
  FrameType.Ping,
  FrameType.BridgeStatus,
  FrameType.IdeOpen,
  FrameType.IdeClose,
  FrameType.Flow,
];
const ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

function randomBody(rng: Rng): Uint8Array {
  const r = rng.u32() / 2 ** 32;
  return rng.bytes(r < 0.7 ? rng.int(256) : r < 0.97 ? rng.range(256, 4096) : rng.range(4096, 65536));
}

/** Header fields a valid frame of type `t` might carry. */
function validFields(rng: Rng, t: string, channel?: number): Omit<FrameInit, "t" | "body"> {
  const fields: Omit<FrameInit, "t" | "body"> = {};
  if (channel !== undefined) fields.c = channel;
  if (t.startsWith("cmd.") || rng.chance(0.1)) fields.id = rng.text(rng.range(1, 64), ID_ALPHABET);
  if (t !== FrameType.Pong && rng.chance(0.8)) fields.s = rng.int(1_000_000);
  if (t.startsWith("cmd.") || rng.chance(0.05)) fields.q = rng.range(1, 1_000_000);
  return fields;
}

/**
 * A frame the socket survives: a frame of its side with random fields and a
 * random body, a third of them bit-flipped (kept when still valid; counted in
 * `flips`).
 */
function survivable(
  rng: Rng,
  role: "ide" | "bridge-post",
  channels: number[],
  flips = { kept: 0 },
): Uint8Array {
  let frame: Uint8Array;
  if (role === "ide") {
    const t = rng.pick(IDE_TYPES);
    // Any `c` an IDE sends is overwritten by the relay.
    const c = rng.chance(0.1) ? rng.int(2 ** 31) : undefined;
    frame = encodeFrame({ t, ...validFields(rng, t, c), body: t === FrameType.Pong ? undefined : randomBody(rng) });
  } else if (rng.chance(0.005)) {
    frame = encodeFrame({
      t: FrameType.Crash,
      body: { errorClass: "TypeError", message: `fuzz ${rng.int(1000)}`, version: "0.0.0", os: "linux" },
    });
  } else {
    const t = rng.pick(BRIDGE_TYPES);
    // A channel of an IDE socket of this session, or one that does not exist (dropped).
    const c = t === FrameType.Pong
      ? undefined
      : channels.length > 0 && rng.chance(0.5)
      ? rng.pick(channels)
      : rng.int(2 ** 31);
    frame = encodeFrame({ t, ...validFields(rng, t, c), body: t === FrameType.Pong ? undefined : randomBody(rng) });
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

function bitFlip(rng: Rng, frame: Uint8Array): Uint8Array {
  const out = frame.slice();
  const headerEnd = Math.min(out.length, 2 + ((out[0] << 8) | out[1]));
  for (let i = rng.range(1, 4); i > 0; i--) {
    const at = rng.chance(0.7) ? rng.int(headerEnd) : rng.int(out.length);
    out[at] ^= 1 << rng.int(8);
  }
  return out;
}

/** A frame with an arbitrary header (anything JSON can say), bypassing encodeFrame's checks. */
function rawFrame(header: unknown, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(2 + h.length + body.length);
  out[0] = (h.length >> 8) & 0xff;
  out[1] = h.length & 0xff;
  out.set(h, 2);
  out.set(body, 2 + h.length);
  return out;
}

/** A frame of the socket's own side and state, as the base for truncation and bit flips. */
function baseFrame(rng: Rng, role: Role, channels: number[]): Uint8Array {
  if (role === "bridge-pre") {
    return encodeFrame({ t: FrameType.Auth, body: { code: rng.text(6, "0123456789"), version: "0.3.0" } });
  }
  return survivable(rng, role, channels);
}

/** The kinds of bad frame, each a generator (the oracle decides the exact close code). */
const BAD_KINDS: Record<string, (rng: Rng, role: Role, channels: number[]) => Uint8Array | string> = {
  "random bytes": (rng) => rng.bytes(rng.int(rng.chance(0.5) ? 16 : 600)),
  "empty message": () => new Uint8Array(0),
  "truncated frame": (rng, role, channels) => {
    const frame = baseFrame(rng, role, channels);
    const headerEnd = 2 + ((frame[0] << 8) | frame[1]);
    return frame.subarray(0, rng.int(Math.min(frame.length, headerEnd)));
  },
  "bit flips": (rng, role, channels) => bitFlip(rng, baseFrame(rng, role, channels)),
  "header not JSON": (rng) => {
    const junk = rng.chance(0.5) ? rng.bytes(rng.range(1, 200)) : new TextEncoder().encode(
      rng.pick(['{"v":3,"t":"pong"', "{v:3}", '{"v":3,"t":"pong"}}', "\ufeff{}", '{"v":3,"t":"\\ud800"}x']),
    );
    return new Uint8Array([junk.length >> 8, junk.length & 0xff, ...junk]);
  },
  "header not an object": (rng) => rawFrame(rng.pick([[3, "pong"], null, "pong", 3, true, []])),
  "bad version": (rng) =>
    rawFrame({ v: rng.pick([0, 1, 2, 4, -3, 3.5, "3", null, PROTOCOL_VERSION + 1]), t: FrameType.Pong }),
  "bad type": (rng) =>
    rawFrame({
      v: PROTOCOL_VERSION,
      t: rng.pick(["", "Pong", "cmd stdout", "9pong", "x".repeat(33), 5, null, ["pong"], ".pong", "cmd-start"]),
    }),
  "bad field": (rng, role) => {
    const t = role === "ide" ? rng.pick(IDE_TYPES) : role === "bridge-post" ? rng.pick(BRIDGE_TYPES) : FrameType.Auth;
    const header: Record<string, unknown> = { v: PROTOCOL_VERSION, t, c: 1, id: "a", s: 0, q: 1 };
    const field = rng.pick(["c", "id", "s", "q"]);
    header[field] = rng.pick(
      {
        c: [-1, 1.5, "1", 2 ** 53, null, [1], true],
        id: ["", "x".repeat(65), "../x", "a b", 7, null, "é", "a/b"],
        s: [-1, 0.5, "0", 2 ** 53, null],
        q: [0, -2, 1.5, "1", 2 ** 60, null],
      }[field]!,
    );
    return rawFrame(header, new Uint8Array(4));
  },
  "oversized frame": (rng) => {
    const size = rng.chance(0.95) ? MAX_FRAME_BYTES + rng.range(1, 65536) : rng.range(2 * MiB, 4 * MiB);
    const out = new Uint8Array(size);
    out.set(encodeFrame({ t: FrameType.CmdStdin, id: "big" }).subarray(0, 64));
    out[0] = 0;
    out[1] = 30;
    return out;
  },
  "big header": (rng) => {
    if (rng.chance(0.3)) return new Uint8Array([0xff, 0xff, ...rng.bytes(rng.int(64))]);
    const pad = "p".repeat(rng.range(MAX_HEADER_BYTES, 60_000));
    return rawFrame({ v: PROTOCOL_VERSION, t: FrameType.Pong, pad });
  },
  "text message": (rng) =>
    rng.pick(["", "hello", JSON.stringify({ v: PROTOCOL_VERSION, t: "pong" }), "\u0000\u0001", "x".repeat(5000)]),
  "wrong type for the state": (rng, role) => {
    const types = role === "ide"
      ? [...BRIDGE_TYPES.filter((t) => !IDE_TO_RELAY.has(t)), FrameType.Crash, FrameType.Auth, ...RELAY_ONLY_TYPES]
      : role === "bridge-post"
      ? [...IDE_TYPES.filter((t) => !BRIDGE_TO_RELAY.has(t)), FrameType.Auth, ...RELAY_ONLY_TYPES]
      : [...IDE_TYPES, ...BRIDGE_TYPES, ...RELAY_ONLY_TYPES];
    const t = rng.pick([...types, "bogus", "cmd.run", "e2e.hello2", rng.text(rng.range(1, 20), "abc.")]);
    const body = t === FrameType.Auth ? { token: "x", version: "0.3.0" } : randomBody(rng);
    return encodeFrame({ t: /^[a-z]/.test(t) ? t : `a${t}`, c: 1, id: "w", body });
  },
  "bridge frame without c": (rng, role) => {
    if (role !== "bridge-post") return rng.bytes(3);
    const t = rng.pick(BRIDGE_TYPES.filter((t) => t !== FrameType.Pong));
    return encodeFrame({ t, id: "n", s: 0, body: randomBody(rng) });
  },
  "bad auth body": (rng) => {
    const bodies: (string | Record<string, unknown>)[] = [
      "{nope",
      "[]",
      "null",
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
        ? { code: rng.text(rng.chance(0.9) ? 6 : rng.range(1, 12), "0123456789"), version: "0.3.0" }
        : {
          token: rng.chance(0.9) ? `eyJ${rng.text(rng.range(10, 300), ID_ALPHABET)}` : "t".repeat(5000),
          version: "1",
        },
    }),
  "bad crash body": (rng) =>
    encodeFrame({
      t: FrameType.Crash,
      body: rng.pick<string | Record<string, unknown>>([
        "{",
        { errorClass: 1, message: "m", version: "v", os: "o" },
        { message: "m" },
        JSON.stringify({ errorClass: "E", message: "x".repeat(9000), version: "v", os: "o" }),
      ]),
    }),
};
const BAD_KIND_NAMES = Object.keys(BAD_KINDS);

/** A bad frame for `role`: a kind drawn at random, regenerated until the oracle says it closes the socket. */
function badFrame(
  rng: Rng,
  role: Role,
  channels: number[],
): { kind: string; data: Uint8Array | string; codes: number[] } {
  for (let attempt = 0; attempt < 100; attempt++) {
    const kind = rng.pick(BAD_KIND_NAMES);
    const data = BAD_KINDS[kind](rng, role, channels);
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
  expected: number[];
  /** The close code, or "hung" (not closed within the bound), or "refused <status>". */
  got: number | string;
  reason: string;
  frames: number;
  /** Of those, bit-flipped frames the socket survived. */
  flipped: number;
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
  const ws = new WebSocket(url, { headers, perMessageDeflate: false, localAddress, handshakeTimeout: 5_000 });
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
        if (decodeFrame(bytes).t !== t) return false;
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
  const role: Role = draw < 0.4 ? "ide" : draw < 0.7 ? "bridge-post" : "bridge-pre";
  const address = sourceAddress(rng);
  const preferred = rng.int(pool.length);
  const entry = role === "bridge-post" ? await checkout(pool, preferred) : pool[preferred];
  const result: SocketResult = { index, role, kind: "", expected: [], got: "", reason: "", frames: 0, flipped: 0 };
  const flips = { kept: 0 };
  const s = role === "ide"
    ? openSocket(`${wsBase}/ws/ide`, { cookie: entry.cookie, origin }, address)
    : openSocket(`${wsBase}/ws/bridge`, {}, address);
  try {
    try {
      await s.opened;
    } catch (error) {
      result.got = (await closedWithin(s.closed, 1_000)).code;
      result.reason = String(error);
      return result;
    }
    const channels: number[] = [];
    if (role === "bridge-post") {
      s.ws.send(encodeFrame({ t: FrameType.Auth, body: { token: entry.token, version: "fuzz" } }));
      result.frames++;
      const ok = jsonBody(decodeFrame(await s.first(FrameType.AuthOk, 10_000)));
      channels.push(...(ok.channels as number[]));
      s.ws.on("message", (data: ArrayBuffer) => {
        const frame = decodeFrame(new Uint8Array(data));
        if (frame.t === FrameType.IdeOpen && frame.c !== undefined) channels.push(frame.c);
      });
    } else if (role === "ide") {
      await s.first(FrameType.BridgeStatus, 10_000);
    }
    if (role !== "bridge-pre") {
      for (let n = rng.range(50, 400); n > 0; n--) {
        s.ws.send(survivable(rng, role, channels, flips));
        result.frames++;
      }
    }
    const terminal = badFrame(rng, role, channels);
    result.kind = terminal.kind;
    result.expected = terminal.codes;
    s.ws.send(terminal.data);
    result.frames++;
    result.flipped = flips.kept;
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
    const s = openSocket(`${wsBase}/ws/bridge`, {}, `127.0.9.${i + 1}`);
    await s.opened;
    s.ws.send(encodeFrame({ t: FrameType.Auth, body: { code, version: "fuzz" } }));
    const ok = jsonBody(decodeFrame(await s.first(FrameType.AuthOk, 10_000)));
    s.ws.close(1000);
    await s.closed;
    pool.push({ cookie, token: ok.token as string, busy: false });
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

      // Bridges that open and say nothing: the auth deadline closes them.
      const silent = Array.from({ length: SILENT_BRIDGES }, async (_, i) => {
        const s = openSocket(`${wsBase}/ws/bridge`, {}, `127.0.8.${i + 1}`);
        await s.opened;
        const t0 = performance.now();
        const closed = await closedWithin(s.closed, AUTH_DEADLINE_MS + 5_000);
        return { ...closed, afterMs: performance.now() - t0 };
      });

      let nextIndex = 0;
      let frames = 0, flipped = 0;
      const results: SocketResult[] = [];
      const worker = async () => {
        for (;;) {
          const elapsed = performance.now() - started;
          if (elapsed >= FUZZ_BUDGET_MS || (frames >= FRAME_TARGET && elapsed >= FUZZ_MIN_MS)) break;
          const r = await fuzzSocket(wsBase, relay.url, seed, nextIndex++, pool);
          frames += r.frames;
          flipped += r.flipped;
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
          `the rest with random fields and bodies) over ${results.length} sockets (+${SILENT_BRIDGES} silent) in ${
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
      const wrong = results.filter((r) => !r.expected.includes(r.got as number));
      assert.deepEqual(
        wrong.slice(0, 10).map((r) =>
          `#${r.index} ${r.role} ${r.kind}: expected ${r.expected}, got ${r.got} ${r.reason}`
        ),
        [],
        `${wrong.length} sockets closed otherwise than documented (seed ${seed})`,
      );
      for (const r of results) assert.ok(DOCUMENTED_CODES.has(r.got as number), `#${r.index}: ${r.got}`);
      for (const r of silentResults) {
        assert.equal(r.code, CloseCode.AuthTimeout, `silent bridge: ${r.code} ${r.reason}`);
        assert.ok(r.afterMs >= AUTH_DEADLINE_MS - 100 && r.afterMs <= AUTH_DEADLINE_MS + 3_000, `${r.afterMs} ms`);
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
