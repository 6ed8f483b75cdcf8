import assert from "node:assert/strict";
import { ManualClock, systemClock } from "./clock.ts";

Deno.test("ManualClock fires timers only when advanced, in due order, with the clock at their due time", () => {
  const clock = new ManualClock(1_000);
  const fired: string[] = [];
  clock.after(300, () => fired.push(`b@${clock.now()}`));
  clock.after(100, () => fired.push(`a@${clock.now()}`));
  clock.after(300, () => fired.push(`c@${clock.now()}`)); // Same due time: in the order they were set.
  assert.deepEqual(clock.pending, [100, 300, 300]);
  clock.advance(99);
  assert.deepEqual(fired, []);
  clock.advance(1_000);
  assert.deepEqual(fired, ["a@1100", "b@1300", "c@1300"]);
  assert.equal(clock.now(), 2_099);
  assert.deepEqual(clock.pending, []);
});

Deno.test("ManualClock: a timer set while firing fires in the same advance if it falls due; cancelled ones never", () => {
  const clock = new ManualClock(0);
  const fired: number[] = [];
  const tick = () => {
    fired.push(clock.now());
    clock.after(1_000, tick);
  };
  clock.after(1_000, tick);
  const cancel = clock.after(2_500, () => fired.push(-1));
  cancel();
  clock.advance(3_500);
  assert.deepEqual(fired, [1_000, 2_000, 3_000]);
  assert.deepEqual(clock.pending, [500]);
  assert.throws(() => clock.advance(-1), RangeError);
});

Deno.test("systemClock timers fire, and cancel", async () => {
  const fired = Promise.withResolvers<void>();
  const cancel = systemClock.after(60_000, () => fired.reject(new Error("cancelled timer fired")));
  cancel();
  systemClock.after(1, () => fired.resolve());
  await fired.promise;
});
