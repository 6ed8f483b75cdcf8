import assert from "node:assert/strict";
import { Coder1Error } from "./errors.ts";
import { decodeFrame, encodeFrame, jsonBody, withChannel } from "./frame_codec.ts";
import { CloseCode, MAX_FRAME_BYTES, PROTOCOL_VERSION } from "./protocol.ts";

Deno.test("encodeFrame/decodeFrame round-trip header fields and body bytes", () => {
  const body = new Uint8Array([0, 1, 2, 255]);
  const f = decodeFrame(encodeFrame({ t: "cmd.stdout", c: 7, id: "abc_1-2", s: 9, body }));
  assert.equal(f.v, PROTOCOL_VERSION);
  assert.equal(f.t, "cmd.stdout");
  assert.equal(f.c, 7);
  assert.equal(f.id, "abc_1-2");
  assert.equal(f.s, 9);
  assert.deepEqual([...f.body], [...body]);
});

Deno.test("JSON bodies and channel restamping keep the body untouched", () => {
  const f = decodeFrame(encodeFrame({ t: "cmd.start", id: "x", body: { command: "ls" } }));
  assert.deepEqual(jsonBody(f), { command: "ls" });
  const g = decodeFrame(withChannel(f, 3));
  assert.equal(g.c, 3);
  assert.deepEqual(jsonBody(g), { command: "ls" });
  assert.equal(decodeFrame(withChannel(g, undefined)).c, undefined);
});

Deno.test("decodeFrame accepts ArrayBuffer, views and npm:ws fragment lists", () => {
  const bytes = encodeFrame({ t: "ping" });
  assert.equal(decodeFrame(bytes.buffer).t, "ping");
  assert.equal(decodeFrame(new DataView(bytes.buffer)).t, "ping");
  assert.equal(decodeFrame([bytes.subarray(0, 3), bytes.subarray(3)]).t, "ping");
});

Deno.test("decodeFrame rejects malformed input with 4400 and oversize with 4413", () => {
  const enc = new TextEncoder();
  const raw = (h: string, body: number[] = []) => {
    const hb = enc.encode(h);
    return new Uint8Array([hb.length >> 8, hb.length & 0xff, ...hb, ...body]);
  };
  const bad: unknown[] = [
    "text",
    new Uint8Array([]),
    new Uint8Array([0]),
    new Uint8Array([0, 0]),
    new Uint8Array([0, 9, 1]),
    raw("not json"),
    raw("[]"),
    raw("null"),
    raw('{"t":"ping"}'),
    raw('{"v":4,"t":"ping"}'),
    raw('{"v":3}'),
    raw('{"v":3,"t":"PING"}'),
    raw('{"v":3,"t":"ping","c":-1}'),
    raw('{"v":3,"t":"ping","c":1.5}'),
    raw('{"v":3,"t":"ping","id":"a b"}'),
    raw(`{"v":3,"t":"ping","id":"${"a".repeat(65)}"}`),
    raw('{"v":3,"t":"ping","s":"1"}'),
    raw('{"v":3,"t":"cmd.stdout","q":0}'),
    raw('{"v":3,"t":"cmd.stdout","q":"1"}'),
    raw(`{"v":3,"t":"ping","pad":"${"a".repeat(1100)}"}`),
    new Uint8Array([0xff, 0xfe, 0xfd]),
    raw('{"v":3,"t":"\ud800"}'),
    42,
  ];
  for (const input of bad) {
    assert.throws(
      () => decodeFrame(input),
      (e: unknown) => e instanceof Coder1Error && e.closeCode === CloseCode.BadFrame,
    );
  }
  assert.throws(
    () => decodeFrame(new Uint8Array(MAX_FRAME_BYTES + 1)),
    (e: unknown) => e instanceof Coder1Error && e.closeCode === CloseCode.TooBig,
  );
  assert.throws(() => jsonBody(decodeFrame(encodeFrame({ t: "auth", body: "[1]" }))), Coder1Error);
  assert.throws(() => jsonBody(decodeFrame(encodeFrame({ t: "auth", body: "nope" }))), Coder1Error);
});

Deno.test("seeded random garbage never escapes as anything but a Coder1Error", () => {
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let i = 0; i < 5000; i++) {
    const bytes = new Uint8Array(Math.floor(rand() * 64));
    for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(rand() * 256);
    if (rand() < 0.5 && bytes.length > 2) {
      bytes[0] = 0;
      bytes[1] = Math.min(bytes.length - 2, Math.floor(rand() * 40));
    }
    try {
      decodeFrame(bytes);
    } catch (e) {
      assert.ok(e instanceof Coder1Error, String(e));
    }
  }
});

Deno.test("withChannel refuses to grow a frame past the limit", () => {
  const header = new TextEncoder().encode(JSON.stringify({ v: 1, t: "cmd.stdin", id: "a" }));
  const body = new Uint8Array(MAX_FRAME_BYTES - 2 - header.byteLength);
  const atLimit = decodeFrame(encodeFrame({ t: "cmd.stdin", id: "a", body }));
  assert.throws(
    () => withChannel(atLimit, 123456),
    (e: unknown) => e instanceof Coder1Error && e.closeCode === CloseCode.TooBig,
  );
  const longId = decodeFrame(encodeFrame({ t: "cmd.stdin", id: "a".repeat(64), s: 1 }));
  assert.ok(withChannel(longId, Number.MAX_SAFE_INTEGER).byteLength < 200);
});
