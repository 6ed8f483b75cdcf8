/**
 * The `coder1` command a new user gets from a checkout, on a machine as fresh
 * as a test can make it: a temporary HOME, and a PATH holding only the
 * install's bin directory and Node.js with npm. `deno task install` writes the
 * command; it then runs `--version`, every spelling of help, a relay, and a
 * bridge that pairs with an IDE and runs a command, with exactly the
 * permission flags of cli/permissions.ts. If the Deno it names is cleaned
 * away, the command falls back to `npx -y deno@2.9.6`.
 */
import assert from "node:assert/strict";
import { LAUNCHER_FLAGS, permissionFlags, roleFor } from "../cli/permissions.ts";
import { SHIM_MARKER } from "../tools/install.ts";
import { VERSION } from "../shared/version.ts";
import {
  approveBridge,
  haveProgram,
  ideClient,
  makeTestDirs,
  OutputWatcher,
  REQUIRE_ALL,
  ROOT,
  runCollect,
  type TestDirs,
} from "./helpers.ts";

const HAVE_NODE = haveProgram("node", "install test (a fresh machine has Node.js and npm)") &&
  haveProgram("npx", "install test (a fresh machine has Node.js and npm)");

/** A PATH directory holding only node, npm and npx (symlinks to the real ones), and sh, which npx runs. */
async function nodeOnlyPath(root: string): Promise<string> {
  const dir = `${root}/node-bin`;
  await Deno.mkdir(dir);
  for (const program of ["node", "npm", "npx"]) {
    const found = (Deno.env.get("PATH") ?? "").split(":").map((d) => `${d}/${program}`).find((p) => {
      try {
        return Deno.statSync(p).isFile;
      } catch {
        return false;
      }
    });
    if (found) await Deno.symlink(found, `${dir}/${program}`);
    else if (REQUIRE_ALL) throw new Error(`${program} is not installed`);
  }
  await Deno.symlink("/bin/sh", `${dir}/sh`);
  return dir;
}

/** The fresh machine's environment: temp HOME and XDG dirs, PATH = the install's bin + node. */
function freshEnv(dirs: TestDirs, bin: string, nodeDir: string): Record<string, string> {
  return {
    HOME: dirs.env.HOME,
    XDG_CONFIG_HOME: dirs.env.XDG_CONFIG_HOME,
    XDG_DATA_HOME: dirs.env.XDG_DATA_HOME,
    // Deno's cache is shared so the test does not download coder1's npm packages again.
    DENO_DIR: dirs.env.DENO_DIR,
    PATH: `${bin}:${nodeDir}`,
    SHELL: "/bin/sh",
    NO_COLOR: "1",
  };
}

/** Runs `deno task install ARGS` the way deno.json defines it. */
async function runInstall(args: string[], env: Record<string, string>) {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  const [deno, run, ...rest] = (config.tasks.install as string).split(" ");
  assert.equal(`${deno} ${run}`, "deno run");
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...rest, ...args],
    cwd: ROOT,
    env,
    clearEnv: true,
    stdin: "null",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** Runs the installed `coder1` by name, found on the fresh PATH as a user's shell would. */
function coder1(args: string[], env: Record<string, string>, cwd: string) {
  const child = new Deno.Command("/bin/sh", {
    args: ["-c", 'exec coder1 "$@"', "sh", ...args],
    cwd,
    env,
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new OutputWatcher(child.stdout);
  const stderr = new OutputWatcher(child.stderr);
  const writer = child.stdin.getWriter();
  const status = child.status.then(async (s) => {
    await Promise.all([stdout.done, stderr.done]);
    return s;
  });
  return {
    child,
    stdout,
    stderr,
    status,
    write: (t: string) => writer.write(new TextEncoder().encode(t)),
    closeStdin: () => writer.close().catch(() => {}),
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* exited */ }
      await writer.close().catch(() => {});
      return await status;
    },
  };
}

/** The deno flags of the process running main.ts with `words` in its command line (the launcher's child). */
function mainFlags(words: string): string[] {
  const ps = new TextDecoder().decode(new Deno.Command("ps", { args: ["-eo", "args="] }).outputSync().stdout);
  const line = ps.split("\n").find((l) => l.includes(`/main.ts ${words}`) && !l.includes("launch.ts"));
  assert.ok(line, `no process runs main.ts ${words}:\n${ps}`);
  const args = line.split(" ");
  return args.slice(args.indexOf("run") + 1, args.findIndex((a) => a.endsWith("/main.ts")))
    .filter((a, i, all) => a !== "--config" && all[i - 1] !== "--config");
}

Deno.test({
  name:
    "install: on a fresh PATH (only the install and node/npm), coder1 runs, helps, serves a relay and pairs a bridge",
  ignore: !HAVE_NODE,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dirs = await makeTestDirs();
    const nodeDir = await nodeOnlyPath(dirs.root);
    const root = `${dirs.root}/install`;
    const bin = `${root}/bin`;
    const env = freshEnv(dirs, bin, nodeDir);
    const work = `${dirs.root}/work`;
    await Deno.mkdir(work);
    try {
      const installed = await runInstall(["--root", root], { ...env, PATH: nodeDir });
      assert.equal(installed.code, 0, installed.stderr);
      assert.match(installed.stdout, new RegExp(`Installed ${bin}/coder1`));
      assert.match(installed.stdout, /is not on your PATH yet/);
      const script = await Deno.readTextFile(`${bin}/coder1`);
      assert.ok(script.includes(SHIM_MARKER));
      assert.ok(script.includes(`${LAUNCHER_FLAGS.join(" ")} '${ROOT}/tools/launch.ts' "$@"`), script);
      assert.equal((await Deno.stat(`${bin}/coder1`)).mode! & 0o777, 0o755);

      const version = coder1(["--version"], env, work);
      assert.equal((await version.status).code, 0, version.stderr.text);
      assert.match(version.stdout.text, new RegExp(`^coder1 ${VERSION.replaceAll(".", "\\.")} `));

      // Every spelling of help that --help suggests.
      for (const args of [["help", "bridge"], ["bridge", "--help"], ["bridge", "help"], ["bridge", "-h"]]) {
        const help = coder1(args, env, work);
        assert.equal((await help.status).code, 0, `${args.join(" ")}: ${help.stderr.text}`);
        assert.match(help.stdout.text, /^Usage: coder1 bridge COMMAND/, args.join(" "));
        assert.match(help.stdout.text, /coder1 bridge start +Connect this machine/);
      }

      const relay = coder1(["relay", "serve", "--port", "0", "--log-level", "warn"], env, work);
      try {
        const url = (await relay.stdout.waitFor(/listening on (\S+)/, 30_000))[1];
        await relay.stdout.waitFor(/task coder1 bridge start --relay \S+\n/);
        assert.ok(relay.stdout.text.includes(`Open ${url} in your browser`), relay.stdout.text);
        assert.ok(relay.stdout.text.includes(`    coder1 bridge start --relay ${url}\n`), relay.stdout.text);
        assert.ok(
          relay.stdout.text.includes(`    npx -y deno@2.9.6 task coder1 bridge start --relay ${url}\n`),
          relay.stdout.text,
        );
        assert.doesNotMatch(relay.stdout.text, /web IDE that speaks/);

        const ide = ideClient(url);
        await ide.createSession();
        const { code } = await ide.requestPairingCode();
        await ide.connect();
        const bridge = coder1(["bridge", "start", "--relay", url, "--allow-root", "--no-banner"], env, work);
        try {
          await bridge.write(`${code}\n`);
          await approveBridge(ide, bridge, 30_000);
          const result = await runCollect(ide, "pwd; echo installed-ok");
          assert.equal(result.stdout, `${await Deno.realPath(work)}\ninstalled-ok\n`);

          // The bridge runs with its role's flags from cli/permissions.ts, scoped as the launcher scopes them.
          const args = ["bridge", "start", "--relay", url, "--allow-root", "--no-banner"];
          const { role, scope } = roleFor(args, { env: (n) => env[n], cwd: work });
          assert.deepEqual(mainFlags(args.join(" ")), permissionFlags(role, scope));
        } finally {
          ide.close();
          await bridge.stop();
        }
      } finally {
        await relay.stop();
      }
    } finally {
      await dirs.cleanup();
    }
  },
});

Deno.test({
  name: "install: refuses to overwrite a coder1 it did not write, uninstalls its own, and falls back to npx",
  ignore: !HAVE_NODE,
  async fn() {
    const dirs = await makeTestDirs();
    const nodeDir = await nodeOnlyPath(dirs.root);
    const root = `${dirs.root}/install`;
    const bin = `${root}/bin`;
    // npx finds deno@2.9.6 in the machine's npm cache (or fetches it from the registry).
    const npmCache = new TextDecoder().decode(
      (await new Deno.Command("npm", { args: ["config", "get", "cache"], stderr: "null" }).output()).stdout,
    ).trim();
    const env = { ...freshEnv(dirs, bin, nodeDir), npm_config_cache: npmCache, npm_config_update_notifier: "false" };
    try {
      await Deno.mkdir(bin, { recursive: true });
      await Deno.writeTextFile(`${bin}/coder1`, "#!/bin/sh\necho a release binary\n", { mode: 0o755 });
      const refused = await runInstall(["--root", root], env);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /exists and was not written by this script/);
      assert.equal(await Deno.readTextFile(`${bin}/coder1`), "#!/bin/sh\necho a release binary\n");

      const forced = await runInstall(["--root", root, "--force"], env);
      assert.equal(forced.code, 0, forced.stderr);
      assert.match(forced.stdout, /Try it: coder1 --version/);

      // The Deno named in the script is gone (say, the npm cache was cleaned): npx brings it back.
      const script = await Deno.readTextFile(`${bin}/coder1`);
      await Deno.writeTextFile(`${bin}/coder1`, script.replace(/^deno=.*$/m, `deno='${dirs.root}/no-such-deno'`));
      const version = coder1(["--version"], env, dirs.root);
      assert.equal((await version.status).code, 0, version.stderr.text);
      assert.match(version.stdout.text, /^coder1 \d+\.\d+\.\d+ /);

      const removed = await runInstall(["--root", root, "--uninstall"], env);
      assert.equal(removed.code, 0, removed.stderr);
      await assert.rejects(Deno.stat(`${bin}/coder1`), Deno.errors.NotFound);

      const bad = await runInstall(["--rot", root], env);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /unknown argument "--rot"/);
    } finally {
      await dirs.cleanup();
    }
  },
});
