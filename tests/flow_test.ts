/**
 * The full flow with real processes on real loopback sockets: a relay
 * process, a bridge process that reads its pairing code from stdin, and an
 * IDE client. Commands run in the user's shell.
 */
import assert from "node:assert/strict";
import {
  makeTestDirs,
  OutputWatcher,
  pairedSetup,
  ROOT,
  runCollect,
  startBridgeProcess,
  startRelayProcess,
  type TestDirs,
} from "./helpers.ts";
import type { IdeClient, IdeClientError } from "../shared/ide_client.ts";

async function withPair(
  bridgeArgs: string[],
  fn: (ide: IdeClient, dirs: TestDirs) => Promise<void>,
): Promise<void> {
  const dirs = await makeTestDirs();
  const relay = await startRelayProcess(dirs);
  const { ide, bridge } = await pairedSetup(dirs, relay.url, bridgeArgs);
  try {
    await fn(ide, dirs);
  } finally {
    ide.close();
    await bridge.stop();
    await relay.stop();
    await dirs.cleanup();
  }
}

Deno.test("commands end to end: output, stderr apart, exit codes, signals, stdin, Ctrl-C", async (t) => {
  await withPair([], async (ide) => {
    await t.step("echo hello", async () => {
      const r = await runCollect(ide, "echo hello");
      assert.deepEqual({ stdout: r.stdout, stderr: r.stderr, code: r.code, signal: r.signal }, {
        stdout: "hello\n",
        stderr: "",
        code: 0,
        signal: null,
      });
    });
    await t.step("stderr is kept apart from stdout", async () => {
      const r = await runCollect(ide, "echo out; echo err >&2; echo out2");
      assert.equal(r.stdout, "out\nout2\n");
      assert.equal(r.stderr, "err\n");
    });
    await t.step("non-zero exit code", async () => {
      assert.equal((await runCollect(ide, "exit 7")).code, 7);
    });
    await t.step("death by signal", async () => {
      const r = await runCollect(ide, "kill -TERM $$");
      assert.equal(r.code, null);
      assert.equal(r.signal, "SIGTERM");
    });
    await t.step("stdin", async () => {
      const out: Uint8Array[] = [];
      const cmd = ide.run("tr a-z A-Z", { onStdout: (b) => out.push(b) });
      cmd.write("hello ");
      cmd.write(new TextEncoder().encode("stdin\n"));
      cmd.closeStdin();
      const r = await cmd.exited;
      assert.equal(r.code, 0);
      assert.equal(
        new TextDecoder().decode(out[0]) + out.slice(1).map((b) => new TextDecoder().decode(b)).join(""),
        "HELLO STDIN\n",
      );
    });
    await t.step("Ctrl-C (SIGINT) stops a running command", async () => {
      const out: string[] = [];
      const cmd = ide.run("echo started; sleep 30", { onStdout: (b) => out.push(new TextDecoder().decode(b)) });
      // Wait until the command is surely running.
      while (!out.join("").includes("started")) await new Promise((r) => setTimeout(r, 10));
      const t0 = performance.now();
      cmd.signal("SIGINT");
      const r = await cmd.exited;
      assert.ok(performance.now() - t0 < 5_000);
      assert.ok(r.signal === "SIGINT" || r.code === 130, JSON.stringify(r));
    });
    await t.step("output streams as it arrives", async () => {
      const stamps: number[] = [];
      const t0 = performance.now();
      const cmd = ide.run("echo one; sleep 0.5; echo two", { onStdout: () => stamps.push(performance.now() - t0) });
      await cmd.exited;
      assert.equal(stamps.length, 2);
      assert.ok(stamps[0] < 400, `first chunk came at ${stamps[0]} ms, before the sleep ended`);
    });
    await t.step("cwd: a subdirectory works, escaping the bridge's directory does not", async () => {
      assert.equal((await runCollect(ide, "pwd", { cwd: "shared" })).stdout.trim().endsWith("/shared"), true);
      await assert.rejects(runCollect(ide, "pwd", { cwd: "../.." }), (e: IdeClientError) => e.reason === "bad-cwd");
      await assert.rejects(
        runCollect(ide, "pwd", { cwd: "no-such-dir" }),
        (e: IdeClientError) => e.reason === "bad-cwd",
      );
    });
    await t.step("per-command timeout", async () => {
      const r = await runCollect(ide, "sleep 30", { timeoutMs: 200 });
      assert.equal(r.timedOut, true);
      assert.equal(r.signal, "SIGTERM");
    });
    await t.step("large output arrives intact (4 MiB)", async () => {
      const r = await runCollect(ide, "head -c 4194304 /dev/zero | tr '\\0' x");
      assert.equal(r.stdout.length, 4 * 1024 * 1024);
      assert.ok(/^x+$/.test(r.stdout));
    });
  });
});

Deno.test("the concurrency cap holds (--max-commands 2)", async () => {
  await withPair(["--max-commands", "2"], async (ide) => {
    const a = ide.run("sleep 30");
    const b = ide.run("sleep 30");
    const c = ide.run("echo third");
    await assert.rejects(c.exited, (e: IdeClientError) => e.reason === "busy" && /cap is 2/.test(e.message));
    a.signal("SIGKILL");
    await a.exited;
    // A slot is free again.
    assert.equal((await runCollect(ide, "echo fits")).stdout, "fits\n");
    b.signal("SIGKILL");
    await b.exited;
  });
});

Deno.test("no 40 ms stall: frames over 1 KiB cross relay and bridge quickly", async () => {
  await withPair([], async (ide) => {
    // `cat` echoes each 4 KiB stdin frame back as stdout: IDE -> relay -> bridge -> cat -> bridge -> relay -> IDE.
    let received = 0;
    let wake: (() => void) | undefined;
    const cmd = ide.run("cat", {
      onStdout: (b) => {
        received += b.byteLength;
        wake?.();
      },
    });
    const chunk = "y".repeat(4096);
    const times: number[] = [];
    for (let i = 0; i < 30; i++) {
      const target = (i + 1) * 4096;
      const t0 = performance.now();
      cmd.write(chunk);
      while (received < target) await new Promise<void>((r) => (wake = r));
      times.push(performance.now() - t0);
    }
    cmd.closeStdin();
    await cmd.exited;
    times.sort((x, y) => x - y);
    const median = times[Math.floor(times.length / 2)];
    // A Nagle/delayed-ACK stall costs ~40 ms per message; a healthy round trip is ~1 ms.
    assert.ok(median < 20, `median round trip ${median.toFixed(1)} ms (a stall shows as ~40 ms)`);
  });
});

Deno.test("stopping the bridge ends its commands' whole process groups (no orphans)", async () => {
  const dirs = await makeTestDirs();
  const relay = await startRelayProcess(dirs);
  const { ide, bridge } = await pairedSetup(dirs, relay.url);
  try {
    const out: string[] = [];
    const cmd = ide.run("sleep 3017 & sleep 3018 & echo ready; wait", {
      onStdout: (b) => out.push(new TextDecoder().decode(b)),
    });
    cmd.exited.catch(() => {});
    while (!out.join("").includes("ready")) await new Promise((r) => setTimeout(r, 10));
    const alive = () => {
      const ps = new TextDecoder().decode(new Deno.Command("ps", { args: ["-eo", "stat=,args="] }).outputSync().stdout);
      return ps.split("\n").filter((l) => /^\s*[^Z\s]\S*\s+sleep 301[78]\s*$/.test(l));
    };
    assert.equal(alive().length, 2);
    const status = await bridge.stop("SIGTERM");
    assert.equal(status.code, 0);
    assert.deepEqual(alive(), []);
  } finally {
    ide.close();
    await bridge.stop();
    await relay.stop();
    await dirs.cleanup();
  }
});

Deno.test("the IDE client example runs as documented", async () => {
  const dirs = await makeTestDirs();
  const relay = await startRelayProcess(dirs);
  const example = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/examples/ide_client_example.ts`, relay.url, "echo example-ok"],
    env: { DENO_DIR: dirs.env.DENO_DIR, NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = new OutputWatcher(example.stdout);
  const err = new OutputWatcher(example.stderr);
  try {
    const code = (await out.waitFor(/Pairing code: (\d{6})/))[1];
    const bridge = startBridgeProcess(dirs, relay.url, { code });
    const sas = (await out.waitFor(/Check that the bridge shows: (\d{3} \d{3})/))[1];
    assert.equal((await bridge.stdout.waitFor(/Check that the IDE shows: (\d{3} \d{3})/))[1], sas);
    await bridge.write(`${sas}\n`);
    const stdin = example.stdin.getWriter();
    await stdin.write(new TextEncoder().encode("y\n"));
    await stdin.close();
    await out.waitFor(/Exit: code 0/);
    assert.match(out.text, /Bridge ".*" \(linux, coder1 .*\) asks to pair/);
    assert.match(out.text, /^example-ok$/m);
    assert.equal((await example.status).code, 0, err.text);
    await bridge.stop();
  } finally {
    try {
      example.kill();
    } catch { /* exited */ }
    await relay.stop();
    await dirs.cleanup();
  }
});
