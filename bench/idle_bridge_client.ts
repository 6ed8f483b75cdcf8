/**
 * Bench-only process: holds many idle, authenticated bridge sockets open on
 * one relay. Each socket (npm:ws) sends `auth` with its own token as its first
 * frame and answers every `ping` with `pong`, as a real bridge does; nothing
 * else flows. The parent ({@linkcode IdleBridgeFleet} in bench/idle_bridges.ts)
 * passes a JSON file with the relay URL and the tokens, then drives it with
 * one-word commands on stdin and reads one JSON report per line on stdout:
 *
 * - `report`: counts so far (authenticated, failed, dropped, pings, RSS).
 *   Mute sockets that were dropped count apart (`muteDropped`); the
 *   per-socket ping counts cover the sockets that answer.
 * - `mark`: starts a new window for the per-socket ping counts.
 * - `close`: closes every socket with 1000 and exits.
 *
 * Usage: `deno run --allow-net --allow-read=FILE --allow-env=WS_NO_BUFFER_UTIL,WS_NO_UTF_8_VALIDATE
 * bench/idle_bridge_client.ts FILE`.
 *
 * @module
 */
import { bridgeCredentialHeaders } from "../shared/bridge_credential.ts";
import WebSocket from "ws";
import { decodeFrame, encodeFrame } from "../shared/frame_codec.ts";
import { FrameType, WS_SUBPROTOCOL } from "../shared/protocol.ts";
import { VERSION } from "../shared/version.ts";

/** What the parent writes to the config file. */
export interface IdleClientConfig {
  /** The relay's WebSocket base, e.g. `ws://127.0.0.1:8787`. */
  url: string;
  /** One bridge token per socket. */
  tokens: string[];
  /** Sockets opening at once (bounded so the relay is not flooded). */
  concurrency: number;
  /** A socket that has not authenticated within this long counts as failed. */
  authTimeoutMs: number;
  /**
   * Sockets per loopback source address (0: let the system pick, 127.0.0.1).
   * The relay caps open connections per client address, so a fleet spreads
   * over 127.1.x.y the way bridges on many machines would arrive.
   */
  perAddress?: number;
  /** The fleet-wide number of this file's first token (which source address it gets). */
  firstIndex?: number;
  /**
   * The first this many sockets never answer `ping` (default 0): the relay
   * must drop them, which shows that its heartbeat timeout is alive.
   */
  mute?: number;
}

/** One report line. */
export interface IdleClientReport {
  /** Sockets that received `auth.ok`. */
  authed: number;
  /** Sockets still opening or authenticating. */
  pending: number;
  /** Sockets that never authenticated (refused, timed out). */
  failed: number;
  /** Authenticated sockets that closed before `close` was asked for. */
  dropped: number;
  /** Close codes of failed and dropped sockets. */
  closeCodes: Record<string, number>;
  /** The same, by code and reason ("1001 relay shutting down"). */
  closeReasons: Record<string, number>;
  /** Mute sockets (see {@linkcode IdleClientConfig.mute}) the relay dropped, and their close codes. */
  muteDropped: number;
  muteCloseCodes: Record<string, number>;
  /** Pings received in total. */
  pings: number;
  /** Fewest and most pings received by one authenticated socket since the last `mark`. */
  minPings: number;
  maxPings: number;
  /** This process's resident set size, bytes. */
  rss: number;
}

/**
 * The loopback source address of the fleet's socket number `index`:
 * `perAddress` sockets on each of 127.1.0.1, 127.1.0.2, ... 127.1.0.250,
 * 127.1.1.1, and so on.
 *
 * @param index The socket's number in the whole fleet.
 * @param perAddress Sockets per address.
 * @returns An IPv4 loopback address.
 */
export function sourceAddress(index: number, perAddress: number): string {
  const a = Math.floor(index / perAddress);
  return `127.1.${Math.floor(a / 250)}.${1 + (a % 250)}`;
}

interface Slot {
  ws?: WebSocket;
  mute: boolean;
  state: "pending" | "authed" | "failed" | "dropped" | "closing";
  pings: number;
  markPings: number;
}

if (import.meta.main) {
  const config: IdleClientConfig = JSON.parse(await Deno.readTextFile(Deno.args[0]));
  const slots: Slot[] = config.tokens.map((_, i) => ({
    state: "pending",
    mute: i < (config.mute ?? 0),
    pings: 0,
    markPings: 0,
  }));
  const closeCodes: Record<string, number> = {};
  const closeReasons: Record<string, number> = {};
  const muteCloseCodes: Record<string, number> = {};
  const pong = encodeFrame({ t: FrameType.Pong });
  let totalPings = 0;
  let closing = false;

  const open = (i: number): Promise<void> => {
    const slot = slots[i];
    const settled = Promise.withResolvers<void>();
    const ws = new WebSocket(`${config.url}/ws/bridge`, [WS_SUBPROTOCOL], {
      // The token goes in the upgrade request; the relay answers auth.ok once the socket is open.
      headers: bridgeCredentialHeaders({ token: config.tokens[i], version: VERSION }),
      perMessageDeflate: false,
      ...(config.perAddress ? { localAddress: sourceAddress((config.firstIndex ?? 0) + i, config.perAddress) } : {}),
    });
    ws.binaryType = "arraybuffer";
    slot.ws = ws;
    const timer = setTimeout(() => {
      if (slot.state !== "pending") return;
      slot.state = "failed";
      closeCodes.timeout = (closeCodes.timeout ?? 0) + 1;
      ws.terminate();
      settled.resolve();
    }, config.authTimeoutMs);
    ws.on("message", (data: ArrayBuffer) => {
      let t: string;
      try {
        t = decodeFrame(data).t;
      } catch {
        return;
      }
      if (t === FrameType.Ping) {
        slot.pings++;
        totalPings++;
        if (!slot.mute) ws.send(pong);
      } else if (t === FrameType.AuthOk && slot.state === "pending") {
        slot.state = "authed";
        clearTimeout(timer);
        settled.resolve();
      }
    });
    ws.on("error", () => {});
    ws.on("close", (code: number, why: Uint8Array) => {
      clearTimeout(timer);
      if (slot.state === "closing") return;
      if (closing && slot.state === "authed") return;
      const codes = slot.mute && slot.state === "authed" ? muteCloseCodes : closeCodes;
      codes[code] = (codes[code] ?? 0) + 1;
      const reason = `${code} ${new TextDecoder().decode(why)}`.trim();
      closeReasons[reason] = (closeReasons[reason] ?? 0) + 1;
      slot.state = slot.state === "authed" ? "dropped" : "failed";
      settled.resolve();
    });
    return settled.promise;
  };

  // Open with bounded concurrency; each worker takes the next index.
  let next = 0;
  const workers = Array.from({ length: Math.max(1, config.concurrency) }, async () => {
    while (next < slots.length && !closing) await open(next++);
  });
  const opened = Promise.all(workers);

  const report = (): IdleClientReport => {
    const counts = { authed: 0, pending: 0, failed: 0, dropped: 0 };
    let minPings = Infinity, maxPings = 0, muteDropped = 0;
    for (const s of slots) {
      if (s.state === "closing") continue;
      if (s.mute && s.state === "dropped") {
        muteDropped++;
        continue;
      }
      counts[s.state]++;
      if (s.state !== "authed" || s.mute) continue;
      minPings = Math.min(minPings, s.pings - s.markPings);
      maxPings = Math.max(maxPings, s.pings - s.markPings);
    }
    return {
      ...counts,
      closeCodes,
      closeReasons,
      muteDropped,
      muteCloseCodes,
      pings: totalPings,
      minPings: minPings === Infinity ? 0 : minPings,
      maxPings,
      rss: Deno.memoryUsage().rss,
    };
  };
  const say = (value: unknown) => Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value) + "\n"));

  opened.then(() => say({ ready: true, ...report() }));
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of Deno.stdin.readable) {
    buffered += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const command = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (command === "report") say(report());
      else if (command === "mark") {
        for (const s of slots) s.markPings = s.pings;
        say(report());
      } else if (command === "close") {
        closing = true;
        const all = slots.filter((s) => s.ws && s.state === "authed");
        for (const s of all) {
          s.state = "closing";
          s.ws!.close(1000, "bench done");
        }
        // Give the close frames a moment to leave, then go.
        await new Promise((r) => setTimeout(r, 200));
        for (const s of slots) s.ws?.terminate();
        say({ closed: all.length });
        Deno.exit(0);
      }
    }
  }
  // Parent went away: leave.
  Deno.exit(0);
}
