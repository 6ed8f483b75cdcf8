/**
 * BridgeCredentials on the state store, against MemoryStore and a real
 * redis-server: a login's rotation is a compare-and-set (two logins with one
 * token at the same moment: one wins, the other is reuse), a revocation made
 * on one instance closes the line's connection on another (events), presence
 * on another instance counts as connected, and with Redis down logins fail
 * with 503 while `markApproved` never rejects.
 */
import assert from "node:assert/strict";
import { systemClock } from "../shared/clock.ts";
import { Coder1Error } from "../shared/errors.ts";
import { haveRedis, type RedisServer, startRedisServer } from "../tests/redis_server.ts";
import { BridgeCredentials, REUSE_MESSAGE } from "./bridge_credentials.ts";
import type { RevokeReason } from "./credential_ledger.ts";
import { Pairing } from "./pairing.ts";
import { RedisStore } from "./redis_store.ts";
import { MemoryStore, type RelayStore } from "./store.ts";
import { loadSigningKey, TokenService } from "./token_service.ts";

const INFO = { version: "1", rotate: true };
const ADDRESS = "192.0.2.1";

/** One relay instance's credentials on `store`. */
async function _instance(store: RelayStore, keyFile: string) {
  const tokens = new TokenService(await loadSigningKey(keyFile, { create: true }), { clock: systemClock, store });
  const pairing = new Pairing({ store, clock: systemClock, random: (b) => crypto.getRandomValues(b) });
  const credentials = new BridgeCredentials({ tokens, store, pairing, clock: systemClock });
  const kicked: [string, RevokeReason][] = [];
  const live = new Set<string>();
  credentials.attach((id) => live.has(id), (id, reason) => kicked.push([id, reason]));
  return { store, tokens, pairing, credentials, kicked, live };
}

/**
 * Wraps stores so that credential writes through any of them wait until
 * `readers` reads of a line happened through them: concurrent logins all read
 * the line before any of them writes.
 */
function _barrier(readers: number): (store: RelayStore) => RelayStore {
  let reads = 0;
  let open!: () => void;
  const opened = new Promise<void>((resolve) => open = resolve);
  return (store) =>
    new Proxy(store, {
      get(target, name) {
        if (name === "getCredential") {
          return async (id: string) => {
            const record = await target.getCredential(id);
            if (++reads >= readers) open();
            return record;
          };
        }
        if (name === "putCredential") {
          return async (...args: Parameters<RelayStore["putCredential"]>) => {
            await opened;
            return await target.putCredential(...args);
          };
        }
        const value = Reflect.get(target, name);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
}

async function _poll(ok: () => boolean, what: string, ms = 3_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    assert.ok(Date.now() < deadline, `not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

type Stores = { a: RelayStore; b: RelayStore; close(): Promise<void> };
type Case = (stores: Stores, keyFile: string) => Promise<void>;

const CASES: Record<string, Case> = {
  "two logins with one token at the same moment: one rotates, the other is reuse and revokes the line": async (
    { a, b },
    keyFile,
  ) => {
    const one = await _instance(a, keyFile);
    const { code } = await one.pairing.issue("s1", ADDRESS);
    const paired = await one.credentials.pair(code, ADDRESS, INFO);
    // Both instances read the line (current token) before either writes its rotation.
    const wrap = _barrier(2);
    const x = await _instance(wrap(a), keyFile);
    const y = await _instance(wrap(b), keyFile);
    const results = await Promise.allSettled([
      x.credentials.login(paired.token!, ADDRESS, INFO),
      y.credentials.login(paired.token!, ADDRESS, INFO),
    ]);
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
    assert.equal(won.length, 1, JSON.stringify(results.map((r) => r.status)));
    assert.ok(lost[0].reason instanceof Coder1Error && lost[0].reason.status === 401, String(lost[0].reason));
    assert.match(lost[0].reason.message, new RegExp(REUSE_MESSAGE.slice(0, 40)));
    const line = await one.credentials.get(paired.bridgeId);
    assert.equal(line?.revokedReason, "reuse");
    // The winner's new token is dead too: the whole line is.
    const winner = (won[0] as PromiseFulfilledResult<{ jti: string; token?: string }>).value;
    assert.equal(await a.isRevoked(winner.jti), true);
    await assert.rejects(one.credentials.login(winner.token!, ADDRESS, INFO), (e) => (e as Coder1Error).status === 401);
    for (const i of [one, x, y]) i.credentials.close();
  },

  "a revoke on one instance closes the line's connection on every instance": async ({ a, b }, keyFile) => {
    const one = await _instance(a, keyFile);
    const two = await _instance(b, keyFile);
    const { code } = await one.pairing.issue("s1", ADDRESS);
    const paired = await one.credentials.pair(code, ADDRESS, INFO);
    assert.deepEqual(await one.credentials.revokeForSession("s1", { all: true }), [paired.bridgeId]);
    await _poll(() => two.kicked.length > 0 && one.kicked.length > 0, "both instances told");
    assert.deepEqual(two.kicked, [[paired.bridgeId, "user"]]);
    assert.deepEqual(one.kicked, [[paired.bridgeId, "user"]]);
    await assert.rejects(two.credentials.login(paired.token!, ADDRESS, INFO), (e) => (e as Coder1Error).status === 401);
    for (const i of [one, two]) i.credentials.close();
  },

  "approval and the list are shared; connected counts this instance's connections": async ({ a, b }, keyFile) => {
    const one = await _instance(a, keyFile);
    const two = await _instance(b, keyFile);
    const { code } = await one.pairing.issue("s1", ADDRESS);
    const paired = await one.credentials.pair(code, ADDRESS, INFO);
    await one.credentials.markApproved(paired.bridgeId);
    const [view] = await two.credentials.list("s1");
    assert.equal(view.bridgeId, paired.bridgeId);
    assert.equal(view.approved, true);
    assert.equal(view.connected, false);
    two.live.add(paired.bridgeId);
    assert.equal((await two.credentials.list("s1"))[0].connected, true);
    for (const i of [one, two]) i.credentials.close();
  },
};

for (const [name, run] of Object.entries(CASES)) {
  Deno.test(`bridge credentials (MemoryStore): ${name}`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "coder1-credentials-" });
    const store = new MemoryStore();
    try {
      await run({ a: store, b: store, close: () => store.close() }, `${dir}/key.jwk`);
    } finally {
      await store.close();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

async function _redisStores(server: RedisServer): Promise<Stores> {
  const prefix = `c${crypto.randomUUID().slice(0, 8)}:`;
  const a = await RedisStore.connect({ url: server.url, prefix });
  const b = await RedisStore.connect({ url: server.url, prefix });
  return { a, b, close: async () => void await Promise.all([a.close(), b.close()]) };
}

Deno.test("bridge credentials (RedisStore, two instances)", async (t) => {
  if (!haveRedis("BridgeCredentials on Redis")) return;
  const server = await startRedisServer();
  const dir = await Deno.makeTempDir({ prefix: "coder1-credentials-" });
  try {
    for (const [name, run] of Object.entries(CASES)) {
      await t.step(name, async () => {
        const stores = await _redisStores(server);
        try {
          await run(stores, `${dir}/key.jwk`);
        } finally {
          await stores.close();
        }
      });
    }

    await t.step("a line connected on another instance (presence) is connected, and refuses the grace", async () => {
      const { a, b, close } = await _redisStores(server);
      try {
        const one = await _instance(a, `${dir}/key.jwk`);
        const two = await _instance(b, `${dir}/key.jwk`);
        const { code } = await one.pairing.issue("s1", ADDRESS);
        const paired = await one.credentials.pair(code, ADDRESS, INFO);
        const rotated = await one.credentials.login(paired.token!, ADDRESS, INFO);
        // The bridge is connected through instance A (its hub set the presence).
        await a.setPresence(paired.bridgeId, "A", 15_000, Date.now());
        assert.equal((await two.credentials.list("s1"))[0].connected, true);
        // The token it replaced, presented on B while the line is connected on A: reuse, not grace.
        await assert.rejects(
          two.credentials.login(paired.token!, ADDRESS, INFO),
          (e) => e instanceof Coder1Error && e.message.includes(REUSE_MESSAGE),
        );
        assert.equal((await one.credentials.get(rotated.bridgeId))?.revokedReason, "reuse");
        for (const i of [one, two]) i.credentials.close();
      } finally {
        await close();
      }
    });

    await t.step("Redis down: pairing and logins fail with 503, markApproved does not reject", async () => {
      const { a, b, close } = await _redisStores(server);
      try {
        const one = await _instance(a, `${dir}/key.jwk`);
        const { code } = await one.pairing.issue("s1", ADDRESS);
        const paired = await one.credentials.pair(code, ADDRESS, INFO);
        server.kill("SIGKILL");
        const unavailable = (e: unknown) =>
          e instanceof Coder1Error && e.status === 503 && e.reason === "state-store-unavailable";
        await assert.rejects(one.credentials.login(paired.token!, ADDRESS, INFO), unavailable);
        await assert.rejects(one.pairing.issue("s2", ADDRESS), unavailable);
        await assert.rejects(one.credentials.list("s1"), unavailable);
        await one.credentials.markApproved(paired.bridgeId);
        one.credentials.close();
        void b;
      } finally {
        await server.restart();
        await close();
      }
    });
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
