/**
 * Relay URLs come in four spellings (http, https, ws, wss); this module turns
 * any of them into the HTTP base and the WebSocket base, and answers whether
 * the host is loopback (the only place plain http/ws is allowed).
 *
 * @module
 */

/** A relay URL in both of its forms. */
export interface RelayUrl {
  /** `http(s)://host[:port]`, no trailing slash: the key tokens are stored under. */
  http: string;
  /** `ws(s)://host[:port]`, no trailing slash. */
  ws: string;
  /** Whether the transport is TLS (https/wss). */
  secure: boolean;
  /** Host name or address as written (IPv6 without brackets). */
  host: string;
  /** Whether the host is a loopback name or address. */
  loopback: boolean;
}

/**
 * Parses and normalises a relay URL.
 *
 * @param input A URL such as `https://relay.example`, `ws://127.0.0.1:8787`.
 * @returns The normalised forms.
 * @throws {TypeError} When the URL cannot be parsed or has another scheme, a path, a query or credentials.
 *
 * @example
 * ```ts
 * import { parseRelayUrl } from "./relay_url.ts";
 * console.log(parseRelayUrl("wss://relay.example/").http); // "https://relay.example"
 * ```
 */
export function parseRelayUrl(input: string): RelayUrl {
  let url: URL;
  try {
    url = new URL(input.trim());
  } catch {
    throw new TypeError(`Cannot use relay URL "${input}": not a URL`);
  }
  const secure = url.protocol === "https:" || url.protocol === "wss:";
  if (!secure && url.protocol !== "http:" && url.protocol !== "ws:") {
    throw new TypeError(`Cannot use relay URL "${input}": scheme must be http, https, ws or wss`);
  }
  if (url.username || url.password) {
    throw new TypeError(`Cannot use relay URL "${input}": credentials do not belong in a URL`);
  }
  if ((url.pathname !== "/" && url.pathname !== "") || url.search || url.hash) {
    throw new TypeError(`Cannot use relay URL "${input}": give only scheme, host and port`);
  }
  const hostPort = url.host; // keeps IPv6 brackets and drops default ports
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  return {
    http: `${secure ? "https" : "http"}://${hostPort}`,
    ws: `${secure ? "wss" : "ws"}://${hostPort}`,
    secure,
    host,
    loopback: isLoopbackHost(host),
  };
}

/**
 * Whether a host name or address is loopback: `localhost`, 127.0.0.0/8 or ::1.
 *
 * @param host A host name or IP address (IPv6 without brackets).
 * @returns True for loopback.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  // Only the exact name: what `*.localhost` resolves to is up to the resolver.
  if (h === "localhost") return true;
  if (h === "::1" || h === "0:0:0:0:0:0:0:1") return true;
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  return m !== null && m.slice(1).every((p) => Number(p) <= 255);
}
