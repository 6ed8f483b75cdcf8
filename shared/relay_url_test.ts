import assert from "node:assert/strict";
import { isLoopbackHost, parseRelayUrl } from "./relay_url.ts";

Deno.test("parseRelayUrl accepts the four schemes and normalises", () => {
  assert.deepEqual(parseRelayUrl("wss://relay.example/"), {
    http: "https://relay.example",
    ws: "wss://relay.example",
    secure: true,
    host: "relay.example",
    loopback: false,
  });
  assert.equal(parseRelayUrl("ws://127.0.0.1:8787").http, "http://127.0.0.1:8787");
  assert.equal(parseRelayUrl("https://relay.example:443").http, "https://relay.example");
  assert.equal(parseRelayUrl("http://[::1]:9000").ws, "ws://[::1]:9000");
  assert.equal(parseRelayUrl("http://[::1]:9000").loopback, true);
});

Deno.test("parseRelayUrl refuses other schemes, paths, queries and credentials", () => {
  for (const bad of ["ftp://x", "relay.example", "https://x/path", "https://x/?q=1", "https://u:p@x", "https://x/#f"]) {
    assert.throws(() => parseRelayUrl(bad), TypeError, bad);
  }
});

Deno.test("isLoopbackHost", () => {
  for (const h of ["localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3", "::1"]) assert.ok(isLoopbackHost(h), h);
  for (const h of ["10.0.0.1", "127.0.0.256", "example.com", "127.0.0.1.evil.com", "0.0.0.0", "::", "app.localhost"]) {
    assert.ok(!isLoopbackHost(h), h);
  }
});
