import assert from "node:assert/strict";
import { decodeAuthOk, isRoutingKey } from "./frame_bodies.ts";

const body = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));

Deno.test("auth.ok: routingKey is optional, kept when URL-safe, refused (4400) otherwise", () => {
  const base = { bridgeId: "b1", expiresAt: 5 };
  assert.deepEqual(decodeAuthOk(body(base)), base, "a relay that sends none");
  assert.equal(decodeAuthOk(body({ ...base, routingKey: "644ab2d723dad42f" })).routingKey, "644ab2d723dad42f");
  for (const bad of ["", "a/b", "a?b", "a b", "x".repeat(65), 7, null]) {
    assert.throws(() => decodeAuthOk(body({ ...base, routingKey: bad })), /routingKey/, JSON.stringify(bad));
  }
  assert.ok(isRoutingKey("Ab-_09") && !isRoutingKey("%41") && !isRoutingKey(undefined));
});
