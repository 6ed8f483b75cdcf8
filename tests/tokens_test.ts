/**
 * Session JWTs: forged and misused tokens are refused on the bridge socket;
 * stored tokens carry a bridge across its own restarts and the relay's;
 * logout revokes, and the revocation survives a relay restart.
 */
import assert from "node:assert/strict";
import * as jose from "jose";
import { ManualClock } from "../shared/clock.ts";
import { BRIDGE_TOKEN_TTL_MS } from "../shared/protocol.ts";
import { createLogger } from "../relay/logger.ts";
import { type RelayHandle, startRelay } from "../relay/relay.ts";
import { BRIDGE_AUDIENCE, TOKEN_ISSUER } from "../relay/token_service.ts";
import {
  bridgeLogin,
  freePort,
  makeTestDirs,
  pairedSetup,
  runCollect,
  spawnCoder1,
  startBridgeProcess,
  startRelayProcess,
} from "./helpers.ts";

/** A bridge login with `token`: `{ ok }` (auth.ok's body) or `{ close }` (the refusal: HTTP status and message). */
async function authWith(relay: { url: string }, token: string) {
  const { ok, close, socket } = await bridgeLogin(relay.url, { token });
  socket.close();
  return ok ? { ok } : { close: close! };
}

async function pairRaw(relay: RelayHandle): Promise<{ token: string; cookie: string }> {
  const res = await fetch(`${relay.url}/api/sessions`, { method: "POST" });
  await res.body?.cancel();
  const cookie = res.headers.getSetCookie()[0].split(";")[0];
  const codeRes = await fetch(`${relay.url}/api/pairing-codes`, { method: "POST", headers: { cookie } });
  const { code } = await codeRes.json();
  const { ok, socket } = await bridgeLogin(relay.url, { code });
  assert.ok(ok, "paired");
  socket.close();
  await socket.closed;
  return { token: ok.token as string, cookie };
}

Deno.test("forged, misused and expired tokens are refused with 401 before the upgrade", async (t) => {
  const dataDir = await Deno.makeTempDir();
  const clock = new ManualClock();
  const relay = await startRelay({ port: 0, dataDir, clock, log: createLogger({ level: "silent" }) });
  try {
    const { token, cookie } = await pairRaw(relay);
    const jwk = JSON.parse(await Deno.readTextFile(`${dataDir}/jwt-ed25519.jwk`));
    const publicJwk = { kty: jwk.kty, crv: jwk.crv, x: jwk.x };
    const [h, p, s] = token.split(".");
    const payload = JSON.parse(new TextDecoder().decode(jose.base64url.decode(p)));
    const enc = (o: unknown) => jose.base64url.encode(JSON.stringify(o));

    await t.step("the genuine token works", async () => {
      assert.ok("ok" in await authWith(relay, token));
    });
    await t.step("tampered payload (another session id)", async () => {
      const forged = `${h}.${enc({ ...payload, sid: "someone-else" })}.${s}`;
      assert.equal(((await authWith(relay, forged)) as { close: { code: number } }).close.code, 401);
    });
    await t.step("tampered signature", async () => {
      const flipped = s.slice(0, -2) + (s.at(-2) === "A" ? "B" : "A") + s.at(-1);
      assert.equal(
        ((await authWith(relay, `${h}.${p}.${flipped}`)) as { close: { code: number } }).close.code,
        401,
      );
    });
    await t.step("alg=none", async () => {
      const none = `${enc({ alg: "none", typ: "JWT" })}.${p}.`;
      assert.equal(((await authWith(relay, none)) as { close: { code: number } }).close.code, 401);
    });
    await t.step("HS256 signed with the relay's public key", async () => {
      for (const secret of [jose.base64url.decode(jwk.x), new TextEncoder().encode(JSON.stringify(publicJwk))]) {
        const hs = await new jose.SignJWT(payload).setProtectedHeader({ alg: "HS256" }).sign(secret);
        assert.equal(((await authWith(relay, hs)) as { close: { code: number } }).close.code, 401);
      }
    });
    await t.step("wrong audience: the browser session cookie used as a bridge token", async () => {
      const sessionValue = cookie.split("=")[1];
      assert.equal(
        ((await authWith(relay, sessionValue)) as { close: { code: number } }).close.code,
        401,
      );
    });
    await t.step("wrong audience and issuer, correctly signed", async () => {
      const key = await jose.importJWK(jwk, "EdDSA");
      for (const [iss, aud] of [[TOKEN_ISSUER, "other"], ["other", BRIDGE_AUDIENCE]]) {
        const other = await new jose.SignJWT(payload).setProtectedHeader({ alg: "EdDSA" }).setIssuer(iss).setAudience(
          aud,
        ).sign(key);
        assert.equal(((await authWith(relay, other)) as { close: { code: number } }).close.code, 401);
      }
    });
    await t.step("signed by another Ed25519 key", async () => {
      const { privateKey } = await jose.generateKeyPair("EdDSA");
      const other = await new jose.SignJWT(payload).setProtectedHeader({ alg: "EdDSA" }).sign(privateKey);
      assert.equal(((await authWith(relay, other)) as { close: { code: number } }).close.code, 401);
    });
    await t.step("expired (clock moved past exp)", async () => {
      clock.advance(BRIDGE_TOKEN_TTL_MS + 60_000);
      assert.equal(((await authWith(relay, token)) as { close: { code: number } }).close.code, 401);
    });
  } finally {
    await relay.shutdown();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("token claims: EdDSA, iss, aud, sub, sid, iat, exp, jti; key file is mode 0600", async () => {
  const dataDir = await Deno.makeTempDir();
  const relay = await startRelay({ port: 0, dataDir, log: createLogger({ level: "silent" }) });
  try {
    const { token } = await pairRaw(relay);
    const header = jose.decodeProtectedHeader(token);
    assert.equal(header.alg, "EdDSA");
    const claims = jose.decodeJwt(token);
    for (const k of ["iss", "aud", "sub", "sid", "iat", "exp", "jti"]) assert.ok(claims[k] !== undefined, `claim ${k}`);
    assert.equal(claims.iss, TOKEN_ISSUER);
    assert.equal(claims.aud, BRIDGE_AUDIENCE);
    assert.equal((await Deno.stat(`${dataDir}/jwt-ed25519.jwk`)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(dataDir)).mode! & 0o777, 0o700);
  } finally {
    await relay.shutdown();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("bridge and relay restarts: stored token reconnects without a code; logout revokes for good", async () => {
  const dirs = await makeTestDirs();
  const port = freePort();
  let relay = await startRelayProcess(dirs, [], port);
  const { ide, bridge } = await pairedSetup(dirs, relay.url);
  let bridge2: ReturnType<typeof startBridgeProcess> | undefined;
  try {
    // The token is stored, mode 0600, and never printed.
    const file = `${dirs.env.XDG_CONFIG_HOME}/coder1/credentials.json`;
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
    const { token } = JSON.parse(await Deno.readTextFile(file)).relays[relay.url];
    assert.ok(token.length > 100);
    assert.ok(!bridge.stdout.text.includes(token) && !bridge.stderr.text.includes(token), "token never printed");

    // Bridge restart: no code on stdin, reconnects with its token.
    await bridge.stop("SIGTERM");
    bridge2 = startBridgeProcess(dirs, relay.url);
    await bridge2.stdout.waitFor(/Bridge connected/);
    await ide.waitForBridge(10_000);
    assert.equal((await runCollect(ide, "echo after-bridge-restart")).stdout, "after-bridge-restart\n");

    // Relay restart on the same port: the bridge reconnects by itself.
    await relay.stop("SIGTERM");
    relay = await startRelayProcess(dirs, [], port);
    await bridge2.stdout.waitFor(/Bridge reconnected/, 30_000);
    // The browser session survives too (signed cookie, same key): reconnect the same client.
    await ide.connect();
    await ide.waitForBridge(10_000);
    assert.equal((await runCollect(ide, "echo after-relay-restart")).stdout, "after-relay-restart\n");

    // status: paired and accepted.
    const status = spawnCoder1(["bridge", "status", "--relay", relay.url], { env: dirs.env });
    assert.equal((await status.status).code, 0, status.stdout.text + status.stderr.text);
    assert.match(status.stdout.text, /accepted by the relay/);
    assert.match(status.stdout.text, /expires 20\d\d-/);

    // logout: revoked at the relay (the live bridge is kicked) and deleted locally.
    const logout = spawnCoder1(["bridge", "logout", "--relay", relay.url], { env: dirs.env });
    assert.equal((await logout.status).code, 0, logout.stderr.text);
    const exit = await bridge2.status;
    assert.equal(exit.code, 1);
    assert.match(bridge2.stderr.text, /no longer accepts this machine's token/);
    assert.equal(JSON.parse(await Deno.readTextFile(file)).relays[relay.url], undefined);

    // The revocation survives a relay restart.
    await relay.stop("SIGTERM");
    relay = await startRelayProcess(dirs, [], port);
    const again = await authWith(relay, token);
    assert.equal((again as { close: { code: number } }).close.code, 401);
    const after = spawnCoder1(["bridge", "status", "--relay", relay.url], { env: dirs.env });
    assert.equal((await after.status).code, 1);
    assert.match(after.stdout.text, /Paired:\s+no/);
  } finally {
    ide.close();
    await bridge.stop();
    await bridge2?.stop();
    await relay.stop();
    await dirs.cleanup();
  }
});

Deno.test("--jwt-key-file: a PKCS#8 PEM or JWK key is used; a missing or wrong key is a clear error", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { privateKey } = await jose.generateKeyPair("EdDSA", { extractable: true });
    await Deno.writeTextFile(`${dir}/key.pem`, await jose.exportPKCS8(privateKey));
    const relay = await startRelay({
      port: 0,
      dataDir: `${dir}/data`,
      jwtKeyFile: `${dir}/key.pem`,
      log: createLogger({ level: "silent" }),
    });
    try {
      const { token } = await pairRaw(relay);
      const publicKey = await jose.importJWK(
        { ...(await jose.exportJWK(privateKey)), d: undefined },
        "EdDSA",
      );
      await jose.jwtVerify(token, publicKey); // signed with the given key
      assert.ok("ok" in await authWith(relay, token));
    } finally {
      await relay.shutdown();
    }
    await assert.rejects(
      startRelay({
        port: 0,
        dataDir: `${dir}/data`,
        jwtKeyFile: `${dir}/missing.pem`,
        log: createLogger({ level: "silent" }),
      }),
      /Cannot read JWT signing key .*missing\.pem/,
    );
    const rsa = await crypto.subtle.generateKey(
      { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
      true,
      ["sign"],
    );
    await Deno.writeTextFile(`${dir}/rsa.jwk`, JSON.stringify(await crypto.subtle.exportKey("jwk", rsa.privateKey)));
    await assert.rejects(
      startRelay({
        port: 0,
        dataDir: `${dir}/data`,
        jwtKeyFile: `${dir}/rsa.jwk`,
        log: createLogger({ level: "silent" }),
      }),
      /not an Ed25519 private key/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
