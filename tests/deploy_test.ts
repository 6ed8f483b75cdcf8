/**
 * The operator files in deploy/ and .github/workflows/release.yml, checked by
 * running what they say: the systemd unit passes `systemd-analyze verify`,
 * keeps its hardening, and its ExecStart command line starts a real relay;
 * the template unit for several instances (coder1-relay@.service) passes it
 * too, with the instance as its port and the shared keys, and its command
 * line starts an instance against a real Redis;
 * the Dockerfile's ENTRYPOINT carries exactly the relay's permission flags
 * from cli/permissions.ts, and its build steps and command line, replayed
 * outside Docker (no Docker daemon here), cache the code and run a relay that
 * its HEALTHCHECK finds healthy; the release workflow builds the five
 * targets, checks the version and writes SHA256SUMS.
 * (tests/nginx_test.ts runs deploy/nginx/coder1.conf.)
 */
import assert from "node:assert/strict";
import { parseFlags } from "../cli/args.ts";
import { permissionFlags } from "../cli/permissions.ts";
import { RELAY_SERVE } from "../cli/specs.ts";
import { TARGETS } from "../tools/compile.ts";
import { freePort, haveProgram, makeTestDirs, OutputWatcher, ROOT, spawnCoder1 } from "./helpers.ts";
import { haveRedis, startRedisServer } from "./redis_server.ts";

const UNIT = `${ROOT}/deploy/systemd/coder1-relay.service`;
const TEMPLATE = `${ROOT}/deploy/systemd/coder1-relay@.service`;
const DOCKERFILE = `${ROOT}/deploy/docker/Dockerfile`;
const HAVE_SYSTEMD_ANALYZE = haveProgram("systemd-analyze", "systemd unit verification");

/** What both units must keep (the template too). */
const HARDENING: Record<string, string> = {
  DynamicUser: "yes",
  StateDirectory: "coder1",
  StateDirectoryMode: "0700",
  UMask: "0077",
  ProtectSystem: "strict",
  ProtectHome: "yes",
  PrivateTmp: "yes",
  PrivateDevices: "yes",
  NoNewPrivileges: "yes",
  CapabilityBoundingSet: "",
  AmbientCapabilities: "",
  RestrictSUIDSGID: "yes",
  ProtectKernelTunables: "yes",
  ProtectKernelModules: "yes",
  ProtectControlGroups: "yes",
  RestrictNamespaces: "yes",
  LockPersonality: "yes",
  SystemCallArchitectures: "native",
  RestrictAddressFamilies: "AF_INET AF_INET6 AF_UNIX",
};

/** The unit's directives (continuation lines joined), in order. */
function unitDirectives(text: string): [string, string][] {
  return text.replace(/\\\n\s*/g, " ").split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#") && !l.startsWith(";") && !l.startsWith("["))
    .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1).trim()] as [string, string]);
}

/**
 * `systemd-analyze verify` on a unit as shipped, but for its binary (which
 * must exist): silent and exit 0. A template is verified as `instance`.
 */
async function verifyUnit(text: string, fileName: string, instance = fileName): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "coder1-unit-" });
  try {
    await Deno.writeTextFile(
      `${dir}/${fileName}`,
      text.replace("ExecStart=/usr/local/bin/coder1", "ExecStart=/bin/true"),
    );
    const out = await new Deno.Command("systemd-analyze", { args: ["verify", `${dir}/${instance}`], stdin: "null" })
      .output();
    const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, said);
    assert.equal(said.trim(), "", said);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Waits for a relay's "listening on URL" line. */
async function listening(stdout: OutputWatcher, status: Promise<Deno.CommandStatus>, stderr: OutputWatcher) {
  const m = await Promise.race([
    stdout.waitFor(/listening on (\S+)/),
    status.then((s) => {
      throw new Error(`relay exited (${s.code}):\n${stderr.text}`);
    }),
  ]);
  return m[1];
}

Deno.test("systemd unit: hardened, valid for systemd-analyze, and its ExecStart runs a relay", async () => {
  const text = await Deno.readTextFile(UNIT);
  const directives = unitDirectives(text);
  const get = (k: string) => directives.filter(([key]) => key === k).map(([, v]) => v);
  for (const [k, v] of Object.entries(HARDENING)) assert.deepEqual(get(k), [v], `${k}=${v}`);
  assert.ok(get("SystemCallFilter").includes("@system-service"));

  const [exec] = get("ExecStart");
  const [binary, ...args] = exec.split(/\s+/);
  assert.equal(binary, "/usr/local/bin/coder1");
  assert.deepEqual(args.slice(0, 2), ["relay", "serve"]);
  const flags = parseFlags(RELAY_SERVE, args.slice(2));
  assert.equal(flags["data-dir"], "%S/coder1", "the data dir is the StateDirectory");
  assert.equal(flags.host, "127.0.0.1");
  assert.equal(flags["trust-proxy"], true);

  if (HAVE_SYSTEMD_ANALYZE) await verifyUnit(text, "coder1-relay.service");

  // The same command line, with the state directory and port of a test, starts a relay.
  const dirs = await makeTestDirs();
  try {
    const state = `${dirs.root}/state/coder1`;
    const real = args.map((a) => a === "%S/coder1" ? state : a === "8787" ? "0" : a);
    const proc = spawnCoder1(real, { env: dirs.env });
    try {
      const url = await listening(proc.stdout, proc.status, proc.stderr);
      assert.equal((await fetch(`${url}/readyz`)).status, 200);
      assert.match(proc.stdout.text, /Telemetry: on/);
      assert.match(proc.stdout.text, /X-Forwarded-For \(--trust-proxy\)/);
    } finally {
      assert.equal((await proc.stop()).code, 0, proc.stderr.text);
    }
    for (const line of proc.stderr.text.trim().split("\n").filter(Boolean)) JSON.parse(line); // --log-format json
    assert.equal((await Deno.stat(state)).mode! & 0o777, 0o700);
  } finally {
    await dirs.cleanup();
  }
});

Deno.test({
  name: "systemd template coder1-relay@.service: instance = port, shared keys, Redis; hardened and valid",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const text = await Deno.readTextFile(TEMPLATE);
    const directives = unitDirectives(text);
    const get = (k: string) => directives.filter(([key]) => key === k).map(([, v]) => v);
    for (const [k, v] of Object.entries({ ...HARDENING, StateDirectory: "coder1-%i" })) {
      assert.deepEqual(get(k), [v], `${k}=${v}`);
    }
    assert.ok(get("SystemCallFilter").includes("@system-service"));
    assert.deepEqual(get("LoadCredential").sort(), [
      "jwt-key:/etc/coder1/jwt-ed25519.pem",
      "mesh-key:/etc/coder1/mesh-key",
    ]);

    const [exec] = get("ExecStart");
    const [binary, ...args] = exec.split(/\s+/);
    assert.equal(binary, "/usr/local/bin/coder1");
    assert.deepEqual(args.slice(0, 2), ["relay", "serve"]);
    const flag = (name: string) => args[args.indexOf(`--${name}`) + 1];
    assert.equal(flag("host"), "127.0.0.1");
    assert.equal(flag("port"), "%i", "the instance name is the port");
    assert.equal(flag("advertise-url"), "http://127.0.0.1:%i", "peers reach it on its own port");
    assert.equal(flag("data-dir"), "%S/coder1-%i", "one state directory per instance");
    assert.equal(flag("jwt-key-file"), "%d/jwt-key", "the shared signing key");
    assert.equal(flag("mesh-key-file"), "%d/mesh-key", "the shared mesh key");
    assert.match(flag("redis-url"), /^redis:\/\/127\.0\.0\.1:6379$/);
    assert.ok(args.includes("--trust-proxy"));

    if (HAVE_SYSTEMD_ANALYZE) await verifyUnit(text, "coder1-relay@.service", "coder1-relay@8801.service");

    // The command line of instance 8801 as the relay parses it (once it knows the cluster flags).
    const clusterFlags = ["redis-url", "advertise-url", "mesh-key-file"];
    if (!clusterFlags.every((name) => RELAY_SERVE.flags.some((f) => f.name === name))) {
      console.log(
        "skipping the template's command line: this relay has no --redis-url/--advertise-url/--mesh-key-file",
      );
      return;
    }
    const flags = parseFlags(RELAY_SERVE, args.slice(2).map((a) => a.replaceAll("%i", "8801")));
    assert.equal(flags["advertise-url"], "http://127.0.0.1:8801");
    if (!haveRedis("systemd template command line")) return;

    // It starts an instance: the shared keys made as the unit's comment says, Redis from tests/redis_server.ts.
    const redis = await startRedisServer();
    const dirs = await makeTestDirs();
    try {
      const creds = `${dirs.root}/credentials`;
      await Deno.mkdir(creds, { mode: 0o700 });
      const { privateKey } = await crypto.subtle.generateKey("Ed25519", true, ["sign", "verify"]) as CryptoKeyPair;
      const der = new Uint8Array(await crypto.subtle.exportKey("pkcs8", privateKey));
      const pem = `-----BEGIN PRIVATE KEY-----\n${btoa(String.fromCharCode(...der))}\n-----END PRIVATE KEY-----\n`;
      await Deno.writeTextFile(`${creds}/jwt-key`, pem, { mode: 0o600 });
      const mesh = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(48))));
      await Deno.writeTextFile(`${creds}/mesh-key`, `${mesh}\n`, { mode: 0o600 });
      const port = String(freePort());
      const real = args.map((a) =>
        a.replaceAll("%S/", `${dirs.root}/state/`).replaceAll("%d/", `${creds}/`).replaceAll("%i", port)
          .replace("redis://127.0.0.1:6379", redis.url)
      );
      const proc = spawnCoder1(real, { env: dirs.env });
      try {
        const url = await listening(proc.stdout, proc.status, proc.stderr);
        assert.equal(new URL(url).port, port);
        assert.equal((await fetch(`${url}/readyz`)).status, 200);
      } finally {
        assert.equal((await proc.stop()).code, 0, proc.stderr.text);
      }
      assert.equal((await Deno.stat(`${dirs.root}/state/coder1-${port}`)).mode! & 0o777, 0o700);
    } finally {
      await dirs.cleanup();
      await redis.stop();
    }
  },
});

/** One command to a Redis on loopback, its reply as raw RESP text (replies here are small: one read). */
async function redisCommand(port: number, ...args: string[]): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const req = `*${args.length}\r\n` + args.map((a) => `$${new TextEncoder().encode(a).length}\r\n${a}\r\n`).join("");
    await conn.write(new TextEncoder().encode(req));
    const buf = new Uint8Array(4096);
    const n = await conn.read(buf);
    return new TextDecoder().decode(buf.subarray(0, n ?? 0));
  } finally {
    conn.close();
  }
}

Deno.test({
  name: "Redis settings (deploy/redis/coder1.conf): accepted by redis-server; a write just before a SIGKILL survives",
  ignore: !haveRedis("Redis settings file"),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "coder1-redis-conf-" });
    const port = freePort();
    const shipped = await Deno.readTextFile(`${ROOT}/deploy/redis/coder1.conf`);
    for (const line of ["port 6379", "dir /var/lib/redis"]) assert.match(shipped, new RegExp(`^${line}$`, "m"));
    await Deno.writeTextFile(
      `${dir}/coder1.conf`,
      shipped.replace(/^port 6379$/m, `port ${port}`).replace(/^dir \/var\/lib\/redis$/m, `dir ${dir}`),
    );
    const start = () =>
      new Deno.Command("redis-server", { args: [`${dir}/coder1.conf`], stdin: "null", stdout: "null", stderr: "null" })
        .spawn();
    const ready = async () => {
      for (let i = 0; i < 200; i++) {
        if (await redisCommand(port, "PING").then((r) => r.startsWith("+PONG"), () => false)) return;
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error("redis-server did not answer");
    };
    let server = start();
    try {
      await ready();
      const config = async (key: string) => (await redisCommand(port, "CONFIG", "GET", key)).split("\r\n")[4];
      assert.equal(await config("appendonly"), "yes");
      assert.equal(await config("appendfsync"), "everysec");
      assert.equal(await config("maxmemory-policy"), "noeviction");
      assert.equal(await config("bind"), "127.0.0.1 -::1");
      // A revocation-like write, then a crash (no shutdown save): the append-only file keeps it.
      assert.equal(await redisCommand(port, "SET", "coder1:test:revoked", "1"), "+OK\r\n");
      server.kill("SIGKILL");
      await server.status;
      server = start();
      await ready();
      assert.equal(await redisCommand(port, "GET", "coder1:test:revoked"), "$1\r\n1\r\n");
    } finally {
      server.kill("SIGTERM");
      await server.status;
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** The Dockerfile's instructions (continuation lines joined). */
function dockerInstructions(text: string): { op: string; arg: string }[] {
  return text.replace(/\\\n\s*/g, " ").split("\n")
    .filter((l) => l.trim() && !l.trim().startsWith("#"))
    .map((l) => {
      const [op, ...rest] = l.trim().split(/\s+/);
      return { op: op.toUpperCase(), arg: rest.join(" ") };
    });
}

Deno.test("Dockerfile: the relay's exact permission flags, an unprivileged user, and a command line that runs", async () => {
  const steps = dockerInstructions(await Deno.readTextFile(DOCKERFILE));
  const one = (op: string) => {
    const found = steps.filter((s) => s.op === op);
    assert.equal(found.length, 1, `one ${op}`);
    return found[0].arg;
  };
  assert.equal(one("FROM"), `denoland/deno:debian-${Deno.version.deno}`, "the Deno version the project pins");
  assert.equal(one("USER"), "deno");
  assert.equal(one("VOLUME"), '["/data"]');
  const entrypoint = JSON.parse(one("ENTRYPOINT")) as string[];
  const cmd = JSON.parse(one("CMD")) as string[];
  const mainAt = entrypoint.indexOf("main.ts");
  assert.deepEqual(entrypoint.slice(0, 2), ["deno", "run"]);
  const denoFlags = entrypoint.slice(2, mainAt);
  const isPermission = (f: string) => /^(-A|--allow-|--deny-|--no-prompt$)/.test(f);
  assert.deepEqual(
    denoFlags.filter(isPermission),
    permissionFlags("relay", { read: ["/data"], write: ["/data"] }),
    "the Dockerfile's flags are cli/permissions.ts's relay flags for /data",
  );
  assert.deepEqual(denoFlags.filter((f) => !isPermission(f)), ["--cached-only"]);
  const relayArgs = [...entrypoint.slice(mainAt + 1), ...cmd];
  assert.deepEqual(relayArgs.slice(0, 2), ["relay", "serve"]);
  assert.equal(parseFlags(RELAY_SERVE, relayArgs.slice(2))["data-dir"], "/data");

  // Replay the build outside Docker: the COPY steps into an /app, then its RUN's `deno cache --frozen`.
  const dirs = await makeTestDirs();
  try {
    const app = `${dirs.root}/app`;
    const data = `${dirs.root}/data-volume`;
    await Deno.mkdir(app);
    await Deno.mkdir(data, { mode: 0o700 });
    for (const { arg } of steps.filter((s) => s.op === "COPY")) {
      const parts = arg.split(/\s+/);
      const dest = parts.pop()!;
      for (const src of parts) {
        const target = (dest.endsWith("/") && !src.endsWith("/") ? `${app}/${dest}${src}` : `${app}/${dest}`)
          .replace(/\/$/, "");
        await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
        const cp = await new Deno.Command("cp", { args: ["-r", `${ROOT}/${src}`.replace(/\/$/, ""), target] }).output();
        assert.equal(cp.code, 0, `COPY ${src} ${dest}`);
      }
    }
    const run = one("RUN");
    const cache = /deno cache [^&]+/.exec(run)![0].trim().split(/\s+/);
    const cached = await new Deno.Command(Deno.execPath(), {
      args: cache.slice(1),
      cwd: app,
      env: dirs.env,
      stdin: "null",
    }).output();
    assert.equal(cached.code, 0, new TextDecoder().decode(cached.stderr));

    // The ENTRYPOINT and CMD as the container runs them; /data is the test's volume, the port a free one.
    const port = freePort();
    const argv = [...entrypoint, ...cmd].map((a) =>
      a.replaceAll("/data", data).replace(/^0\.0\.0\.0$/, "127.0.0.1").replace(/^8787$/, String(port))
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: argv.slice(1),
      cwd: app,
      env: dirs.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stdout = new OutputWatcher(child.stdout);
    const stderr = new OutputWatcher(child.stderr);
    const healthcheck = JSON.parse(/CMD (\[.*\])$/.exec(one("HEALTHCHECK"))![1]) as string[];
    const health = () =>
      new Deno.Command(Deno.execPath(), {
        args: healthcheck.slice(1).map((a) => a === "8787" ? String(port) : a),
        cwd: app,
        env: dirs.env,
        stdin: "null",
        stderr: "null",
      }).output();
    try {
      await listening(stdout, child.status, stderr);
      assert.equal((await health()).code, 0, "HEALTHCHECK passes while the relay runs");
      assert.ok((await Deno.stat(`${data}/jwt-ed25519.jwk`)).isFile);
      assert.ok((await Deno.stat(`${data}/telemetry.sqlite`)).isFile);
    } finally {
      child.kill("SIGTERM");
      assert.equal((await child.status).code, 0, stderr.text);
      await Promise.all([stdout.done, stderr.done]);
    }
    assert.equal((await health()).code, 1, "and fails once it is gone");
  } finally {
    await dirs.cleanup();
  }
});

Deno.test("release workflow: five targets with deno task compile, the tag checked, SHA256SUMS, artifacts", async () => {
  const text = await Deno.readTextFile(`${ROOT}/.github/workflows/release.yml`);
  assert.equal(TARGETS.length, 5);
  assert.match(text, /^\s+run: \.ci\/run$/m, "the full suite runs first");
  assert.match(text, /deno task compile --all --out-dir dist/);
  assert.match(text, new RegExp(`deno-version: v${Deno.version.deno.replaceAll(".", "\\.")}`));
  assert.match(text, /SOURCE_DATE_EPOCH=/);
  assert.match(text, /sha256sum coder1-\* > SHA256SUMS/);
  assert.match(text, /sha256sum --check SHA256SUMS/);
  assert.match(text, /actions\/upload-artifact@v4/);
  assert.match(text, /--version \| grep -F "commit \$\{GITHUB_SHA\}"/);
  assert.match(text, /test "v\$\{version\}" = "\$\{GITHUB_REF_NAME\}"/);
  assert.match(text, /tags: \["v\*"\]/);
  // No tabs (YAML) and every job has a timeout or only publishes.
  assert.ok(!text.includes("\t"));
});
