/**
 * Least privilege, proven with real processes: each role runs
 * tests/fixtures/permission_probe.ts under the exact flags it gets from
 * cli/permissions.ts (scoped `deno run` flags, and the compiled binary's
 * union), drops what it does not use as its command does at start, and tries
 * to spawn, load libc (FFI), read and write. Also: the relay works under its flags, the tasks
 * go through the launcher, roleFor maps commands to roles, and
 * tools/compile.ts bakes exactly compileFlags() into the binary.
 */
import assert from "node:assert/strict";
import {
  compileFlags,
  LAUNCHER_FLAGS,
  type PathScope,
  permissionFlags,
  type Role,
  roleFor,
} from "../cli/permissions.ts";
import { compileArgs, outputFor, parseCompileArgs, planJobs, shellLine, TARGETS } from "../tools/compile.ts";
import { makeTestDirs, OutputWatcher, type RelayProcess, ROOT, startRelayProcess, type TestDirs } from "./helpers.ts";

const PROBE = `${ROOT}/tests/fixtures/permission_probe.ts`;

/** Runs the probe as `role` under `flags`; returns each step's outcome, in order. */
async function probe(flags: string[], role: Role, steps: string[], dirs: TestDirs): Promise<string[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, PROBE, role, ...steps],
    cwd: dirs.root,
    env: dirs.env,
    stdin: "null",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `probe ${role} ${steps.join(" ")} under ${flags.join(" ")} failed:\n${stdout}${stderr}`);
  const lines = stdout.trim().split("\n").map((l) => JSON.parse(l) as { step: string; outcome: string });
  assert.deepEqual(lines.map((l) => l.step), steps, `probe output:\n${stdout}${stderr}`);
  return lines.map((l) => l.outcome);
}

/** The scope roleFor gives a command line, resolved against the test's temp HOME. */
function scopeOf(args: string[], dirs: TestDirs, cwd = dirs.root): { role: Role; scope: PathScope } {
  return roleFor(args, { env: (n) => dirs.env[n], cwd });
}

/** A temp tree with a relay data dir, a bridge config dir and a work dir, each holding a file, and one outside all. */
async function makeTree() {
  const dirs = await makeTestDirs();
  const dataDir = `${dirs.env.XDG_DATA_HOME}/coder1`;
  const configDir = `${dirs.env.XDG_CONFIG_HOME}/coder1`;
  const workDir = `${dirs.root}/work`;
  for (const d of [dataDir, configDir, workDir]) await Deno.mkdir(d, { recursive: true });
  const files = {
    relayKey: `${dataDir}/jwt-key.json`,
    bridgeCredentials: `${configDir}/credentials.json`,
    work: `${workDir}/notes.txt`,
    outside: `${dirs.root}/outside-secret.txt`,
  };
  for (const f of Object.values(files)) await Deno.writeTextFile(f, "secret");
  return { dirs, dataDir, configDir, workDir, files };
}

Deno.test("relay can neither spawn a subprocess nor load native code, under its own flags and under the binary's union after dropping", async () => {
  const { dirs, dataDir } = await makeTree();
  try {
    const { role, scope } = scopeOf(["relay", "serve", "--data-dir", dataDir], dirs);
    assert.equal(role, "relay");
    const scoped = permissionFlags(role, scope);
    assert.ok(!scoped.some((f) => f.startsWith("--allow-run") || f.startsWith("--allow-ffi")), scoped.join(" "));

    // deno run with the relay's flags: no run or ffi permission at all, before or after the drop.
    assert.deepEqual(await probe(scoped, "relay", ["spawn", "ffi", "drop", "spawn", "ffi"], dirs), [
      "NotCapable",
      "NotCapable",
      "ok",
      "NotCapable",
      "NotCapable",
    ]);

    // The compiled binary's flags: spawning and dlopen work until the relay drops what it does not
    // use, so it is dropUnusedPermissions, not the flags, that takes `run` and `ffi` away in the binary.
    assert.deepEqual(await probe(compileFlags(), "relay", ["spawn", "ffi", "drop", "spawn", "ffi"], dirs), [
      "ok",
      "ok",
      "ok",
      "NotCapable",
      "NotCapable",
    ]);

    // Controls: the bridge keeps `run` and `ffi` after its drop (the shell and its terminals are its
    // job), under the binary's flags and under its own; the cli role (help, --version) keeps nothing.
    assert.deepEqual(await probe(compileFlags(), "bridge", ["drop", "spawn", "ffi"], dirs), ["ok", "ok", "ok"]);
    const bridge = scopeOf(["bridge", "start", "--relay", "http://127.0.0.1:9"], dirs);
    assert.deepEqual(await probe(permissionFlags("bridge", bridge.scope), "bridge", ["ffi", "drop", "ffi"], dirs), [
      "ok",
      "ok",
      "ok",
    ]);
    assert.deepEqual(await probe(compileFlags(), "cli", ["drop", "spawn", "ffi", `read=${dataDir}`], dirs), [
      "ok",
      "NotCapable",
      "NotCapable",
      "NotCapable",
    ]);
  } finally {
    await dirs.cleanup();
  }
});

Deno.test("relay reads and writes only its data dir (and the key files it is given)", async () => {
  const { dirs, dataDir, files } = await makeTree();
  try {
    const jwtKey = `${dirs.root}/given-jwt-key.pem`;
    await Deno.writeTextFile(jwtKey, "key");
    const { role, scope } = scopeOf(["relay", "serve", "--data-dir", dataDir, "--jwt-key-file", jwtKey], dirs);
    const steps = [
      `read=${files.relayKey}`,
      `write=${dataDir}/revocations.json`,
      `read=${jwtKey}`,
      `write=${jwtKey}`,
      `read=${files.outside}`,
      `write=${files.outside}`,
      `read=${files.bridgeCredentials}`,
      `read=${files.work}`,
    ];
    const expected = ["ok", "ok", "ok", "NotCapable", "NotCapable", "NotCapable", "NotCapable", "NotCapable"];
    const outcomes = await probe(permissionFlags(role, scope), role, [...steps, "drop", ...steps], dirs);
    assert.deepEqual(outcomes, [...expected, "ok", ...expected]);
    assert.equal(await Deno.readTextFile(files.outside), "secret");
  } finally {
    await dirs.cleanup();
  }
});

Deno.test("bridge reads only its config dir and working dir, and writes only its config dir", async () => {
  const { dirs, dataDir, configDir, workDir, files } = await makeTree();
  try {
    const args = ["bridge", "start", "--relay", "http://127.0.0.1:9", "--cwd", workDir];
    const { role, scope } = scopeOf(args, dirs);
    assert.equal(role, "bridge");
    const steps = [
      `read=${files.bridgeCredentials}`,
      `write=${configDir}/credentials.json`,
      `read=${files.work}`,
      `write=${files.work}`,
      `read=${files.outside}`,
      `write=${files.outside}`,
      `read=${files.relayKey}`,
      `write=${dataDir}/planted.json`,
    ];
    const expected = ["ok", "ok", "ok", "NotCapable", "NotCapable", "NotCapable", "NotCapable", "NotCapable"];
    const outcomes = await probe(permissionFlags(role, scope), role, [...steps, "drop", ...steps], dirs);
    assert.deepEqual(outcomes, [...expected, "ok", ...expected]);
    assert.equal(await Deno.readTextFile(files.outside), "secret");
    await assert.rejects(Deno.stat(`${dataDir}/planted.json`), Deno.errors.NotFound);
  } finally {
    await dirs.cleanup();
  }
});

Deno.test("a real relay serves /healthz under its scoped flags and under the binary's union flags", async () => {
  const dirs = await makeTestDirs();
  let relay: RelayProcess | undefined;
  let union: Deno.ChildProcess | undefined;
  try {
    relay = await startRelayProcess(dirs);
    const res = await fetch(`${relay.url}/healthz`);
    assert.equal(res.status, 200);
    assert.equal((await res.json()).status, "ok");

    // What the binary runs: main.ts with compileFlags(), then the relay drops run/sys/ffi itself.
    union = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...compileFlags(),
        `${ROOT}/main.ts`,
        "relay",
        "serve",
        "--port",
        "0",
        "--log-level",
        "warn",
        "--data-dir",
        `${dirs.root}/union-data`,
      ],
      cwd: dirs.root,
      env: dirs.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stdout = new OutputWatcher(union.stdout);
    const stderr = new OutputWatcher(union.stderr);
    const [, url] = await Promise.race([
      stdout.waitFor(/listening on (\S+)/, 15_000),
      union.status.then((s) => {
        throw new Error(`union relay exited (${s.code}):\n${stderr.text}`);
      }),
    ]);
    const res2 = await fetch(`${url}/healthz`);
    assert.equal(res2.status, 200);
    await res2.body?.cancel();
    union.kill("SIGTERM");
    assert.equal((await union.status).code, 0, stderr.text);
    await Promise.all([stdout.done, stderr.done]);
    union = undefined;
  } finally {
    if (union) {
      try {
        union.kill("SIGKILL");
      } catch { /* exited */ }
      await union.status;
    }
    try {
      if (relay) assert.equal((await relay.stop()).code, 0, relay.stderr.text);
    } finally {
      await dirs.cleanup();
    }
  }
});

Deno.test("deno tasks go through the launcher, and roleFor maps commands to roles and paths", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  const tasks = config.tasks as Record<string, string>;
  assert.match(tasks.relay, /^deno run .*\btools\/launch\.ts relay serve$/);
  assert.match(tasks.coder1, /^deno run .*\btools\/launch\.ts$/);
  // The launcher runs with LAUNCHER_FLAGS wherever it starts: these tasks and the command deno task install writes.
  for (const name of ["relay", "coder1"]) {
    assert.ok(tasks[name].startsWith(`deno run ${LAUNCHER_FLAGS.join(" ")} tools/launch.ts`), tasks[name]);
  }
  assert.match(tasks.compile, /\btools\/compile\.ts$/);
  for (const name of ["relay", "coder1"]) {
    // The launcher itself only reads the command line and environment and starts deno.
    const words = tasks[name].split(/\s+/);
    assert.ok(!words.some((w) => w === "-A" || w === "--allow-all" || /^--allow-(net|write|ffi|sys)/.test(w)), name);
  }

  const env: Record<string, string> = { HOME: "/h", XDG_DATA_HOME: "/xd", XDG_CONFIG_HOME: "/xc" };
  const opts = { env: (n: string) => env[n], cwd: "/w" };
  assert.deepEqual(roleFor(["relay", "serve", "--data-dir", "/srv/c1"], opts), {
    role: "relay",
    scope: { read: ["/srv/c1"], write: ["/srv/c1"] },
  });
  assert.deepEqual(roleFor(["relay", "serve", "--data-dir", "rel/d"], opts).scope.write, ["/w/rel/d"]);
  assert.deepEqual(roleFor(["relay", "serve"], opts).scope, { read: ["/xd/coder1"], write: ["/xd/coder1"] });
  assert.deepEqual(
    roleFor(["relay", "serve", "--tls-cert", "c.pem", "--tls-key", "/k.pem", "--jwt-key-file", "j.pem"], opts).scope,
    { read: ["/xd/coder1", "/w/c.pem", "/k.pem", "/w/j.pem"], write: ["/xd/coder1"] },
  );
  assert.deepEqual(roleFor(["bridge", "start", "--relay", "http://127.0.0.1:9", "--cwd", "/proj"], opts), {
    role: "bridge",
    scope: { read: ["/xc/coder1", "/proj"], write: ["/xc/coder1"] },
  });
  assert.deepEqual(roleFor(["bridge", "start"], opts).scope, { read: ["/xc/coder1", "/w"], write: ["/xc/coder1"] });
  assert.deepEqual(roleFor(["bridge", "status"], opts), {
    role: "bridge",
    scope: { read: ["/xc/coder1"], write: ["/xc/coder1"] },
  });
  // doctor checks the bridge's machine: the bridge's role, reading its config dir and CA file, writing nothing.
  assert.deepEqual(roleFor(["doctor", "--ca-file", "ca.pem", "--json"], opts), {
    role: "bridge",
    scope: { read: ["/xc/coder1", "/w/ca.pem"], write: [] },
  });
  for (const args of [["--version"], ["help"], [], ["frobnicate"], ["help", "doctor"]]) {
    assert.deepEqual(roleFor(args, opts), { role: "cli", scope: { read: [], write: [] } }, args.join(" "));
  }
  assert.deepEqual(permissionFlags("cli"), ["--no-prompt"]);

  const relayFlags = permissionFlags("relay", { read: ["/d"], write: ["/d"] });
  assert.ok(relayFlags.includes("--allow-read=/d") && relayFlags.includes("--allow-write=/d"), relayFlags.join(" "));
  assert.ok(!relayFlags.some((f) => /^--allow-(run|sys|ffi|all)|^-A$/.test(f)), relayFlags.join(" "));
  const bridgeFlags = permissionFlags("bridge", { read: ["/c", "/p"], write: ["/c"] });
  assert.ok(bridgeFlags.includes("--allow-run") && bridgeFlags.includes("--allow-read=/c,/p"), bridgeFlags.join(" "));
  // Unscoped ffi: Deno.UnsafePointer (bridge/pty.ts) checks unscoped ffi.
  assert.ok(bridgeFlags.includes("--allow-ffi"), bridgeFlags.join(" "));
  assert.ok(!bridgeFlags.some((f) => /^--allow-all|^-A$|^--allow-(read|write)$/.test(f)), bridgeFlags.join(" "));
  assert.throws(() => permissionFlags("relay", { read: ["/a,b"], write: [] }), /comma/);
});

Deno.test("tools/compile.ts bakes in exactly compileFlags(), never --allow-all", async () => {
  const flags = compileFlags();
  assert.ok(!flags.some((f) => f === "-A" || f === "--allow-all" || f === "--allow-import"), flags.join(" "));
  // For the bridge's terminals; the relay revokes it at start (tested above).
  assert.ok(flags.includes("--allow-ffi"), flags.join(" "));
  assert.ok(flags.includes("--no-prompt"), "a revoked permission must fail, not prompt");
  const isPermissionFlag = (a: string) => /^(-A|--allow-|--deny-|--no-prompt$|--prompt)/.test(a);

  const jobs = planJobs(parseCompileArgs(["--all"]));
  assert.deepEqual(jobs.map((j) => j.target), [...TARGETS]);
  for (const job of [...jobs, ...planJobs(parseCompileArgs([]))]) {
    assert.equal(job.args[0], "compile");
    assert.deepEqual(job.args.slice(1, 1 + flags.length), flags);
    assert.deepEqual(job.args.filter(isPermissionFlag), flags, job.args.join(" "));
    assert.equal(job.args.at(-1), "main.ts");
    assert.equal(job.args[job.args.indexOf("--output") + 1], job.output);
  }
  assert.deepEqual(compileArgs({ output: "dist/coder1" }), ["compile", ...flags, "--output", "dist/coder1", "main.ts"]);
  assert.equal(outputFor(undefined, "dist", "linux"), "dist/coder1");
  assert.equal(outputFor(undefined, "dist", "windows"), "dist/coder1.exe");
  assert.equal(outputFor("aarch64-apple-darwin"), "dist/coder1-aarch64-apple-darwin");
  assert.equal(outputFor("x86_64-pc-windows-msvc"), "dist/coder1-x86_64-pc-windows-msvc.exe");
  assert.throws(() => parseCompileArgs(["--target", "sparc-sun-solaris"]), /unknown target/);
  assert.deepEqual(parseCompileArgs(["--", "--dry-run", "--target=x86_64-apple-darwin"]).targets, [
    "x86_64-apple-darwin",
  ]);

  // The real tool: --dry-run prints one exact command line per target and builds nothing.
  const env = { ...Deno.env.toObject() };
  delete env.DENORT_BIN;
  const dry = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--no-prompt", `${ROOT}/tools/compile.ts`, "--dry-run", "--all"],
    env,
    clearEnv: true,
  }).output();
  assert.equal(dry.code, 0, new TextDecoder().decode(dry.stderr));
  const lines = new TextDecoder().decode(dry.stdout).trim().split("\n");
  assert.equal(lines.length, TARGETS.length);
  for (const [i, line] of lines.entries()) {
    assert.equal(line, shellLine([Deno.execPath(), ...jobs[i].args]));
    assert.ok(line.includes(` compile ${flags.join(" ")} --output `), line);
  }

  // A failing deno compile (here: a DENORT_BIN that is not a binary) is reported, exit 1, nothing built.
  const tmp = await Deno.makeTempDir({ prefix: "coder1-compile-" });
  try {
    await Deno.writeTextFile(`${tmp}/denort`, "");
    const failed = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "--no-prompt", `${ROOT}/tools/compile.ts`, "--out-dir", `${tmp}/out`],
      env: { DENORT_BIN: `${tmp}/denort` },
      stdin: "null",
    }).output();
    const stderr = new TextDecoder().decode(failed.stderr);
    assert.equal(failed.code, 1, stderr);
    assert.match(stderr, /using DENORT_BIN=/);
    assert.match(stderr, /deno compile failed for this machine/);
    assert.deepEqual([...Deno.readDirSync(`${tmp}/out`)], []);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
