import assert from "node:assert/strict";
import { MAX_CONNECTIONS_PER_ADDRESS } from "../shared/protocol.ts";
import { ConnectionLimits } from "./conn_limits.ts";

Deno.test("ConnectionLimits: a slot per socket up to the cap, per address", () => {
  const limits = new ConnectionLimits({ perAddress: 3 });
  const a = [limits.acquire("a"), limits.acquire("a"), limits.acquire("a")];
  assert.ok(a.every((release) => typeof release === "function"));
  assert.equal(limits.acquire("a"), undefined, "the 4th from one address is refused");
  const b = limits.acquire("b");
  assert.ok(b, "another address is unaffected");
  assert.equal(limits.count("a"), 3);
  assert.equal(limits.count("b"), 1);
  assert.equal(limits.total, 4);
  a[0]!();
  assert.equal(limits.count("a"), 2);
  const again = limits.acquire("a");
  assert.ok(again, "a released slot can be taken again");
  assert.equal(limits.acquire("a"), undefined);
});

Deno.test("ConnectionLimits: release is idempotent and empty addresses are forgotten", () => {
  const limits = new ConnectionLimits({ perAddress: 2 });
  const one = limits.acquire("192.0.2.7")!;
  const two = limits.acquire("192.0.2.7")!;
  one();
  one();
  one();
  assert.equal(limits.count("192.0.2.7"), 1, "a repeated release gives back one slot only");
  assert.ok(limits.acquire("192.0.2.7"));
  assert.equal(limits.acquire("192.0.2.7"), undefined);
  two();
  assert.equal(limits.count("192.0.2.7"), 1);
  assert.equal(limits.addresses, 1);
  for (let i = 0; i < 1000; i++) limits.acquire(`10.0.${i >> 8}.${i & 255}`)?.();
  assert.equal(limits.addresses, 1, "the table holds only addresses with an open socket");
  assert.equal(limits.total, 1);
});

Deno.test("ConnectionLimits: default cap and argument checks", () => {
  assert.equal(new ConnectionLimits().perAddress, MAX_CONNECTIONS_PER_ADDRESS);
  const limits = new ConnectionLimits();
  let taken = 0;
  while (limits.acquire("x")) taken++;
  assert.equal(taken, MAX_CONNECTIONS_PER_ADDRESS);
  for (const bad of [0, -1, 1.5, Number.NaN]) {
    assert.throws(() => new ConnectionLimits({ perAddress: bad }), RangeError);
  }
});
