/**
 * `coder1 relay serve`: parse flags, start the relay, print where to point a
 * browser and a bridge, and shut down cleanly on SIGINT/SIGTERM.
 *
 * @module
 */
import { type FlagValues, UsageError } from "../cli/args.ts";
import { defaultDataDir } from "../cli/paths.ts";
import { dropUnusedPermissions } from "../cli/permissions.ts";
import { RELAY_SERVE } from "../cli/specs.ts";
import { bridgeStartCommands } from "../shared/bridge_command.ts";
import { MIN_MESH_KEY_BYTES } from "../shared/protocol.ts";
import { isLoopbackHost } from "../shared/relay_url.ts";
import { TELEMETRY_ENV, telemetryEnabled } from "../shared/telemetry_setting.ts";
import { VERSION } from "../shared/version.ts";
import { createLogger, type LogFormat, type LogLevel } from "./logger.ts";
import { startRelay } from "./relay.ts";

/**
 * Runs the relay until a signal arrives.
 *
 * @param flags Parsed {@linkcode RELAY_SERVE} flags.
 * @returns The exit code.
 */
export async function relayServe(flags: FlagValues): Promise<number> {
  await dropUnusedPermissions("relay");
  const certFile = flags["tls-cert"] as string | undefined;
  const keyFile = flags["tls-key"] as string | undefined;
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new UsageError("--tls-cert and --tls-key go together", RELAY_SERVE);
  }
  const tls = certFile && keyFile
    ? { cert: await _readFile(certFile, "TLS certificate"), key: await _readFile(keyFile, "TLS key") }
    : undefined;
  const hostname = (flags.host as string | undefined) ?? "127.0.0.1";
  const dataDir = (flags["data-dir"] as string | undefined) ?? defaultDataDir();
  const log = createLogger({
    level: (flags["log-level"] as LogLevel | undefined) ?? "info",
    format: (flags["log-format"] as LogFormat | undefined) ?? "text",
  });
  let telemetry: boolean;
  try {
    telemetry = telemetryEnabled(Deno.env.get(TELEMETRY_ENV));
  } catch (error) {
    throw new UsageError((error as Error).message, RELAY_SERVE);
  }
  const metricsToken = await _metricsToken(flags);
  const cluster = await _clusterFlags(flags);

  let relay;
  try {
    relay = await startRelay({
      hostname,
      port: Number((flags.port as string | undefined) ?? 8787),
      tls,
      publicUrl: flags["public-url"] as string | undefined,
      dataDir,
      jwtKeyFile: flags["jwt-key-file"] as string | undefined,
      allowedOrigins: flags["allowed-origin"] as string[],
      log,
      telemetry,
      metricsToken,
      trustProxy: flags["trust-proxy"] === true,
      maxConnectionsPerAddress: _optionalInt(flags["max-connections-per-address"]),
      ...cluster,
    });
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) {
      console.error(
        `coder1: cannot listen on ${hostname}:${flags.port ?? 8787}: address in use (pick another with --port)`,
      );
      return 1;
    }
    throw error;
  }
  const publicUrl = (flags["public-url"] as string | undefined)?.replace(/\/$/, "") ?? relay.url;
  console.log(`coder1 relay ${VERSION} listening on ${relay.url}`);
  const start = bridgeStartCommands(publicUrl);
  console.log(`  Open ${publicUrl} in your browser: this relay serves the web IDE.`);
  console.log(`  To pair a bridge: click Connect Bridge there for a 6-digit code, then on the machine to control run`);
  console.log(`    ${start.installed}`);
  // The machine to control may have a release binary, or a checkout without the coder1 command yet.
  console.log(`  or, in a coder1 checkout without the coder1 command (${start.install} adds it):`);
  console.log(`    ${start.fromCheckout}`);
  console.log(`  Data dir: ${dataDir} (signing key, revocations). Allowed origins: ${relay.allowedOrigins.join(", ")}`);
  console.log(
    telemetry
      ? `  Telemetry: on, metadata only, kept 30 days in ${dataDir}/telemetry.sqlite ` +
        `(see it: coder1 relay telemetry; turn it off: ${TELEMETRY_ENV}=false)`
      : `  Telemetry: off (${TELEMETRY_ENV}=false): nothing is stored`,
  );
  console.log(
    `  Health: ${relay.url}/healthz, ${relay.url}/readyz; metrics: ${relay.url}/metrics` +
      (metricsToken === undefined ? " (no token: anyone who reaches this port can read them)" : " (bearer token)") +
      (flags["trust-proxy"] ? "; client addresses from X-Forwarded-For (--trust-proxy)" : ""),
  );
  if (!tls && !isLoopbackHost(hostname) && !flags["public-url"]) {
    console.log("  Warning: plain HTTP on a non-loopback address. Bridges refuse ws:// to other hosts;");
    console.log("  serve TLS with --tls-cert/--tls-key, or put a TLS proxy in front and set --public-url.");
  }
  if ((hostname === "0.0.0.0" || hostname === "::") && !flags["public-url"]) {
    console.log("  Note: browsers reach a wildcard address by a name; set --public-url (or --allowed-origin)");
    console.log("  to that URL, or the IDE socket will refuse their Origin.");
  }
  if (cluster.advertiseUrl) {
    console.log(`  Several instances: state in Redis, this instance is ${cluster.advertiseUrl} to the others (mesh)`);
    if (!flags["jwt-key-file"]) {
      console.log(
        "  Warning: no --jwt-key-file: every instance must share one signing key, or tokens issued here fail there.",
      );
    }
  }
  const jwtKeyFile = flags["jwt-key-file"] as string | undefined;
  if (jwtKeyFile && Deno.build.os !== "windows" && ((await Deno.stat(jwtKeyFile)).mode ?? 0) & 0o077) {
    console.log(
      `  Warning: ${jwtKeyFile} is readable by other users; anyone who reads it can mint bridge tokens (chmod 600).`,
    );
  }

  const stop = Promise.withResolvers<string>();
  const onSignal = (name: string) => () => stop.resolve(name);
  const signals: [Deno.Signal, () => void][] = [["SIGINT", onSignal("SIGINT")], ["SIGTERM", onSignal("SIGTERM")]];
  for (const [sig, fn] of signals) Deno.addSignalListener(sig, fn);
  const why = await Promise.race([stop.promise, relay.finished.then(() => "server ended")]);
  for (const [sig, fn] of signals) Deno.removeSignalListener(sig, fn);
  log.info("relay.stop", { reason: why });
  // Going-away closes (1001) to every socket, then at most SHUTDOWN_GRACE_MS
  // for the close handshakes before the process exits anyway.
  const grace = new Promise<void>((resolve) => setTimeout(resolve, SHUTDOWN_GRACE_MS));
  await Promise.race([relay.shutdown(), grace]);
  // Whatever telemetry is still batched is written before the process exits.
  relay.telemetry?.close();
  return 0;
}

async function _metricsToken(flags: FlagValues): Promise<string | undefined> {
  const token = flags["metrics-token"] as string | undefined;
  const file = flags["metrics-token-file"] as string | undefined;
  if (token !== undefined && file !== undefined) {
    throw new UsageError("--metrics-token and --metrics-token-file exclude each other", RELAY_SERVE);
  }
  if (file === undefined) return token;
  const fromFile = (await _readFile(file, "metrics token file")).trim();
  if (!/^[\x21-\x7e]{16,}$/.test(fromFile)) {
    throw new UsageError(`${file} must hold one token of at least 16 printable characters`, RELAY_SERVE);
  }
  return fromFile;
}

/**
 * `--redis-url`, `--advertise-url` and `--mesh-key-file`: all three or none.
 * The mesh key file must hold at least {@linkcode MIN_MESH_KEY_BYTES} bytes
 * (a trailing newline is not part of the key) and be readable by its owner
 * only: anyone who reads it can open mesh links as an instance.
 */
async function _clusterFlags(
  flags: FlagValues,
): Promise<{ redisUrl?: string; advertiseUrl?: string; meshKey?: Uint8Array }> {
  const redisUrl = flags["redis-url"] as string | undefined;
  const advertiseUrl = flags["advertise-url"] as string | undefined;
  const keyFile = flags["mesh-key-file"] as string | undefined;
  if (redisUrl === undefined) {
    if (advertiseUrl !== undefined || keyFile !== undefined) {
      throw new UsageError(
        "--advertise-url and --mesh-key-file are for several instances and need --redis-url",
        RELAY_SERVE,
      );
    }
    return {};
  }
  if (advertiseUrl === undefined || keyFile === undefined) {
    throw new UsageError("--redis-url needs --advertise-url and --mesh-key-file too", RELAY_SERVE);
  }
  let bytes: Uint8Array;
  let mode: number | null;
  try {
    bytes = await Deno.readFile(keyFile);
    mode = (await Deno.stat(keyFile)).mode;
  } catch (error) {
    throw new UsageError(`cannot read mesh key file ${keyFile}: ${(error as Error).message}`, RELAY_SERVE);
  }
  if (Deno.build.os !== "windows" && mode !== null && (mode & 0o077) !== 0) {
    throw new UsageError(
      `${keyFile} is readable by other users (mode ${(mode & 0o777).toString(8)}): anyone who reads it can ` +
        "pose as a relay instance; chmod 600 it",
      RELAY_SERVE,
    );
  }
  let end = bytes.byteLength;
  while (end > 0 && (bytes[end - 1] === 0x0a || bytes[end - 1] === 0x0d)) end--;
  const meshKey = bytes.subarray(0, end);
  if (meshKey.byteLength < MIN_MESH_KEY_BYTES) {
    throw new UsageError(
      `${keyFile} holds ${meshKey.byteLength} bytes; a mesh key needs at least ${MIN_MESH_KEY_BYTES} ` +
        "(e.g. openssl rand -hex 32 > FILE)",
      RELAY_SERVE,
    );
  }
  return { redisUrl, advertiseUrl: new URL(advertiseUrl).origin, meshKey };
}

function _optionalInt(value: unknown): number | undefined {
  return value === undefined ? undefined : Number(value);
}

/** Longest a SIGTERM/SIGINT shutdown waits for sockets to close. */
export const SHUTDOWN_GRACE_MS = 3_000;

async function _readFile(path: string, what: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new UsageError(`cannot read ${what} ${path}: ${(error as Error).message}`, RELAY_SERVE);
  }
}
