/**
 * Client addresses as the relay's per-address limits count them: where a
 * request comes from ({@linkcode clientAddress}) and the unit it is counted
 * under ({@linkcode limitKey}). Why the rightmost `X-Forwarded-For` entry and
 * why an IPv6 /64: docs/HTTP_API.md ("Client addresses behind a proxy") and
 * docs/OPERATIONS.md.
 *
 * @module
 */

/** Longest `X-Forwarded-For` entry taken as an address: an IPv6 address with an IPv4 tail, written out in full. */
const MAX_ADDRESS_LENGTH = 45;
/** The characters and length a forwarded address may have; {@linkcode limitKey} does the parsing. */
const ADDRESS_SHAPE = new RegExp(`^[0-9A-Fa-f:.]{2,${MAX_ADDRESS_LENGTH}}$`);

/**
 * The client address to rate-limit by: the TCP peer, or with `trustProxy` the
 * rightmost `X-Forwarded-For` entry, which is the one the proxy in front
 * appended (entries to its left come from the client and may be forged).
 * A missing or malformed header falls back to the TCP peer.
 *
 * @param request The request.
 * @param info Its connection info.
 * @param trustProxy Whether a trusted reverse proxy is the only client.
 * @returns An address string.
 *
 * @example
 * ```ts
 * import { clientAddress } from "./client_address.ts";
 * const request = new Request("http://relay/", { headers: { "x-forwarded-for": "10.0.0.1, 192.0.2.7" } });
 * const info = { remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 } } as Deno.ServeHandlerInfo;
 * console.log(clientAddress(request, info, true), clientAddress(request, info, false)); // 192.0.2.7 127.0.0.1
 * ```
 */
export function clientAddress(request: Request, info: Deno.ServeHandlerInfo, trustProxy: boolean): string {
  const peer = (info.remoteAddr as Deno.NetAddr).hostname;
  if (!trustProxy) return limitKey(peer);
  const last = request.headers.get("x-forwarded-for")?.split(",").at(-1)?.trim() ?? "";
  return limitKey(ADDRESS_SHAPE.test(last) ? last : peer);
}

/**
 * The unit a per-address limit counts: an IPv4 address as it is (also when
 * written IPv4-mapped, `::ffff:192.0.2.7`), an IPv6 address by its /64
 * prefix, since one host is usually given a whole /64 and could otherwise
 * spend a fresh budget from each of its 2^64 addresses.
 *
 * @param address An IPv4 or IPv6 address (anything else is returned as is).
 * @returns e.g. `192.0.2.7` or `2001:db8:1:2::/64`.
 *
 * @example
 * ```ts
 * import { limitKey } from "./client_address.ts";
 * console.log(limitKey("2001:db8:1:2:aaaa::1"), limitKey("::ffff:192.0.2.7")); // 2001:db8:1:2::/64 192.0.2.7
 * ```
 */
export function limitKey(address: string): string {
  if (!address.includes(":")) return address;
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped) return mapped[1];
  const [head, tail] = address.toLowerCase().split("::", 2) as [string, string | undefined];
  const left = head === "" ? [] : head.split(":");
  const right = tail === undefined || tail === "" ? [] : tail.split(":");
  if (right.some((part) => part.includes("."))) return address; // an embedded IPv4 tail: rare, left alone
  const groups = tail === undefined
    ? left
    : [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
  if (groups.length !== 8 || !groups.every((g) => /^[0-9a-f]{1,4}$/.test(g))) return address;
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, "")).join(":")}::/64`;
}
