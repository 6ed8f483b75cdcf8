/**
 * Bench-only process: the floor of the relay's forwarding hop. A `Deno.serve`
 * WebSocket server (the same kind of endpoint as the relay, upgraded with the
 * same `idleTimeout: 0`) with two routes:
 *
 * - `/out`: the receiving socket (the latest one to connect).
 * - `/in`: every binary message on it is stamped in place (bytes 4-7, the
 *   route field, set to 0, as the relay does for frames it hands to an IDE)
 *   and sent on the `/out` socket.
 *
 * Nothing else: no frame checks, no flow control, no metrics. Whatever CPU it
 * uses per MiB is what the platform charges for one WebSocket hop, the cost
 * the relay cannot go below (bench/measure_forward.ts measures it).
 *
 * Prints `listening on PORT pid PID` once ready; exits on SIGTERM. Usage:
 * `deno run --allow-net=127.0.0.1 bench/bare_forwarder.ts`.
 *
 * @module
 */
import { ROUTE_OFFSET, WS_SUBPROTOCOL } from "../shared/protocol.ts";

/** The path of the socket that sends the frames to forward. */
export const IN_PATH = "/in";
/** The path of the socket that receives them. */
export const OUT_PATH = "/out";

if (import.meta.main) {
  const sockets = new Set<WebSocket>();
  let out: WebSocket | undefined;
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => console.log(`listening on ${port} pid ${Deno.pid}`),
  }, (request) => {
    if (request.headers.get("upgrade") !== "websocket") return new Response("websocket only", { status: 426 });
    const path = new URL(request.url).pathname;
    if (path !== IN_PATH && path !== OUT_PATH) return new Response("unknown route", { status: 404 });
    // Answers the coder1 subprotocol when asked, as the relay does: the same upgrade as on the real path.
    const offered = (request.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim());
    const { socket, response } = Deno.upgradeWebSocket(request, {
      idleTimeout: 0,
      ...(offered.includes(WS_SUBPROTOCOL) ? { protocol: WS_SUBPROTOCOL } : {}),
    });
    socket.binaryType = "arraybuffer";
    sockets.add(socket);
    socket.onclose = () => {
      sockets.delete(socket);
      if (out === socket) out = undefined;
    };
    if (path === OUT_PATH) {
      socket.onopen = () => (out = socket);
    } else {
      socket.onmessage = (event) => {
        if (!(event.data instanceof ArrayBuffer) || !out) return;
        const bytes = new Uint8Array(event.data);
        // The relay's route stamp: four bytes written in place.
        bytes[ROUTE_OFFSET] = 0;
        bytes[ROUTE_OFFSET + 1] = 0;
        bytes[ROUTE_OFFSET + 2] = 0;
        bytes[ROUTE_OFFSET + 3] = 0;
        out.send(bytes);
      };
    }
    return response;
  });
  Deno.addSignalListener("SIGTERM", () => {
    for (const socket of sockets) socket.close(1001, "forwarder stopping");
    server.shutdown();
  });
  await server.finished;
}
