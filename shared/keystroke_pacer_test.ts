import assert from "node:assert/strict";
import { type Clock, ManualClock, type Timers } from "./clock.ts";
import { decodeTermKeys, encodeTermKeys } from "./frame_bodies.ts";
import { KeystrokePacer, type KeystrokePacerOptions } from "./keystroke_pacer.ts";
import {
  KEYSTROKE_CHAFF_MIN_MS,
  KEYSTROKE_CHAFF_RANDOM_MS,
  KEYSTROKE_INTERVAL_MS,
  TERMINAL_KEYS_BODY_BYTES,
} from "./protocol.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** One send: when, how (padded keys or bulk) and what. */
interface Sent {
  at: number;
  kind: "keys" | "bulk";
  text: string;
  /** The padded body a keys frame would carry. */
  body?: Uint8Array;
}

/** A pacer on a manual clock (or `timers`), recording what it sends. */
function pacer(options: Partial<KeystrokePacerOptions> & { manual?: ManualClock; timers?: Clock & Timers } = {}) {
  const clock = options.manual ?? new ManualClock(0);
  const sent: Sent[] = [];
  let pacing = true;
  const p = new KeystrokePacer({
    clock: options.timers ?? clock,
    pacing: () => pacing,
    sendKeys: (
      b,
    ) => (sent.push({ at: clock.now(), kind: "keys", text: dec(b), body: encodeTermKeys(b) }), Promise.resolve()),
    sendBulk: (b) => (sent.push({ at: clock.now(), kind: "bulk", text: dec(b) }), Promise.resolve()),
    random: () => 0,
    ...options,
  });
  /** Types `text` at absolute time `at` (moving the clock there first). */
  const typeAt = (at: number, text: string) => {
    clock.advance(at - clock.now());
    return p.input(enc(text));
  };
  return { clock, sent, pacer: p, typeAt, setPacing: (on: boolean) => (pacing = on) };
}

Deno.test("KeystrokePacer: a burst is a fixed grid of equal frames, keystrokes and chaff alike, ending after the tail", () => {
  const { clock, sent, typeAt, pacer: p } = pacer();
  const I = KEYSTROKE_INTERVAL_MS;
  // Irregular typing: the first key goes at once, the others wait for the next tick.
  typeAt(1_000, "e");
  typeAt(1_007, "c");
  typeAt(1_013, "h");
  typeAt(1_055, "o");
  typeAt(1_301, "\r");
  assert.ok(p.bursting);
  clock.advance(10_000);
  assert.equal(p.bursting, false);
  const last = 1_301 + KEYSTROKE_CHAFF_MIN_MS; // random() = 0: the shortest tail.
  // Every frame on the grid 1000, 1020, 1040 ... up to the last tick before the tail ends; none after.
  const expected: number[] = [];
  for (let t = 1_000; t < last; t += I) expected.push(t);
  assert.deepEqual(sent.map((s) => s.at), expected);
  assert.ok(sent.every((s) => s.kind === "keys"));
  assert.deepEqual(
    sent.filter((s) => s.text !== "").map((s) => [s.at, s.text]),
    [[1_000, "e"], [1_020, "ch"], [1_060, "o"], [1_320, "\r"]],
    "each keystroke in the first tick after it, together when several wait",
  );
  // Padded: every body the same size, whether it carries keys or nothing.
  assert.deepEqual(new Set(sent.map((s) => s.body!.byteLength)), new Set([TERMINAL_KEYS_BODY_BYTES]));
  assert.equal(sent.filter((s) => s.text === "").length, expected.length - 4);
  assert.deepEqual(p.stats, { keys: 4, chaff: expected.length - 4, bulk: 0 });
  assert.deepEqual(clock.pending, [], "no timer left");
  // The next keystroke starts a new burst at once.
  typeAt(20_000, "x");
  assert.deepEqual(sent.at(-1), { at: 20_000, kind: "keys", text: "x", body: encodeTermKeys(enc("x")) });
  p.stop();
});

Deno.test("KeystrokePacer: the tail is random, up to 1 + 2 s after the last keystroke, drawn again at each keystroke", () => {
  for (
    const [random, tail] of [[0, KEYSTROKE_CHAFF_MIN_MS], [
      0.9999,
      KEYSTROKE_CHAFF_MIN_MS + KEYSTROKE_CHAFF_RANDOM_MS - 1,
    ]]
  ) {
    const { clock, sent, typeAt } = pacer({ random: () => random });
    typeAt(0, "a");
    typeAt(500, "b");
    clock.advance(10_000);
    const lastFrame = sent.at(-1)!.at;
    assert.ok(lastFrame < 500 + tail && lastFrame >= 500 + tail - KEYSTROKE_INTERVAL_MS, `${random}: ${lastFrame}`);
  }
  assert.equal(KEYSTROKE_CHAFF_MIN_MS + KEYSTROKE_CHAFF_RANDOM_MS, 3_072);
});

Deno.test("KeystrokePacer: a paste goes at once, unpadded, after what waited; the burst's grid goes on untouched", async () => {
  const { clock, sent, typeAt } = pacer();
  // Not in a burst: a paste starts none.
  const paste = "x".repeat(TERMINAL_KEYS_BODY_BYTES);
  await typeAt(100, paste);
  assert.deepEqual(sent, [{ at: 100, kind: "bulk", text: paste }]);
  assert.deepEqual(clock.pending, []);
  // In a burst: what waits goes first, in the same send.
  typeAt(1_000, "a");
  typeAt(1_005, "b");
  const pasted = typeAt(1_010, paste);
  assert.deepEqual(sent.slice(1).map((s) => [s.at, s.kind, s.text]), [[1_000, "keys", "a"], [
    1_010,
    "bulk",
    `b${paste}`,
  ]]);
  await pasted;
  clock.advance(1_020 - 1_010);
  assert.deepEqual(sent.at(-1), { at: 1_020, kind: "keys", text: "", body: encodeTermKeys(new Uint8Array(0)) });
  // The tail runs from the last keystroke (1005), not from the paste.
  clock.advance(10_000);
  assert.ok(sent.at(-1)!.at < 1_005 + KEYSTROKE_CHAFF_MIN_MS);
  // Keystrokes piling up past one frame's room are no longer typing either: they go at once.
  typeAt(20_000, "k");
  const fill = "y".repeat(TERMINAL_KEYS_BODY_BYTES - 2 - 10);
  typeAt(20_001, fill);
  typeAt(20_002, "z".repeat(10)); // Just fits.
  typeAt(20_003, "!"); // Does not.
  assert.deepEqual(sent.slice(-2).map((s) => [s.at, s.kind, s.text]), [
    [20_000, "keys", "k"],
    [20_003, "bulk", `${fill}${"z".repeat(10)}!`],
  ]);
});

Deno.test("KeystrokePacer: an input resolves when it went out; off sends at once; turning off mid-burst flushes", async () => {
  const { clock, sent, typeAt, setPacing, pacer: p } = pacer();
  await typeAt(0, "a");
  let done = false;
  const b = typeAt(5, "b").then(() => (done = true));
  await Promise.resolve();
  assert.equal(done, false, "waits for the tick");
  assert.equal(p.waiting, 1);
  clock.advance(15);
  await b;
  assert.equal(done, true);
  // Pacing stops (turned off, the bridge went away): the next tick sends what waits, unpadded, and the burst ends.
  typeAt(25, "c");
  setPacing(false);
  clock.advance(15);
  assert.deepEqual(sent.at(-1), { at: 40, kind: "bulk", text: "c" });
  assert.equal(p.bursting, false);
  await typeAt(50, "d");
  assert.deepEqual(sent.at(-1), { at: 50, kind: "bulk", text: "d" });
  // Back on: a new burst. flush() sends what waits at once (padded) and ends it; stop() drops it.
  setPacing(true);
  typeAt(100, "e");
  typeAt(101, "f");
  await p.flush();
  assert.deepEqual(sent.slice(-2).map((s) => [s.at, s.kind, s.text]), [[100, "keys", "e"], [101, "keys", "f"]]);
  assert.equal(p.bursting, false);
  typeAt(200, "g");
  const dropped = typeAt(201, "h");
  p.stop();
  await dropped; // Resolves (nothing was sent).
  clock.advance(1_000);
  assert.equal(sent.at(-1)!.text, "g");
  assert.deepEqual(clock.pending, []);
});

Deno.test("KeystrokePacer: a tick that fires late skips the ticks it missed and keeps the grid", () => {
  const clock = new ManualClock(0);
  let lateBy = 45; // The first tick, due at 20, fires at 65 (a busy event loop).
  const timers: Clock & Timers = {
    now: () => clock.now(),
    after: (ms, fn) => {
      const cancel = clock.after(ms + lateBy, fn);
      lateBy = 0;
      return cancel;
    },
  };
  const { sent, pacer: p } = pacer({ manual: clock, timers });
  p.input(enc("a"));
  clock.advance(165);
  assert.deepEqual(sent.map((s) => s.at), [0, 65, 80, 100, 120, 140, 160], "no catch-up run; 40 and 60 are skipped");
  p.stop();
});

Deno.test("term.keys bodies: a u16 length, the bytes, zeros; any length of body decodes", () => {
  const body = encodeTermKeys(enc("é日"));
  assert.equal(body.byteLength, TERMINAL_KEYS_BODY_BYTES);
  assert.deepEqual([...body.subarray(0, 2)], [0, 5]);
  assert.equal(dec(decodeTermKeys(body)), "é日");
  assert.ok(body.subarray(7).every((b) => b === 0));
  assert.equal(decodeTermKeys(encodeTermKeys(new Uint8Array(0))).byteLength, 0, "chaff");
  assert.equal(dec(decodeTermKeys(encodeTermKeys(enc("ls"), 4))), "ls");
  assert.throws(() => encodeTermKeys(new Uint8Array(TERMINAL_KEYS_BODY_BYTES - 1)), RangeError);
  for (const bad of [[], [0], [0, 3, 1, 2]]) {
    assert.throws(() => decodeTermKeys(new Uint8Array(bad)), /Cannot accept frame: term.keys/);
  }
});
