/**
 * Bench-only relay entry for the 30-second soak test: the relay as
 * `coder1 relay serve` builds it (relay/relay.ts `startRelay`, in-memory
 * store, signing key in the data dir), but with a shorter heartbeat, so that a
 * short run still holds many ping rounds and a bridge that stops answering is
 * dropped within it. The shipped CLI has no such knob; `deno task soak` uses
 * `coder1 relay serve` itself with the protocol's 15-second heartbeat. Run it
 * with the relay role's permission flags (bench/soak.ts does):
 *
 * ```sh
 * deno run <relay flags> bench/soak_relay.ts --data-dir DIR --heartbeat-ms 2000 --timeout-ms 10000
 * ```
 *
 * @module
 */
import { createLogger } from "../relay/logger.ts";
import { startRelay } from "../relay/relay.ts";

if (import.meta.main) {
  const flag = (name: string): string => {
    const at = Deno.args.indexOf(name);
    const value = at < 0 ? undefined : Deno.args[at + 1];
    if (value === undefined) {
      console.error("usage: soak_relay.ts --data-dir DIR --heartbeat-ms N --timeout-ms N");
      Deno.exit(2);
    }
    return value;
  };
  const heartbeatIntervalMs = Number(flag("--heartbeat-ms"));
  const heartbeatTimeoutMs = Number(flag("--timeout-ms"));
  if (!(heartbeatIntervalMs >= 100 && heartbeatTimeoutMs > heartbeatIntervalMs)) {
    console.error("soak_relay: need --heartbeat-ms >= 100 and --timeout-ms above it");
    Deno.exit(2);
  }
  const relay = await startRelay({
    port: 0,
    dataDir: flag("--data-dir"),
    log: createLogger({ level: "warn" }),
    timings: { heartbeatIntervalMs, heartbeatTimeoutMs },
  });
  console.log(`soak relay listening on ${relay.url}`);
  const stop = () => relay.shutdown();
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  await relay.finished;
}
