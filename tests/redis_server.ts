/**
 * A real redis-server for tests: Debian's `redis-server` on a loopback port
 * of its own, persistence off, everything in a temp dir. Tests that need it
 * call {@linkcode haveRedis} first (skipped with a printed reason when it is
 * missing; under CODER1_REQUIRE_ALL=1 they run and fail).
 *
 * @module
 */
import { freePort } from "../tools/harness.ts";
import { haveProgram } from "./helpers.ts";

/** Whether redis-server is installed (prints the skip reason when not). */
export function haveRedis(why: string): boolean {
  return haveProgram("redis-server", why);
}

/** A running redis-server. */
export interface RedisServer {
  /** `redis://127.0.0.1:PORT` */
  url: string;
  /** Its port (kept across {@linkcode RedisServer.restart}). */
  port: number;
  /** Sends a signal to the server (SIGKILL to crash it, SIGSTOP/SIGCONT to pause it). */
  kill(signal: Deno.Signal): void;
  /** Starts it again on the same port after a kill (empty: persistence is off). */
  restart(): Promise<void>;
  /** Stops it (SIGTERM) and removes its directory. */
  stop(): Promise<void>;
}

/**
 * Starts redis-server on a free loopback port and waits until it answers.
 *
 * @returns The running server.
 */
export async function startRedisServer(): Promise<RedisServer> {
  const dir = await Deno.makeTempDir({ prefix: "coder1-redis-" });
  const port = freePort();
  let child: Deno.ChildProcess | undefined;
  const launch = async () => {
    child = new Deno.Command("redis-server", {
      args: [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        dir,
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
      ],
      stdout: "null",
      stderr: "null",
      stdin: "null",
    }).spawn();
    await _waitForPort(port, 10_000);
  };
  await launch();
  const server: RedisServer = {
    url: `redis://127.0.0.1:${port}`,
    port,
    kill(signal) {
      try {
        child?.kill(signal);
      } catch {
        // Gone already.
      }
    },
    async restart() {
      await child?.status;
      await launch();
    },
    async stop() {
      server.kill("SIGTERM");
      await child?.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
  return server;
}

async function _waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      // A PING answered with +PONG: the server is accepting commands.
      await conn.write(new TextEncoder().encode("PING\r\n"));
      const buf = new Uint8Array(16);
      const n = await conn.read(buf);
      conn.close();
      if (n && new TextDecoder().decode(buf.subarray(0, n)).startsWith("+PONG")) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`redis-server did not answer on port ${port} within ${timeoutMs} ms`);
}
