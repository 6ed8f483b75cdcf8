/**
 * `coder1 doctor` against real relay processes (or none): every check passes
 * on a paired machine without disturbing the running bridge, and each failure
 * it detects is produced for real and reported with its fix: no relay, a
 * server that is not a coder1 relay, an untrusted TLS certificate, a clock
 * off from the relay's, loose config modes, an expired, invalid or revoked
 * credential, a missing shell, terminals unavailable, a bad telemetry value.
 * Also the read-only `POST /api/bridge/verify` route it asks.
 */
import assert from "node:assert/strict";
import * as jose from "jose";
import type { DoctorCheck } from "../bridge/doctor.ts";
import {
  freePort,
  haveProgram,
  makeTestCertificates,
  makeTestDirs,
  pairedSetup,
  runCollect,
  spawnCoder1,
  startRelayProcess,
  type TestDirs,
} from "./helpers.ts";

const IDS = ["relay", "tls", "clock", "config", "credential", "shell", "terminals", "telemetry"];

interface DoctorRun {
  code: number;
  text: string;
  report: { ok: boolean; relay: string | null; checks: DoctorCheck[] };
  check: (id: string) => DoctorCheck;
}

/** Runs `coder1 doctor ARGS` twice, as text and as --json; both must agree on the exit code. */
async function doctor(
  dirs: TestDirs,
  args: string[],
  options: { env?: Record<string, string>; flags?: string[] } = {},
): Promise<DoctorRun> {
  const env = { ...dirs.env, ...options.env };
  const text = spawnCoder1(["doctor", ...args], { env, flags: options.flags });
  const json = spawnCoder1(["doctor", ...args, "--json"], { env, flags: options.flags });
  const [t, j] = await Promise.all([text.status, json.status]);
  assert.equal(t.code, j.code, `text and --json exit alike:\n${text.stdout.text}${text.stderr.text}`);
  let report;
  try {
    report = JSON.parse(json.stdout.text);
  } catch {
    throw new Error(`--json printed no JSON:\n${json.stdout.text}\n${json.stderr.text}`);
  }
  assert.deepEqual(report.checks.map((c: DoctorCheck) => c.id), IDS);
  assert.equal(report.ok, j.code === 0);
  for (const c of report.checks as DoctorCheck[]) {
    const line = new RegExp(`^  ${c.status === "fail" ? "FAIL" : c.status} +${c.title}`, "m");
    assert.match(text.stdout.text, line, `text lists ${c.id}`);
    if (c.status === "fail") assert.ok(c.fix, `${c.id} says how to fix it`);
  }
  return {
    code: t.code,
    text: text.stdout.text,
    report,
    check: (id) => report.checks.find((c: DoctorCheck) => c.id === id)!,
  };
}

function statuses(run: DoctorRun): Record<string, string> {
  return Object.fromEntries(run.report.checks.map((c) => [c.id, c.status]));
}

Deno.test({
  name:
    "doctor: all pass on a paired machine without disturbing the running bridge; config modes and credentials fail with fixes",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const dirs = await makeTestDirs();
    const relay = await startRelayProcess(dirs);
    const { ide, bridge } = await pairedSetup(dirs, relay.url);
    const configDir = `${dirs.env.XDG_CONFIG_HOME}/coder1`;
    const credentialsFile = `${configDir}/credentials.json`;
    const stored = await Deno.readTextFile(credentialsFile);
    const token = JSON.parse(stored).relays[relay.url].token as string;
    try {
      await t.step("all checks pass; the bridge stays connected and its credential is unchanged", async () => {
        const run = await doctor(dirs, ["--relay", relay.url]);
        assert.equal(run.code, 0, run.text);
        assert.deepEqual(statuses(run), {
          relay: "ok",
          tls: "skip",
          clock: "ok",
          config: "ok",
          credential: "ok",
          shell: "ok",
          terminals: "ok",
          telemetry: "ok",
        });
        assert.match(run.check("credential").detail, /^bridge [0-9a-f]{8}, valid until 20\d\d-\d\d-\d\d \(29 days\)$/);
        assert.match(run.text, /All checks passed/);
        assert.ok(!run.text.includes(token), "the token is never printed");
        assert.equal(await Deno.readTextFile(credentialsFile), stored);
        assert.equal((await runCollect(ide, "echo still-here")).stdout, "still-here\n");
        assert.doesNotMatch(
          bridge.stdout.text + bridge.stderr.text,
          /Bridge reconnected|Connection (lost|closed)|replaced/i,
        );
      });

      await t.step("a config dir and key files other users can read", async () => {
        await Deno.chmod(configDir, 0o755);
        await Deno.chmod(credentialsFile, 0o644);
        await Deno.chmod(`${configDir}/identity.jwk`, 0o640);
        try {
          const run = await doctor(dirs, ["--relay", relay.url]);
          assert.equal(run.code, 1);
          const config = run.check("config");
          assert.equal(config.status, "fail");
          assert.match(config.detail, /is mode 0755: other users can look inside/);
          assert.match(config.detail, /credentials\.json is mode 0644/);
          assert.match(config.detail, /identity\.jwk is mode 0640/);
          assert.equal(
            config.fix,
            `chmod 700 ${configDir}; chmod 600 ${credentialsFile}; chmod 600 ${configDir}/identity.jwk`,
          );
          assert.match(run.text, /^ {2}FAIL {2}Config directory private/m);
          assert.match(run.text, /Fix: chmod 700 /);
        } finally {
          await Deno.chmod(configDir, 0o700);
          await Deno.chmod(credentialsFile, 0o600);
          await Deno.chmod(`${configDir}/identity.jwk`, 0o600);
        }
      });

      const withToken = async (other: string) => {
        const data = JSON.parse(stored);
        data.relays[relay.url].token = other;
        await Deno.writeTextFile(credentialsFile, JSON.stringify(data), { mode: 0o600 });
        try {
          return await doctor(dirs, ["--relay", relay.url]);
        } finally {
          await Deno.writeTextFile(credentialsFile, stored, { mode: 0o600 });
        }
      };

      await t.step("an expired credential (signed by the relay's key, exp in the past)", async () => {
        const jwk = JSON.parse(await Deno.readTextFile(`${dirs.env.XDG_DATA_HOME}/coder1/jwt-ed25519.jwk`));
        const claims = jose.decodeJwt(token);
        const now = Math.floor(Date.now() / 1000);
        const expired = await new jose.SignJWT({ ...claims, iat: now - 7200, exp: now - 3600 })
          .setProtectedHeader({ alg: "EdDSA", kid: jwk.kid })
          .sign(await jose.importJWK(jwk, "EdDSA"));
        const run = await withToken(expired);
        assert.equal(run.code, 1);
        assert.equal(run.check("credential").status, "fail");
        assert.match(run.check("credential").detail, /^the token expired on /);
        assert.equal(run.check("credential").fix, `Pair again: coder1 bridge start --pair --relay ${relay.url}`);
      });

      await t.step("a credential the relay did not issue", async () => {
        const { privateKey } = await jose.generateKeyPair("EdDSA");
        const forged = await new jose.SignJWT(jose.decodeJwt(token)).setProtectedHeader({ alg: "EdDSA" })
          .sign(privateKey);
        const run = await withToken(forged);
        assert.equal(run.code, 1);
        assert.match(run.check("credential").detail, /does not accept this token \(it was not issued by this relay/);
      });

      await t.step("a credential revoked while the bridge is stopped", async () => {
        await bridge.stop();
        const res = await fetch(`${relay.url}/api/bridge/logout`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}` },
        });
        assert.equal(res.status, 200);
        await res.body?.cancel();
        const run = await doctor(dirs, ["--relay", relay.url]);
        assert.equal(run.code, 1);
        assert.equal(run.check("credential").status, "fail");
        assert.match(run.check("credential").detail, /revoked this machine's token/);
        assert.match(run.text, /Fix: Pair again: coder1 bridge start --pair --relay/);
      });
    } finally {
      ide.close();
      await bridge.stop();
      await relay.stop();
      await dirs.cleanup();
    }
  },
});

Deno.test("doctor: no relay at the address, and a server that is not a coder1 relay", async () => {
  const dirs = await makeTestDirs();
  const abort = new AbortController();
  const other = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: abort.signal, onListen: () => {} },
    () => new Response("<html>hello</html>", { status: 200, headers: { "content-type": "text/html" } }),
  );
  try {
    const down = await doctor(dirs, ["--relay", `http://127.0.0.1:${freePort()}`]);
    assert.equal(down.code, 1);
    assert.equal(down.check("relay").status, "fail");
    assert.match(down.check("relay").detail, /connection refused: nothing listens at that address and port/);
    assert.match(down.check("relay").fix!, /Start the relay \(coder1 relay serve\)/);
    assert.equal(down.check("clock").status, "skip");
    assert.equal(down.check("credential").status, "skip");
    assert.match(down.text, /1 of 8 checks failed/);

    const wrong = await doctor(dirs, ["--relay", `http://127.0.0.1:${other.addr.port}`]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.check("relay").detail, /answered HTTP 200, but not as a coder1 relay does/);

    // A relay URL from the environment that the bridge would refuse is a failed check, not a crash.
    const plain = await doctor(dirs, [], { env: { CODER1_RELAY_URL: "http://relay.example" } });
    assert.equal(plain.code, 1);
    assert.equal(plain.report.relay, null);
    assert.match(plain.check("relay").detail, /refusing unencrypted http:\/\/relay\.example/);
    assert.match(plain.check("relay").fix!, /--relay https:\/\/relay\.example/);
  } finally {
    abort.abort();
    await other.finished;
    await dirs.cleanup();
  }
});

Deno.test({
  name: "doctor: an untrusted TLS certificate names its issuer and the --ca-file to pass; with it, TLS passes",
  ignore: !haveProgram("openssl", "doctor TLS test"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dirs = await makeTestDirs();
    const certDir = `${dirs.root}/certs`;
    await Deno.mkdir(certDir);
    await makeTestCertificates(certDir);
    const relay = await startRelayProcess(dirs, [
      "--tls-cert",
      `${certDir}/server.pem`,
      "--tls-key",
      `${certDir}/server.key`,
    ]);
    try {
      const untrusted = await doctor(dirs, ["--relay", relay.url]);
      assert.equal(untrusted.code, 1);
      const tls = untrusted.check("tls");
      assert.equal(tls.status, "fail");
      assert.match(tls.detail, /certificate \(CN=127\.0\.0\.1\) is issued by CN=coder1 test CA, which this machine/);
      assert.match(tls.fix!, /Pass the certificate of the CA "CN=coder1 test CA" that signed it: --ca-file/);
      assert.equal(untrusted.check("clock").status, "skip");

      const trusted = await doctor(dirs, ["--relay", relay.url, "--ca-file", `${certDir}/ca.pem`]);
      assert.equal(trusted.code, 0, trusted.text);
      assert.equal(trusted.check("tls").status, "ok");
      assert.match(
        trusted.check("tls").detail,
        /CN=127\.0\.0\.1, issued by CN=coder1 test CA, valid until .* \(with --ca-file /,
      );
      assert.equal(trusted.check("relay").status, "ok");
      assert.equal(trusted.check("clock").status, "ok");

      // The same certificate served at an address it does not name (127.0.0.2: loopback, not in its names).
      const elsewhere = await startRelayProcess(dirs, [
        "--host",
        "127.0.0.2",
        "--tls-cert",
        `${certDir}/server.pem`,
        "--tls-key",
        `${certDir}/server.key`,
        "--data-dir",
        `${dirs.root}/data2`,
      ]);
      try {
        const mismatch = await doctor(dirs, ["--relay", elsewhere.url, "--ca-file", `${certDir}/ca.pem`]);
        assert.equal(mismatch.code, 1);
        assert.match(mismatch.check("tls").detail, /is not for 127\.0\.0\.2$/);
        assert.match(mismatch.check("tls").fix!, /Use the name the certificate is for in --relay/);
      } finally {
        await elsewhere.stop();
      }

      const notPem = `${certDir}/ext.cnf`;
      const bad = await doctor(dirs, ["--relay", relay.url, "--ca-file", notPem]);
      assert.equal(bad.code, 1);
      assert.match(bad.check("tls").detail, /holds no PEM certificate/);
    } finally {
      await relay.stop();
      await dirs.cleanup();
    }
  },
});

/** A proxy in front of `target` that shifts the Date header of every answer by `offsetMs`. */
function clockShiftingProxy(target: string, offsetMs: number) {
  const abort = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: abort.signal, onListen: () => {} },
    async (request) => {
      const url = new URL(request.url);
      const res = await fetch(`${target}${url.pathname}`, {
        method: request.method,
        headers: request.headers,
        body: request.body,
      });
      const headers = new Headers(res.headers);
      headers.set("date", new Date(Date.parse(res.headers.get("date")!) + offsetMs).toUTCString());
      return new Response(res.body, { status: res.status, headers });
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    async stop() {
      abort.abort();
      await server.finished;
    },
  };
}

Deno.test("doctor: a clock more than 30 s off the relay's fails; 10 s passes", async () => {
  const dirs = await makeTestDirs();
  const relay = await startRelayProcess(dirs);
  const behind = clockShiftingProxy(relay.url, -5 * 60_000);
  const near = clockShiftingProxy(relay.url, 10_000);
  try {
    const off = await doctor(dirs, ["--relay", behind.url]);
    assert.equal(off.code, 1);
    const clock = off.check("clock");
    assert.equal(clock.status, "fail");
    // The relay's clock reads 5 min earlier: this machine is ahead by 299-300 s (the header has whole seconds).
    assert.match(clock.detail, /^this machine's clock is (299|300) s ahead of the relay's \(more than 30 s\)/);
    assert.match(clock.fix!, /timedatectl set-ntp true/);

    const fine = await doctor(dirs, ["--relay", near.url]);
    assert.equal(fine.check("clock").status, "ok");
    assert.match(fine.check("clock").detail, /^(9|10) s behind the relay's \(at most 30 s pass\)$/);
    assert.equal(fine.code, 0, fine.text);
  } finally {
    await behind.stop();
    await near.stop();
    await relay.stop();
    await dirs.cleanup();
  }
});

Deno.test({
  name: "doctor: a missing shell, terminals unavailable and a bad CODER1_TELEMETRY each fail with a fix",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dirs = await makeTestDirs();
    const relay = await startRelayProcess(dirs);
    try {
      const run = await doctor(dirs, ["--relay", relay.url], {
        env: { SHELL: "/nonexistent/shell", CODER1_TELEMETRY: "maybe" },
        // No FFI: bridge/pty.ts cannot load libc, as on a system whose libc it cannot use.
        flags: ["--deny-ffi"],
      });
      assert.equal(run.code, 1);
      assert.equal(run.check("relay").status, "ok");
      assert.equal(run.check("credential").status, "skip", "not paired yet is not a failure");
      assert.match(run.check("credential").detail, /^not paired with http:\/\/127\.0\.0\.1:\d+ yet/);
      assert.equal(run.check("shell").status, "fail");
      assert.match(run.check("shell").detail, /^\/nonexistent\/shell does not exist$/);
      assert.match(run.check("shell").fix!, /point it at an installed shell/);
      assert.equal(run.check("terminals").status, "fail");
      assert.match(run.check("terminals").detail, /^Deno may not load libc here, which terminals need/);
      assert.match(run.check("terminals").fix!, /--allow-ffi/);
      assert.equal(run.check("telemetry").status, "fail");
      assert.match(run.check("telemetry").detail, /CODER1_TELEMETRY="maybe": use true or false/);
      assert.match(run.text, /3 of 8 checks failed/);
    } finally {
      await relay.stop();
      await dirs.cleanup();
    }
  },
});

Deno.test("POST /api/bridge/verify: read-only answers with a reason, and a per-address rate limit", async () => {
  const dirs = await makeTestDirs();
  const relay = await startRelayProcess(dirs);
  try {
    const verify = (authorization?: string) =>
      fetch(`${relay.url}/api/bridge/verify`, {
        method: "POST",
        headers: authorization ? { authorization } : {},
      });
    const missing = await verify();
    assert.equal(missing.status, 401);
    assert.deepEqual({ ...(await missing.json()), message: undefined }, {
      valid: false,
      error: "unauthorized",
      reason: "invalid",
      message: undefined,
    });
    const get = await fetch(`${relay.url}/api/bridge/verify`);
    assert.equal(get.status, 405);
    await get.body?.cancel();
    // 30 a minute per address: two were used above (the GET does not count).
    for (let i = 0; i < 29; i++) {
      const res = await verify("Bearer not.a.token");
      assert.equal(res.status, 401, `call ${i + 2}`);
      assert.equal((await res.json()).reason, "invalid");
    }
    const limited = await verify("Bearer not.a.token");
    assert.equal(limited.status, 429);
    assert.match(limited.headers.get("retry-after") ?? "", /^\d+$/);
    assert.equal((await limited.json()).error, "rate-limited");
    const metrics = await (await fetch(`${relay.url}/metrics`)).text();
    assert.match(metrics, /^coder1_rate_limited_total\{limit="bridge_verify"\} 1$/m);
  } finally {
    await relay.stop();
    await dirs.cleanup();
  }
});
