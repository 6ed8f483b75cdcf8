/**
 * Item 5 of the bench: pairing, that is a code issued to an IDE session
 * (`POST /api/pairing-codes`) and redeemed by a bridge (the code in the
 * upgrade request to `/ws/bridge`, answered by `auth.ok` with a freshly signed token), against
 * a real relay process.
 *
 * The relay limits pairing on purpose: per address 30 sessions, 20 codes and
 * 10 redemptions a minute, and 120 redemptions a minute relay-wide. The bench
 * spreads its clients over loopback source addresses (127.0.0.20 and up, at
 * most 8 pairings each) and stays under the relay-wide budget, so it measures
 * the relay's own cost, not the limits.
 *
 * @module
 */
import { bridgeCredentialHeaders } from "../shared/bridge_credential.ts";
import WebSocket from "ws";
import { decodeFrame } from "../shared/frame_codec.ts";
import { IdeClient } from "../shared/ide_client.ts";
import { FrameType, REDEEM_GLOBAL_PER_WINDOW, WS_SUBPROTOCOL } from "../shared/protocol.ts";
import { VERSION } from "../shared/version.ts";
import { makeTestDirs, startRelayProcess, wsFactory } from "../tools/harness.ts";
import { DirectClient } from "./direct_client.ts";
import { fmtMs, startDirectServer } from "./measure_link.ts";
import type { Row } from "./report.ts";
import { ratio, round, summarize } from "./stats.ts";

/** Settings for item 5. */
export interface PairingConfig {
  /** Pairings done one at a time (latency). */
  sequential: number;
  /** Pairings done `concurrency` at a time (rate). */
  concurrent: number;
  /** Pairings in flight at once in the rate pass. */
  concurrency: number;
}

/** Pairings per source address, under every per-address limit. */
const PER_ADDRESS = 8;

/**
 * Measures item 5.
 *
 * @param config Counts.
 * @param log Progress lines.
 * @returns Rows, raw figures and notes.
 */
export async function measurePairing(
  config: PairingConfig,
  log: (line: string) => void,
): Promise<{ rows: Row[]; sections: Record<string, unknown>; notes: string[] }> {
  if (config.sequential + config.concurrent > REDEEM_GLOBAL_PER_WINDOW) {
    throw new RangeError(`Cannot pair more than ${REDEEM_GLOBAL_PER_WINDOW} bridges a minute on one relay`);
  }
  const dirs = await makeTestDirs();
  const relay = await startRelayProcess(dirs);
  const direct = await startDirectServer();
  const clients = new Map<string, Deno.HttpClient>();
  let index = 0;
  const address = () => `127.0.0.${20 + Math.floor(index++ / PER_ADDRESS)}`;
  const pairOnce = async () => {
    const addr = address();
    let client = clients.get(addr);
    if (!client) clients.set(addr, client = Deno.createHttpClient({ localAddress: addr }));
    const http = client;
    const ide = new IdeClient({
      relayUrl: relay.url,
      webSocket: wsFactory({ localAddress: addr }),
      fetch: (input, init) => fetch(input, { ...init, client: http }),
    });
    await ide.createSession();
    const t0 = performance.now();
    const { code } = await ide.requestPairingCode();
    const t1 = performance.now();
    await _redeem(relay.url.replace(/^http/, "ws"), code, addr);
    const t2 = performance.now();
    return { issue: t1 - t0, redeem: t2 - t1, total: t2 - t0 };
  };
  try {
    // Floors on the same machine and client stack: one HTTP request to the
    // relay, and a WebSocket opened to a bare server with one round trip.
    const floorHttp: number[] = [], floorWs: number[] = [];
    for (let i = 0; i < Math.max(5, config.sequential); i++) {
      const t0 = performance.now();
      await (await fetch(`${relay.url}/healthz`)).arrayBuffer();
      floorHttp.push(performance.now() - t0);
      const t1 = performance.now();
      const c = await DirectClient.connect(`ws://127.0.0.1:${direct.port}/echo?sealed=0`, false);
      await c.roundTrip(new Uint8Array(64));
      floorWs.push(performance.now() - t1);
      c.close();
    }
    const seq = { issue: [] as number[], redeem: [] as number[], total: [] as number[] };
    for (let i = 0; i < config.sequential; i++) {
      const r = await pairOnce();
      seq.issue.push(r.issue);
      seq.redeem.push(r.redeem);
      seq.total.push(r.total);
    }
    let left = config.concurrent;
    const w0 = performance.now();
    await Promise.all(Array.from({ length: config.concurrency }, async () => {
      while (left-- > 0) await pairOnce();
    }));
    const rateWallS = (performance.now() - w0) / 1000;
    const perSecond = round(config.concurrent / rateWallS, 1);
    const s = {
      issue: summarize(seq.issue),
      redeem: summarize(seq.redeem),
      total: summarize(seq.total),
      floorHttp: summarize(floorHttp),
      floorWs: summarize(floorWs),
      concurrent: config.concurrent,
      concurrency: config.concurrency,
      pairingsPerSecond: perSecond,
    };
    log(`pairing: issue + redeem ${fmtMs(s.total)}, ${perSecond} pairings/s at ${config.concurrency} in flight`);
    const floor = s.floorHttp.median + s.floorWs.median;
    const rows: Row[] = [
      {
        id: "pairing-latency",
        item: 5,
        measure: "Pairing: code issued (HTTP) + redeemed by a bridge (upgrade with the code → `auth.ok`)",
        coder1: `${fmtMs(s.total)}: issue ${fmtMs(s.issue)}, redeem ${fmtMs(s.redeem)}`,
        baseline: `floor: HTTP request ${fmtMs(s.floorHttp)} + WebSocket open and round trip ${fmtMs(s.floorWs)}`,
        ratio: ratio(s.total.median, floor),
        target: "none (reported)",
        met: null,
      },
      {
        id: "pairing-rate",
        item: 5,
        measure: `Pairings per second, ${config.concurrency} in flight (session, code, redemption, token)`,
        coder1: `${perSecond} /s`,
        baseline: `by design at most ${REDEEM_GLOBAL_PER_WINDOW} redemptions a minute per relay (${
          REDEEM_GLOBAL_PER_WINDOW / 60
        } /s sustained)`,
        ratio: null,
        target: "none (reported)",
        met: null,
      },
    ];
    const notes = [
      "Pairing: each pairing is a new browser session (not timed), then `POST /api/pairing-codes` and a bridge socket " +
      "presenting the code in its upgrade request until `auth.ok` (timed). Clients use loopback source addresses 127.0.0.20 and up " +
      `(${PER_ADDRESS} pairings each) so the per-address limits do not bite; the relay-wide limit of ` +
      `${REDEEM_GLOBAL_PER_WINDOW} redemptions a minute caps sustained pairing at ${
        REDEEM_GLOBAL_PER_WINDOW / 60
      } a second by design, and the rate row shows what the relay could do beneath that cap.`,
    ];
    return { rows, sections: { pairing: s }, notes };
  } finally {
    for (const c of clients.values()) c.close();
    await direct.stop();
    await relay.stop();
    await dirs.cleanup();
  }
}

/** Redeems `code` like a bridge and resolves on `auth.ok`. */
function _redeem(wsBase: string, code: string, localAddress: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${wsBase}/ws/bridge`, [WS_SUBPROTOCOL], {
      headers: bridgeCredentialHeaders({ code, version: VERSION }),
      perMessageDeflate: false,
      localAddress,
    });
    ws.binaryType = "arraybuffer";
    ws.on("unexpected-response", (_req, res) => reject(new Error(`redemption refused: HTTP ${res.statusCode}`)));
    ws.on("message", (data: ArrayBuffer) => {
      if (decodeFrame(data).t !== FrameType.AuthOk) return;
      resolve();
      ws.close(1000);
    });
    ws.on("error", (e: Error) => reject(e));
    ws.on(
      "close",
      (closeCode: number, reason: Uint8Array) =>
        reject(new Error(`redemption closed ${closeCode} ${new TextDecoder().decode(reason)}`)),
    );
  });
}
