import assert from "node:assert/strict";
import { ROUTING_KEY_HEX_CHARS, routingKey } from "./routing_key.ts";

Deno.test('routingKey: the first 16 hex of SHA-256("coder1-route\\0" + sid), stable, not the sid', () => {
  // printf 'coder1-route\0abc' | sha256sum
  assert.equal(routingKey("abc"), "644ab2d723dad42f");
  assert.equal(routingKey("abc"), routingKey("abc"));
  assert.notEqual(routingKey("abc"), routingKey("abd"));
  const sid = "0123456789abcdef0123456789abcdef";
  assert.match(routingKey(sid), new RegExp(`^[0-9a-f]{${ROUTING_KEY_HEX_CHARS}}$`));
  assert.ok(!sid.includes(routingKey(sid)) && !routingKey(sid).includes(sid.slice(0, 8)));
});
