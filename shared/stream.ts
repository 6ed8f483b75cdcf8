/**
 * Lossless streams: the numbering, buffering, acknowledgement and resending
 * that carry command frames (`cmd.*`) between an IDE and a bridge across
 * reconnects. Each direction of a stream numbers its frames 1, 2, 3 ... (`q`),
 * keeps every frame until the peer acknowledges it (cumulatively), resends the
 * unacknowledged ones after a reconnect, and lets at most a window of bytes
 * wait for acknowledgement: a sender that is a window ahead waits
 * ({@linkcode StreamSender.push} resolves late), which is how the bridge stops
 * reading a child's output while the IDE is behind or away. The receiver
 * delivers each number once, in order, and refuses a gap. Sealing happens
 * below this layer (the transport), per connection; nothing here touches
 * Deno or DOM APIs.
 *
 * @module
 */
import { E2eError } from "./e2e_session.ts";
import {
  ACK_DELAY_MS,
  ACK_EVERY_BYTES,
  type FrameTypeName,
  STREAM_FRAME_OVERHEAD,
  STREAM_WINDOW_BYTES,
} from "./protocol.ts";

/** One numbered frame of a stream (plaintext body). */
export interface StreamFrame {
  /** Type (`cmd.*`). */
  t: FrameTypeName;
  /** Command id. */
  id?: string;
  /** Stream sequence number. */
  q: number;
  /** Plaintext body. */
  body: Uint8Array;
}

/** Sends one numbered frame on the current connection (seals it). */
export type StreamTransport = (frame: StreamFrame) => Promise<void>;

function _cost(frame: StreamFrame): number {
  return frame.body.byteLength + STREAM_FRAME_OVERHEAD;
}

/** The sending half of a stream: numbers, buffers until acknowledged, resends. */
export class StreamSender {
  #next = 1;
  #buffer: StreamFrame[] = [];
  #bytes = 0;
  #window: number;
  #transport?: StreamTransport;
  #generation = 0;
  #chain: Promise<void> = Promise.resolve();
  #roomWaiters: (() => void)[] = [];

  /** @param window Most unacknowledged bytes before {@linkcode push} waits. */
  constructor(window: number = STREAM_WINDOW_BYTES) {
    this.#window = window;
  }

  /** The number the next frame gets. */
  get nextSeq(): number {
    return this.#next;
  }

  /** Bytes waiting for acknowledgement (bodies plus per-frame overhead). */
  get unackedBytes(): number {
    return this.#bytes;
  }

  /** Frames waiting for acknowledgement. */
  get unackedFrames(): number {
    return this.#buffer.length;
  }

  /** Whether a connection is attached. */
  get attached(): boolean {
    return this.#transport !== undefined;
  }

  /**
   * Numbers a frame, keeps it until acknowledged, and sends it at once when a
   * connection is attached (after the frames before it).
   *
   * @param frame Type, id and plaintext body.
   * @returns Resolves once the window has room again: a sender that awaits it
   *   never has more than a window (plus one frame) unacknowledged.
   */
  push(frame: { t: FrameTypeName; id?: string; body: Uint8Array }): Promise<void> {
    const numbered: StreamFrame = { t: frame.t, id: frame.id, q: this.#next++, body: frame.body };
    this.#buffer.push(numbered);
    this.#bytes += _cost(numbered);
    if (this.#transport) this.#send(numbered);
    return this.roomAvailable();
  }

  /** Resolves when fewer than a window of bytes wait for acknowledgement. */
  roomAvailable(): Promise<void> {
    if (this.#bytes < this.#window) return Promise.resolve();
    return new Promise((resolve) => this.#roomWaiters.push(resolve));
  }

  /**
   * The peer has everything up to `received`: drop it from the buffer.
   *
   * @throws {E2eError} When `received` acknowledges frames never sent.
   */
  ack(received: number): void {
    if (!Number.isSafeInteger(received) || received < 0 || received >= this.#next) {
      throw new E2eError(`Cannot accept acknowledgement ${received}: only ${this.#next - 1} frames were sent`);
    }
    let drop = 0;
    while (drop < this.#buffer.length && this.#buffer[drop].q <= received) {
      this.#bytes -= _cost(this.#buffer[drop]);
      drop++;
    }
    if (drop) this.#buffer.splice(0, drop);
    if (this.#bytes < this.#window && this.#roomWaiters.length) {
      const waiters = this.#roomWaiters;
      this.#roomWaiters = [];
      for (const wake of waiters) wake();
    }
  }

  /**
   * Attaches a new connection: drops what the peer says it has, then resends
   * the rest in order; later frames follow on it.
   *
   * @param transport Seals and sends on the new connection.
   * @param peerReceived The highest number the peer has received.
   */
  attach(transport: StreamTransport, peerReceived: number): void {
    this.ack(peerReceived);
    this.#transport = transport;
    this.#generation++;
    this.#chain = Promise.resolve();
    for (const frame of this.#buffer) this.#send(frame);
  }

  /** The connection is gone: keep buffering, send nothing until {@linkcode attach}. */
  detach(): void {
    this.#transport = undefined;
    this.#generation++;
  }

  /** Forgets everything (the peer's state is gone); numbering starts again at 1. */
  reset(): void {
    this.detach();
    this.#next = 1;
    this.#buffer = [];
    this.#bytes = 0;
    const waiters = this.#roomWaiters;
    this.#roomWaiters = [];
    for (const wake of waiters) wake();
  }

  #send(frame: StreamFrame): void {
    const transport = this.#transport!, generation = this.#generation;
    this.#chain = this.#chain.then(async () => {
      // Frames queued for a connection that has gone wait for the next one.
      if (generation !== this.#generation) return;
      await transport(frame);
    }).catch(() => {});
  }
}

/** The receiving half of a stream: delivers each number once, in order, and acknowledges. */
export class StreamReceiver {
  #received = 0;
  #acked = 0;
  #unackedBytes = 0;
  #timer?: ReturnType<typeof setTimeout>;
  #sendAck?: (received: number) => void;

  /** The highest number delivered. */
  get received(): number {
    return this.#received;
  }

  /**
   * Checks a frame's number.
   *
   * @returns True to deliver it; false for a duplicate (already delivered, resent after a reconnect).
   * @throws {E2eError} For a missing number or a gap (a frame was lost or withheld).
   */
  accept(frame: { t: FrameTypeName; q?: number; body: Uint8Array }): boolean {
    const q = frame.q;
    if (q === undefined) throw new E2eError(`Cannot accept ${frame.t}: no stream sequence number`);
    if (q <= this.#received) return false;
    if (q !== this.#received + 1) {
      throw new E2eError(`Cannot accept ${frame.t}: stream sequence ${q}, expected ${this.#received + 1}`);
    }
    this.#received = q;
    this.#unackedBytes += frame.body.byteLength + STREAM_FRAME_OVERHEAD;
    this.#scheduleAck();
    return true;
  }

  /**
   * Sets (or clears) where acknowledgements go: the current connection. An
   * acknowledgement goes out after {@linkcode ACK_EVERY_BYTES} or
   * {@linkcode ACK_DELAY_MS}, whichever comes first.
   */
  setAckSender(send: ((received: number) => void) | undefined): void {
    this.#sendAck = send;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    // The resume exchange tells the peer what was received; count from there.
    this.#acked = this.#received;
    this.#unackedBytes = 0;
  }

  /** Forgets everything (a new stream). */
  reset(): void {
    this.setAckSender(undefined);
    this.#received = 0;
    this.#acked = 0;
  }

  #scheduleAck(): void {
    if (!this.#sendAck) return;
    if (this.#unackedBytes >= ACK_EVERY_BYTES) return this.#flush();
    this.#timer ??= setTimeout(() => this.#flush(), ACK_DELAY_MS);
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (!this.#sendAck || this.#acked === this.#received) return;
    this.#acked = this.#received;
    this.#unackedBytes = 0;
    this.#sendAck(this.#received);
  }
}

/**
 * Pause state from the relay's `flow` frames, for one IDE route (bridge
 * side) or one IDE socket. While paused, sends queue (in order: sealed frames
 * must leave in counter order) and go out on resume; the callers awaiting
 * them (a stream's sender, and through it a command's output pump) wait too.
 */
export class FlowGate {
  #paused = false;
  #gate = Promise.withResolvers<void>();
  #queue: Promise<void> = Promise.resolve();
  #queued = 0;

  /** Whether sends are held back now. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Holds later sends back. */
  pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.#gate = Promise.withResolvers<void>();
  }

  /** Lets held sends go, in order. */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#gate.resolve();
  }

  /** Runs `send` now, or after the sends queued before it once resumed. */
  send(send: () => Promise<void>): Promise<void> {
    if (!this.#paused && this.#queued === 0) return send();
    this.#queued++;
    const run = this.#queue.then(async () => {
      // Paused again while waiting: wait for that resume too.
      while (this.#paused) await this.#gate.promise;
      await send();
    }).finally(() => this.#queued--);
    this.#queue = run.catch(() => {});
    return run;
  }
}
