import assert from "node:assert/strict";
import { Coder1Error } from "./errors.ts";
import {
  decodeFrame,
  encodeFrame,
  encodeHeader,
  headerAad,
  joinFrame,
  parseJsonObject,
  peekRoute,
  peekType,
  routeFrame,
} from "./frame_codec.ts";
import {
  CloseCode,
  FRAME_NAME_BY_CODE,
  FRAME_TABLE,
  type FrameTypeName,
  HEADER_BYTES,
  MAX_FRAME_BYTES,
  MAX_HEADER_BYTES,
  PROTOCOL_VERSION,
} from "./protocol.ts";

const isCode = (code: number) => (e: unknown) => e instanceof Coder1Error && e.closeCode === code;

Deno.test("encodeFrame/decodeFrame round-trip header fields and body bytes", () => {
  const body = new Uint8Array([0, 1, 2, 255]);
  const f = decodeFrame(encodeFrame({ t: "cmd.stdout", r: 7, id: "abc_1-2", s: 9, q: 2 ** 40 + 3, body }));
  assert.equal(f.v, PROTOCOL_VERSION);
  assert.equal(f.t, "cmd.stdout");
  assert.equal(f.r, 7);
  assert.equal(f.id, "abc_1-2");
  assert.equal(f.s, 9);
  assert.equal(f.q, 2 ** 40 + 3);
  assert.deepEqual([...f.body], [...body]);
  assert.equal(f.header.byteLength, HEADER_BYTES + 7);
  const bare = decodeFrame(encodeFrame({ t: "ping" }));
  assert.deepEqual([bare.r, bare.id, bare.s, bare.q, bare.body.byteLength], [
    undefined,
    undefined,
    undefined,
    undefined,
    0,
  ]);
  // s = 0 is a real counter (the first sealed frame), not "absent".
  assert.equal(decodeFrame(encodeFrame({ t: "e2e.info", s: 0 })).s, 0);
});

Deno.test("the header is fixed-width: version, type code, flags, id length, route, s, q, id", () => {
  const bytes = encodeFrame({ t: "cmd.stdin", r: 0x01020304, id: "ab", s: 5, q: 6, body: "x" });
  assert.deepEqual(
    [...bytes.subarray(0, HEADER_BYTES + 2)],
    [4, 0x41, 3, 2, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 6, 0x61, 0x62],
  );
  assert.equal(bytes.byteLength, HEADER_BYTES + 2 + 1);
  assert.equal(MAX_HEADER_BYTES, HEADER_BYTES + 64);
});

Deno.test("the frame table: codes are unique, non-zero and found by code", () => {
  const names = Object.keys(FRAME_TABLE) as FrameTypeName[];
  const codes = names.map((n) => FRAME_TABLE[n].code);
  assert.equal(new Set(codes).size, codes.length);
  for (const name of names) {
    assert.ok(FRAME_TABLE[name].code > 0 && FRAME_TABLE[name].code < 256);
    assert.equal(FRAME_NAME_BY_CODE[FRAME_TABLE[name].code], name);
    assert.equal(decodeFrame(encodeFrame({ t: name })).t, name);
  }
  assert.equal(FRAME_NAME_BY_CODE[0], undefined);
});

Deno.test("routeFrame stamps the route in place: no copy, body and other header bytes untouched", () => {
  const bytes = encodeFrame({ t: "cmd.start", id: "x", s: 1, q: 1, body: { command: "ls" } });
  const before = bytes.slice();
  assert.equal(routeFrame(bytes, 3), "cmd.start");
  assert.equal(peekRoute(bytes), 3);
  assert.equal(peekType(bytes), "cmd.start");
  const f = decodeFrame(bytes);
  assert.equal(f.r, 3);
  assert.deepEqual(parseJsonObject(f.body, f.t), { command: "ls" });
  for (let i = 0; i < bytes.byteLength; i++) if (i < 4 || i > 7) assert.equal(bytes[i], before[i], `byte ${i}`);
  routeFrame(bytes, 0);
  assert.equal(decodeFrame(bytes).r, undefined);
  assert.deepEqual(bytes, before);
  routeFrame(bytes, 0xffffffff);
  assert.equal(decodeFrame(bytes).r, 0xffffffff);
  // A frame at the size limit stays at it: stamping never grows a frame.
  const big = encodeFrame({ t: "cmd.stdin", id: "a", body: new Uint8Array(MAX_FRAME_BYTES - HEADER_BYTES - 1) });
  assert.equal(big.byteLength, MAX_FRAME_BYTES);
  routeFrame(big, 123456);
  assert.equal(big.byteLength, MAX_FRAME_BYTES);
  assert.equal(decodeFrame(big).r, 123456);
});

Deno.test("headerAad is the header with the route zeroed; joinFrame stamps the route", () => {
  const header = encodeHeader({ t: "cmd.stdout", id: "a1", s: 2, q: 9 });
  const bytes = joinFrame(header, new Uint8Array([1, 2, 3]), 42);
  const f = decodeFrame(bytes);
  assert.equal(f.r, 42);
  assert.deepEqual(headerAad(f.header), header);
  assert.notDeepEqual(f.header, header);
  assert.deepEqual([...f.body], [1, 2, 3]);
});

Deno.test("decodeFrame accepts ArrayBuffer, views and npm:ws fragment lists", () => {
  const bytes = encodeFrame({ t: "ping" });
  assert.equal(decodeFrame(bytes.buffer).t, "ping");
  assert.equal(decodeFrame(new DataView(bytes.buffer)).t, "ping");
  assert.equal(decodeFrame([bytes.subarray(0, 3), bytes.subarray(3)]).t, "ping");
});

Deno.test("decodeFrame rejects malformed input with 4400, oversize with 4413, other versions with 4426", () => {
  const good = () => encodeFrame({ t: "cmd.stdout", id: "ab", s: 1, q: 1, body: "x" });
  const edit = (fn: (b: Uint8Array) => void) => {
    const b = good();
    fn(b);
    return b;
  };
  const bad: unknown[] = [
    "text",
    42,
    new Uint8Array([]),
    new Uint8Array([4]),
    new Uint8Array(HEADER_BYTES - 1).fill(4),
    edit((b) => (b[1] = 0)), // type code 0
    edit((b) => (b[1] = 0xff)), // unknown type code
    edit((b) => (b[2] = 0x04)), // unknown flag bit
    edit((b) => (b[3] = 65)), // id longer than allowed
    edit((b) => (b[3] = 200)), // id past the end of the message
    edit((b) => (b[HEADER_BYTES] = 0x20)), // a space in the id
    edit((b) => (b[HEADER_BYTES] = 0xc3)), // a non-ASCII byte in the id
    edit((b) => (b[2] = 0x01)), // q set without its flag
    edit((b) => (b[2] = 0x02)), // s set without its flag
    edit((b) => b.fill(0, 16, 24)), // q flag with q = 0
    edit((b) => (b[8] = 0xff)), // s beyond 2^53
    edit((b) => (b[16] = 0x01)), // q beyond 2^53 (2^56 + ...)
  ];
  for (const input of bad) assert.throws(() => decodeFrame(input), isCode(CloseCode.BadFrame), String(input));
  assert.throws(() => decodeFrame(new Uint8Array(MAX_FRAME_BYTES + 1)), isCode(CloseCode.TooBig));
  // Protocol 1-3: a u16 length, then a JSON header.
  const v3 = new TextEncoder().encode('\u0000\u0012{"v":3,"t":"auth"}{"code":"123456"}');
  assert.throws(() => decodeFrame(v3), isCode(CloseCode.UnsupportedVersion));
  assert.throws(() => decodeFrame(v3.subarray(0, 10)), isCode(CloseCode.UnsupportedVersion));
  assert.throws(() => decodeFrame(edit((b) => (b[0] = 5))), isCode(CloseCode.UnsupportedVersion));
  assert.throws(() => parseJsonObject(new TextEncoder().encode("[1]"), "auth"), isCode(CloseCode.BadFrame));
  assert.throws(() => parseJsonObject(new TextEncoder().encode("nope"), "auth"), isCode(CloseCode.BadFrame));
  assert.throws(() => parseJsonObject(new Uint8Array([0xff]), "auth"), isCode(CloseCode.BadFrame));
});

Deno.test("skipUnknown returns undefined for a newer peer's type code, and still rejects malformed frames", () => {
  const bytes = encodeFrame({ t: "ping" });
  bytes[1] = 0xee;
  assert.equal(decodeFrame(bytes, { skipUnknown: true }), undefined);
  assert.throws(() => decodeFrame(bytes), isCode(CloseCode.BadFrame));
  bytes[3] = 9; // its id would run past the end
  assert.throws(() => decodeFrame(bytes, { skipUnknown: true }), isCode(CloseCode.BadFrame));
});

Deno.test("encodeFrame refuses what decodeFrame would refuse", () => {
  assert.throws(() => encodeFrame({ t: "cmd.stdin", id: "a b" }), TypeError);
  assert.throws(() => encodeFrame({ t: "cmd.stdin", id: "a".repeat(65) }), RangeError);
  assert.throws(() => encodeFrame({ t: "cmd.stdin", q: -1 }), RangeError);
  assert.throws(() => encodeFrame({ t: "cmd.stdin", r: 2 ** 32 }), RangeError);
  assert.throws(() => encodeFrame({ t: "nope" as FrameTypeName }), TypeError);
});

Deno.test("seeded random garbage never escapes as anything but a Coder1Error", () => {
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const codes = Object.values(FRAME_TABLE).map((f) => f.code);
  for (let i = 0; i < 20_000; i++) {
    const bytes = new Uint8Array(Math.floor(rand() * 96));
    for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(rand() * 256);
    if (rand() < 0.7 && bytes.length > 4) {
      // Mostly well-formed prefixes, so the later checks are reached too.
      bytes[0] = PROTOCOL_VERSION;
      bytes[1] = codes[Math.floor(rand() * codes.length)];
      bytes[2] &= 3;
      bytes[3] = Math.floor(rand() * 8);
    }
    try {
      decodeFrame(bytes);
    } catch (e) {
      assert.ok(e instanceof Coder1Error, String(e));
    }
  }
});
