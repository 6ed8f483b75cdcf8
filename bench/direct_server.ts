/**
 * Bench-only process: the "no relay" baseline. A `Deno.serve` WebSocket server
 * (the same kind of endpoint as the relay) that a bench client (npm:ws, the
 * same kind as the IDE client) talks to directly. Routes:
 *
 * - `/echo?sealed=0|1`: sends every frame back. With `sealed=1` it first runs
 *   the real end-to-end handshake (shared/e2e_session.ts) as the bridge side,
 *   then opens each sealed frame and seals its body again as `cmd.stdout`, as
 *   the bridge does, so the comparison with coder1 carries the same AES-GCM
 *   work on both ends.
 * - `/stream?bytes=N&sealed=0|1`: sends N bytes as `cmd.stdout` frames of
 *   64 KiB (sealed after a handshake with `sealed=1`), then `cmd.exit`.
 *
 * Prints `listening on PORT` once ready. Usage:
 * `deno run --allow-net bench/direct_server.ts`.
 *
 * @module
 */
import { generateIdentity } from "../shared/e2e_crypto.ts";
import { BridgeHandshake, type E2eSession } from "../shared/e2e_session.ts";
import { decodeFrame, encodeFrame, parseJsonObject } from "../shared/frame_codec.ts";
import { type Frame, FrameType, OUTPUT_CHUNK_BYTES, WS_SUBPROTOCOL } from "../shared/protocol.ts";

/** The pairing id both ends of the direct baseline use in their handshake. */
export const DIRECT_PAIRING_ID = "direct-baseline";
/** Unsent bytes above which the stream route waits for the socket to drain. */
const HIGH_WATER = 4 * 1024 * 1024;

if (import.meta.main) {
  const identity = await generateIdentity(false);
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => console.log(`listening on ${port}`),
  }, (request) => {
    if (request.headers.get("upgrade") !== "websocket") return new Response("websocket only", { status: 426 });
    const url = new URL(request.url);
    const sealed = url.searchParams.get("sealed") === "1";
    // Answers the coder1 subprotocol when asked, as the relay does.
    const offered = (request.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim());
    const { socket, response } = Deno.upgradeWebSocket(
      request,
      offered.includes(WS_SUBPROTOCOL) ? { protocol: WS_SUBPROTOCOL } : {},
    );
    socket.binaryType = "arraybuffer";
    if (url.pathname === "/echo") _echo(socket, sealed, identity);
    else if (url.pathname === "/stream") _stream(socket, sealed, identity, Number(url.searchParams.get("bytes")));
    else socket.onopen = () => socket.close(4404, "unknown route");
    return response;
  });
  Deno.addSignalListener("SIGTERM", () => server.shutdown());
  await server.finished;
}

/** Runs the bridge side of the handshake on the socket's first frames; resolves with the session. */
function _handshake(
  identity: CryptoKeyPair,
  frames: AsyncIterator<Frame>,
  send: (bytes: Uint8Array) => void,
): Promise<E2eSession> {
  return (async () => {
    const hello = (await frames.next()).value as Frame;
    const { handshake, reply } = await BridgeHandshake.respond(
      identity,
      DIRECT_PAIRING_ID,
      parseJsonObject(hello.body, hello.t),
    );
    send(encodeFrame({ t: FrameType.E2eReply, body: { ...reply } }));
    const confirm = (await frames.next()).value as Frame;
    return (await handshake.finish(parseJsonObject(confirm.body, confirm.t))).session;
  })();
}

function _echo(socket: WebSocket, sealed: boolean, identity: CryptoKeyPair): void {
  if (!sealed) {
    socket.onmessage = (event) => socket.send(event.data as ArrayBuffer);
    return;
  }
  const frames = _frames(socket);
  const send = (bytes: Uint8Array) => socket.send(bytes);
  (async () => {
    const session = await _handshake(identity, frames, send);
    for (;;) {
      const next = await frames.next();
      if (next.done) return;
      const frame = next.value;
      const plaintext = await session.open(frame);
      send(await session.seal({ t: FrameType.CmdStdout, id: frame.id, body: plaintext }));
    }
  })().catch(() => socket.close(1011, "echo failed"));
}

function _stream(socket: WebSocket, sealed: boolean, identity: CryptoKeyPair, bytes: number): void {
  const frames = _frames(socket);
  const send = (b: Uint8Array) => socket.send(b);
  (async () => {
    const session = sealed ? await _handshake(identity, frames, send) : undefined;
    if (!sealed) await new Promise<void>((resolve) => socket.addEventListener("open", () => resolve()));
    const chunk = new Uint8Array(OUTPUT_CHUNK_BYTES);
    for (let sent = 0; sent < bytes; sent += chunk.byteLength) {
      const body = bytes - sent < chunk.byteLength ? chunk.subarray(0, bytes - sent) : chunk;
      send(
        session
          ? await session.seal({ t: FrameType.CmdStdout, id: "c1", body })
          : encodeFrame({ t: FrameType.CmdStdout, id: "c1", body }),
      );
      while (socket.bufferedAmount > HIGH_WATER) await new Promise((r) => setTimeout(r, 1));
    }
    const exit = new TextEncoder().encode(JSON.stringify({ code: 0, signal: null, durationMs: 0 }));
    send(
      session
        ? await session.seal({ t: FrameType.CmdExit, id: "c1", body: exit })
        : encodeFrame({ t: FrameType.CmdExit, id: "c1", body: exit }),
    );
  })().catch(() => socket.close(1011, "stream failed"));
}

/** The socket's messages as decoded frames, in order. */
function _frames(socket: WebSocket): AsyncIterator<Frame> {
  const queue: Frame[] = [];
  let wake: (() => void) | undefined;
  let closed = false;
  socket.onmessage = (event) => {
    queue.push(decodeFrame(event.data));
    wake?.();
  };
  socket.onclose = () => {
    closed = true;
    wake?.();
  };
  return {
    async next(): Promise<IteratorResult<Frame>> {
      while (queue.length === 0 && !closed) await new Promise<void>((r) => (wake = r));
      const value = queue.shift();
      return value ? { value, done: false } : { value: undefined, done: true };
    },
  };
}
