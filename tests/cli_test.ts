/**
 * The command line as users meet it: help, version, usage errors (exit 2),
 * clear failures (exit 1, never a hang), the root refusal, and the launcher
 * behind `deno task relay` / `deno task coder1`.
 */
import assert from "node:assert/strict";
import { CloseCode, PROTOCOL_VERSION, WS_SUBPROTOCOL } from "../shared/protocol.ts";
import { VERSION } from "../shared/version.ts";
import {
  approveBridge,
  coder1Argv,
  freePort,
  haveProgram,
  ideClient,
  makeTestDirs,
  OutputWatcher,
  ROOT,
  runCollect,
  spawnCoder1,
  startBridgeProcess,
  startRelayProcess,
  type TestDirs,
} from "./helpers.ts";

async function run(args: string[], dirs: TestDirs, stdin?: string) {
  const p = spawnCoder1(args, { env: dirs.env, stdin });
  const s = await p.status;
  return { code: s.code, stdout: p.stdout.text, stderr: p.stderr.text };
}

Deno.test("help, version and --help on every command", async () => {
  const dirs = await makeTestDirs();
  try {
    const v = await run(["--version"], dirs);
    assert.equal(v.code, 0);
    // Version, commit and build date ("dev" from source without git access; tests/observability_test.ts has more).
    assert.match(
      v.stdout.trim(),
      new RegExp(`^coder1 ${VERSION.replaceAll(".", "\\.")} \\(commit \\S+, built \\S+\\)$`),
    );
    const h = await run(["help"], dirs);
    assert.equal(h.code, 0);
    for (const c of ["relay serve", "relay telemetry", "bridge start", "bridge status", "bridge logout", "doctor"]) {
      assert.ok(h.stdout.includes(`coder1 ${c}`), `top help lists ${c}`);
      const help = await run([...c.split(" "), "--help"], dirs);
      assert.equal(help.code, 0, help.stderr);
      assert.match(help.stdout, new RegExp(`^Usage: coder1 ${c}`));
      assert.match(help.stdout, /--help/);
      const viaHelp = await run(["help", ...c.split(" ")], dirs);
      assert.equal(viaHelp.stdout, help.stdout);
    }
    const none = await run([], dirs);
    assert.equal(none.code, 2);
  } finally {
    await dirs.cleanup();
  }
});

Deno.test("every spelling of help works: on groups, before and after the command, and unknown topics exit 2", async () => {
  const dirs = await makeTestDirs();
  try {
    // The top help suggests `coder1 help [COMMAND]`, `coder1 COMMAND --help` and `coder1 help bridge`.
    const top = await run(["--help"], dirs);
    assert.match(top.stdout, /coder1 help \[COMMAND\] +Show help \(also: coder1 COMMAND --help, coder1 help bridge\)/);
    for (
      const [group, commands] of [["bridge", ["start", "status", "logout"]], ["relay", ["serve", "telemetry"]]] as const
    ) {
      const spellings = [["help", group], [group, "--help"], [group, "-h"], [group, "help"], ["-h", group]];
      const first = await run(spellings[0], dirs);
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stdout, new RegExp(`^Usage: coder1 ${group} COMMAND \\[options\\]`));
      for (const c of commands) assert.match(first.stdout, new RegExp(`^  coder1 ${group} ${c} +\\S`, "m"));
      for (const args of spellings.slice(1)) {
        const r = await run([...args], dirs);
        assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
        assert.equal(r.stdout, first.stdout, args.join(" "));
      }
      const command = await run(["help", group, commands[0]], dirs);
      for (const args of [[group, "help", commands[0]], [group, commands[0], "--help"], [group, commands[0], "-h"]]) {
        const r = await run(args, dirs);
        assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
        assert.equal(r.stdout, command.stdout, args.join(" "));
      }
      // The group alone is a usage error that lists its commands.
      const bare = await run([group], dirs);
      assert.equal(bare.code, 2);
      assert.match(
        bare.stderr,
        new RegExp(`^coder1: "coder1 ${group}" needs a command\\n\\nUsage: coder1 ${group} COMMAND`),
      );
    }
    for (const args of [["help", "bridge", "nope"], ["help", "nope"], ["bridge", "help", "nope"]]) {
      const r = await run(args, dirs);
      assert.equal(r.code, 2, args.join(" "));
      assert.match(
        r.stderr,
        /^coder1: no help on "(bridge )?nope": unknown command\n\n(Usage: coder1 bridge|coder1: run commands)/,
        args.join(" "),
      );
    }
  } finally {
    await dirs.cleanup();
  }
});

Deno.test("bridge start --help tells the user to type what the SAS prompt asks for (the digits, not y)", async () => {
  const dirs = await makeTestDirs();
  try {
    const help = await run(["bridge", "start", "--help"], dirs);
    const notes = help.stdout.replaceAll("\n", " ");
    assert.match(notes, /If the IDE shows the same digits, type those 6 digits here/);
    assert.doesNotMatch(notes, /\btype y\b/i);
    // The prompt the bridge prints (bridge/first_pairing.ts) asks for the same thing.
    const source = await Deno.readTextFile(`${ROOT}/bridge/first_pairing.ts`);
    assert.match(source, /"Type the 6 digits the IDE shows to confirm \(anything else refuses\): "/);
    assert.match(notes, /anything else refuses the pairing/);
  } finally {
    await dirs.cleanup();
  }
});

Deno.test("usage errors exit 2 with a one-line reason and the usage", async () => {
  const dirs = await makeTestDirs();
  try {
    const cases: [string[], RegExp][] = [
      [["frobnicate"], /unknown command "frobnicate"/],
      [["relay", "start"], /unknown command "relay start"; try: coder1 relay serve/],
      [["relay", "serve", "--bogus"], /unknown flag --bogus/],
      [["relay", "serve", "--port", "abc"], /--port must be a port number/],
      [["relay", "serve", "--port"], /--port needs a value/],
      [["relay", "serve", "--tls-cert", "/nonexistent"], /--tls-cert and --tls-key go together/],
      [["relay", "serve", "--public-url", "ftp://x"], /--public-url must be an http\(s\) URL/],
      [["bridge", "start", "--code", "12ab56"], /--code must be 6 digits/],
      [["bridge", "start", "--relay", "ftp://relay"], /--relay must be an http\(s\):\/\/ or ws\(s\):\/\/ URL/],
      [
        ["bridge", "start", "--relay", "http://relay.example", "--allow-root", "--code", "123456"],
        /refusing unencrypted http:\/\/relay.example/,
      ],
      [
        ["bridge", "start", "--relay", "ws://10.1.2.3:8787", "--allow-root", "--code", "123456"],
        /refusing unencrypted/,
      ],
      [["bridge", "start", "--max-commands", "0"], /--max-commands must be a positive whole number/],
      [
        ["bridge", "start", "--allow-root", "--code", "123456", "--cwd", "/nonexistent-dir"],
        /--cwd \/nonexistent-dir is not a directory/,
      ],
      [["bridge", "status", "extra"], /unexpected argument "extra"/],
      [
        ["bridge", "start", "--allow-root", "--ca-file", "/nonexistent.pem", "--code", "123456"],
        /cannot read --ca-file/,
      ],
    ];
    for (const [args, pattern] of cases) {
      const r = await run(args, dirs);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      const [first, , ...rest] = r.stderr.split("\n");
      assert.match(first, pattern);
      assert.match(rest.join("\n"), /Usage:/, "usage follows the reason");
    }
  } finally {
    await dirs.cleanup();
  }
});

Deno.test("pairing failures exit 1 with a clear message, never a hang", async () => {
  const dirs = await makeTestDirs();
  const relay = await startRelayProcess(dirs);
  try {
    const wrong = startBridgeProcess(dirs, relay.url, { code: "000000" });
    const s = await wrong.status;
    assert.equal(s.code, 1);
    assert.match(wrong.stderr.text, /code is wrong, expired or already used/);

    const typo = startBridgeProcess(dirs, relay.url, { code: "12345" });
    assert.equal((await typo.status).code, 1);
    assert.match(typo.stderr.text, /"12345" is not a pairing code/);

    const empty = startBridgeProcess(dirs, relay.url, { code: "" });
    assert.equal((await empty.status).code, 1);
    assert.match(empty.stderr.text, /no pairing code/);

    const unreachable = startBridgeProcess(dirs, `http://127.0.0.1:${freePort()}`, { code: "123456" });
    assert.equal((await unreachable.status).code, 1);
    assert.match(unreachable.stderr.text, /Cannot reach the relay at .*connection refused/);

    const status = await run(["bridge", "status", "--relay", relay.url], dirs);
    assert.equal(status.code, 1);
    assert.match(status.stdout, /reachable \(coder1 relay/);
    assert.match(status.stdout, /Paired:\s+no/);

    const logout = await run(["bridge", "logout", "--relay", relay.url], dirs);
    assert.equal(logout.code, 0);
    assert.match(logout.stdout, /Not paired/);
  } finally {
    await relay.stop();
    await dirs.cleanup();
  }
});

/**
 * A stand-in relay on a loopback port: it upgrades every WebSocket with
 * `answer` and records the subprotocols each client asked for.
 */
function fakeRelay(answer: (socket: WebSocket) => void, protocol?: string) {
  const abort = new AbortController();
  const asked: (string | null)[] = [];
  const sockets: WebSocket[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, signal: abort.signal, onListen: () => {} }, (request) => {
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("not found", { status: 404 });
    }
    asked.push(request.headers.get("sec-websocket-protocol"));
    const { socket, response } = Deno.upgradeWebSocket(request, protocol ? { protocol } : {});
    socket.onerror = () => {};
    sockets.push(socket);
    answer(socket);
    return response;
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    asked,
    async stop() {
      for (const socket of sockets) if (socket.readyState < WebSocket.CLOSING) socket.close();
      abort.abort();
      await server.finished;
    },
  };
}

Deno.test("a relay of another protocol version ends the bridge with a message saying what to update", async (t) => {
  const dirs = await makeTestDirs();
  try {
    await t.step("a relay from before protocol 4 upgrades without selecting the subprotocol", async () => {
      // No `protocol` option: the 101 carries no Sec-WebSocket-Protocol, as an older relay's did.
      const relay = fakeRelay(() => {});
      try {
        const bridge = startBridgeProcess(dirs, relay.url, { code: "123456" });
        assert.equal((await bridge.status).code, 1, bridge.stderr.text);
        assert.deepEqual(relay.asked, [WS_SUBPROTOCOL]);
        const expected = `coder1: The relay at ${relay.url} speaks an older protocol than this bridge ` +
          `(${PROTOCOL_VERSION}): update the relay, or use a bridge of the relay's version.`;
        assert.ok(bridge.stderr.text.includes(expected), bridge.stderr.text);
        assert.doesNotMatch(bridge.stderr.text, /Cannot reach|retrying/);
      } finally {
        await relay.stop();
      }
    });

    await t.step(
      "an earlier protocol-4 relay, which waits for an auth frame (4408), is named, not retried",
      async () => {
        // What a relay from before the login moved into the upgrade request did with a bridge that sent no `auth` frame.
        const relay = fakeRelay((socket) => {
          socket.onopen = () => setTimeout(() => socket.close(CloseCode.AuthTimeout, "no auth frame in time"), 50);
        }, WS_SUBPROTOCOL);
        try {
          const bridge = startBridgeProcess(dirs, relay.url, { code: "123456" });
          assert.equal((await bridge.status).code, 1, bridge.stderr.text);
          assert.deepEqual(relay.asked, [WS_SUBPROTOCOL], "one attempt, no reconnects");
          assert.match(bridge.stderr.text, /is an older coder1 relay .*update the relay/);
        } finally {
          await relay.stop();
        }
      },
    );

    await t.step("a relay that closes with 4426 is quoted, not retried", async () => {
      const relay = fakeRelay((socket) => {
        socket.onopen = () => socket.close(CloseCode.UnsupportedVersion, "update the bridge: relay speaks protocol 5");
      }, WS_SUBPROTOCOL);
      try {
        const bridge = startBridgeProcess(dirs, relay.url, { code: "123456" });
        assert.equal((await bridge.status).code, 1, bridge.stderr.text);
        assert.deepEqual(relay.asked, [WS_SUBPROTOCOL], "one attempt, no reconnects");
        assert.match(
          bridge.stderr.text,
          /coder1: The relay refused this bridge's protocol: update the bridge: relay speaks protocol 5\./,
        );
      } finally {
        await relay.stop();
      }
    });
  } finally {
    await dirs.cleanup();
  }
});

Deno.test({
  name: "the bridge refuses to run as root without --allow-root",
  ignore: Deno.uid() !== 0 && (console.log("SKIP root refusal: tests are not running as root"), true),
  fn: async () => {
    const dirs = await makeTestDirs();
    try {
      const p = spawnCoder1(["bridge", "start", "--code", "123456"], { env: dirs.env });
      assert.equal((await p.status).code, 1);
      assert.match(p.stderr.text, /refusing to run the bridge as root/);
      assert.doesNotMatch(p.stdout.text, /Connecting/);
    } finally {
      await dirs.cleanup();
    }
  },
});

Deno.test("a relay whose port is taken exits 1 with the reason", async () => {
  const dirs = await makeTestDirs();
  const relay = await startRelayProcess(dirs);
  try {
    const r = await run(["relay", "serve", "--port", String(relay.port)], dirs);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /address in use/);
  } finally {
    await relay.stop();
    await dirs.cleanup();
  }
});

Deno.test("the launcher behind `deno task relay` runs the relay with its role's flags and passes SIGTERM on", async () => {
  const dirs = await makeTestDirs();
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  const task: string = config.tasks.relay;
  const [, , ...launcherArgs] = task.split(" "); // drop "deno run"
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...launcherArgs, "--port", "0", "--log-level", "warn"],
    cwd: ROOT,
    env: dirs.env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    while (!/listening on (\S+)/.test(out)) {
      const { value, done } = await reader.read();
      if (done) throw new Error("launcher ended early");
      out += value;
    }
    const url = out.match(/listening on (\S+)/)![1];
    const health = await fetch(`${url}/healthz`);
    assert.equal((await health.json()).version, VERSION);
    const ps = new Deno.Command("ps", { args: ["-o", "args=", "--ppid", String(child.pid)] }).outputSync();
    const childArgs = new TextDecoder().decode(ps.stdout);
    assert.match(childArgs, /--allow-net/);
    assert.match(childArgs, new RegExp(`--allow-write=${dirs.env.XDG_DATA_HOME}/coder1( |$)`));
    assert.doesNotMatch(childArgs, /--allow-run|--allow-all|-A /);
    child.kill("SIGTERM");
    reader.releaseLock();
    await child.stdout.cancel().catch(() => {});
    const status = await child.status;
    assert.equal(status.code, 0);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.stderr.cancel().catch(() => {});
    await dirs.cleanup();
  }
});

Deno.test({
  name: "on a terminal the bridge prompts for the code",
  ignore: !haveProgram("script", "TTY prompt test (util-linux script)"),
  fn: async () => {
    const dirs = await makeTestDirs();
    const relay = await startRelayProcess(dirs);
    const ide = ideClient(relay.url);
    try {
      await ide.createSession();
      const { code } = await ide.requestPairingCode();
      await ide.connect();
      const argv = coder1Argv(["bridge", "start", "--relay", relay.url, "--allow-root", "--no-banner"], {
        env: dirs.env,
      });
      const quoted = argv.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ");
      // `script` gives the bridge a pseudo-terminal, so Deno.stdin.isTerminal() is true.
      const child = new Deno.Command("script", {
        args: ["-qfec", quoted, "/dev/null"],
        cwd: ROOT,
        env: dirs.env,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const out = new OutputWatcher(child.stdout);
      const err = new OutputWatcher(child.stderr);
      try {
        await out.waitFor(/Enter the 6-digit pairing code from the IDE: /);
        const writer = child.stdin.getWriter();
        await writer.write(new TextEncoder().encode(`${code}\r`));
        await out.waitFor(/Bridge connected/);
        const write = (t: string) => writer.write(new TextEncoder().encode(t));
        await approveBridge(ide, { stdout: out, stderr: err, status: child.status, write });
        assert.equal((await runCollect(ide, "echo via-tty")).stdout, "via-tty\n");
        await writer.close().catch(() => {});
      } finally {
        try {
          child.kill("SIGTERM");
        } catch { /* exited */ }
        await child.status;
        await Promise.all([out.done, err.done]);
      }
    } finally {
      ide.close();
      await relay.stop();
      await dirs.cleanup();
    }
  },
});
