/**
 * A relay keeping its state in a real redis-server (`RelayOptions.redisUrl`):
 * pairing and logins work through Redis; with redis-server killed they fail
 * closed with HTTP 503 `state-store-unavailable` (JSON for the API, the
 * upgrade's status for a bridge) and work again by themselves once it is
 * back; a relay started while Redis is unreachable starts anyway.
 */
import assert from "node:assert/strict";
import { createLogger } from "../relay/logger.ts";
import { type RelayHandle, startRelay } from "../relay/relay.ts";
import { freePort } from "../tools/harness.ts";
import { bridgeLogin } from "./helpers.ts";
import { haveRedis, startRedisServer } from "./redis_server.ts";

async function _session(relay: RelayHandle): Promise<string> {
  const res = await fetch(`${relay.url}/api/sessions`, { method: "POST" });
  assert.equal(res.status, 201, await res.clone().text());
  await res.body?.cancel();
  return res.headers.get("set-cookie")!.split(";")[0];
}

function _code(relay: RelayHandle, cookie: string): Promise<Response> {
  return fetch(`${relay.url}/api/pairing-codes`, {
    method: "POST",
    headers: { cookie, "content-type": "application/json" },
    body: JSON.stringify({ replace: true }),
  });
}

async function _unavailable(res: Response): Promise<void> {
  assert.equal(res.status, 503);
  const body = await res.json();
  assert.equal(body.error, "state-store-unavailable");
  assert.match(body.message, /Redis is unreachable/);
}

Deno.test("relay on Redis: Redis killed, pairing and logins get 503 state-store-unavailable; back, all works again", async () => {
  if (!haveRedis("relay on Redis")) return;
  const server = await startRedisServer();
  const dataDir = await Deno.makeTempDir({ prefix: "coder1-state-store-" });
  const relay = await startRelay({ port: 0, dataDir, redisUrl: server.url, log: createLogger({ level: "silent" }) });
  try {
    assert.equal(relay.store.shared, true);
    const cookie = await _session(relay);
    const issued = await _code(relay, cookie);
    assert.equal(issued.status, 201);
    const { code } = await issued.json();
    const paired = await bridgeLogin(relay.url, { code, rotate: true });
    assert.ok(paired.ok?.token, JSON.stringify(paired));
    paired.socket.close();
    await paired.socket.closed;
    const token = paired.ok.token as string;

    server.kill("SIGKILL");
    await _unavailable(await _code(relay, cookie));
    await _unavailable(await fetch(`${relay.url}/api/bridges`, { headers: { cookie } }));
    const refused = await bridgeLogin(relay.url, { token, rotate: true });
    assert.equal(refused.close?.code, 503, JSON.stringify(refused.close));
    assert.match(refused.close!.reason, /Redis is unreachable/);

    await server.restart();
    const deadline = Date.now() + 10_000;
    let res = await _code(relay, cookie);
    while (res.status === 503 && Date.now() < deadline) {
      await res.body?.cancel();
      await new Promise((r) => setTimeout(r, 100));
      res = await _code(relay, cookie);
    }
    assert.equal(res.status, 201, "pairing works again once Redis is back");
    await res.body?.cancel();
    // The restarted Redis kept nothing (persistence off): the valid token starts a new line.
    const back = await bridgeLogin(relay.url, { token, rotate: true });
    assert.ok(back.ok, JSON.stringify(back.close));
    back.socket.close();
    await back.socket.closed;
  } finally {
    await relay.shutdown();
    await server.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("relay on Redis: starts while Redis is unreachable, answers 503 until it is there", async () => {
  if (!haveRedis("relay on Redis")) return;
  const port = freePort();
  const dataDir = await Deno.makeTempDir({ prefix: "coder1-state-store-" });
  const started = Date.now();
  const relay = await startRelay({
    port: 0,
    dataDir,
    redisUrl: `redis://127.0.0.1:${port}`,
    log: createLogger({ level: "silent" }),
  });
  try {
    assert.ok(Date.now() - started < 5_000, "the start does not wait for Redis for long");
    assert.equal(await relay.store.ping(), false);
    await _unavailable(await fetch(`${relay.url}/api/sessions`, { method: "POST" }));
  } finally {
    await relay.shutdown();
    await Deno.remove(dataDir, { recursive: true });
  }
});
