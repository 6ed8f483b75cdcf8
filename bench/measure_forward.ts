/**
 * The floor under the relay's CPU per MiB (item 3): the same bulk frames the
 * throughput run sends, through bench/bare_forwarder.ts, a process that does
 * nothing but receive a WebSocket message, stamp four bytes and send it on.
 *
 * The sender and the receiver are npm:ws sockets in the bench process, like
 * the bridge's and the IDE client's; the sender masks with zeros, as the
 * bridge does on loopback. At most {@linkcode STREAM_WINDOW_BYTES} are in
 * flight, as a bridge may have unacknowledged. Only the forwarder's CPU is
 * counted (user + system, from /proc, as for the relay).
 *
 * @module
 */
import WebSocket from "ws";
import { encodeFrame } from "../shared/frame_codec.ts";
import {
  FrameType,
  OUTPUT_CHUNK_BYTES,
  ROUTE_OFFSET,
  STREAM_WINDOW_BYTES,
  WS_SUBPROTOCOL,
} from "../shared/protocol.ts";
import { OutputWatcher, ROOT } from "../tools/harness.ts";
import { IN_PATH, OUT_PATH } from "./bare_forwarder.ts";
import { cpuMs } from "./proc_stats.ts";

/** What AES-256-GCM adds to every sealed body. */
const GCM_TAG_BYTES = 16;
/** The frames' command id: as long as the ids of the throughput run's commands. */
const COMMAND_ID = "c99";
/** Frames sent through before a measured run: the path is open and warm. */
const WARM_FRAMES = 8;
/** Messages up to this size are probes, not frames of output. */
const PROBE_MAX_BYTES = 256;

/** One measured run through the bare forwarder. */
export interface ForwardRun {
  /** Command output the frames carry, bytes. */
  bytes: number;
  /** Frames forwarded. */
  frames: number;
  /** Each frame's size on the wire (WebSocket payload), bytes. */
  frameBytes: number;
  /** Output rate, MB/s (10^6 bytes of output per second), first send to last arrival. */
  mbps: number;
  /** The forwarder's CPU time (user + system) per MiB of output, ms. */
  cpuMsPerMiB: number;
}

/**
 * One `cmd.stdout` frame as the bridge sends output: the header, a command
 * id, the output sealed (plus the AES-GCM tag), and a route the forwarder
 * overwrites.
 *
 * @param outputBytes Output it carries (default {@linkcode OUTPUT_CHUNK_BYTES}, the bridge's bulk frames).
 * @returns The frame's bytes.
 */
export function outputFrame(outputBytes: number = OUTPUT_CHUNK_BYTES): Uint8Array {
  return encodeFrame({
    t: FrameType.CmdStdout,
    r: 1,
    id: COMMAND_ID,
    s: 1,
    q: 1,
    body: new Uint8Array(outputBytes + GCM_TAG_BYTES),
  });
}

/** A running bench/bare_forwarder.ts with a sending and a receiving socket connected to it. */
export class BareForwarder {
  /** The forwarder's process id. */
  readonly pid: number;
  #child: Deno.ChildProcess;
  #out: OutputWatcher;
  #err: OutputWatcher;
  #send: WebSocket;
  #receive: WebSocket;
  #frames = new Map<number, Uint8Array>();
  #arrived = 0;
  #probes = 0;
  #unstamped = 0;
  #wake?: () => void;
  #closed = false;

  private constructor(
    child: Deno.ChildProcess,
    pid: number,
    watchers: [OutputWatcher, OutputWatcher],
    sockets: [WebSocket, WebSocket],
  ) {
    this.#child = child;
    this.pid = pid;
    [this.#out, this.#err] = watchers;
    [this.#send, this.#receive] = sockets;
    this.#receive.on("message", (data: Uint8Array) => {
      // The stamp was applied: the route field is zero, as the relay leaves it for an IDE.
      if (data[ROUTE_OFFSET] | data[ROUTE_OFFSET + 1] | data[ROUTE_OFFSET + 2] | data[ROUTE_OFFSET + 3]) {
        this.#unstamped++;
      }
      // Probes (small frames) only tell that the path is open; late ones must not count as bulk frames.
      if (data.byteLength > PROBE_MAX_BYTES) this.#arrived++;
      else this.#probes++;
      this.#wake?.();
    });
    for (const ws of sockets) {
      ws.on("close", () => {
        this.#closed = true;
        this.#wake?.();
      });
    }
  }

  /**
   * Starts the forwarder process and connects both sockets.
   *
   * @returns The forwarder, with the path warmed up.
   * @throws {Error} When the process exits before it listens.
   */
  static async start(): Promise<BareForwarder> {
    const profileDir = Deno.env.get("CODER1_CPU_PROF");
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net=127.0.0.1",
        "--no-prompt",
        ...(profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}/bare_forwarder`] : []),
        `${ROOT}/bench/bare_forwarder.ts`,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = new OutputWatcher(child.stdout);
    const err = new OutputWatcher(child.stderr);
    const m = await Promise.race([
      out.waitFor(/listening on (\d+) pid (\d+)/),
      child.status.then((s) => {
        throw new Error(`bare forwarder exited (${s.code}): ${err.text}`);
      }),
    ]);
    const base = `ws://127.0.0.1:${m[1]}`;
    // The receiver first: the forwarder sends to the latest `/out` socket.
    const receive = await _open(`${base}${OUT_PATH}`, {});
    const send = await _open(`${base}${IN_PATH}`, { generateMask: (mask: Uint8Array) => mask.fill(0) });
    const forwarder = new BareForwarder(child, Number(m[2]), [out, err], [send, receive]);
    await forwarder.#warm();
    return forwarder;
  }

  /**
   * Forwards `bytes` of output in equal frames and measures the forwarder.
   *
   * @param bytes Output to send (rounded up to whole frames).
   * @param options `mbps`: pace the sender to this many MB/s of output (default: as fast as it goes);
   *   `frameOutputBytes`: output per frame (default {@linkcode OUTPUT_CHUNK_BYTES}).
   * @returns The rate and the forwarder's CPU per MiB.
   * @throws {Error} When a socket closes or a frame arrives without the stamp.
   */
  async stream(bytes: number, options: { mbps?: number; frameOutputBytes?: number } = {}): Promise<ForwardRun> {
    const per = Math.max(PROBE_MAX_BYTES, Math.round(options.frameOutputBytes ?? OUTPUT_CHUNK_BYTES));
    let frame = this.#frames.get(per);
    if (!frame) this.#frames.set(per, frame = outputFrame(per));
    const frames = Math.ceil(bytes / per);
    const window = Math.max(1, Math.floor(STREAM_WINDOW_BYTES / per));
    const gapMs = options.mbps ? per / (options.mbps * 1e6) * 1000 : 0;
    const base = this.#arrived;
    const cpu0 = cpuMs(this.pid);
    const t0 = performance.now();
    for (let i = 0; i < frames; i++) {
      while (i - (this.#arrived - base) >= window) await this.#arrival();
      if (gapMs) {
        // Against the schedule, not the last send: a late timer is made up at once.
        const wait = t0 + i * gapMs - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      }
      this.#send.send(frame);
    }
    while (this.#arrived - base < frames) await this.#arrival();
    const ms = performance.now() - t0;
    const cpu = cpuMs(this.pid) - cpu0;
    if (this.#unstamped) throw new Error(`bare forwarder: ${this.#unstamped} frames arrived without the stamp`);
    const output = frames * per;
    return {
      bytes: output,
      frames,
      frameBytes: frame.byteLength,
      mbps: output / 1e6 / (ms / 1000),
      cpuMsPerMiB: cpu / (output / 2 ** 20),
    };
  }

  /** Closes the sockets and stops the process. */
  async stop(): Promise<void> {
    this.#send.close();
    this.#receive.close();
    try {
      this.#child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    await this.#child.status;
    await Promise.all([this.#out.done, this.#err.done]);
  }

  /** Probes until the forwarder has its `/out` socket, then sends a few bulk frames through: the path is warm. */
  async #warm(): Promise<void> {
    const deadline = performance.now() + 10_000;
    // The forwarder adopts `/out` when its open event runs, which may come after our own open event.
    const probe = encodeFrame({ t: FrameType.CmdStdout, r: 1, id: COMMAND_ID });
    while (this.#probes === 0) {
      if (performance.now() > deadline) throw new Error("Cannot warm up: the bare forwarder forwards nothing");
      this.#send.send(probe);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await this.stream(WARM_FRAMES * OUTPUT_CHUNK_BYTES);
  }

  async #arrival(): Promise<void> {
    if (this.#closed) throw new Error("Cannot forward: a socket to the bare forwarder closed");
    await new Promise<void>((resolve) => (this.#wake = resolve));
  }
}

/** Opens an npm:ws socket as the bridge and the IDE client do (the subprotocol, no compression). */
function _open(url: string, extra: WebSocket.ClientOptions): Promise<WebSocket> {
  const ws = new WebSocket(url, [WS_SUBPROTOCOL], { perMessageDeflate: false, ...extra });
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}
