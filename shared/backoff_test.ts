import assert from "node:assert/strict";
import { backoffDelay } from "./backoff.ts";

Deno.test("backoffDelay doubles from the base up to the cap", () => {
  const o = { baseMs: 500, maxMs: 30_000, jitter: "none" as const };
  assert.deepEqual([0, 1, 2, 3, 6, 7, 100].map((n) => backoffDelay(n, o)), [
    500,
    1000,
    2000,
    4000,
    30_000,
    30_000,
    30_000,
  ]);
});

Deno.test("equal jitter keeps the delay between half and all of the ceiling", () => {
  const o = { baseMs: 1000, maxMs: 8000 };
  assert.equal(backoffDelay(2, { ...o, random: () => 0 }), 2000);
  assert.equal(backoffDelay(2, { ...o, random: () => 0.999999 }) < 4000, true);
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay(5, o);
    assert.ok(d >= 4000 && d < 8000, String(d));
  }
});

Deno.test("a bad attempt number is refused", () => {
  assert.throws(() => backoffDelay(-1, { baseMs: 1, maxMs: 2 }), RangeError);
  assert.throws(() => backoffDelay(0.5, { baseMs: 1, maxMs: 2 }), RangeError);
});
