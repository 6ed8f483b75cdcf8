/**
 * The client half of the "no relay" baseline (bench/direct_server.ts): an
 * npm:ws socket, like the IDE client's, that runs the IDE side of the real
 * end-to-end handshake when asked to seal, then measures round trips or
 * receives a stream.
 *
 * @module
 */
import WebSocket from "ws";
import { generateIdentity } from "../shared/e2e_crypto.ts";
import { type E2eSession, IdeHandshake } from "../shared/e2e_session.ts";
import { decodeFrame, encodeFrame, parseJsonObject } from "../shared/frame_codec.ts";
import { FrameType, WS_SUBPROTOCOL } from "../shared/protocol.ts";
import { DIRECT_PAIRING_ID } from "./direct_server.ts";

/** A connection to the direct baseline server. */
export class DirectClient {
  #ws: WebSocket;
  #session?: E2eSession;
  #queue: Uint8Array[] = [];
  #wake?: () => void;
  #closed = false;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.binaryType = "arraybuffer";
    ws.on("message", (data: ArrayBuffer) => {
      this.#queue.push(new Uint8Array(data));
      this.#wake?.();
    });
    ws.on("close", () => {
      this.#closed = true;
      this.#wake?.();
    });
  }

  /**
   * Opens a socket to `url` (a `/echo` or `/stream` route) and, when
   * `sealed`, agrees on keys with the server.
   *
   * @param url Full ws:// URL with the route and query.
   * @param sealed Whether to run the handshake and seal frames.
   * @returns The connected client.
   */
  static async connect(url: string, sealed: boolean): Promise<DirectClient> {
    // The subprotocol too, as the IDE client asks for it: the same upgrade on both paths.
    const ws = new WebSocket(url, [WS_SUBPROTOCOL], { perMessageDeflate: false });
    const client = new DirectClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    if (sealed) {
      const { handshake, hello } = await IdeHandshake.start(await generateIdentity(false), DIRECT_PAIRING_ID);
      ws.send(encodeFrame({ t: FrameType.E2eHello, body: { ...hello } }));
      const reply = decodeFrame(await client.#next());
      const { session, confirm } = await handshake.finish(parseJsonObject(reply.body, reply.t));
      client.#session = session;
      ws.send(encodeFrame({ t: FrameType.E2eConfirm, body: { ...confirm } }));
    }
    return client;
  }

  /**
   * Sends `payload` as one `cmd.stdin` frame and waits for the echo.
   *
   * @param payload The bytes.
   * @returns The round trip in milliseconds.
   */
  async roundTrip(payload: Uint8Array): Promise<number> {
    const t0 = performance.now();
    const session = this.#session;
    this.#ws.send(
      session
        ? await session.seal({ t: FrameType.CmdStdin, id: "c1", body: payload })
        : encodeFrame({ t: FrameType.CmdStdin, id: "c1", body: payload }),
    );
    const back = decodeFrame(await this.#next());
    const body = session ? await session.open(back) : back.body;
    const ms = performance.now() - t0;
    if (body.byteLength !== payload.byteLength) throw new Error("Cannot measure round trip: echo has another size");
    return ms;
  }

  /**
   * Receives a stream until `cmd.exit`, opening sealed frames.
   *
   * @param since When the clock started (`performance.now()`; default: now).
   * @returns Bytes of output received and how long it took.
   */
  async receive(since = performance.now()): Promise<{ bytes: number; ms: number }> {
    const t0 = since;
    let bytes = 0;
    for (;;) {
      const frame = decodeFrame(await this.#next());
      const body = this.#session ? await this.#session.open(frame) : frame.body;
      if (frame.t === FrameType.CmdExit) break;
      bytes += body.byteLength;
    }
    return { bytes, ms: performance.now() - t0 };
  }

  /** Closes the socket. */
  close(): void {
    this.#ws.close();
  }

  async #next(): Promise<Uint8Array> {
    while (this.#queue.length === 0) {
      if (this.#closed) throw new Error("Cannot read: the direct baseline socket closed");
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    return this.#queue.shift()!;
  }
}
