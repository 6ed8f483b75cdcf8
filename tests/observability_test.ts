/**
 * What operators watch: /healthz, /readyz and /metrics (Prometheus text, no
 * per-user labels, optional bearer token) counted over a real pairing and
 * command flow; logs in text or JSON with event names and ids only (the
 * redaction is checked on a real relay process); `coder1 --version` with
 * commit and build date, from source and as tools/compile.ts embeds them.
 */
import assert from "node:assert/strict";
import { ManualClock } from "../shared/clock.ts";
import { decodeFrame } from "../shared/frame_codec.ts";
import { CloseCode, CODE_TTL_MS, FrameType } from "../shared/protocol.ts";
import { VERSION } from "../shared/version.ts";
import { createHttpHandler, type HttpApiDeps } from "../relay/http_api.ts";
import { createLogger } from "../relay/logger.ts";
import { startRelay } from "../relay/relay.ts";
import { buildInfoSource } from "../tools/compile.ts";
import { parseExposition } from "./prometheus_text.ts";
import {
  approveBridge,
  bridgeSocket,
  type Coder1Process,
  ideClient,
  makeTestDirs,
  RawSocket,
  ROOT,
  runCollect,
  spawnCoder1,
  startBridgeProcess,
  startRelayProcess,
} from "./helpers.ts";

async function metricsOf(url: string, headers: HeadersInit = {}): Promise<Map<string, number>> {
  const res = await fetch(`${url}/metrics`, { headers });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  return parseExposition(await res.text());
}

async function newSession(url: string): Promise<string> {
  const res = await fetch(`${url}/api/sessions`, { method: "POST" });
  await res.body?.cancel();
  return res.headers.getSetCookie()[0].split(";")[0];
}

/** A new code for the session each time (`replace`: a live one is retired, and counted against the budget). */
async function newCode(url: string, cookie: string): Promise<Response> {
  return await fetch(`${url}/api/pairing-codes`, {
    method: "POST",
    headers: { cookie, "content-type": "application/json" },
    body: JSON.stringify({ replace: true }),
  });
}

Deno.test("/healthz, /readyz and /metrics count a real pairing and command flow, with no per-user labels", async () => {
  const dirs = await makeTestDirs();
  const clock = new ManualClock(Date.now());
  const relay = await startRelay({
    port: 0,
    dataDir: `${dirs.root}/relay`,
    clock,
    log: createLogger({ level: "silent" }),
  });
  let bridge: Coder1Process | undefined;
  const ide = ideClient(relay.url);
  try {
    const health = await fetch(`${relay.url}/healthz`);
    assert.deepEqual([health.status, await health.json()], [200, { status: "ok", version: VERSION }]);
    const ready = await fetch(`${relay.url}/readyz`);
    assert.deepEqual([ready.status, await ready.json()], [200, { status: "ready", version: VERSION }]);
    const zero = await metricsOf(relay.url);
    assert.equal(zero.get(`coder1_pairing_codes_total{event="issued"}`), 0);

    // A code that nobody uses runs out (injected clock).
    const idle = await newSession(relay.url);
    await (await newCode(relay.url, idle)).body?.cancel();
    clock.advance(CODE_TTL_MS + 1_000);
    assert.equal((await metricsOf(relay.url)).get(`coder1_pairing_codes_total{event="expired"}`), 1);

    // Five codes a minute per session: the sixth is refused.
    const greedy = await newSession(relay.url);
    for (let i = 0; i < 6; i++) await (await newCode(relay.url, greedy)).body?.cancel();

    // A wrong code is rejected.
    const guesser = bridgeSocket(relay.url, { code: "000000", version: "0.3.0" });
    assert.equal((await guesser.closed).code, 401);

    // The real thing: a bridge process pairs and runs two commands.
    await ide.createSession();
    const { code } = await ide.requestPairingCode();
    await ide.connect();
    bridge = startBridgeProcess(dirs, relay.url, { code });
    await approveBridge(ide, bridge);
    const bridgeId = ide.bridge!.bridgeId!;
    assert.equal((await runCollect(ide, "echo one")).stdout, "one\n");
    assert.equal((await runCollect(ide, "echo two; exit 4")).code, 4);

    const text = await (await fetch(`${relay.url}/metrics`)).text();
    const m = parseExposition(text);
    const expected: Record<string, number> = {
      "coder1_bridges_connected": 1,
      "coder1_ide_sockets_connected": 1,
      'coder1_pairing_codes_total{event="issued"}': 1 + 5 + 1,
      'coder1_pairing_codes_total{event="redeemed"}': 1,
      'coder1_pairing_codes_total{event="expired"}': 1,
      'coder1_pairing_codes_total{event="rejected"}': 1,
      'coder1_rate_limited_total{limit="code_issue"}': 1,
      "coder1_commands_started_total": 2,
      'coder1_commands_ended_total{how="exit"}': 2,
      'coder1_upgrades_refused_total{role="bridge",status="401"}': 1,
    };
    for (const [k, v] of Object.entries(expected)) assert.equal(m.get(k), v, `${k}\n${text}`);
    for (const direction of ["ide_to_bridge", "bridge_to_ide"]) {
      const frames = m.get(`coder1_frames_relayed_total{direction="${direction}"}`)!;
      const bytes = m.get(`coder1_bytes_relayed_total{direction="${direction}"}`)!;
      assert.ok(frames >= 4 && bytes > frames * 20, `${direction}: ${frames} frames, ${bytes} bytes`);
    }
    // Nothing in the exposition names a user, a session, a bridge or an address.
    for (const secret of [bridgeId, code, idle.split("=")[1], greedy.split("=")[1], "127.0.0.1"]) {
      assert.ok(!text.includes(secret), `metrics mention ${secret}`);
    }
    const labelNames = new Set([...m.keys()].flatMap((k) => [...k.matchAll(/(\w+)="/g)].map((x) => x[1])));
    assert.deepEqual([...labelNames].sort(), [
      "direction",
      "event",
      "how",
      "limit",
      "outcome",
      "reason",
      "role",
      "status",
      "version",
      "why",
    ]);
  } finally {
    ide.close();
    await bridge?.stop();
    await relay.shutdown();
    await dirs.cleanup();
  }
});

Deno.test("/metrics counts heartbeat timeouts and closes by reason", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "coder1-obs-" });
  const relay = await startRelay({
    port: 0,
    dataDir,
    log: createLogger({ level: "silent" }),
    timings: { heartbeatIntervalMs: 50, heartbeatTimeoutMs: 300 },
  });
  try {
    const cookie = await newSession(relay.url);
    const silent = new RawSocket(`${relay.url.replace("http", "ws")}/ws/ide`, { cookie, origin: relay.url });
    await silent.opened;
    assert.equal(decodeFrame(await silent.next()).t, FrameType.BridgeStatus);
    // It never answers a ping.
    assert.equal((await silent.closed).code, CloseCode.HeartbeatTimeout);
    const deadline = Date.now() + 5_000;
    let m = await metricsOf(relay.url);
    while (m.get(`coder1_socket_closes_total{role="ide",reason="heartbeat_timeout"}`) !== 1) {
      assert.ok(Date.now() < deadline, "close not counted");
      await new Promise((r) => setTimeout(r, 20));
      m = await metricsOf(relay.url);
    }
    assert.equal(m.get("coder1_heartbeat_timeouts_total"), 1);
    assert.equal(m.get("coder1_ide_sockets_connected"), 0);
  } finally {
    await relay.shutdown();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("/metrics takes a bearer token (--metrics-token, --metrics-token-file); /healthz and /readyz stay open", async () => {
  const dirs = await makeTestDirs();
  const token = "metrics-" + crypto.randomUUID();
  await Deno.writeTextFile(`${dirs.root}/token`, `${token}\n`);
  for (const args of [["--metrics-token", token], ["--metrics-token-file", `${dirs.root}/token`]]) {
    const relay = await startRelayProcess(dirs, args);
    try {
      const none = await fetch(`${relay.url}/metrics`);
      assert.equal(none.status, 401);
      assert.equal((await none.json()).error, "unauthorized");
      const wrong = await fetch(`${relay.url}/metrics`, { headers: { authorization: `Bearer ${token}x` } });
      assert.equal(wrong.status, 401);
      await wrong.body?.cancel();
      await metricsOf(relay.url, { authorization: `Bearer ${token}` });
      for (const path of ["/healthz", "/readyz"]) {
        const res = await fetch(`${relay.url}${path}`);
        assert.equal(res.status, 200, path);
        await res.body?.cancel();
      }
    } finally {
      await relay.stop();
    }
  }
  const both = spawnCoder1(
    ["relay", "serve", "--metrics-token", token, "--metrics-token-file", `${dirs.root}/token`],
    { env: dirs.env },
  );
  assert.equal((await both.status).code, 2);
  assert.match(both.stderr.text, /exclude each other/);
  const short = spawnCoder1(["relay", "serve", "--metrics-token", "short"], { env: dirs.env });
  assert.equal((await short.status).code, 2);
  await dirs.cleanup();
});

Deno.test("/readyz answers 503 once the relay stops accepting", async () => {
  let ready = true;
  const handler = createHttpHandler({ ready: () => ready, allowedOrigins: new Set() } as unknown as HttpApiDeps);
  const info = { remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 } } as Deno.ServeHandlerInfo;
  assert.equal((await handler(new Request("http://relay/readyz"), info)).status, 200);
  ready = false;
  const stopping = await handler(new Request("http://relay/readyz"), info);
  assert.deepEqual([stopping.status, await stopping.json()], [503, { status: "stopping" }]);
  // Without metrics wired in, /metrics does not exist.
  assert.equal((await handler(new Request("http://relay/metrics"), info)).status, 404);
});

Deno.test("logs: JSON or text lines with event names and ids; no codes, tokens, cookies or content", async () => {
  const dirs = await makeTestDirs();
  const marker = `obs-${crypto.randomUUID()}`;
  for (const format of ["json", "text"] as const) {
    const proc = spawnCoder1(
      ["relay", "serve", "--port", "0", "--log-format", format, "--log-level", "info"],
      { env: dirs.env },
    );
    const url = (await proc.stdout.waitFor(/listening on (\S+)/))[1];
    const ide = ideClient(url);
    let bridge: Coder1Process | undefined;
    const secrets: string[] = [marker];
    try {
      await ide.createSession();
      const { code } = await ide.requestPairingCode();
      secrets.push(code);
      await ide.connect();
      bridge = startBridgeProcess(dirs, url, { code, args: ["--pair"] });
      await approveBridge(ide, bridge);
      assert.equal((await runCollect(ide, `echo ${marker}`)).stdout, `${marker}\n`);
      // A wrong code and a revocation: more events.
      await bridgeSocket(url, { code: "000001", version: "0.3.0" }).closed;
      await ide.revokeBridge();
      await bridge.status;
      const credentials = await Deno.readTextFile(`${dirs.env.XDG_CONFIG_HOME}/coder1/credentials.json`).catch(() =>
        ""
      );
      for (const t of credentials.matchAll(/"token":\s*"([^"]+)"/g)) secrets.push(t[1]);
    } finally {
      ide.close();
      await bridge?.stop();
      assert.equal((await proc.stop()).code, 0);
    }
    const lines = proc.stderr.text.trim().split("\n");
    const events = new Set<string>();
    for (const line of lines) {
      if (format === "json") {
        const entry = JSON.parse(line);
        assert.match(entry.time, /^\d{4}-\d\d-\d\dT/);
        assert.ok(["info", "warn", "error"].includes(entry.level), line);
        events.add(entry.event);
      } else {
        const m = /^\d{4}-\d\d-\d\dT\S+Z (INFO|WARN|ERROR) ([a-z][a-z.]*)( \w+=\S+)*$/.exec(line);
        assert.ok(m, `not a log line: ${line}`);
        events.add(m[2]);
      }
    }
    for (const e of ["session.create", "code.issue", "ide.open", "bridge.paired", "bridge.connect", "bridge.revoke"]) {
      assert.ok(events.has(e), `${format}: no ${e} in\n${proc.stderr.text}`);
    }
    for (const secret of secrets) assert.ok(!proc.stderr.text.includes(secret), `${format} log holds ${secret}`);
    assert.ok(!/coder1_session=|eyJ/.test(proc.stderr.text), "no cookie or JWT in the log");
  }
  await dirs.cleanup();
});

Deno.test("the logger redacts what a careless caller passes", () => {
  const lines: string[] = [];
  const log = createLogger({ format: "json", write: (l) => lines.push(l), now: () => 0 });
  log.error("oops", {
    code: "482913",
    pairingCode: "482913",
    token: "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln",
    sessionCookie: "abc",
    reason: "code 482913 or SAS 123 456 with eyJa.eyJb.c and " + "A1b2".repeat(12),
    error: `Error: cannot open "/home/ada/secret.txt" for 482913`,
    closeCode: 4401,
    bridgeId: "1f0c9a2e-1234-4abc-8def-0123456789ab",
  });
  const entry = JSON.parse(lines[0]);
  assert.deepEqual(entry, {
    time: "1970-01-01T00:00:00.000Z",
    level: "error",
    event: "oops",
    code: "<redacted>",
    pairingCode: "<redacted>",
    token: "<redacted>",
    sessionCookie: "<redacted>",
    reason: "code <digits> or SAS <digits> with <token> and <token>",
    error: "Error: cannot open <str> for <num>",
    closeCode: 4401,
    bridgeId: "1f0c9a2e-1234-4abc-8def-0123456789ab",
  });
  const quiet: string[] = [];
  createLogger({ level: "warn", write: (l) => quiet.push(l) }).info("relay.start", {});
  assert.deepEqual(quiet, []);
});

Deno.test("coder1 --version: version, commit and build date; from source git or dev; embedded by tools/compile.ts", async () => {
  const run = async (args: string[], cwd = ROOT) => {
    const out = await new Deno.Command(Deno.execPath(), { args, cwd, stdin: "null" }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    return new TextDecoder().decode(out.stdout).trim();
  };
  // The cli role has no permissions at all: no git, so "dev".
  assert.equal(
    await run(["run", "--no-prompt", `${ROOT}/main.ts`, "--version"]),
    `coder1 ${VERSION} (commit dev, built dev)`,
  );
  // From source with git allowed: the checkout's commit.
  const git = await new Deno.Command("git", { args: ["rev-parse", "HEAD"], cwd: ROOT, stdout: "piped", stderr: "null" })
    .output().catch(() => undefined);
  if (git?.success) {
    const head = new TextDecoder().decode(git.stdout).trim();
    assert.equal(
      await run(["run", "--allow-run=git", "--allow-read", "--no-prompt", `${ROOT}/main.ts`, "--version"]),
      `coder1 ${VERSION} (commit ${head}, built dev)`,
    );
  }
  // What a release binary carries: main.ts with the build_info module tools/compile.ts writes.
  // (deno compile itself needs denort from the internet; the module it bakes in is the same.)
  const tree = await Deno.makeTempDir({ prefix: "coder1-version-" });
  try {
    for (const dir of ["cli", "shared"]) {
      await Deno.mkdir(`${tree}/${dir}`);
      for await (const f of Deno.readDir(`${ROOT}/${dir}`)) {
        if (f.isFile && f.name.endsWith(".ts")) {
          await Deno.copyFile(`${ROOT}/${dir}/${f.name}`, `${tree}/${dir}/${f.name}`);
        }
      }
    }
    await Deno.copyFile(`${ROOT}/main.ts`, `${tree}/main.ts`);
    const info = { commit: "0123456789abcdef0123456789abcdef01234567", date: "2030-01-02T03:04:05Z" };
    await Deno.writeTextFile(`${tree}/cli/build_info.ts`, buildInfoSource(info));
    assert.equal(
      await run(["run", "--no-prompt", "--no-config", `${tree}/main.ts`, "--version"], tree),
      `coder1 ${VERSION} (commit ${info.commit}, built ${info.date})`,
    );
  } finally {
    await Deno.remove(tree, { recursive: true });
  }
  // VERSION is deno.json's version.
  assert.equal(JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`)).version, VERSION);
});
