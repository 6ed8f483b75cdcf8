/**
 * Pairing rules against a real relay on a loopback socket, with an injected
 * clock so the 5-minute expiry and the 1-minute rate window are tested
 * without sleeping.
 */
import assert from "node:assert/strict";
import { ManualClock } from "../shared/clock.ts";
import { decodeFrame, encodeFrame } from "../shared/frame_codec.ts";
import { CODE_TTL_MS, FrameType, REDEEM_PER_ADDRESS_PER_WINDOW } from "../shared/protocol.ts";
import { createLogger } from "../relay/logger.ts";
import { type RelayHandle, startRelay } from "../relay/relay.ts";
import { bridgeLogin, ideClient, RawSocket } from "./helpers.ts";
import { IdeClientError } from "../shared/ide_client.ts";

async function withRelay(fn: (relay: RelayHandle, clock: ManualClock) => Promise<void>): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "coder1-pairing-" });
  const clock = new ManualClock(Date.UTC(2026, 0, 1));
  const relay = await startRelay({ port: 0, dataDir, clock, log: createLogger({ level: "silent" }) });
  try {
    await fn(relay, clock);
  } finally {
    await relay.shutdown();
    await Deno.remove(dataDir, { recursive: true });
  }
}

/** Authenticates a protocol-level fake bridge; returns auth.ok's body or the refusal (HTTP status as `code`). */
async function redeem(
  relay: RelayHandle,
  auth: { code?: string; token?: string },
): Promise<{ ok?: Record<string, unknown>; close?: { code: number; reason: string }; socket: RawSocket }> {
  return await bridgeLogin(relay.url, auth);
}

Deno.test("a code is 6 digits, works once, and a redeemed code fails the second time", async () => {
  await withRelay(async (relay) => {
    const ide = ideClient(relay.url);
    await ide.createSession();
    const { code, expiresAt } = await ide.requestPairingCode();
    assert.match(code, /^\d{6}$/);
    assert.ok(expiresAt > Date.UTC(2026, 0, 1));
    const first = await redeem(relay, { code });
    assert.ok(first.ok?.token, "first redemption returns a token");
    const second = await redeem(relay, { code });
    assert.equal(second.close?.code, 401);
    assert.match(second.close!.reason, /wrong, expired or already used/);
    first.socket.close();
  });
});

Deno.test("a code expires after 5 minutes (injected clock)", async () => {
  await withRelay(async (relay, clock) => {
    const ide = ideClient(relay.url);
    await ide.createSession();
    const a = await ide.requestPairingCode();
    clock.advance(CODE_TTL_MS - 1);
    const early = await redeem(relay, { code: a.code });
    assert.ok(early.ok, "still valid 1 ms before expiry");
    early.socket.close();
    clock.advance(61_000); // leave the code rate window
    const b = await ide.requestPairingCode();
    clock.advance(CODE_TTL_MS);
    const late = await redeem(relay, { code: b.code });
    assert.equal(late.close?.code, 401, "expired at exactly 5 minutes");
  });
});

Deno.test("one pairing in flight per session: asking again while the code is live gives it again, free of the rate limit", async () => {
  await withRelay(async (relay, clock) => {
    const ide = ideClient(relay.url);
    await ide.createSession();
    // A second tab of the same browser session (same cookie).
    const tab2 = ideClient(relay.url, { sessionCookie: ide.sessionCookie });
    const first = await ide.requestPairingCode();
    assert.equal(first.reused, false);
    clock.advance(10_000);
    // Far more asks than the 5-a-minute budget: all get the same code and expiry.
    for (let i = 0; i < 8; i++) {
      const again = await (i % 2 ? ide : tab2).requestPairingCode();
      assert.deepEqual(again, { code: first.code, expiresAt: first.expiresAt, reused: true });
    }
    // The budget counted only the one code drawn: four new ones (each retiring the last), then 429.
    let live = first;
    for (let i = 0; i < 4; i++) {
      const fresh = await ide.requestPairingCode({ replace: true });
      assert.notEqual(fresh.code, live.code);
      assert.equal((await redeem(relay, { code: live.code })).close?.code, 401, "retired");
      live = fresh;
    }
    await assert.rejects(ide.requestPairingCode({ replace: true }), (e: IdeClientError) => e.status === 429);
    // Even past the budget, the live code is given again.
    assert.deepEqual(await tab2.requestPairingCode(), { ...live, reused: true });
    clock.advance(61_000);
    // Another session gets its own code.
    const other = ideClient(relay.url);
    await other.createSession();
    assert.notEqual((await other.requestPairingCode()).code, live.code);
    // Once used, the next ask draws a new code, and the used one stays dead.
    const used = await redeem(relay, { code: live.code });
    assert.ok(used.ok);
    used.socket.close();
    const second = await tab2.requestPairingCode();
    assert.equal(second.reused, false);
    assert.notEqual(second.code, live.code);
    assert.equal((await redeem(relay, { code: live.code })).close?.code, 401);
    // Once expired, likewise.
    clock.advance(CODE_TTL_MS);
    const third = await ide.requestPairingCode();
    assert.equal(third.reused, false);
    assert.notEqual(third.code, second.code);
    assert.equal(third.expiresAt, clock.now() + CODE_TTL_MS);
  });
});

Deno.test("a new code retires the session's previous one", async () => {
  await withRelay(async (relay) => {
    const ide = ideClient(relay.url);
    await ide.createSession();
    const old = await ide.requestPairingCode();
    const fresh = await ide.requestPairingCode({ replace: true });
    assert.notEqual(old.code, fresh.code);
    assert.equal((await redeem(relay, { code: old.code })).close?.code, 401);
    const ok = await redeem(relay, { code: fresh.code });
    assert.ok(ok.ok);
    ok.socket.close();
  });
});

Deno.test("the 6th code in a minute gets 429 with Retry-After; the window slides", async () => {
  await withRelay(async (relay, clock) => {
    const ide = ideClient(relay.url);
    await ide.createSession();
    for (let i = 0; i < 5; i++) {
      await ide.requestPairingCode({ replace: true });
      clock.advance(1_000);
    }
    const err = await ide.requestPairingCode({ replace: true }).catch((e) => e);
    assert.ok(err instanceof IdeClientError);
    assert.equal(err.status, 429);
    assert.equal(err.reason, "rate-limited");
    // The first code was issued 5 s ago: it leaves the window in 55 s.
    assert.equal(err.retryAfter, 55);
    // Raw response: the header is there too.
    clock.advance(54_000);
    const cookieIde = ideClient(relay.url);
    await cookieIde.createSession();
    assert.ok(await cookieIde.requestPairingCode(), "another session is not limited by this one");
    await assert.rejects(
      ide.requestPairingCode({ replace: true }),
      (e: IdeClientError) => e.status === 429 && e.retryAfter === 1,
    );
    clock.advance(1_000);
    assert.ok(await ide.requestPairingCode({ replace: true }), "allowed again once the oldest code leaves the window");
  });
});

Deno.test("429 responses carry a Retry-After header", async () => {
  await withRelay(async (relay) => {
    const res = await fetch(`${relay.url}/api/sessions`, { method: "POST" });
    await res.body?.cancel();
    const cookie = res.headers.getSetCookie()[0].split(";")[0];
    let last: Response | undefined;
    for (let i = 0; i < 6; i++) {
      last = await fetch(`${relay.url}/api/pairing-codes`, {
        method: "POST",
        headers: { cookie, "content-type": "application/json" },
        body: JSON.stringify({ replace: true }),
      });
      if (i < 5) await last.body?.cancel();
    }
    assert.equal(last!.status, 429);
    assert.equal(last!.headers.get("retry-after"), "60");
    assert.equal((await last!.json()).error, "rate-limited");
  });
});

Deno.test("pairing codes need a session cookie; a forged cookie is refused", async () => {
  await withRelay(async (relay) => {
    const none = await fetch(`${relay.url}/api/pairing-codes`, { method: "POST" });
    assert.equal(none.status, 401);
    assert.equal((await none.json()).error, "no-session");
    const forged = await fetch(`${relay.url}/api/pairing-codes`, {
      method: "POST",
      headers: { cookie: "coder1_session=eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0." },
    });
    assert.equal(forged.status, 401);
    await forged.body?.cancel();
  });
});

Deno.test("session cookie is HttpOnly, SameSite=Strict, and not Secure over plain http", async () => {
  await withRelay(async (relay) => {
    const res = await fetch(`${relay.url}/api/sessions`, { method: "POST" });
    assert.equal(res.status, 201);
    await res.body?.cancel();
    const cookie = res.headers.getSetCookie()[0];
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Strict/);
    assert.doesNotMatch(cookie, /Secure/);
  });
});

Deno.test("a code is bound to its session: another session neither sees nor commands the bridge", async () => {
  await withRelay(async (relay) => {
    const owner = ideClient(relay.url);
    await owner.createSession();
    const { code } = await owner.requestPairingCode();
    await owner.connect();
    const other = ideClient(relay.url);
    await other.createSession();
    const otherStatus = await other.connect();
    assert.equal(otherStatus.state, "disconnected");

    const ownerConnected = new Promise<void>((resolve) =>
      owner.onBridgeStatus((s) => s.state === "connected" && resolve())
    );
    const bridge = await redeem(relay, { code });
    assert.ok(bridge.ok);
    await ownerConnected;
    assert.equal(owner.bridge?.bridgeId, bridge.ok.bridgeId);
    assert.equal(other.bridge?.state, "disconnected", "the other session was not told about the bridge");
    // The owner's client starts the end-to-end handshake with the bridge; skip it.
    assert.equal(decodeFrame(await bridge.socket.next()).t, FrameType.E2eHello);

    // The other session sends a command frame on its own IDE socket: the relay must not forward it.
    const ws = relay.url.replace("http", "ws");
    const rawIde = async (client: typeof owner) => {
      const s = new RawSocket(`${ws}/ws/ide`, { cookie: client.sessionCookie!, origin: relay.url });
      await s.opened;
      assert.equal(decodeFrame(await s.next()).t, FrameType.BridgeStatus);
      return s;
    };
    const otherRaw = await rawIde(other), ownerRaw = await rawIde(owner);
    // The owner's new socket is announced to the bridge.
    assert.equal(decodeFrame(await bridge.socket.next()).t, FrameType.IdeOpen);
    const sent = relay.hub.counters.framesToBridge;
    otherRaw.send(encodeFrame({ t: FrameType.CmdStart, id: "x1", s: 0, body: "pwned" }));
    // The owner's frame goes through; use it as a barrier.
    ownerRaw.send(encodeFrame({ t: FrameType.CmdStart, id: "x2", s: 0, body: "mine" }));
    const frame = decodeFrame(await bridge.socket.next());
    assert.equal(frame.t, FrameType.CmdStart);
    assert.equal(frame.id, "x2");
    assert.equal(new TextDecoder().decode(frame.body), "mine");
    assert.equal(relay.hub.counters.framesToBridge, sent + 1);
    for (const s of [otherRaw, ownerRaw]) s.close();
    owner.close();
    other.close();
    bridge.socket.close();
  });
});

Deno.test("redemption attempts are rate-limited per address with HTTP 429 before any upgrade", async () => {
  await withRelay(async (relay) => {
    const closes: number[] = [];
    for (let i = 0; i < REDEEM_PER_ADDRESS_PER_WINDOW + 1; i++) {
      const r = await redeem(relay, { code: String(100000 + i) });
      closes.push(r.close!.code);
    }
    assert.deepEqual(closes.slice(0, -1), Array(REDEEM_PER_ADDRESS_PER_WINDOW).fill(401));
    assert.equal(closes.at(-1), 429);
  });
});
