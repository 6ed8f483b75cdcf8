import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { ManualClock } from "../shared/clock.ts";
import {
  readTelemetry,
  TELEMETRY_FILE,
  TELEMETRY_RETENTION_MS,
  TELEMETRY_ROWS_PER_BRIDGE_PER_DAY,
  TelemetryStore,
  utcDay,
} from "./telemetry.ts";

const DAY = 24 * 60 * 60_000;
const T0 = Date.UTC(2030, 0, 10, 12, 0, 0);

async function withStore(fn: (store: TelemetryStore, clock: ManualClock, dir: string) => Promise<void> | void) {
  const dir = await Deno.makeTempDir({ prefix: "coder1-telemetry-" });
  const clock = new ManualClock(T0);
  const store = new TelemetryStore(dir, { clock });
  try {
    await fn(store, clock, dir);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("telemetry keeps connection events, daily command counts per bridge and crash reports", async () => {
  await withStore((store, clock) => {
    store.connection("bridge-a", "0.3.0", "connect");
    store.commandStarted("bridge-a");
    store.commandStarted("bridge-a");
    store.commandEnded("bridge-a");
    store.commandStarted("bridge-b");
    clock.advance(DAY);
    store.commandStarted("bridge-a");
    store.connection("bridge-a", "0.3.0", "disconnect");
    store.crash({ errorClass: "TypeError", message: "boom", version: "0.3.0", os: "linux" });
    store.flush();
    // A second flush adds to the same day's counts.
    store.commandEnded("bridge-a");
    store.flush();

    const dump = readTelemetry(store.file);
    assert.equal(dump.retentionDays, 30);
    assert.deepEqual(dump.connections, [
      { at: new Date(T0).toISOString(), bridgeId: "bridge-a", bridgeVersion: "0.3.0", event: "connect" },
      { at: new Date(T0 + DAY).toISOString(), bridgeId: "bridge-a", bridgeVersion: "0.3.0", event: "disconnect" },
    ]);
    assert.deepEqual(dump.commandCounts, [
      { day: "2030-01-10", bridgeId: "bridge-a", started: 2, ended: 1 },
      { day: "2030-01-10", bridgeId: "bridge-b", started: 1, ended: 0 },
      { day: "2030-01-11", bridgeId: "bridge-a", started: 1, ended: 1 },
    ]);
    assert.deepEqual(dump.crashes, [{
      at: new Date(T0 + DAY).toISOString(),
      errorClass: "TypeError",
      message: "boom",
      stack: null,
      version: "0.3.0",
      os: "linux",
    }]);
    assert.equal(readTelemetry(store.file, { since: T0 + DAY }).connections.length, 1);
    assert.equal(readTelemetry(store.file, { since: T0 + DAY }).commandCounts.length, 1);
  });
});

Deno.test("telemetry scrubs crash reports again before keeping them", async () => {
  await withStore((store) => {
    store.crash({
      errorClass: "Error",
      message: `open "/home/zeppelin/x" token eyJa.eyJb.c code 482913`,
      stack: "Error\n    at f (file:///home/zeppelin/main.ts:1:2)",
      version: "0.3.0",
      os: "linux",
    });
    // Not even the wrong shape gets in.
    store.crash({ errorClass: 5, message: "zeppelin" } as never);
    store.close();
    const bytes = new TextDecoder("latin1").decode(Deno.readFileSync(store.file));
    assert.ok(!bytes.includes("zeppelin") && !bytes.includes("482913") && !bytes.includes("eyJa"));
    const [crash] = readTelemetry(store.file).crashes;
    assert.equal(crash.message, "open <str> token <token> code <num>");
    assert.equal(crash.stack, "Error\n    at f (<path>:1:2)");
  });
});

Deno.test("telemetry file is private (0600) and holds exactly the three tables", async () => {
  await withStore((store, _clock, dir) => {
    assert.equal(store.file, `${dir}/${TELEMETRY_FILE}`);
    if (Deno.build.os !== "windows") assert.equal(Deno.statSync(store.file).mode! & 0o777, 0o600);
    const db = new DatabaseSync(store.file, { readOnly: true });
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all()
      .map((r) => (r as { name: string }).name);
    db.close();
    assert.deepEqual(tables, ["command_counts", "connection_events", "crash_reports"]);
  });
});

Deno.test("telemetry prunes rows past 30 days, at a call and on its schedule", async () => {
  await withStore(async (store, clock) => {
    store.connection("old", "0.1.0", "connect");
    store.commandStarted("old");
    store.crash({ errorClass: "Error", message: "old", version: "0.1.0", os: "linux" });
    store.flush();
    clock.advance(TELEMETRY_RETENTION_MS - DAY);
    store.connection("new", "0.3.0", "connect");
    store.commandStarted("new");
    store.flush();
    assert.equal(store.prune(), 0, "nothing is 30 days old yet");

    clock.advance(2 * DAY);
    // On the schedule: a short interval with the injected clock.
    store.start({ pruneIntervalMs: 10, flushIntervalMs: 60_000 });
    const deadline = Date.now() + 5_000;
    while (readTelemetry(store.file).connections.some((c) => c.bridgeId === "old")) {
      assert.ok(Date.now() < deadline, "scheduled prune did not run");
      await new Promise((r) => setTimeout(r, 10));
    }
    const dump = readTelemetry(store.file);
    assert.deepEqual(dump.connections.map((c) => c.bridgeId), ["new"]);
    assert.deepEqual(dump.commandCounts.map((c) => c.bridgeId), ["new"]);
    assert.deepEqual(dump.crashes, []);
    assert.equal(utcDay(T0), "2030-01-10");
  });
});

Deno.test("telemetry caps: rows per bridge per UTC day, and the file's size (then counts go on, rows wait)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "coder1-telemetry-" });
  const clock = new ManualClock(T0);
  const caps: string[] = [];
  const store = new TelemetryStore(dir, {
    clock,
    onCap: (cap, bridgeId) => caps.push(`${cap}${bridgeId ? ` ${bridgeId}` : ""}`),
    maxFileBytes: 256 * 1024,
  });
  try {
    const report = { errorClass: "Error", message: "m".repeat(1000), version: "1", os: "linux" };
    for (let i = 0; i < TELEMETRY_ROWS_PER_BRIDGE_PER_DAY + 100; i++) {
      store.connection("bridge-a", "1", "connect");
      store.crash(report, "bridge-a");
    }
    store.flush();
    let dump = readTelemetry(store.file);
    assert.equal(dump.connections.length + dump.crashes.length, TELEMETRY_ROWS_PER_BRIDGE_PER_DAY);
    assert.deepEqual(caps, ["bridge-day bridge-a"], "the cap is logged once");
    // That one batch crossed the file cap: from now on rows are dropped, so the file stops growing.
    const full = Deno.statSync(store.file).size;
    assert.ok(full > 256 * 1024);
    clock.advance(DAY);
    for (let b = 0; b < 40; b++) {
      for (let i = 0; i < 20; i++) store.crash(report, `bridge-${b}`);
      store.flush();
    }
    store.commandStarted("bridge-z");
    store.flush();
    const size = Deno.statSync(store.file).size;
    assert.ok(size <= full + 4096, `file ${size} bytes after the cap, ${full} at it`);
    assert.ok(caps.includes("file-size"));
    dump = readTelemetry(store.file);
    assert.equal(dump.commandCounts.find((c) => c.bridgeId === "bridge-z")?.started, 1, "counts go on at the cap");
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
