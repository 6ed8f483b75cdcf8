/**
 * The bridge's streams: one per IDE client (its random stream id), kept
 * across relay connections so that commands keep running and nothing of their
 * output is lost while the IDE, the relay or the network is away. A stream is
 * attached to at most one IDE route of the current connection; detached, it
 * lingers for {@linkcode STREAM_LINGER_MS}, after which its commands are hung
 * up. Each stream has a small local number, its *handle*, which the
 * {@linkcode CommandManager} keys commands by.
 *
 * @module
 */
import { E2eError } from "../shared/e2e_session.ts";
import { type FrameTypeName, STREAM_LINGER_MS, STREAM_WINDOW_BYTES } from "../shared/protocol.ts";
import { StreamReceiver, StreamSender } from "../shared/stream.ts";

/** One IDE client's stream. */
export interface BridgeStream {
  /** The IDE's stream id. */
  readonly id: string;
  /** Local number (the command manager keys commands by it). */
  readonly handle: number;
  /** The identity key of the IDE that opened it; only that IDE may resume it. */
  readonly ideIdentity: Uint8Array;
  /** Bridge -> IDE frames. */
  readonly sender: StreamSender;
  /** IDE -> bridge frames. */
  readonly receiver: StreamReceiver;
  /** The IDE route it is attached to now. */
  route?: number;
  /** Timer that forgets it while detached. */
  linger?: ReturnType<typeof setTimeout>;
}

/** Options for {@linkcode StreamTable}. */
export interface StreamTableOptions {
  /** A stream was forgotten (linger over, or closed by the IDE): hang up its commands. */
  onForget: (handle: number) => void;
  /** How long a detached stream is kept. */
  lingerMs?: number;
  /** Send window per stream. */
  windowBytes?: number;
  /** Verbose events (no content). */
  debug?: (message: string) => void;
}

/** All streams of this bridge process. */
export class StreamTable {
  #byId = new Map<string, BridgeStream>();
  #byHandle = new Map<number, BridgeStream>();
  #nextHandle = 1;
  #opts: StreamTableOptions;

  /** @param options Callbacks and limits. */
  constructor(options: StreamTableOptions) {
    this.#opts = options;
  }

  /** Number of streams kept. */
  get size(): number {
    return this.#byId.size;
  }

  /**
   * Resolves once every attached stream's IDE has acknowledged what was
   * pushed to it so far, or that stream detached or was forgotten: a stopping
   * bridge races it against its flush deadline. Detached streams are not
   * waited for (their IDE is not there to acknowledge).
   *
   * @returns A promise that never rejects.
   */
  drained(): Promise<void> {
    const attached = [...this.#byId.values()].filter((s) => s.route !== undefined);
    return Promise.all(attached.map((s) => s.sender.drained())).then(() => {});
  }

  /**
   * Finds or creates the stream `id` for an IDE and attaches it to `route`
   * (detaching it from any other route).
   *
   * @returns The stream, and whether it existed (false: a new stream; the IDE
   *   learns its earlier commands are gone).
   * @throws {E2eError} When another IDE identity owns the stream id.
   */
  open(id: string, ideIdentity: Uint8Array, route: number): { stream: BridgeStream; known: boolean } {
    let stream = this.#byId.get(id);
    const known = stream !== undefined;
    if (stream && !_equal(stream.ideIdentity, ideIdentity)) {
      throw new E2eError("Cannot resume stream: it belongs to another IDE identity");
    }
    if (!stream) {
      stream = {
        id,
        handle: this.#nextHandle++,
        ideIdentity,
        sender: new StreamSender(this.#opts.windowBytes ?? STREAM_WINDOW_BYTES),
        receiver: new StreamReceiver(),
      };
      this.#byId.set(id, stream);
      this.#byHandle.set(stream.handle, stream);
    }
    // Whatever route had it before (an older socket of the same IDE) lets go.
    for (const other of this.#byId.values()) if (other !== stream && other.route === route) this.#detach(other);
    this.#detach(stream);
    clearTimeout(stream.linger);
    stream.linger = undefined;
    stream.route = route;
    return { stream, known };
  }

  /** Whether the stream with local number `handle` is attached to an IDE socket now (its page is there). */
  connected(handle: number): boolean {
    return this.#byHandle.get(handle)?.route !== undefined;
  }

  /** The stream attached to IDE route `route`, if any. */
  byRoute(route: number): BridgeStream | undefined {
    for (const s of this.#byId.values()) if (s.route === route) return s;
    return undefined;
  }

  /**
   * Queues a frame of the command manager for the stream with local number
   * `handle`; resolves when the stream's window has room. Frames for a
   * forgotten stream are dropped.
   */
  push(handle: number, frame: { t: FrameTypeName; id?: string; body: Uint8Array }): Promise<void> {
    const stream = this.#byHandle.get(handle);
    if (!stream) return Promise.resolve();
    return stream.sender.push(frame);
  }

  /** The IDE socket on `route` left: its stream lingers. */
  detachRoute(route: number): void {
    const stream = this.byRoute(route);
    if (stream) this.#detach(stream);
  }

  /** The relay connection is gone: every stream lingers. */
  detachAll(): void {
    for (const stream of this.#byId.values()) this.#detach(stream);
  }

  /** The IDE on `route` is done with its stream: forget it now. */
  close(route: number): void {
    const stream = this.byRoute(route);
    if (stream) this.#forget(stream);
  }

  /** Forgets every stream (the bridge is stopping). */
  clear(): void {
    for (const stream of [...this.#byId.values()]) this.#forget(stream);
  }

  #detach(stream: BridgeStream): void {
    if (stream.route === undefined && stream.linger) return;
    stream.route = undefined;
    stream.sender.detach();
    stream.receiver.setAckSender(undefined);
    clearTimeout(stream.linger);
    stream.linger = setTimeout(() => {
      this.#opts.debug?.(`stream ${stream.handle}: IDE away for too long; hanging up its commands`);
      this.#forget(stream);
    }, this.#opts.lingerMs ?? STREAM_LINGER_MS);
  }

  #forget(stream: BridgeStream): void {
    clearTimeout(stream.linger);
    stream.sender.reset();
    stream.receiver.reset();
    this.#byId.delete(stream.id);
    this.#byHandle.delete(stream.handle);
    this.#opts.onForget(stream.handle);
  }
}

function _equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((x, i) => x === b[i]);
}
