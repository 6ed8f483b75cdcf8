/**
 * Starts a relay: loads (or creates) the signing key, wires store, pairing,
 * tokens and hub, and serves HTTP(S) on one port (relay/http_server.ts).
 *
 * @module
 */
import { type Clock, systemClock } from "../shared/clock.ts";
import { BridgeCredentials } from "./bridge_credentials.ts";
import { clientAddress } from "./client_address.ts";
import { CredentialLedger, CREDENTIALS_FILE } from "./credential_ledger.ts";
import { ConnectionLimits } from "./conn_limits.ts";
import { createHttpHandler } from "./http_api.ts";
import { type RelayHandler, type RelayHttpServer, serveRelayHttp } from "./http_server.ts";
import { type FrameTap, Hub, type HubCluster, type HubTimings } from "./hub.ts";
import { createLogger, type Logger } from "./logger.ts";
import { clusterHandler, MeshAuth, MeshLinks } from "./mesh.ts";
import { RelayMetrics } from "./metrics.ts";
import { Pairing, type RandomSource } from "./pairing.ts";
import { TelemetryStore } from "./telemetry.ts";
import { MemoryStore, type RelayStore } from "./store.ts";
import { loadSigningKey, TokenService } from "./token_service.ts";

/** Options for {@linkcode startRelay}. */
export interface RelayOptions {
  /** Address to bind (default 127.0.0.1). */
  hostname?: string;
  /** Port to bind; 0 picks a free one (default 8787). */
  port?: number;
  /** PEM certificate chain and key: serve HTTPS/WSS. */
  tls?: { cert: string; key: string };
  /** The URL browsers use to reach the relay (behind a proxy, say). */
  publicUrl?: string;
  /** Directory for the signing key and revocations (created mode 0700). */
  dataDir: string;
  /** Use this signing key file instead of the data dir's. */
  jwtKeyFile?: string;
  /** Extra origins allowed to use the IDE API and socket. */
  allowedOrigins?: string[];
  /** Clock (tests inject a manual one). */
  clock?: Clock;
  /** Random source for pairing codes. */
  random?: RandomSource;
  /** State store (default: in memory, credential lines and revocations persisted in the data dir). */
  store?: RelayStore;
  /**
   * Keep the state in this Redis (`redis://...`, relay/redis_store.ts), shared
   * with other relay instances, instead of in memory and the data dir. A
   * Redis unreachable at start does not stop the relay: calls that need it
   * fail with 503 until it answers. Ignored when `store` is given.
   */
  redisUrl?: string;
  /** Logger (default: info to stderr). */
  log?: Logger;
  /** Heartbeat and auth timings (tests shrink them). */
  timings?: Partial<HubTimings>;
  /** Tests only: see, alter, drop or forge forwarded end-to-end frames ({@linkcode FrameTap}). */
  tap?: FrameTap;
  /** Keep telemetry in `<dataDir>/telemetry.sqlite` (default true; relay/telemetry.ts). */
  telemetry?: boolean;
  /** Telemetry file-size cap (default `TELEMETRY_MAX_FILE_BYTES`; tests shrink it). */
  telemetryMaxFileBytes?: number;
  /** Telemetry flush and prune intervals (tests shrink them). */
  telemetryIntervals?: { flushMs?: number; pruneMs?: number };
  /** When set, `GET /metrics` needs `Authorization: Bearer <this>`. */
  metricsToken?: string;
  /**
   * Take the client address for rate limits from the rightmost
   * `X-Forwarded-For` entry (the one the proxy in front added). Only for a
   * relay that nothing but that proxy can reach.
   */
  trustProxy?: boolean;
  /**
   * Most WebSocket connections one client address may hold open at once
   * (default `MAX_CONNECTIONS_PER_ADDRESS`, 64); more upgrades get HTTP 429.
   */
  maxConnectionsPerAddress?: number;
  /**
   * Several instances: how the other instances reach this one
   * (`--advertise-url`, `http(s)://host:port`), also this instance's id.
   * Turns leases and the mesh on; needs `meshKey` and a shared store
   * (`redisUrl`, or tests: one `store` object passed to several relays).
   */
  advertiseUrl?: string;
  /** Several instances: the key mesh links are authenticated with (`--mesh-key-file`, at least 32 bytes). */
  meshKey?: Uint8Array;
}

/** A running relay. */
export interface RelayHandle {
  /** Base URL the relay listens on, e.g. `http://127.0.0.1:8787`. */
  url: string;
  /** The port actually bound. */
  port: number;
  /** Origins allowed for browser requests. */
  allowedOrigins: string[];
  /** The switchboard (tests read its counters). */
  hub: Hub;
  /** The store. */
  store: RelayStore;
  /** The metrics `GET /metrics` renders. */
  metrics: RelayMetrics;
  /** Open WebSocket connections per client address (tests read it). */
  connections: ConnectionLimits;
  /** The telemetry file (undefined when telemetry is off). */
  telemetry?: TelemetryStore;
  /** Stops accepting, closes every socket with 1001 and waits for the server to end. */
  shutdown(): Promise<void>;
  /** Resolves when the server has stopped. */
  finished: Promise<void>;
}

/**
 * Starts a relay and resolves once it listens.
 *
 * @param options Where to listen and what to keep where.
 * @returns The running relay.
 *
 * @example
 * ```ts ignore
 * import { startRelay } from "./relay.ts";
 * const relay = await startRelay({ port: 0, dataDir: await Deno.makeTempDir() });
 * console.log(relay.url);
 * await relay.shutdown();
 * ```
 */
export async function startRelay(options: RelayOptions): Promise<RelayHandle> {
  const clock = options.clock ?? systemClock;
  const log = options.log ?? createLogger();
  // Checked before anything starts: a bad cap throws a RangeError here.
  const connections = new ConnectionLimits({ perAddress: options.maxConnectionsPerAddress });
  await Deno.mkdir(options.dataDir, { recursive: true, mode: 0o700 });
  const key = await loadSigningKey(options.jwtKeyFile ?? `${options.dataDir}/jwt-ed25519.jwk`, {
    create: options.jwtKeyFile === undefined,
  });
  let ledger: CredentialLedger | undefined;
  let store: RelayStore;
  if (options.store) store = options.store;
  else if (options.redisUrl !== undefined) {
    // Loaded only when asked for: a relay without Redis does not load the client at all.
    const { RedisStore } = await import("./redis_store.ts");
    store = await RedisStore.connect({ url: options.redisUrl, clock, log });
  } else {
    // Credential lines and revocations: one row per write (relay/credential_ledger.ts).
    ledger = new CredentialLedger(`${options.dataDir}/${CREDENTIALS_FILE}`);
    const imported = ledger.importJson(`${options.dataDir}/revoked.json`);
    if (imported > 0) log.info("revocations.import", { imported });
    store = new MemoryStore({ ledger });
  }
  // The store this relay made is this relay's to close (a given one is its caller's).
  const ownStore = options.store ? undefined : store;
  const tokens = new TokenService(key, { clock, store });
  const metrics = new RelayMetrics();
  let telemetry: TelemetryStore | undefined;
  if (options.telemetry !== false) {
    telemetry = new TelemetryStore(options.dataDir, {
      clock,
      onError: (error) => log.error("telemetry.error", { error: String(error) }),
      onCap: (cap, bridgeId) => log.warn("telemetry.cap", { cap, ...(bridgeId ? { bridgeId } : {}) }),
      maxFileBytes: options.telemetryMaxFileBytes,
    });
    // Retention is enforced at start too, not only on the hourly schedule.
    const removed = telemetry.prune();
    if (removed > 0) log.info("telemetry.prune", { removed });
    telemetry.start({
      flushIntervalMs: options.telemetryIntervals?.flushMs,
      pruneIntervalMs: options.telemetryIntervals?.pruneMs,
    });
  }
  const random = options.random ?? ((b: Uint8Array) => crypto.getRandomValues(b));
  const pairing = new Pairing({ store, clock, random, metrics });
  metrics.onRender(() => pairing.countExpired());
  // Revocations reach the hub through the store's events (from every instance sharing it).
  const credentials = new BridgeCredentials({ tokens, store, pairing, clock, metrics });
  const cluster = _cluster(options, store, clock, log, metrics);
  const hub = new Hub({ credentials, log, timings: options.timings, tap: options.tap, metrics, telemetry, cluster });
  metrics.setGaugeSource(() => hub.stats);

  const hostname = options.hostname ?? "127.0.0.1";
  const scheme = options.tls ? "https" : "http";
  // Compare origins as browsers send them: no trailing slash, no default port.
  const allowed = new Set<string>((options.allowedOrigins ?? []).map((o) => new URL(o).origin));
  let handler: RelayHandler = () => new Response("starting", { status: 503 });
  let ready = false;

  let server: RelayHttpServer;
  try {
    server = await serveRelayHttp({
      hostname,
      port: options.port ?? 8787,
      tls: options.tls,
      onError: (error) => log.error("http.error", { error: String(error) }),
    }, (request, info) => handler(request, info));
  } catch (error) {
    // Not listening (the port is taken, say): stop the telemetry timers too.
    telemetry?.close();
    credentials.close();
    ledger?.close();
    await ownStore?.close();
    throw error;
  }
  const addr = server.addr;

  const hostForUrl = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const url = `${scheme}://${hostForUrl}:${addr.port}`;
  const publicOrigin = options.publicUrl ? new URL(options.publicUrl).origin : undefined;
  if (publicOrigin) allowed.add(publicOrigin);
  else {
    allowed.add(new URL(url).origin);
    if (addr.hostname === "127.0.0.1" || addr.hostname === "::1") {
      allowed.add(new URL(`${scheme}://localhost:${addr.port}`).origin);
    }
  }

  const api = createHttpHandler({
    hub,
    pairing,
    tokens,
    credentials,
    store,
    clock,
    log,
    allowedOrigins: allowed,
    secureCookies: Boolean(options.tls) || publicOrigin?.startsWith("https:") === true,
    addressOf: (request, info) => clientAddress(request, info, options.trustProxy === true),
    hostNames: _hostNames(hostname, publicOrigin),
    metrics,
    metricsToken: options.metricsToken,
    ready: () => ready,
    connections,
  });
  handler = cluster
    ? clusterHandler(api, {
      hub,
      store,
      instance: cluster.instance,
      auth: cluster.auth,
      clock,
      log,
      ready: () => ready,
    })
    : api;
  hub.start();
  ready = true;
  const sweeper = setInterval(() => {
    pairing.countExpired();
    store.sweep(clock.now()).catch(() => {});
  }, 60_000);

  const finished = server.finished.then(async () => {
    clearInterval(sweeper);
    telemetry?.close();
    credentials.close();
    ledger?.close();
    await ownStore?.close();
  });
  return {
    url,
    port: addr.port,
    allowedOrigins: [...allowed],
    hub,
    store,
    metrics,
    connections,
    telemetry,
    finished,
    async shutdown() {
      ready = false;
      hub.stop();
      await server.shutdown();
      await finished;
    },
  };
}

/** Several instances (`advertiseUrl`): this instance's id, mesh key and links; undefined for a single relay. */
function _cluster(
  options: RelayOptions,
  store: RelayStore,
  clock: Clock,
  log: Logger,
  metrics: RelayMetrics,
): (HubCluster & { auth: MeshAuth }) | undefined {
  if (options.advertiseUrl === undefined) {
    if (options.meshKey !== undefined) {
      throw new TypeError("Cannot use a mesh key: no advertise URL (several instances)");
    }
    return undefined;
  }
  const url = new URL(options.advertiseUrl);
  const instance = url.origin;
  if (!/^https?:$/.test(url.protocol) || `${instance}/` !== url.href) {
    throw new TypeError(
      `Cannot advertise ${options.advertiseUrl}: an http(s)://host:port URL without a path is needed`,
    );
  }
  if (!options.meshKey) throw new TypeError("Cannot join other instances: no mesh key");
  // Per-process memory would make every instance the home of every session.
  if (!store.shared && options.store === undefined) {
    throw new TypeError("Cannot join other instances: they need a shared store (--redis-url)");
  }
  const auth = new MeshAuth(options.meshKey, clock);
  const mesh = new MeshLinks({ auth, instance, clock, log, metrics });
  metrics.setMeshLinkSource(() => mesh.size);
  return { instance, store, mesh, auth };
}

/** The names the relay answers to besides IP addresses (for the `/metrics` Host check). */
function _hostNames(bound: string, publicOrigin?: string): Set<string> {
  const names = new Set(["localhost"]);
  if (!/^[0-9.:]+$/.test(bound)) names.add(bound.toLowerCase());
  if (publicOrigin) names.add(new URL(publicOrigin).hostname.toLowerCase());
  return names;
}
