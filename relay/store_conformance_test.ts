/**
 * One conformance suite for the state store, run against {@linkcode MemoryStore}
 * and {@linkcode RedisStore} (a real redis-server, tests/redis_server.ts).
 * Each case gets two stores `a` and `b` standing for two relay instances:
 * two Redis clients on one server, or the one memory store (its state is one
 * process's). Time: the memory store is given times explicitly and moved by
 * hand; Redis's clock decides for Redis, so its cases wait for real (short
 * windows, bounded waits).
 */
import assert from "node:assert/strict";
import { createClient } from "redis";
import { Coder1Error } from "../shared/errors.ts";
import { haveRedis, type RedisServer, startRedisServer } from "../tests/redis_server.ts";
import type { CredentialRecord } from "./credential_ledger.ts";
import { RedisStore } from "./redis_store.ts";
import { MemoryStore, type RelayEvent, type RelayStore } from "./store.ts";

/** Two instances' view of one store, and its time. */
interface Pair {
  a: RelayStore;
  b: RelayStore;
  /** The time to pass as `now`. */
  now(): number;
  /** Lets `ms` pass (moves the manual time, or waits). */
  pass(ms: number): Promise<void>;
}

type Case = (p: Pair) => Promise<void>;

const WINDOW_MS = 300;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function _line(bridgeId: string, sid: string, issuedAt: number, jti: string, now: number): CredentialRecord {
  return {
    bridgeId,
    sid,
    issuedAt,
    issuedFrom: "127.0.0.1",
    jti,
    jtiUsed: false,
    rotating: true,
    expiresAt: now + 3_600_000,
    approved: false,
  };
}

/** Resolves with the first event `store` hears, or rejects after `ms`. */
function _nextEvent(store: RelayStore, ms = 2_000): Promise<RelayEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => (off(), reject(new Error(`no event within ${ms} ms`))), ms);
    const off = store.subscribe((event) => {
      clearTimeout(timer);
      off();
      resolve(event);
    });
  });
}

const CASES: Record<string, Case> = {
  "a code is taken exactly once": async ({ a, b, now }) => {
    const entry = { sessionId: "s1", expiresAt: now() + 60_000, address: "10.0.0.1" };
    assert.equal(await a.putCode("111111", entry, now()), true);
    assert.equal(await b.putCode("111111", { ...entry, sessionId: "s2" }, now()), false, "a live code is not replaced");
    assert.deepEqual(await b.takeCode("111111"), entry);
    assert.equal(await a.takeCode("111111"), undefined);
    assert.equal(await b.takeCodeFrom("111111", "10.0.0.1"), undefined);
  },

  "two takes of one code at once: exactly one gets it": async ({ a, b, now }) => {
    for (let i = 0; i < 20; i++) {
      const code = String(200000 + i);
      await a.putCode(code, { sessionId: `s${i}`, expiresAt: now() + 60_000, address: "10.0.0.1" }, now());
      const got = await Promise.all([
        a.takeCode(code),
        b.takeCode(code),
        a.takeCodeFrom(code, "10.0.0.1"),
        b.takeCodeFrom(code, "10.0.0.1"),
      ]);
      assert.equal(got.filter((e) => e !== undefined).length, 1, `round ${i}: ${JSON.stringify(got)}`);
    }
  },

  "takeCodeFrom a wrong address leaves the code": async ({ a, b, now }) => {
    const entry = { sessionId: "s1", expiresAt: now() + 60_000, address: "10.0.0.1" };
    await a.putCode("333333", entry, now());
    assert.equal(await b.takeCodeFrom("333333", "10.0.0.2"), undefined);
    assert.deepEqual(await b.takeCodeFrom("333333", "10.0.0.1"), entry);
    assert.equal(await a.takeCode("333333"), undefined);
  },

  "deleteCode removes a code only for its session": async ({ a, b, now }) => {
    const entry = { sessionId: "s1", expiresAt: now() + 60_000 };
    await a.putCode("444444", entry, now());
    await b.deleteCode("444444", "s2");
    assert.deepEqual(await a.takeCode("444444"), entry);
    await a.putCode("444444", entry, now());
    await b.deleteCode("444444", "s1");
    assert.equal(await a.takeCode("444444"), undefined);
  },

  "a session's code: current, live until redeemed or expired": async ({ a, b, now, pass }) => {
    assert.equal(await a.liveSessionCode("s1", now()), undefined);
    const expiresAt = now() + 60_000;
    await a.putCode("555555", { sessionId: "s1", expiresAt }, now());
    await a.setSessionCode("s1", "555555", expiresAt);
    assert.equal(await b.sessionCode("s1"), "555555");
    assert.deepEqual(await b.liveSessionCode("s1", now()), { code: "555555", expiresAt });
    await b.takeCode("555555");
    assert.equal(await a.liveSessionCode("s1", now()), undefined, "redeemed");
    assert.equal(await a.sessionCode("s1"), "555555", "still the session's last code");
    // A short-lived code: expired, it is no longer live (and with Redis it is gone).
    const soon = now() + WINDOW_MS;
    await a.putCode("666666", { sessionId: "s1", expiresAt: soon }, now());
    await a.setSessionCode("s1", "666666", soon);
    assert.deepEqual(await b.liveSessionCode("s1", now()), { code: "666666", expiresAt: soon });
    await pass(WINDOW_MS + 100);
    assert.equal(await b.liveSessionCode("s1", now()), undefined, "expired");
    assert.equal(await b.putCode("666666", { sessionId: "s2", expiresAt: now() + 60_000 }, now()), true);
  },

  "a rate window: the limit, a refusal with retryAfterMs, and the window slides": async ({ a, b, now, pass }) => {
    const hit = (s: RelayStore) => s.hit("k", 3, WINDOW_MS, now());
    assert.equal((await hit(a)).allowed, true);
    await pass(100);
    assert.equal((await hit(b)).allowed, true);
    assert.equal((await hit(a)).allowed, true);
    const refused = await hit(b);
    assert.equal(refused.allowed, false);
    // The oldest event leaves the window about 200 ms from now.
    assert.ok(refused.retryAfterMs > 0 && refused.retryAfterMs <= WINDOW_MS - 100 + 20, `${refused.retryAfterMs}`);
    assert.equal((await hit(a)).allowed, false, "a refusal is not counted, and still refused");
    await pass(refused.retryAfterMs + 30);
    // One slot freed (the oldest event), not three: the window slides.
    assert.equal((await hit(a)).allowed, true);
    const again = await hit(b);
    assert.equal(again.allowed, false);
    assert.ok(again.retryAfterMs > 0 && again.retryAfterMs <= WINDOW_MS, `${again.retryAfterMs}`);
    assert.equal((await a.hit("other", 1, WINDOW_MS, now())).allowed, true, "keys are separate");
    await pass(WINDOW_MS + 50);
    for (let i = 0; i < 3; i++) assert.equal((await hit(i % 2 ? a : b)).allowed, true);
  },

  "revocations": async ({ a, b, now }) => {
    assert.equal(await b.isRevoked("j1"), false);
    await a.revoke("j1", now() + 60_000);
    assert.equal(await b.isRevoked("j1"), true);
    assert.equal(await b.isRevoked("j2"), false);
  },

  "credential lines: put, get, list newest first, compare-and-set": async ({ a, b, now }) => {
    const t = now();
    const old = _line("b-old", "s1", t - 2_000, "j1", t);
    const mid = _line("b-mid", "s1", t - 1_000, "k1", t);
    const other = _line("b-other", "s2", t, "x1", t);
    for (const r of [mid, other, old]) assert.equal(await a.putCredential(r), true);
    assert.deepEqual(await b.getCredential("b-old"), old);
    assert.equal(await b.getCredential("b-none"), undefined);
    assert.deepEqual((await b.listCredentials("s1")).map((r) => r.bridgeId), ["b-mid", "b-old"]);
    assert.deepEqual(await b.listCredentials("s3"), []);
    // A rotation: only from the token the caller read.
    const rotated = { ...old, jti: "j2", prevJti: "j1", lastSeen: t };
    assert.equal(await b.putCredential(rotated, "j1"), true);
    assert.equal(await a.putCredential({ ...old, jti: "j3", prevJti: "j1" }, "j1"), false, "a stale expectJti");
    assert.deepEqual(await a.getCredential("b-old"), rotated);
    assert.equal(await a.putCredential(_line("b-new", "s1", t, "n1", t), "n0"), true, "no line yet: stored");
    assert.deepEqual((await a.listCredentials("s1")).map((r) => r.bridgeId), ["b-new", "b-mid", "b-old"]);
    // Two rotations of one token at once: exactly one wins.
    const results = await Promise.all([
      a.putCredential({ ...mid, jti: "k2", prevJti: "k1" }, "k1"),
      b.putCredential({ ...mid, jti: "k3", prevJti: "k1" }, "k1"),
    ]);
    assert.equal(results.filter(Boolean).length, 1, JSON.stringify(results));
    assert.equal((await a.getCredential("b-mid"))?.jti, results[0] ? "k2" : "k3");
  },

  "leases: claim, holder seen, renew, lapse, take over at the stale epoch only, release": async (p) => {
    const { a, b, now, pass } = p;
    const ttl = WINDOW_MS;
    const first = await a.claimLease("s1", "A", ttl, now());
    assert.equal(first.instance, "A");
    assert.equal(first.epoch, 1);
    assert.ok(first.expiresAt > now() && first.expiresAt <= now() + ttl + 50, `${first.expiresAt - now()}`);
    assert.deepEqual(await b.claimLease("s1", "B", ttl, now()), first, "B sees A's live lease");
    assert.equal((await a.claimLease("s1", "A", ttl, now())).epoch, 1, "A claiming again keeps its epoch");
    assert.equal(await a.renewLease("s1", "A", 1, ttl, now()), true);
    assert.equal(await b.renewLease("s1", "B", 1, ttl, now()), false, "not B's");
    assert.equal((await b.lease("s1", now()))?.instance, "A");
    await pass(ttl + 100);
    assert.equal(await b.lease("s1", now()), undefined, "lapsed");
    const second = await b.claimLease("s1", "B", ttl, now());
    assert.deepEqual([second.instance, second.epoch], ["B", 2], "a lapsed lease goes to the claimer, epoch + 1");
    assert.equal(await a.renewLease("s1", "A", 1, ttl, now()), false, "A is stale");
    // Takeover: B's instance refused a connection, A takes over from epoch 2; a second taker at 2 loses.
    assert.equal(await a.takeOverLease("s1", "A", 1, ttl, now()), undefined, "not at an old epoch");
    const [won, lost] = await Promise.all([
      a.takeOverLease("s1", "A", 2, ttl, now()),
      b.takeOverLease("s1", "C", 2, ttl, now()),
    ]).then((r) => r[0] ? r : [r[1], r[0]]);
    assert.equal(lost, undefined);
    assert.equal(won?.epoch, 3);
    assert.equal(await b.renewLease("s1", "B", 2, ttl, now()), false, "the old home's renewal fails");
    const holder = won!.instance;
    await b.releaseLease("s1", holder, 2);
    assert.equal((await a.lease("s1", now()))?.epoch, 3, "a release at another epoch does nothing");
    await a.releaseLease("s1", holder, 3);
    assert.equal(await a.lease("s1", now()), undefined, "released");
    assert.equal((await b.claimLease("s1", "B", ttl, now())).epoch, 4, "the epoch keeps growing after a release");
    assert.equal(await a.renewLease("s1", holder, 3, ttl, now()), false, "a renewal after the release");
    assert.equal((await a.takeOverLease("s2", "A", 0, ttl, now()))?.epoch, 1, "a never-held lease at epoch 0");
  },

  "presence": async ({ a, b, now, pass }) => {
    assert.equal(await b.isPresent("br1", now()), false);
    await a.setPresence("br1", "A", WINDOW_MS, now());
    assert.equal(await b.isPresent("br1", now()), true);
    await b.clearPresence("br1", "B");
    assert.equal(await b.isPresent("br1", now()), true, "only the instance that set it clears it");
    await b.clearPresence("br1", "A");
    assert.equal(await a.isPresent("br1", now()), false);
    await a.setPresence("br1", "A", WINDOW_MS, now());
    await pass(WINDOW_MS + 100);
    assert.equal(await b.isPresent("br1", now()), false, "lapsed");
  },

  "events reach every instance, this one included": async ({ a, b }) => {
    const event: RelayEvent = { kind: "revoked", bridgeId: "br1", reason: "user" };
    const atB = _nextEvent(b);
    const atA = _nextEvent(a);
    await a.publish(event);
    assert.deepEqual(await atB, event);
    assert.deepEqual(await atA, event);
    const heard: RelayEvent[] = [];
    const off = b.subscribe((e) => heard.push(e));
    off();
    const last = _nextEvent(b);
    await b.publish({ kind: "revoked", bridgeId: "br2", reason: "reuse" });
    assert.equal((await last).bridgeId, "br2");
    assert.deepEqual(heard, [], "an unsubscribed listener hears nothing");
  },

  "ping": async ({ a }) => {
    assert.equal(await a.ping(), true);
  },
};

for (const [name, run] of Object.entries(CASES)) {
  Deno.test(`store conformance (MemoryStore): ${name}`, async () => {
    let t = 1_700_000_000_000;
    const store = new MemoryStore();
    await run({ a: store, b: store, now: () => t, pass: (ms) => Promise.resolve(void (t += ms)) });
    await store.close();
  });
}

/** Two RedisStores (two instances) on `server`, under a prefix of their own. */
async function _redisPair(server: RedisServer): Promise<Pair & { close(): Promise<void> }> {
  const prefix = `t${crypto.randomUUID().slice(0, 8)}:`;
  const a = await RedisStore.connect({ url: server.url, prefix });
  const b = await RedisStore.connect({ url: server.url, prefix });
  return {
    a,
    b,
    now: () => Date.now(),
    pass: sleep,
    close: async () => void await Promise.all([a.close(), b.close()]),
  };
}

Deno.test("store conformance (RedisStore)", async (t) => {
  if (!haveRedis("RedisStore conformance")) return;
  const server = await startRedisServer();
  try {
    for (const [name, run] of Object.entries(CASES)) {
      await t.step(name, async () => {
        const pair = await _redisPair(server);
        try {
          await run(pair);
        } finally {
          await pair.close();
        }
      });
    }

    await t.step("malformed events on the channel are ignored", async () => {
      const pair = await _redisPair(server);
      const raw = createClient({ url: server.url });
      await raw.connect();
      try {
        const heard: RelayEvent[] = [];
        pair.b.subscribe((e) => heard.push(e));
        const valid = _nextEvent(pair.b);
        // The prefix is private: find the channel by listing the subscribed ones.
        const channels = await raw.sendCommand<string[]>(["PUBSUB", "CHANNELS", "*events"]);
        const ours = channels.find((c) => c.startsWith("t") && c.endsWith(":events"));
        assert.ok(ours, JSON.stringify(channels));
        for (
          const bad of [
            "not json",
            "[]",
            "{}",
            JSON.stringify({ kind: "revoked", bridgeId: 7, reason: "user" }),
            JSON.stringify({ kind: "revoked", bridgeId: "x", reason: "because" }),
            JSON.stringify({ kind: "revoked", bridgeId: "x".repeat(500), reason: "user" }),
            JSON.stringify({ kind: "other", bridgeId: "x", reason: "user" }),
          ]
        ) await raw.sendCommand(["PUBLISH", ours, bad]);
        await raw.sendCommand(["PUBLISH", ours, JSON.stringify({ kind: "revoked", bridgeId: "ok", reason: "user" })]);
        assert.deepEqual(await valid, { kind: "revoked", bridgeId: "ok", reason: "user" });
        assert.deepEqual(heard, [{ kind: "revoked", bridgeId: "ok", reason: "user" }]);
      } finally {
        raw.destroy();
        await pair.close();
      }
    });

    await t.step("redis-server killed: calls fail fast with 503, ping false; restarted: all works again", async () => {
      const pair = await _redisPair(server);
      try {
        const { a, b } = pair;
        assert.equal((await a.hit("k", 5, 60_000, Date.now())).allowed, true);
        server.kill("SIGKILL");
        const started = performance.now();
        const failures = await Promise.allSettled([
          a.takeCode("777777"),
          a.hit("k", 5, 60_000, Date.now()),
          a.putCredential(_line("b1", "s1", Date.now(), "j1", Date.now()), "j0"),
          b.claimLease("s1", "A", 15_000, Date.now()),
          b.publish({ kind: "revoked", bridgeId: "b1", reason: "user" }),
        ]);
        const elapsed = performance.now() - started;
        for (const f of failures) {
          assert.equal(f.status, "rejected");
          const error = (f as PromiseRejectedResult).reason;
          assert.ok(error instanceof Coder1Error, String(error));
          assert.equal(error.status, 503);
          assert.equal(error.reason, "state-store-unavailable");
          assert.match(error.message, /Redis is unreachable/);
        }
        assert.ok(elapsed < 1_000, `failed after ${elapsed.toFixed(0)} ms`);
        const pingStarted = performance.now();
        assert.equal(await a.ping(), false);
        assert.ok(performance.now() - pingStarted < 1_000);

        await server.restart();
        // The clients reconnect by themselves (backoff at most 2 s).
        const deadline = Date.now() + 10_000;
        while (!(await a.ping() && await b.ping())) {
          assert.ok(Date.now() < deadline, "no reconnect within 10 s");
          await sleep(50);
        }
        // Scripts are sent again (the restarted server does not know them); the data is gone (no persistence).
        assert.equal((await a.hit("k", 5, 60_000, Date.now())).allowed, true);
        assert.equal(await b.putCredential(_line("b1", "s1", Date.now(), "j1", Date.now()), "j0"), true);
        assert.equal((await b.claimLease("s1", "A", 15_000, Date.now())).epoch, 1);
        // The subscriber connection came back too.
        let event: Promise<RelayEvent> | undefined;
        for (let i = 0; i < 100; i++) {
          event = _nextEvent(b, 200);
          await a.publish({ kind: "revoked", bridgeId: "b1", reason: "user" });
          if (await event.then(() => true, () => false)) break;
        }
        assert.deepEqual(await event, { kind: "revoked", bridgeId: "b1", reason: "user" });
      } finally {
        await pair.close();
      }
    });

    await t.step("unreachable at start: connect returns, calls throw 503, ping false", async () => {
      const store = await RedisStore.connect({ url: "redis://127.0.0.1:1" }, 300);
      try {
        assert.equal(await store.ping(), false);
        await assert.rejects(
          () => store.takeCode("123456"),
          (e: unknown) => e instanceof Coder1Error && e.status === 503 && e.reason === "state-store-unavailable",
        );
      } finally {
        await store.close();
      }
    });
  } finally {
    await server.stop();
  }
});
