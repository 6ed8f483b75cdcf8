/**
 * Issue 14's credential limits against a relay on real sockets, with time
 * injected: the rotation grace rule for a bridge that crashed before storing
 * its new token; token logins rate-limited per credential and per address;
 * telemetry capped per bridge per day however often a self-made credential
 * logs in; the session cookie's `__Host-` name over HTTPS and ambiguous
 * cookies refused.
 */
import assert from "node:assert/strict";
import { ManualClock } from "../shared/clock.ts";
import { encodeFrame } from "../shared/frame_codec.ts";
import {
  CloseCode,
  FrameType,
  LOGIN_RATE_WINDOW_MS,
  LOGINS_PER_ADDRESS_PER_WINDOW,
  LOGINS_PER_CREDENTIAL_PER_WINDOW,
} from "../shared/protocol.ts";
import { createLogger } from "../relay/logger.ts";
import { type RelayHandle, startRelay } from "../relay/relay.ts";
import { readTelemetry, TELEMETRY_ROWS_PER_BRIDGE_PER_DAY } from "../relay/telemetry.ts";
import { bridgeLogin, haveProgram, makeTestCertificates } from "./helpers.ts";

type Login = { ok: Record<string, unknown> } | { close: { code: number; reason: string } };

async function login(
  relay: { url: string },
  auth: { code: string } | { token: string },
  options: { crashes?: number; ca?: string } = {},
): Promise<Login> {
  // The credential goes in the upgrade request; a refusal there is reported as the close code
  // the bridge reads it as (401 as 4401, 409 as 4411, 429 as 4429).
  const login = await bridgeLogin(
    relay.url,
    { ...auth, version: "1.0.0", rotate: true },
    {},
    options.ca ? { ca: options.ca } : {},
  );
  const socket = login.socket;
  const r: Login = login.ok
    ? { ok: login.ok }
    : { close: { code: HTTP_AS_CLOSE[login.close!.code] ?? login.close!.code, reason: login.close!.reason } };
  if ("ok" in r) {
    for (let i = 0; i < (options.crashes ?? 0); i++) {
      socket.send(
        encodeFrame({
          t: FrameType.Crash,
          body: { errorClass: "Error", message: `x${i}`.repeat(200), version: "1.0.0", os: "linux" },
        }),
      );
    }
  }
  socket.close();
  await socket.closed;
  return r;
}

/** How the bridge reads the relay's refusals of its upgrade (bridge/relay_link.ts). */
const HTTP_AS_CLOSE: Record<number, number> = {
  401: CloseCode.AuthFailed,
  409: CloseCode.SessionTaken,
  429: CloseCode.RateLimited,
};

function codeOf(r: Login): number | "ok" {
  return "ok" in r ? "ok" : r.close.code;
}

async function session(relay: { url: string }, ca?: Deno.HttpClient): Promise<string> {
  const res = await fetch(`${relay.url}/api/sessions`, { method: "POST", ...(ca ? { client: ca } : {}) });
  await res.body?.cancel();
  return res.headers.getSetCookie()[0].split(";")[0];
}

async function pair(relay: RelayHandle): Promise<{ token: string; bridgeId: string; cookie: string }> {
  const cookie = await session(relay);
  const { code } = await (await fetch(`${relay.url}/api/pairing-codes`, { method: "POST", headers: { cookie } }))
    .json();
  const r = await login(relay, { code });
  if (!("ok" in r)) throw new Error(`pairing refused: ${JSON.stringify(r.close)}`);
  return { token: r.ok.token as string, bridgeId: r.ok.bridgeId as string, cookie };
}

async function withRelay(fn: (relay: RelayHandle, clock: ManualClock, dataDir: string) => Promise<void>) {
  const dataDir = await Deno.makeTempDir();
  const clock = new ManualClock(Date.UTC(2026, 11, 1, 8));
  const relay = await startRelay({ port: 0, dataDir, clock, log: createLogger({ level: "silent" }) });
  try {
    await fn(relay, clock, dataDir);
  } finally {
    await relay.shutdown();
    await Deno.remove(dataDir, { recursive: true });
  }
}

Deno.test("rotation grace: a bridge that crashed before storing its new token gets back in once; reuse after that revokes the line", async () => {
  await withRelay(async (relay) => {
    const { token: t0 } = await pair(relay);
    // A plain check rotates nothing (what `coder1 doctor` and `bridge status` do).
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${relay.url}/api/bridge`, { headers: { authorization: `Bearer ${t0}` } });
      assert.equal(res.status, 200);
      await res.body?.cancel();
    }
    const first = await login(relay, { token: t0 });
    assert.ok("ok" in first);
    const t1 = first.ok.token as string; // Sent, but the bridge "crashed" before storing it.
    const grace = await login(relay, { token: t0 });
    assert.ok("ok" in grace, "the token on disk still works once: its successor was never presented");
    const t2 = grace.ok.token as string;
    assert.equal(codeOf(await login(relay, { token: t1 })), CloseCode.AuthFailed, "the lost successor is dead");
    const third = await login(relay, { token: t2 });
    assert.ok("ok" in third);
    const t3 = third.ok.token as string;
    // t0 is two rotations old: presenting it is reuse, and the whole line dies.
    const reuse = await login(relay, { token: t0 });
    assert.equal(codeOf(reuse), CloseCode.AuthFailed);
    assert.match((reuse as { close: { reason: string } }).close.reason, /possible theft/);
    assert.equal(codeOf(await login(relay, { token: t3 })), CloseCode.AuthFailed, "the current token died too");
    const res = await fetch(`${relay.url}/api/bridge`, { headers: { authorization: `Bearer ${t3}` } });
    assert.equal(res.status, 401);
    assert.equal((await res.json()).error, "credential-reused");
  });
});

Deno.test("token logins are rate-limited per credential and per address; telemetry rows are capped per bridge per day", async () => {
  await withRelay(async (relay, clock) => {
    // Self-made credentials: 8 tokens from one address (each pairing is legitimate on its own).
    const tokens = [];
    for (let i = 0; i < 8; i++) tokens.push(await pair(relay));
    // Hammer: 30 logins per token in one window. Each accepted login would write telemetry rows.
    let accepted = 0, limited = 0;
    const perToken = new Map<string, number>();
    for (let round = 0; round < 30; round++) {
      for (const t of tokens) {
        const r = await login(relay, { token: t.token }, { crashes: 3 });
        if ("ok" in r) {
          accepted++;
          t.token = r.ok.token as string;
          perToken.set(t.bridgeId, (perToken.get(t.bridgeId) ?? 0) + 1);
        } else {
          assert.equal(r.close.code, CloseCode.RateLimited, r.close.reason);
          limited++;
        }
      }
    }
    assert.equal(accepted, LOGINS_PER_ADDRESS_PER_WINDOW, "the per-address limit binds");
    assert.equal(limited, 8 * 30 - accepted);
    for (const n of perToken.values()) assert.ok(n <= LOGINS_PER_CREDENTIAL_PER_WINDOW);

    // One credential alone: the per-credential limit, then the window slides.
    clock.advance(LOGIN_RATE_WINDOW_MS);
    const one = tokens[0];
    let ok = 0;
    for (let i = 0; i < LOGINS_PER_CREDENTIAL_PER_WINDOW + 5; i++) {
      const r = await login(relay, { token: one.token });
      if ("ok" in r) (ok++, one.token = r.ok.token as string);
      else assert.equal(r.close.code, CloseCode.RateLimited);
    }
    assert.equal(ok, LOGINS_PER_CREDENTIAL_PER_WINDOW);

    // A whole day of logins at the allowed rate still keeps at most the daily cap of rows for that bridge.
    for (let minute = 0; minute < 20; minute++) {
      clock.advance(LOGIN_RATE_WINDOW_MS);
      for (let i = 0; i < LOGINS_PER_CREDENTIAL_PER_WINDOW; i++) {
        const r = await login(relay, { token: one.token }, { crashes: 1 });
        if ("ok" in r) one.token = r.ok.token as string;
      }
    }
    relay.telemetry!.flush();
    const dump = readTelemetry(relay.telemetry!.file);
    const rows = dump.connections.filter((c) => c.bridgeId === one.bridgeId).length;
    assert.ok(rows <= TELEMETRY_ROWS_PER_BRIDGE_PER_DAY, `${rows} connection rows for one bridge`);
    assert.ok(
      dump.connections.length + dump.crashes.length <= 8 * TELEMETRY_ROWS_PER_BRIDGE_PER_DAY,
      `${dump.connections.length + dump.crashes.length} rows in all`,
    );
  });
});

Deno.test("session cookie: two cookies of that name are refused, not first-wins", async () => {
  await withRelay(async (relay) => {
    const victim = await session(relay), attacker = await session(relay);
    const res = await fetch(`${relay.url}/api/bridges`, { headers: { cookie: `${attacker}; ${victim}` } });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error, "ambiguous-cookie");
    const ok = await fetch(`${relay.url}/api/bridges`, { headers: { cookie: victim } });
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
  });
});

Deno.test("session cookie over HTTPS: __Host- name, Secure, Path=/, no Domain; a sibling's plain cookie is ignored", async () => {
  if (!haveProgram("openssl", "the HTTPS cookie test needs openssl to make a test certificate")) return;
  const dir = await Deno.makeTempDir();
  try {
    await makeTestCertificates(dir);
    const ca = await Deno.readTextFile(`${dir}/ca.pem`);
    const client = Deno.createHttpClient({ caCerts: [ca] });
    const relay = await startRelay({
      port: 0,
      dataDir: `${dir}/data`,
      tls: { cert: await Deno.readTextFile(`${dir}/server.pem`), key: await Deno.readTextFile(`${dir}/server.key`) },
      log: createLogger({ level: "silent" }),
    });
    try {
      const res = await fetch(`${relay.url}/api/sessions`, { method: "POST", client });
      await res.body?.cancel();
      const line = res.headers.getSetCookie()[0];
      assert.match(line, /^__Host-coder1_session=/);
      assert.match(line, /; Secure/);
      assert.match(line, /; Path=\//);
      assert.doesNotMatch(line, /Domain=/i);
      const victim = line.split(";")[0];
      // A sibling subdomain planted its own session under the plain name, first in the header.
      const planted = (await session(relay, client)).replace("__Host-", "");
      const list = await fetch(`${relay.url}/api/bridges`, { headers: { cookie: `${planted}; ${victim}` }, client });
      assert.equal(list.status, 200, "the __Host- cookie is the one used");
      await list.body?.cancel();
      const only = await fetch(`${relay.url}/api/bridges`, { headers: { cookie: planted }, client });
      assert.equal(only.status, 401, "the plain name is not a session over HTTPS");
      await only.body?.cancel();
      const twice = await fetch(`${relay.url}/api/bridges`, { headers: { cookie: `${victim}; ${victim}` }, client });
      assert.equal(twice.status, 400);
      await twice.body?.cancel();
    } finally {
      await relay.shutdown();
      client.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("POST /api/bridge/revoke: bad bodies get 400 bad-request, unknown ids 404, and nothing is revoked", async () => {
  await withRelay(async (relay) => {
    const { cookie, token } = await pair(relay);
    const post = async (body: string) => {
      const res = await fetch(`${relay.url}/api/bridge/revoke`, { method: "POST", headers: { cookie }, body });
      return { status: res.status, error: (await res.json()).error };
    };
    for (const body of ["not json", "[1]", '{"bridgeId": 5}', '{"all": "yes"}', '{"all": true, "bridgeId": "x"}']) {
      assert.deepEqual(await post(body), { status: 400, error: "bad-request" }, body);
    }
    assert.deepEqual(await post(JSON.stringify({ bridgeId: "x".repeat(200) })), { status: 400, error: "bad-request" });
    assert.deepEqual(await post(JSON.stringify({ bridgeId: crypto.randomUUID() })), {
      status: 404,
      error: "no-bridge",
    });
    assert.deepEqual(await post(""), { status: 404, error: "no-bridge" }, "nothing connected");
    assert.ok("ok" in await login(relay, { token }), "the credential still works");
  });
});
