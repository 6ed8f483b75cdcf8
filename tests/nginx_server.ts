/**
 * Debian's nginx for tests, run as the current user with everything (pid,
 * logs, temp paths) in a temp dir, `daemon off`, on loopback ports: the
 * shipped site files (deploy/nginx/) are included as rendered by the test.
 * tests/nginx_test.ts and tests/nginx_cluster_test.ts use it.
 *
 * @module
 */
import assert from "node:assert/strict";
import { OutputWatcher, runProgram } from "./helpers.ts";

/** A running nginx. */
export interface Nginx {
  /** Its error log so far. */
  log(): Promise<string>;
  /** Its access log so far. */
  accessLog(): Promise<string>;
  /** Stops it (SIGTERM) and waits for it. */
  stop(): Promise<void>;
}

/**
 * Writes `site` to `dir`, a main config that includes it, checks both with
 * `nginx -t`, starts nginx and waits until `probePort` accepts connections.
 *
 * @param dir An empty temp dir for nginx's files.
 * @param site The rendered site config (loopback listens only).
 * @param probePort A port the site listens on.
 * @returns The running nginx; rejects with `nginx -t`'s output when the config is refused.
 */
export async function startNginx(dir: string, site: string, probePort: number): Promise<Nginx> {
  await Deno.writeTextFile(`${dir}/site.conf`, site);
  // The main config is the test's own: nothing outside `dir`, no daemon, one worker.
  const asRoot = Deno.build.os !== "windows" && Deno.uid() === 0;
  await Deno.writeTextFile(
    `${dir}/nginx.conf`,
    [
      "daemon off;",
      "worker_processes 1;",
      // As root nginx would switch its worker to "nobody"; stay the current user.
      asRoot ? "user root root;" : "",
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/error.log info;`,
      "events { worker_connections 256; }",
      "http {",
      `  access_log ${dir}/access.log;`,
      ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `  ${t}_temp_path ${dir}/${t}_temp;`),
      `  include ${dir}/site.conf;`,
      "}",
    ].join("\n"),
  );
  const args = ["-p", `${dir}/`, "-c", `${dir}/nginx.conf`, "-e", `${dir}/error.log`];
  const check = await runProgram("nginx", [...args, "-t"], dir);
  assert.equal(check.code, 0, `nginx -t:\n${check.out}`);
  const child = new Deno.Command("nginx", { args, cwd: dir, stdin: "null", stdout: "piped", stderr: "piped" })
    .spawn();
  const stdout = new OutputWatcher(child.stdout);
  const stderr = new OutputWatcher(child.stderr);
  let exited = false;
  child.status.then(() => exited = true);
  const deadline = Date.now() + 10_000;
  for (;;) {
    assert.ok(!exited, `nginx exited:\n${stderr.text}${await Deno.readTextFile(`${dir}/error.log`).catch(() => "")}`);
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port: probePort })).close();
      break;
    } catch {
      assert.ok(Date.now() < deadline, "nginx did not listen in time");
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  return {
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // Gone already.
      }
      await child.status;
      await Promise.all([stdout.done, stderr.done]);
    },
    log: () => Deno.readTextFile(`${dir}/error.log`).catch(() => ""),
    accessLog: () => Deno.readTextFile(`${dir}/access.log`).catch(() => ""),
  };
}

/**
 * Applies `substitutions` (from, to, how many times `from` must occur) to a
 * shipped site file: a change to it that the test would no longer cover fails
 * here. Checks that every `listen` left is on loopback.
 *
 * @param name The file's name, for the message.
 * @param site Its text.
 * @param substitutions What to replace, and how often each must match.
 * @returns The rendered text.
 */
export function renderSiteFile(name: string, site: string, substitutions: [string, string, number][]): string {
  let out = site;
  for (const [from, to, count] of substitutions) {
    assert.equal(out.split(from).length - 1, count, `${name}: expected ${count}× "${from}"`);
    out = out.replaceAll(from, to);
  }
  assert.ok(!/\blisten\s+(?!127\.0\.0\.1:)/.test(out.replace(/^\s*#.*$/gm, "")), "every listen is on loopback");
  return out;
}
