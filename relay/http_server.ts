/**
 * The relay's HTTP/1.1 and WebSocket server, on `node:net`, `node:tls`,
 * `node:http` and npm:ws instead of `Deno.serve`, because the relay must
 * bound what a peer can make it hold and for how long, and `Deno.serve`
 * offers no way to (docs/RELIABILITY.md, "Connections the relay holds"):
 *
 * - a request head must arrive within {@linkcode REQUEST_HEAD_TIMEOUT_MS} of
 *   the connection (or, kept alive, of the previous answer), and a request
 *   must be answered within {@linkcode REQUEST_TIMEOUT_MS};
 * - request bodies are capped at {@linkcode MAX_REQUEST_BODY_BYTES};
 * - a WebSocket message is refused while it arrives once its length is over
 *   `MAX_FRAME_BYTES` (close 4413), not after it was assembled;
 * - every connection the relay closes, refuses or times out is torn down at
 *   the TCP level at most {@linkcode CLOSE_TEARDOWN_MS} later, whatever the
 *   peer does (answers the close or not, reads or not);
 * - with TLS, only TLS 1.3 is offered.
 *
 * The route handlers stay fetch-style (`Request` in, `Response` out), as they
 * were under `Deno.serve`: {@linkcode serveRelayHttp} adapts each request.
 * An upgrade request's handler gets {@linkcode RelayServeInfo.upgrade}, which
 * returns a WebSocket (npm:ws, with the browser's event API) that opens once
 * the handler's 101 response has been written.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import http from "node:http";
import https from "node:https";
import type net from "node:net";
import type tls from "node:tls";
import NodeWebSocket from "ws";
import { CloseCode, MAX_FRAME_BYTES } from "../shared/protocol.ts";

/**
 * Time a client has to send a complete request head: from the TCP accept
 * (the TLS handshake included), or on a kept-alive connection from the end
 * of the previous answer. Then the connection is destroyed.
 */
export const REQUEST_HEAD_TIMEOUT_MS = 10_000;
/** Time from a request head to the end of the relay's answer (the body included); then the connection is destroyed. */
export const REQUEST_TIMEOUT_MS = 30_000;
/** Largest request body the relay reads (its API takes small JSON bodies); larger ones get 413. */
export const MAX_REQUEST_BODY_BYTES = 64 * 1024;
/**
 * After the relay closes a WebSocket, refuses an upgrade or answers with
 * `Connection: close`, the peer has this long to finish the close; then the
 * TCP connection is destroyed.
 */
export const CLOSE_TEARDOWN_MS = 2_000;
/** Most fragments one WebSocket message may arrive in (coder1's clients send one). */
export const MAX_MESSAGE_FRAGMENTS = 1_024;
/** Most TCP reads one WebSocket message may arrive in before it is complete (bounds tiny dribbled reads). */
export const MAX_MESSAGE_CHUNKS = 16_384;

/** The WebSocket handshake's magic GUID (RFC 6455 section 1.3). */
const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** Connection info a relay handler gets: Deno's, plus the upgrade on upgrade requests. */
export interface RelayServeInfo extends Deno.ServeHandlerInfo {
  /**
   * Present only on a request that asked for a WebSocket upgrade: returns
   * the socket (it opens once `response`, status 101, has been returned and
   * written) and the response to return. `protocol` is the subprotocol to
   * select.
   */
  upgrade?: (protocol?: string) => { socket: WebSocket; response: Response };
}

/**
 * What {@linkcode RelayServeInfo.upgrade} returns as a `WebSocket`: an npm:ws
 * socket, which has the browser's event API (`onopen`, `onmessage` with
 * `data`, `onclose` with `code` and `reason`, `send`, `close`, `readyState`,
 * `bufferedAmount`). Binary messages arrive as `Uint8Array`s (Node Buffers).
 */
function _asWebSocket(ws: NodeWebSocket): WebSocket {
  return ws as unknown as WebSocket;
}

/** A fetch-style handler for {@linkcode serveRelayHttp}. */
export type RelayHandler = (request: Request, info: RelayServeInfo) => Response | Promise<Response>;

/** Options for {@linkcode serveRelayHttp}. */
export interface RelayHttpOptions {
  /** Address to bind. */
  hostname: string;
  /** Port to bind; 0 picks a free one. */
  port: number;
  /** PEM certificate chain and key: serve HTTPS (TLS 1.3 only). */
  tls?: { cert: string; key: string };
  /** Called with errors the handler threw (the client gets a 500). */
  onError?: (error: unknown) => void;
}

/** A running server. */
export interface RelayHttpServer {
  /** The address bound. */
  addr: Deno.NetAddr;
  /** Stops accepting, destroys every connection and resolves when all is closed. */
  shutdown(): Promise<void>;
  /** Resolves when the server has stopped. */
  finished: Promise<void>;
  /** Open TCP connections (tests read it). */
  readonly connections: number;
}

/** One accepted TCP connection and the deadline that currently applies to it. */
class _Connection {
  #timer?: ReturnType<typeof setTimeout>;
  constructor(readonly raw: net.Socket) {}
  /** Destroys the connection in `ms` unless another deadline replaces this one. */
  deadline(ms: number): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.raw.destroy(), ms);
  }
  /** No deadline (an open WebSocket: the hub's heartbeat decides). */
  clear(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/**
 * Serves `handler` over HTTP/1.1 (HTTPS with `tls`) with WebSocket upgrades.
 *
 * @param options Where to listen and with which certificate.
 * @param handler The routes.
 * @returns The server, once it listens.
 *
 * @example
 * ```ts ignore
 * import { serveRelayHttp } from "./http_server.ts";
 * const server = await serveRelayHttp({ hostname: "127.0.0.1", port: 0 }, () => new Response("hi"));
 * await server.shutdown();
 * ```
 */
export async function serveRelayHttp(options: RelayHttpOptions, handler: RelayHandler): Promise<RelayHttpServer> {
  const scheme = options.tls ? "https" : "http";
  // Both the raw TCP socket and (with TLS) the TLS socket on it map to one entry.
  const connections = new Map<net.Socket, _Connection>();
  const live = new Set<_Connection>();
  const sockets = new Set<NodeWebSocket>();
  const onError = options.onError ?? (() => {});

  const serverOptions = { maxHeaderSize: 16 * 1024, noDelay: true };
  const httpServer = options.tls
    ? https.createServer({ ...serverOptions, cert: options.tls.cert, key: options.tls.key, minVersion: "TLSv1.3" })
    : http.createServer(serverOptions);
  // Node's own head and request timers are replaced by the per-connection deadlines.
  httpServer.headersTimeout = 0;
  httpServer.requestTimeout = 0;
  const listener = httpServer;

  // Every TCP connection, from its accept: the head deadline covers the TLS handshake too.
  httpServer.on("connection", (raw: net.Socket) => {
    const conn = new _Connection(raw);
    connections.set(raw, conn);
    live.add(conn);
    conn.deadline(REQUEST_HEAD_TIMEOUT_MS);
    raw.on("error", () => {});
    raw.on("close", () => {
      conn.clear();
      connections.delete(raw);
      live.delete(conn);
    });
  });
  // With TLS, requests arrive on the TLS socket over the raw one: the same entry.
  httpServer.on("secureConnection", (secure: tls.TLSSocket) => {
    const raw = (secure as unknown as { _parent?: net.Socket })._parent;
    const conn = raw && connections.get(raw);
    if (!conn) return secure.destroy();
    connections.set(secure, conn);
    secure.on("error", () => raw!.destroy());
    secure.on("close", () => connections.delete(secure));
  });

  httpServer.on("clientError", (_error: Error, socket: net.Socket) => {
    // A malformed or oversized head: answer 400 (or 431) if the socket can still take it, then hang up.
    const conn = connections.get(socket);
    if (socket.writable) {
      const tooLarge = (_error as { code?: string }).code === "HPE_HEADER_OVERFLOW";
      _writeRaw(socket, tooLarge ? 431 : 400, {
        error: tooLarge ? "headers-too-large" : "bad-request",
        message: tooLarge ? "Cannot read request: headers too large" : "Cannot read request: malformed HTTP",
      });
    }
    conn ? conn.deadline(CLOSE_TEARDOWN_MS) : socket.destroy();
  });

  httpServer.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const conn = connections.get(req.socket);
    conn?.deadline(REQUEST_TIMEOUT_MS);
    // Kept alive, the next head has the head deadline; closing, the peer has a moment to read.
    res.on(
      "finish",
      () => conn?.deadline(res.getHeader("connection") === "close" ? CLOSE_TEARDOWN_MS : REQUEST_HEAD_TIMEOUT_MS),
    );
    _serveRequest(req, res, scheme, handler).catch((error) => {
      onError(error);
      if (!res.headersSent) {
        res.writeHead(500, { "content-type": "application/json", connection: "close" });
        res.end(JSON.stringify({ error: "internal", message: "Internal error" }));
      } else res.destroy();
    });
  });

  httpServer.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const conn = connections.get(socket);
    conn?.deadline(REQUEST_TIMEOUT_MS);
    socket.on("error", () => {});
    _serveUpgrade(req, socket, head, scheme, handler, sockets).then((upgraded) => {
      if (upgraded) conn?.clear();
      else conn ? conn.deadline(CLOSE_TEARDOWN_MS) : socket.destroy();
    }, (error) => {
      onError(error);
      _writeRaw(socket, 500, { error: "internal", message: "Internal error" });
      conn ? conn.deadline(CLOSE_TEARDOWN_MS) : socket.destroy();
    });
  });

  const listening = Promise.withResolvers<void>();
  const failed = (error: Error & { code?: string }) => listening.reject(_denoError(error));
  listener.once("error", failed);
  listener.listen({ host: options.hostname, port: options.port }, () => listening.resolve());
  await listening.promise;
  listener.off("error", failed);
  const address = listener.address() as net.AddressInfo;
  const closed = Promise.withResolvers<void>();
  listener.on("close", () => closed.resolve());
  let stopping: Promise<void> | undefined;
  return {
    addr: { transport: "tcp", hostname: address.address, port: address.port },
    finished: closed.promise,
    get connections() {
      return live.size;
    },
    shutdown() {
      stopping ??= (async () => {
        listener.close();
        // The hub closed its sockets with 1001 already; give those closes a moment to leave.
        if (sockets.size > 0) await new Promise((resolve) => setTimeout(resolve, 50));
        for (const conn of live) conn.raw.destroy();
        await closed.promise;
      })();
      return stopping;
    },
  };
}

/** A listen error as the Deno error class callers test for (`Deno.errors.AddrInUse`, ...). */
function _denoError(error: Error & { code?: string }): Error {
  switch (error.code) {
    case "EADDRINUSE":
      return new Deno.errors.AddrInUse(error.message);
    case "EADDRNOTAVAIL":
      return new Deno.errors.AddrNotAvailable(error.message);
    case "EACCES":
      return new Deno.errors.PermissionDenied(error.message);
    default:
      return error;
  }
}

/** Builds the fetch-style `Request` for a node request (`body`: bytes already read). */
function _request(req: http.IncomingMessage, scheme: string, body?: Uint8Array): Request {
  const headers = new Headers();
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i], raw[i + 1]);
  // The Host header names the relay; a missing or malformed one still gets a URL (and the route's own checks).
  let url: URL;
  try {
    url = new URL(req.url ?? "/", `${scheme}://${req.headers.host ?? "invalid.host"}`);
  } catch {
    url = new URL(req.url?.startsWith("/") ? req.url : "/", `${scheme}://invalid.host`);
  }
  const payload = body && body.byteLength > 0 ? body as Uint8Array<ArrayBuffer> : undefined;
  return new Request(url, { method: req.method, headers, body: payload });
}

function _info(socket: net.Socket, completed: Promise<void>): RelayServeInfo {
  return {
    remoteAddr: { transport: "tcp", hostname: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 },
    completed,
  };
}

async function _serveRequest(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  scheme: string,
  handler: RelayHandler,
): Promise<void> {
  const completed = new Promise<void>((resolve) => res.on("close", () => resolve()));
  let body: Uint8Array | undefined;
  if (req.method !== "GET" && req.method !== "HEAD") {
    body = await _readBody(req);
    if (!body) {
      res.writeHead(413, { "content-type": "application/json", connection: "close" });
      res.end(JSON.stringify({ error: "too-large", message: "Cannot read request: body too large" }));
      return;
    }
  }
  const response = await handler(_request(req, scheme, body), _info(req.socket, completed));
  const bytes = response.body ? new Uint8Array(await response.arrayBuffer()) : undefined;
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of response.headers) if (k !== "set-cookie") headers[k] = v;
  const cookies = response.headers.getSetCookie();
  if (cookies.length > 0) headers["set-cookie"] = cookies;
  if (bytes) headers["content-length"] = String(bytes.byteLength);
  res.writeHead(response.status, headers);
  res.end(bytes && req.method !== "HEAD" ? bytes : undefined);
}

/** Reads a request body of at most {@linkcode MAX_REQUEST_BODY_BYTES}; undefined when it is larger. */
function _readBody(req: http.IncomingMessage): Promise<Uint8Array | undefined> {
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > MAX_REQUEST_BODY_BYTES) {
    req.resume();
    return Promise.resolve(undefined);
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.byteLength;
      if (size > MAX_REQUEST_BODY_BYTES) {
        req.removeAllListeners("data");
        req.resume();
        return resolve(undefined);
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(size > MAX_REQUEST_BODY_BYTES ? undefined : Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

/**
 * Runs the handler for an upgrade request; returns true when it upgraded
 * (the socket now belongs to the WebSocket), false when it answered with an
 * HTTP error (written, the connection closing).
 */
async function _serveUpgrade(
  req: http.IncomingMessage,
  socket: net.Socket,
  head: Buffer,
  scheme: string,
  handler: RelayHandler,
  sockets: Set<NodeWebSocket>,
): Promise<boolean> {
  let pending: { ws: _RelayWebSocket; protocol?: string; response: Response } | undefined;
  const info = _info(socket, Promise.resolve());
  info.upgrade = (protocol) => {
    if (pending) throw new TypeError("Cannot upgrade: this request was upgraded already");
    // Response cannot carry 101: this placeholder stands for it, recognized by identity.
    pending = {
      // A null address makes a server-side socket, as npm:ws's WebSocketServer does.
      // closeTimeout: npm:ws destroys the TCP connection this long after its close frame went out.
      ws: new _RelayWebSocket(null as unknown as string, undefined, { closeTimeout: CLOSE_TEARDOWN_MS } as object),
      protocol,
      response: new Response(null, { status: 200 }),
    };
    return { socket: _asWebSocket(pending.ws), response: pending.response };
  };
  const response = await handler(_request(req, scheme), info);
  if (!pending || response !== pending.response) {
    // Refused (or the handler did not use the socket it asked for): an HTTP answer, then hang up.
    if (pending) pending.ws.emit("close", 1006, Buffer.alloc(0));
    const text = response.body ? await response.text() : "";
    _writeRaw(socket, response.status, text, response.headers);
    return false;
  }
  if (socket.destroyed || !socket.writable) {
    // The client left while the handler ran: the socket never opens, and says so.
    pending.ws.emit("close", 1006, Buffer.alloc(0));
    return false;
  }
  const key = req.headers["sec-websocket-key"] ?? "";
  const accept = createHash("sha1").update(key + WS_GUID).digest("base64");
  const lines = [
    "HTTP/1.1 101 Switching Protocols",
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Accept: ${accept}`,
    ...(pending.protocol ? [`Sec-WebSocket-Protocol: ${pending.protocol}`] : []),
  ];
  socket.write(lines.join("\r\n") + "\r\n\r\n");
  const ws = pending.ws;
  sockets.add(ws);
  ws.on("close", () => sockets.delete(ws));
  // Errors (a message over the limit, a protocol violation) close the socket; the hub sees the close.
  ws.on("error", () => {});
  ws.setSocket(socket, head, {
    allowSynchronousEvents: true,
    maxPayload: MAX_FRAME_BYTES,
    maxFragments: MAX_MESSAGE_FRAGMENTS,
    maxBufferedChunks: MAX_MESSAGE_CHUNKS,
    skipUTF8Validation: false,
  });
  return true;
}

/**
 * npm:ws's server-side socket, with two changes for a peer that breaks the
 * protocol while sending (npm:ws closes with 1002, 1007, 1008 or 1009 and no
 * reason): a message over the size limit gets the relay's documented 4413
 * (`TooBig`) instead of 1009, and the relay stops reading the connection
 * instead of reading and discarding whatever the peer goes on sending until
 * the teardown {@linkcode CLOSE_TEARDOWN_MS} later. (Destroying it at once
 * would make the peer's kernel drop the close frame with the reset.)
 */
class _RelayWebSocket extends NodeWebSocket {
  override close(code?: number, reason?: string | Buffer): void {
    if (reason !== undefined || code === undefined || !_RECEIVER_ERRORS.has(code)) return super.close(code, reason);
    super.close(
      code === 1009 ? CloseCode.TooBig : code,
      code === 1009 ? `Cannot accept frame: over ${MAX_FRAME_BYTES} bytes` : undefined,
    );
    const socket = (this as unknown as { _socket?: net.Socket })._socket;
    // npm:ws resumes the socket on the next tick to drain it; pause it after that.
    setTimeout(() => socket?.pause(), 0);
  }
  /** npm:ws's own hand-over of an upgraded socket (what its WebSocketServer calls). */
  declare setSocket: (socket: net.Socket, head: Buffer, options: Record<string, unknown>) => void;
}

/** The close codes npm:ws's receiver closes with when the peer breaks the protocol. */
const _RECEIVER_ERRORS = new Set([1002, 1007, 1008, 1009]);

/** Writes a whole HTTP answer on a raw socket and ends it (`body`: text, or an object sent as JSON). */
function _writeRaw(socket: net.Socket, status: number, body: string | object, headers?: Headers): void {
  if (!socket.writable) return;
  const text = typeof body === "string" ? body : JSON.stringify(body);
  const bytes = Buffer.from(text);
  const lines = [`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}`];
  const seen = new Set(["connection", "content-length", "transfer-encoding"]);
  for (const [k, v] of headers ?? []) if (!seen.has(k)) lines.push(`${k}: ${v}`);
  if (typeof body !== "string" || !headers?.has("content-type")) {
    if (!headers?.has("content-type")) lines.push("content-type: application/json");
  }
  lines.push("connection: close", `content-length: ${bytes.byteLength}`);
  socket.end(Buffer.concat([Buffer.from(lines.join("\r\n") + "\r\n\r\n"), bytes]));
}
