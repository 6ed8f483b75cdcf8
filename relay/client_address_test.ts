import assert from "node:assert/strict";
import { clientAddress, limitKey } from "./client_address.ts";

Deno.test("limitKey: IPv4 as is, IPv4-mapped unwrapped, IPv6 by its /64", () => {
  assert.equal(limitKey("203.0.113.9"), "203.0.113.9");
  assert.equal(limitKey("::ffff:203.0.113.9"), "203.0.113.9");
  assert.equal(limitKey("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::/64");
  assert.equal(limitKey("2001:0db8:0001:0002::1"), "2001:db8:1:2::/64");
  assert.equal(limitKey("2001:db8::"), "2001:db8:0:0::/64");
  assert.equal(limitKey("::1"), "0:0:0:0::/64");
  // Every address of one /64 shares a budget; the next /64 has its own.
  assert.equal(limitKey("2001:db8:1:2::5"), limitKey("2001:db8:1:2:ffff::9"));
  assert.notEqual(limitKey("2001:db8:1:2::5"), limitKey("2001:db8:1:3::5"));
  // Anything unparsable is returned unchanged rather than merged with others.
  for (const odd of ["1:2:3:4:5:6:7:8:9", "2001:db8::g", "::ffff:1.2.3.4.5", "unix"]) assert.equal(limitKey(odd), odd);
});

Deno.test("clientAddress: the TCP peer, or the rightmost forwarded entry with trustProxy, as a limit key", () => {
  const info = (hostname: string) => ({ remoteAddr: { transport: "tcp", hostname, port: 1 } }) as Deno.ServeHandlerInfo;
  const forwarded = new Request("http://relay/", { headers: { "x-forwarded-for": "10.9.9.9, 2001:db8:7:7::42" } });
  assert.equal(clientAddress(forwarded, info("127.0.0.1"), false), "127.0.0.1");
  assert.equal(clientAddress(forwarded, info("127.0.0.1"), true), "2001:db8:7:7::/64");
  const forged = new Request("http://relay/", { headers: { "x-forwarded-for": "not an address" } });
  assert.equal(clientAddress(forged, info("2001:db8:5:5::1"), true), "2001:db8:5:5::/64");
});
