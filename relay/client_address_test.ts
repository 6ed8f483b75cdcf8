import assert from "node:assert/strict";
import { clientAddress, limitKey } from "./client_address.ts";

const info = (hostname: string) => ({ remoteAddr: { transport: "tcp", hostname, port: 1 } }) as Deno.ServeHandlerInfo;
const forwardedFor = (value: string) => new Request("http://relay/", { headers: { "x-forwarded-for": value } });

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

Deno.test("limitKey: IPv4 is never grouped, whatever its neighbours", () => {
  for (const address of ["192.0.2.7", "192.0.2.8", "10.0.0.1", "0.0.0.0", "255.255.255.255"]) {
    assert.equal(limitKey(address), address);
  }
  assert.notEqual(limitKey("192.0.2.7"), limitKey("192.0.2.8"));
});

Deno.test("limitKey: one IPv6 /64 has one key however the address is written", () => {
  const key = "2001:db8:1:2::/64";
  for (
    const spelling of [
      "2001:db8:1:2:0:0:0:1", // full
      "2001:0db8:0001:0002:0000:0000:0000:0001", // full, leading zeros
      "2001:db8:1:2::1", // compressed inside the interface id
      "2001:db8:1:2::", // compressed at the end
      "2001:db8:1:2:3:4:5::", // "::" for one group
      "2001:DB8:1:2::ABCD", // upper case
      "2001:db8:1:2:ffff:ffff:ffff:ffff", // the last address of the /64
    ]
  ) assert.equal(limitKey(spelling), key, spelling);
  // Compression that reaches into the prefix fills it with zeros.
  assert.equal(limitKey("2001:db8::1"), "2001:db8:0:0::/64");
  assert.equal(limitKey("::2:3:4:5:6:7:8"), "0:2:3:4::/64");
  assert.equal(limitKey("1::"), "1:0:0:0::/64");
  assert.equal(limitKey("::"), "0:0:0:0::/64");
  // Neighbouring /64s differ in any of the first four groups.
  assert.notEqual(limitKey("2001:db8:1:2::1"), limitKey("2001:db8:1:1::1"));
  assert.notEqual(limitKey("2001:db8:1:2::1"), limitKey("2001:db9:1:2::1"));
  assert.equal(limitKey("fe80::1"), "fe80:0:0:0::/64");
});

Deno.test("limitKey: IPv4-mapped IPv6 counts as the IPv4 address it carries", () => {
  assert.equal(limitKey("::ffff:192.0.2.7"), "192.0.2.7");
  assert.equal(limitKey("::FFFF:192.0.2.7"), "192.0.2.7");
  // A dual-stack socket reports an IPv4 client either way: both share one budget.
  assert.equal(limitKey("::ffff:192.0.2.7"), limitKey("192.0.2.7"));
  assert.notEqual(limitKey("::ffff:192.0.2.7"), limitKey("::ffff:192.0.2.8"));
  // Other embedded-IPv4 forms (NAT64, IPv4-translated, the mapped form written out) are left whole.
  for (const embedded of ["64:ff9b::192.0.2.7", "::ffff:0:192.0.2.7", "0:0:0:0:0:ffff:192.0.2.7"]) {
    assert.equal(limitKey(embedded), embedded);
  }
});

Deno.test("limitKey: malformed IPv6 and zone ids are returned unchanged", () => {
  for (
    const odd of [
      "1:2:3:4:5:6:7", // too few groups
      "1:2:3:4:5:6:7:8:9", // too many
      "12345::1", // a group of five digits
      "00001::",
      "2001:db8:::1",
      "[2001:db8::1]", // brackets, as in a URL
      "192.0.2.7:8080", // a port
      "fe80::1%eth0", // a zone id: not parsed, so each such address has its own key
      "fe80::1%25eth0",
      "",
    ]
  ) assert.equal(limitKey(odd), odd, odd);
});

Deno.test("clientAddress: the TCP peer, or the rightmost forwarded entry with trustProxy, as a limit key", () => {
  const forwarded = forwardedFor("10.9.9.9, 2001:db8:7:7::42");
  assert.equal(clientAddress(forwarded, info("127.0.0.1"), false), "127.0.0.1");
  assert.equal(clientAddress(forwarded, info("127.0.0.1"), true), "2001:db8:7:7::/64");
  const forged = forwardedFor("not an address");
  assert.equal(clientAddress(forged, info("2001:db8:5:5::1"), true), "2001:db8:5:5::/64");
});

Deno.test("clientAddress: without trustProxy forwarding headers are ignored", () => {
  const headers = { "x-forwarded-for": "192.0.2.7", forwarded: "for=192.0.2.7", "x-real-ip": "192.0.2.7" };
  const request = new Request("http://relay/", { headers });
  assert.equal(clientAddress(request, info("203.0.113.9"), false), "203.0.113.9");
  assert.equal(clientAddress(request, info("2001:db8:1:2::9"), false), "2001:db8:1:2::/64");
  assert.equal(clientAddress(request, info("::ffff:203.0.113.9"), false), "203.0.113.9");
});

Deno.test("clientAddress: with trustProxy only the rightmost entry counts, so forged entries to its left change nothing", () => {
  const peer = info("127.0.0.1");
  assert.equal(clientAddress(forwardedFor("198.51.100.9"), peer, true), "198.51.100.9");
  // A client may send any X-Forwarded-For; the proxy appends the real peer at the end.
  for (const forged of ["1.1.1.1", "1.1.1.1, 2.2.2.2", "2001:db8::1", "garbage, 10.0.0.1"]) {
    assert.equal(clientAddress(forwardedFor(`${forged}, 198.51.100.9`), peer, true), "198.51.100.9", forged);
  }
  assert.equal(clientAddress(forwardedFor("192.0.2.7 , 198.51.100.9"), peer, true), "198.51.100.9");
  assert.equal(clientAddress(forwardedFor("  198.51.100.9  "), peer, true), "198.51.100.9");
  // Several header lines read as one list: still the rightmost entry of the last line.
  const lines = new Headers();
  lines.append("x-forwarded-for", "203.0.113.1");
  lines.append("x-forwarded-for", "198.51.100.9");
  assert.equal(clientAddress(new Request("http://relay/", { headers: lines }), peer, true), "198.51.100.9");
  // The entry is normalised like any address.
  assert.equal(clientAddress(forwardedFor("10.0.0.1, 2001:db8:7:7:1:2:3:4"), peer, true), "2001:db8:7:7::/64");
  assert.equal(clientAddress(forwardedFor("10.0.0.1, ::ffff:198.51.100.9"), peer, true), "198.51.100.9");
});

Deno.test("clientAddress: with trustProxy a missing or malformed rightmost entry falls back to the TCP peer", () => {
  const peer = info("203.0.113.9");
  assert.equal(clientAddress(new Request("http://relay/"), peer, true), "203.0.113.9");
  for (
    const bad of [
      "",
      "198.51.100.9,", // an empty rightmost entry: the entry to its left is not taken instead
      "unknown",
      "for=198.51.100.9", // Forwarded syntax
      "[2001:db8::1]",
      "2001:db8::1%eth0",
      "1", // too short
      "a".repeat(46), // longer than any address
      "198.51.100.9 203.0.113.1", // no comma
      "<script>",
    ]
  ) assert.equal(clientAddress(forwardedFor(bad), peer, true), "203.0.113.9", bad);
  assert.equal(clientAddress(forwardedFor("unknown"), info("2001:db8:5:5::1"), true), "2001:db8:5:5::/64");
  // The longest address form (45 characters) is still taken.
  const longest = "0000:0000:0000:0000:0000:ffff:255.255.255.255";
  assert.equal(clientAddress(forwardedFor(longest), peer, true), longest);
  // The Forwarded header (RFC 7239) is not read, even with trustProxy.
  const forwarded = new Request("http://relay/", { headers: { forwarded: "for=198.51.100.9" } });
  assert.equal(clientAddress(forwarded, peer, true), "203.0.113.9");
});

Deno.test("clientAddress: a loopback peer is an address like any other", () => {
  // A relay behind a proxy on the same host without --trust-proxy: every client shares the loopback budget.
  assert.equal(clientAddress(forwardedFor("198.51.100.9"), info("127.0.0.1"), false), "127.0.0.1");
  assert.equal(clientAddress(forwardedFor("198.51.100.9"), info("::1"), false), "0:0:0:0::/64");
  // With it and no header (a local client past the proxy, a health check), the loopback peer.
  assert.equal(clientAddress(new Request("http://relay/"), info("127.0.0.1"), true), "127.0.0.1");
  assert.equal(clientAddress(new Request("http://relay/"), info("::1"), true), "0:0:0:0::/64");
  // trustProxy believes the header whichever peer sent it: the flag is only for a relay that
  // nothing but the proxy can reach (docs/OPERATIONS.md).
  assert.equal(clientAddress(forwardedFor("198.51.100.9"), info("203.0.113.9"), true), "198.51.100.9");
});
