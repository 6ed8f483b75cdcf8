/**
 * Telemetry exactly as promised, proven with real processes: a relay, a
 * bridge that crashed in an earlier run (a real process whose uncaught error
 * the bridge's crash recorder caught), an IDE running commands whose text,
 * output, working directory and environment carry a unique marker, and a
 * hostile bridge that sends an unscrubbed crash report. Afterwards every byte
 * of the relay's data dir, its SQLite file, its logs and /metrics is searched
 * for the marker, the pairing code and the bridge's token: none may be there.
 * `coder1 relay telemetry` shows what is kept. The same run with telemetry off
 * on the bridge keeps no rows about it; with telemetry off on the relay there
 * is no telemetry file at all. Retention: rows older than 30 days go at start
 * (injected clock).
 */
import assert from "node:assert/strict";
import { permissionFlags, roleFor } from "../cli/permissions.ts";
import { decodeFrame, encodeFrame, parseJsonObject } from "../shared/frame_codec.ts";
import { ManualClock } from "../shared/clock.ts";
import { telemetryEnabled } from "../shared/telemetry_setting.ts";
import { createLogger } from "../relay/logger.ts";
import { startRelay } from "../relay/relay.ts";
import { readTelemetry, TELEMETRY_FILE, TELEMETRY_RETENTION_MS, TelemetryStore } from "../relay/telemetry.ts";
import {
  approveBridge,
  bridgeSocket,
  type Coder1Process,
  ideClient,
  makeTestDirs,
  ROOT,
  runCollect,
  spawnCoder1,
  startBridgeProcess,
  type TestDirs,
} from "./helpers.ts";

/** A marker of lowercase letters only, so nothing but its context (path, quote, env) can hide it. */
function marker(): string {
  const letters = "abcdefghijklmnopqrstuvwxyz";
  return "zebra" + Array.from(crypto.getRandomValues(new Uint8Array(10)), (b) => letters[b % 26]).join("");
}

/** Every file below `dir`, recursively. */
async function filesBelow(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) out.push(...await filesBelow(path));
    else if (entry.isFile) out.push(path);
  }
  return out;
}

/** Counts the occurrences of each needle in the bytes (any encoding the needle has as ASCII). */
function occurrences(haystack: Uint8Array, needle: string): number {
  const text = new TextDecoder("latin1").decode(haystack);
  return text.split(needle).length - 1;
}

/** Runs `coder1 relay telemetry --json` on a data dir. */
async function telemetryJson(dirs: TestDirs, dataDir: string) {
  const p = spawnCoder1(["relay", "telemetry", "--json", "--data-dir", dataDir], { env: dirs.env });
  const status = await p.status;
  assert.equal(status.code, 0, p.stderr.text);
  return JSON.parse(p.stdout.text);
}

/** Makes a real process crash under the bridge's flags with the bridge's recorder installed. */
async function crashBridgeProcess(dirs: TestDirs, configDir: string, message: string): Promise<void> {
  const flags = permissionFlags("bridge", { read: [configDir], write: [configDir] });
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, `${ROOT}/tests/fixtures/crash_fixture.ts`, configDir, message],
    env: dirs.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 1, "the fixture dies of its uncaught error");
  assert.match(new TextDecoder().decode(out.stderr), /BridgeCrash/);
}

/** Starts `coder1 relay serve` on a free port with this environment and these flags. */
async function startRelayWith(env: Record<string, string>, args: string[]) {
  const proc = spawnCoder1(["relay", "serve", "--port", "0", ...args], { env });
  const m = await Promise.race([
    proc.stdout.waitFor(/listening on (\S+)/),
    proc.status.then((s) => {
      throw new Error(`relay exited (${s.code}) before listening:\n${proc.stderr.text}`);
    }),
  ]);
  return { ...proc, url: m[1] };
}

interface RunOptions {
  relayTelemetry: boolean;
  bridgeTelemetry: boolean;
}

async function privacyRun(options: RunOptions) {
  const dirs = await makeTestDirs();
  const M = marker();
  const relayEnv: Record<string, string> = options.relayTelemetry ? {} : { CODER1_TELEMETRY: "false" };
  const bridgeEnv: Record<string, string> = {
    SECRET_ZEBRA: `${M}-env-value`,
    [`ZEBRA_${M.toUpperCase()}`]: "named-after-the-marker",
    ...(options.bridgeTelemetry ? {} : { CODER1_TELEMETRY: "false" }),
  };
  const work = `${dirs.root}/work-${M}`;
  await Deno.mkdir(`${work}/sub-${M}`, { recursive: true });
  await Deno.writeTextFile(`${work}/notes-${M}.txt`, `file content ${M}\n`);
  const dataDir = `${dirs.env.XDG_DATA_HOME}/coder1`;
  const configDir = `${dirs.env.XDG_CONFIG_HOME}/coder1`;
  await Deno.mkdir(configDir, { recursive: true, mode: 0o700 });

  // An earlier bridge run crashed; its message names paths, quotes, a token and a code with the marker.
  const jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ6In0.c2lnbmF0dXJl";
  await crashBridgeProcess(
    dirs,
    configDir,
    `cannot read "${work}/notes-${M}.txt" in ${work}/sub-${M} (SECRET_ZEBRA=${M}) token ${jwt} code 482913 ` +
      `'${M} quoted' ${dirs.env.HOME}/.config/${M} ~/${M}/x file://${work}/${M}.ts https://${M}.example/x`,
  );
  const crashFile = `${configDir}/crash-report.json`;
  const recorded = await Deno.readTextFile(crashFile);
  assert.ok(!recorded.includes(M), `the bridge stores its crash report scrubbed: ${recorded}`);
  assert.match(recorded, /BridgeCrash/);

  const relay = await startRelayWith({ ...dirs.env, ...relayEnv }, ["--log-level", "info", "--log-format", "json"]);
  let bridge: Coder1Process | undefined;
  const ide = ideClient(relay.url);
  const secrets: string[] = [M];
  try {
    await ide.createSession();
    const { code } = await ide.requestPairingCode();
    secrets.push(code);
    await ide.connect();
    bridge = startBridgeProcess(dirs, relay.url, { code, cwd: work, env: bridgeEnv });
    await approveBridge(ide, bridge);
    const bridgeId = ide.bridge!.bridgeId!;
    assert.match(
      bridge.stdout.text,
      options.bridgeTelemetry ? /Telemetry: on .*CODER1_TELEMETRY=false/ : /Telemetry: off \(CODER1_TELEMETRY=false\)/,
    );

    // Commands, output, paths and environment full of the marker (checked to flow, then searched for).
    const r1 = await runCollect(ide, `echo ${M}-out; echo ${M}-err >&2; printenv SECRET_ZEBRA; pwd`);
    assert.equal(r1.stdout, `${M}-out\n${M}-env-value\n${work}\n`);
    assert.equal(r1.stderr, `${M}-err\n`);
    const r2 = await runCollect(ide, `cat notes-${M}.txt; ls`, { cwd: `sub-${M}/..` });
    assert.match(r2.stdout, new RegExp(`file content ${M}`));
    const stdin = ide.run("cat", {});
    const out: Uint8Array[] = [];
    const cat = ide.run(`tr a-z A-Z`, { onStdout: (b) => out.push(b) });
    cat.write(`${M}-stdin\n`);
    cat.closeStdin();
    await cat.exited;
    assert.equal(new TextDecoder().decode(out[0]), `${M.toUpperCase()}-STDIN\n`);
    stdin.closeStdin();
    await stdin.exited;
    const r3 = await runCollect(ide, `exit 3 # ${M}`);
    assert.equal(r3.code, 3);
    const commands = 5;

    // A hostile bridge (paired with a second session's code) sends an unscrubbed crash report.
    const ide2 = ideClient(relay.url);
    await ide2.createSession();
    const { code: code2 } = await ide2.requestPairingCode();
    secrets.push(code2);
    const raw = bridgeSocket(relay.url, {
      code: code2,
      version: "0.3.0",
      ...(options.bridgeTelemetry ? {} : { telemetry: false }),
    });
    await raw.opened;
    const ok = parseJsonObject(decodeFrame(await raw.next()).body, "auth.ok");
    secrets.push(String(ok.token));
    assert.equal(ok.crashReports, options.relayTelemetry && options.bridgeTelemetry ? true : undefined);
    raw.send(encodeFrame({
      t: "crash",
      body: {
        errorClass: "TypeError",
        message: `open "/home/${M}/secret" and /Users/${M}/x and C:\\Users\\${M}\\y code 654321 ${jwt}`,
        stack: `TypeError: boom\n    at run (file:///home/${M}/coder1/main.ts:1:2)\n    at '${M}'`,
        version: "0.3.0",
        os: "linux",
      },
    }));
    // Wait until the relay has handled the crash frames (the bridge's own, sent right after its
    // auth.ok when offered, and the hostile one): stored with telemetry on, dropped otherwise.
    const both = options.relayTelemetry && options.bridgeTelemetry;
    const crashCount = (text: string, outcome: string) =>
      Number(new RegExp(`coder1_crash_reports_total\\{outcome="${outcome}"\\} (\\d+)`).exec(text)?.[1]);
    const deadline = Date.now() + 10_000;
    let metrics = "";
    for (;;) {
      metrics = await (await fetch(`${relay.url}/metrics`)).text();
      if (crashCount(metrics, "stored") + crashCount(metrics, "dropped") >= (both ? 2 : 1)) break;
      assert.ok(Date.now() < deadline, `crash frames not handled:\n${metrics}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(crashCount(metrics, "stored"), both ? 2 : 0);
    assert.equal(crashCount(metrics, "dropped"), both ? 0 : 1);
    raw.close();
    ide2.close();

    // The bridge's pending report was sent and deleted (telemetry on), or deleted unsent (off on either side).
    await bridge.stop();
    bridge = undefined;
    ide.close();
    const relayStatus = await relay.stop();
    assert.equal(relayStatus.code, 0, relay.stderr.text);
    const credentials = await Deno.readTextFile(`${configDir}/credentials.json`).catch(() => "");
    const token = /"token":\s*"([^"]+)"/.exec(credentials)?.[1];
    if (token) secrets.push(token);
    if (options.bridgeTelemetry && options.relayTelemetry) {
      await assert.rejects(Deno.stat(crashFile), Deno.errors.NotFound);
    }
    if (!options.bridgeTelemetry) await assert.rejects(Deno.stat(crashFile), Deno.errors.NotFound);

    // Every byte of the data dir (SQLite file included), the relay's logs and /metrics.
    const places: [string, Uint8Array][] = [];
    for (const file of await filesBelow(dataDir)) places.push([file, await Deno.readFile(file)]);
    places.push(["relay stdout", new TextEncoder().encode(relay.stdout.text)]);
    places.push(["relay stderr (logs)", new TextEncoder().encode(relay.stderr.text)]);
    places.push(["/metrics", new TextEncoder().encode(metrics)]);
    for (const [where, bytes] of places) {
      for (const secret of secrets) {
        assert.equal(occurrences(bytes, secret), 0, `${secret.slice(0, 12)}... found in ${where}`);
      }
    }
    // The logs are JSON lines with an event name each.
    for (const line of relay.stderr.text.trim().split("\n").filter(Boolean)) {
      const entry = JSON.parse(line);
      assert.equal(typeof entry.event, "string", line);
    }

    if (!options.relayTelemetry) {
      await assert.rejects(Deno.stat(`${dataDir}/${TELEMETRY_FILE}`), Deno.errors.NotFound);
      assert.deepEqual(await telemetryJson(dirs, dataDir), { file: `${dataDir}/${TELEMETRY_FILE}`, stored: false });
      return;
    }
    const dump = await telemetryJson(dirs, dataDir);
    if (!options.bridgeTelemetry) {
      assert.deepEqual([dump.connections, dump.commandCounts, dump.crashes], [[], [], []], JSON.stringify(dump));
      return;
    }
    const mine = dump.connections.filter((c: { bridgeId: string }) => c.bridgeId === bridgeId);
    assert.deepEqual(mine.map((c: { event: string }) => c.event), ["connect", "disconnect"]);
    assert.equal(mine[0].bridgeVersion.length > 0, true);
    const counts = dump.commandCounts.filter((c: { bridgeId: string }) => c.bridgeId === bridgeId);
    assert.equal(counts.length, 1);
    assert.equal(counts[0].started, commands);
    assert.equal(counts[0].ended, commands);
    assert.equal(dump.crashes.length, 2);
    const [fromBridge, fromHostile] = dump.crashes;
    assert.equal(fromBridge.errorClass, "BridgeCrash");
    assert.equal(fromBridge.os, Deno.build.os);
    assert.match(fromBridge.message, /^cannot read <str> in <path> \(<assignment>\) token <token> code <num> <str> /);
    assert.equal(fromHostile.errorClass, "TypeError");
    assert.equal(
      fromHostile.message,
      "open <str> and <path> and <path> code <num> <token>",
    );
    assert.equal(fromHostile.stack, "TypeError: boom\n    at run (<path>:1:2)\n    at <str>");
  } finally {
    ide.close();
    await bridge?.stop();
    await relay.stop();
    await dirs.cleanup();
  }
}

Deno.test("privacy: commands, output, paths and environment leave no trace in the data dir, SQLite, logs or /metrics", async () => {
  await privacyRun({ relayTelemetry: true, bridgeTelemetry: true });
});

Deno.test("privacy: CODER1_TELEMETRY=false on the bridge: the relay keeps no rows about it, no crash report is sent", async () => {
  await privacyRun({ relayTelemetry: true, bridgeTelemetry: false });
});

Deno.test("privacy: CODER1_TELEMETRY=false on the relay: no telemetry file at all", async () => {
  await privacyRun({ relayTelemetry: false, bridgeTelemetry: true });
});

Deno.test("retention: a relay starting 30 days later prunes old telemetry at start (injected clock)", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "coder1-retention-" });
  const start = Date.UTC(2030, 5, 1);
  try {
    const old = new TelemetryStore(dataDir, { clock: new ManualClock(start) });
    old.connection("old-bridge", "0.1.0", "connect");
    old.commandStarted("old-bridge");
    old.crash({ errorClass: "Error", message: "old", version: "0.1.0", os: "linux" });
    old.close();
    const recent = new TelemetryStore(dataDir, { clock: new ManualClock(start + TELEMETRY_RETENTION_MS - 60_000) });
    recent.connection("recent-bridge", "0.3.0", "connect");
    recent.close();
    assert.equal(readTelemetry(`${dataDir}/${TELEMETRY_FILE}`).connections.length, 2);

    const clock = new ManualClock(start + TELEMETRY_RETENTION_MS + 60_000);
    const relay = await startRelay({ port: 0, dataDir, clock, log: createLogger({ level: "silent" }) });
    try {
      const dump = readTelemetry(`${dataDir}/${TELEMETRY_FILE}`);
      assert.deepEqual(dump.connections.map((c) => c.bridgeId), ["recent-bridge"]);
      assert.deepEqual(dump.commandCounts, []);
      assert.deepEqual(dump.crashes, []);
    } finally {
      await relay.shutdown();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("`coder1 relay telemetry` prints what is stored as tables, and --since filters", async () => {
  const dirs = await makeTestDirs();
  try {
    const dataDir = `${dirs.root}/relay-data`;
    await Deno.mkdir(dataDir);
    const now = Date.now();
    const store = new TelemetryStore(dataDir, { clock: new ManualClock(now - 10 * 24 * 60 * 60_000) });
    store.connection("b-ten-days-ago", "0.2.0", "connect");
    store.close();
    const fresh = new TelemetryStore(dataDir, { clock: new ManualClock(now - 60_000) });
    fresh.connection("b-just-now", "0.3.0", "connect");
    fresh.commandStarted("b-just-now");
    fresh.crash({
      errorClass: "RangeError",
      message: "too far",
      stack: "RangeError: too far\n    at x",
      version: "0.3.0",
      os: "linux",
    });
    fresh.close();

    const all = spawnCoder1(["relay", "telemetry", "--data-dir", dataDir], { env: dirs.env });
    assert.equal((await all.status).code, 0, all.stderr.text);
    assert.match(all.stdout.text, /kept 30 days; showing everything stored/);
    assert.match(all.stdout.text, /Connection events: 2\n {2}TIME +BRIDGE +VERSION +EVENT\n/);
    assert.match(all.stdout.text, /b-ten-days-ago +0\.2\.0 +connect/);
    assert.match(
      all.stdout.text,
      /Command counts per bridge per day \(UTC\): 1\n {2}DAY +BRIDGE +STARTED +ENDED\n {2}\S+ +b-just-now +1 +0/,
    );
    assert.match(
      all.stdout.text,
      /Crash reports: 1\n .* RangeError +version 0\.3\.0 +linux\n +message: too far\n +\| RangeError: too far/,
    );

    const week = spawnCoder1(["relay", "telemetry", "--data-dir", dataDir, "--since", "7d", "--json"], {
      env: dirs.env,
    });
    assert.equal((await week.status).code, 0, week.stderr.text);
    const dump = JSON.parse(week.stdout.text);
    assert.deepEqual(dump.connections.map((c: { bridgeId: string }) => c.bridgeId), ["b-just-now"]);

    // It runs with read access to the data dir only (cli/permissions.ts).
    assert.deepEqual(roleFor(["relay", "telemetry", "--data-dir", dataDir], { env: (n) => dirs.env[n], cwd: "/" }), {
      role: "relay",
      scope: { read: [dataDir], write: [] },
    });

    const bad = spawnCoder1(["relay", "telemetry", "--since", "7 days"], { env: dirs.env });
    assert.equal((await bad.status).code, 2);
    assert.match(bad.stderr.text, /--since must be a number and m, h or d/);

    const none = spawnCoder1(["relay", "telemetry", "--data-dir", `${dirs.root}/nowhere`], { env: dirs.env });
    assert.equal((await none.status).code, 0, none.stderr.text);
    assert.match(none.stdout.text, /No telemetry file at .*nothing is stored/);
  } finally {
    await dirs.cleanup();
  }
});

Deno.test("CODER1_TELEMETRY: true/false and friends; anything else is a usage error on both roles", async () => {
  for (const v of [undefined, "", "true", "1", "yes", "ON"]) assert.equal(telemetryEnabled(v), true, String(v));
  for (const v of ["false", "0", "no", "Off", " FALSE "]) assert.equal(telemetryEnabled(v), false, v);
  assert.throws(() => telemetryEnabled("maybe"), /CODER1_TELEMETRY="maybe": use true or false/);
  const dirs = await makeTestDirs();
  try {
    for (const args of [["relay", "serve", "--port", "0"], ["bridge", "start", "--code", "123456", "--allow-root"]]) {
      const p = spawnCoder1(args, { env: { ...dirs.env, CODER1_TELEMETRY: "maybe" } });
      assert.equal((await p.status).code, 2, p.stderr.text);
      assert.match(p.stderr.text, /CODER1_TELEMETRY="maybe": use true or false/);
    }
  } finally {
    await dirs.cleanup();
  }
});
