/**
 * Pairing brute force against a real relay process: at least 100,000 code
 * guesses from thousands of loopback source addresses (127.0.0.0/8) while
 * victims hold live codes. The relay-wide redemption budget bounds how many
 * guesses are even looked at, and so the expected number of lucky ones
 * (docs/RELIABILITY.md, "Brute-force bound"); a user whose bridge is at its
 * browser's address still pairs during the flood; and a code that was
 * guessed gives the guesser nothing until the IDE's user approves it.
 */
import assert from "node:assert/strict";
import WebSocket from "ws";
import { bridgeCredentialHeaders } from "../shared/bridge_credential.ts";
import { decodeFrame } from "../shared/frame_codec.ts";
import {
  CloseCode,
  CODE_DIGITS,
  FrameType,
  REDEEM_GLOBAL_PER_WINDOW,
  REDEEM_PER_ADDRESS_PER_WINDOW,
  REDEEM_RATE_WINDOW_MS,
  WS_SUBPROTOCOL,
} from "../shared/protocol.ts";
import {
  approveBridge,
  bridgeSocket,
  ideClient,
  makeTestDirs,
  runCollect,
  startBridgeProcess,
  startRelayProcess,
  type TestDirs,
} from "./helpers.ts";

const SANITIZE = { sanitizeOps: false, sanitizeResources: false };
const ATTEMPTS = 100_000;
const ADDRESSES = 5_000;
const CONCURRENCY = 200;
const VICTIMS = 40;

/** Deterministic guesses (xorshift32), so a failure can be replayed with the printed seed. */
function guesser(seed: number): () => string {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return String(x % 10 ** CODE_DIGITS).padStart(CODE_DIGITS, "0");
  };
}

/** The i-th attacker address: 127.10.0.1 onwards, never .0 or .255. */
function attackerAddress(i: number): string {
  return `127.${10 + Math.floor(i / 62_500)}.${Math.floor(i / 250) % 250}.${(i % 250) + 1}`;
}

type Outcome = "paired" | number;

/**
 * One redemption attempt, the code in the upgrade request: the HTTP status of
 * the refusal (401, 429), a close code, or "paired" on auth.ok.
 */
function attempt(url: string, localAddress: string, code: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, [WS_SUBPROTOCOL], {
      localAddress,
      perMessageDeflate: false,
      headers: bridgeCredentialHeaders({ code, version: "0.0.0-bf" }),
    });
    ws.binaryType = "arraybuffer";
    const timer = setTimeout(() => {
      ws.terminate();
      resolve(-1);
    }, 15_000);
    ws.on("unexpected-response", (req, res) => {
      clearTimeout(timer);
      resolve(res.statusCode ?? 0);
      req.destroy();
      ws.terminate();
    });
    ws.on("message", (data: ArrayBuffer) => {
      if (decodeFrame(new Uint8Array(data)).t !== FrameType.AuthOk) return;
      clearTimeout(timer);
      resolve("paired");
      ws.close();
    });
    ws.on("close", (closeCode: number) => {
      clearTimeout(timer);
      resolve(closeCode);
    });
    ws.on("error", () => {});
  });
}

/** A browser session from `localAddress` that asks for a code: returns the code. */
async function victimCode(relayUrl: string, localAddress: string): Promise<string> {
  const client = Deno.createHttpClient({ localAddress } as Deno.CreateHttpClientOptions);
  try {
    const session = await fetch(`${relayUrl}/api/sessions`, { method: "POST", client });
    await session.body?.cancel();
    assert.equal(session.status, 201);
    const cookie = session.headers.get("set-cookie")!.split(";")[0];
    const issued = await fetch(`${relayUrl}/api/pairing-codes`, { method: "POST", client, headers: { cookie } });
    assert.equal(issued.status, 201);
    return ((await issued.json()) as { code: string }).code;
  } finally {
    client.close();
  }
}

async function withDirs(fn: (dirs: TestDirs) => Promise<void>): Promise<void> {
  const dirs = await makeTestDirs();
  try {
    await fn(dirs);
  } finally {
    await Deno.remove(dirs.root, { recursive: true }).catch(() => {});
  }
}

Deno.test({
  name: "brute force: 100,000 guesses from 5,000 addresses stay within the budget; a user at home still pairs",
  ...SANITIZE,
  async fn() {
    await withDirs(async (dirs) => {
      const relay = await startRelayProcess(dirs);
      const wsUrl = `${relay.url.replace(/^http/, "ws")}/ws/bridge`;
      const seed = Number(Deno.env.get("CODER1_BRUTE_SEED") ?? (Date.now() % 2 ** 31));
      const next = guesser(seed);
      try {
        const codes = new Set<string>();
        for (let i = 0; i < VICTIMS; i++) codes.add(await victimCode(relay.url, `127.200.0.${i + 1}`));
        const live = VICTIMS + 1; // the victims and the user who pairs during the flood

        const outcomes = new Map<Outcome, number>();
        const evaluatedBy = new Map<string, number>();
        let sent = 0;
        let legit: Promise<number> | undefined;
        let legitDuringFlood = false;
        const started = performance.now();
        const worker = async () => {
          while (sent < ATTEMPTS) {
            const i = sent++;
            const address = attackerAddress(i % ADDRESSES);
            const outcome = await attempt(wsUrl, address, next());
            outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
            if (outcome === 401 || outcome === "paired") {
              evaluatedBy.set(address, (evaluatedBy.get(address) ?? 0) + 1);
            }
            if (i === ATTEMPTS / 2) {
              legit = pairDuringFlood(dirs, relay.url).then((s) => {
                legitDuringFlood = sent < ATTEMPTS;
                return s;
              });
            }
          }
        };
        await Promise.all(Array.from({ length: CONCURRENCY }, worker));
        const seconds = (performance.now() - started) / 1000;
        const legitSeconds = await legit!;

        const rejected = outcomes.get(401) ?? 0;
        const limited = outcomes.get(429) ?? 0;
        const paired = outcomes.get("paired") ?? 0;
        const evaluated = rejected + paired;
        const windows = Math.floor((seconds * 1000) / REDEEM_RATE_WINDOW_MS) + 1;
        const bound = REDEEM_GLOBAL_PER_WINDOW * windows;
        const expected = (evaluated * live) / 10 ** CODE_DIGITS;
        console.log(
          `seed ${seed}: ${sent} guesses in ${seconds.toFixed(1)} s from ${ADDRESSES} addresses; ` +
            `looked at ${evaluated} (bound ${bound}), refused by a budget ${limited}, paired ${paired} ` +
            `(expected ${expected.toFixed(4)} with ${live} live codes); a user at home paired in ${
              legitSeconds.toFixed(1)
            } s during the flood`,
        );
        assert.ok(sent >= ATTEMPTS);
        assert.equal(rejected + limited + paired, sent, `every guess answered (${JSON.stringify([...outcomes])})`);
        assert.ok(evaluated <= bound, `looked at ${evaluated} guesses; the global budget allows ${bound}`);
        for (const [address, n] of evaluatedBy) {
          assert.ok(n <= REDEEM_PER_ADDRESS_PER_WINDOW * windows, `${address} had ${n} guesses looked at`);
        }
        // With at most ~0.01 expected, three lucky guesses would mean the bound is broken
        // (probability below 1e-6 otherwise).
        assert.ok(paired <= 3, `${paired} guesses paired`);
        assert.ok(legitSeconds < 20, `the user at home paired in ${legitSeconds.toFixed(1)} s`);
        assert.ok(legitDuringFlood, "the user paired while the flood was still going");
        // The relay is still up and answering.
        assert.equal((await fetch(`${relay.url}/healthz`).then((r) => r.json())).status, "ok");
      } finally {
        await relay.stop();
      }
    });
  },
});

/**
 * A real user during the flood: a browser session at 127.0.0.1 asks for a
 * code and a bridge process on the same address pairs with it, confirms the
 * SAS, and runs a command. Returns the seconds from starting the bridge to
 * the command's output.
 */
async function pairDuringFlood(dirs: TestDirs, relayUrl: string): Promise<number> {
  const ide = ideClient(relayUrl);
  await ide.createSession();
  const { code } = await ide.requestPairingCode();
  await ide.connect();
  const started = performance.now();
  const bridge = startBridgeProcess(dirs, relayUrl, { code });
  try {
    await approveBridge(ide, bridge, 30_000);
    const result = await runCollect(ide, "echo paired-during-flood");
    assert.equal(result.stdout, "paired-during-flood\n");
    return (performance.now() - started) / 1000;
  } finally {
    ide.close();
    await bridge.stop();
  }
}

Deno.test({
  name: "brute force: a guessed code gives the guesser a pending request, not a session; rejecting revokes it",
  ...SANITIZE,
  async fn() {
    await withDirs(async (dirs) => {
      const relay = await startRelayProcess(dirs);
      const ide = ideClient(relay.url);
      try {
        await ide.createSession();
        const { code } = await ide.requestPairingCode();
        await ide.connect();
        // Suppose a guess hit: the attacker, elsewhere, redeems the victim's live code.
        const attacker = bridgeSocket(relay.url, { code, version: "0.0.0-bf" }, {}, { localAddress: "127.66.0.1" });
        await attacker.opened;
        const ok = decodeFrame(await attacker.next());
        assert.equal(ok.t, FrameType.AuthOk);
        // The IDE sees a bridge, but not an approved one: nothing runs.
        for (let i = 0; i < 100 && ide.bridge?.state !== "connected"; i++) await new Promise((r) => setTimeout(r, 20));
        assert.equal(ide.bridge?.state, "connected");
        const refused = await ide.run("echo secret").exited.then(
          () => "ran",
          (e: Error & { reason?: string }) => e.reason ?? e.message,
        );
        assert.ok(refused === "not-approved" || refused === "no-bridge", `the command was ${refused}`);
        // What the attacker gets: control frames and the cleartext start of a handshake it cannot finish
        // without the IDE user's approval; never a command.
        const seen = new Set<string>();
        for (const end = Date.now() + 1_500; Date.now() < end;) {
          const frame = await attacker.next(Math.max(1, end - Date.now())).catch(() => undefined);
          if (frame) seen.add(decodeFrame(frame).t);
        }
        for (const t of seen) {
          assert.ok(
            [FrameType.Ping, FrameType.IdeOpen, FrameType.IdeClose, FrameType.E2eHello].includes(t as never),
            `the attacker received ${t}`,
          );
        }
        // The IDE's user forgets the unknown bridge: its token is revoked and refused from then on.
        const token = (ok.body && JSON.parse(new TextDecoder().decode(ok.body)).token) as string;
        await ide.revokeBridge();
        const closed = await attacker.closed;
        assert.ok(closed.code === CloseCode.Revoked, `attacker closed with ${closed.code}`);
        const again = bridgeSocket(relay.url, { token, version: "0.0.0-bf" }, {}, { localAddress: "127.66.0.1" });
        assert.equal((await again.closed).code, 401, "refused before the upgrade");
      } finally {
        ide.close();
        await relay.stop();
      }
    });
  },
});
