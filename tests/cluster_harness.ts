/**
 * A relay cluster of real processes on loopback for tests: Debian's
 * redis-server (tests/redis_server.ts), three `coder1 relay serve` processes
 * sharing it (`--redis-url`, each with `--advertise-url` its own address, a
 * shared `--mesh-key-file` and `--jwt-key-file` made with openssl in a temp
 * dir, mode 0600, and a data dir each), and Debian's nginx in front of them
 * with deploy/nginx/cluster.conf rendered with the test's ports and a
 * throwaway CA's certificate (every substitution checked, as
 * tests/nginx_cluster_test.ts does).
 *
 * Instances can be killed (SIGKILL), paused (SIGSTOP/SIGCONT) and restarted on
 * their port; a switchable TCP proxy plays a load balancer whose choice the
 * test makes; helpers read each instance's /metrics to find where a session's
 * sockets are.
 *
 * Tests call {@linkcode haveClusterTools} first: skipped with a printed reason
 * when redis-server, nginx or openssl is missing (under CODER1_REQUIRE_ALL=1
 * they run and fail).
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseExposition } from "./prometheus_text.ts";
import { type RedisServer, startRedisServer } from "./redis_server.ts";
import {
  freePort,
  haveProgram,
  makeTestCertificates,
  makeTestDirs,
  type RelayProcess,
  ROOT,
  runProgram,
  startRelayProcess,
  type TestDirs,
} from "./helpers.ts";
import { type Nginx, renderSiteFile, startNginx } from "./nginx_server.ts";

/** The shipped cluster site config. */
export const CLUSTER_SITE = `${ROOT}/deploy/nginx/cluster.conf`;

/** The upstream ports the shipped config names, in order (instances A, B, C). */
export const SHIPPED_PORTS = [8801, 8802, 8803] as const;

/**
 * Whether redis-server, nginx and openssl are all installed (each missing one
 * prints why `why` is skipped).
 */
export function haveClusterTools(why: string): boolean {
  // Every check runs, so every missing program is named.
  const found = ["redis-server", "nginx", "openssl"].map((p) => haveProgram(p, why));
  return found.every(Boolean);
}

/**
 * deploy/nginx/cluster.conf with the test's loopback ports and certificates:
 * the three upstream servers, the listen addresses and the certificate paths,
 * each substitution matching exactly as often as expected (so a change to
 * the shipped file that this harness no longer covers fails here).
 *
 * @param site The file's text.
 * @param relayPorts The instances' ports, in the order of {@linkcode SHIPPED_PORTS}.
 * @param ports Where nginx listens (on 127.0.0.1).
 * @param certDir Where tests/helpers.ts makeTestCertificates put the server's certificate.
 * @returns The rendered config.
 */
export function renderClusterSite(
  site: string,
  relayPorts: number[],
  ports: { http: number; https: number },
  certDir: string,
): string {
  assert.equal(relayPorts.length, SHIPPED_PORTS.length);
  assert.match(site, /^\s*hash \$coder1_route consistent;$/m, "the upstream hashes the routing key");
  return renderSiteFile("deploy/nginx/cluster.conf", site, [
    ...SHIPPED_PORTS.map((p, i) =>
      [`server 127.0.0.1:${p} `, `server 127.0.0.1:${relayPorts[i]} `, 1] as [string, string, number]
    ),
    ["listen 80;", `listen 127.0.0.1:${ports.http};`, 1],
    ["listen [::]:80;", "# (no IPv6 in the test)", 1],
    ["listen 443 ssl;", `listen 127.0.0.1:${ports.https} ssl;`, 1],
    ["listen [::]:443 ssl;", "# (no IPv6 in the test)", 1],
    ["/etc/letsencrypt/live/relay.example.com/fullchain.pem", `${certDir}/server.pem`, 1],
    ["/etc/letsencrypt/live/relay.example.com/privkey.pem", `${certDir}/server.key`, 1],
  ]);
}

/** One relay instance of the cluster. */
export interface Instance {
  /** "A", "B", "C". */
  name: string;
  /** Its port (kept across restarts). */
  port: number;
  /** `http://127.0.0.1:PORT`, also its advertise URL (its instance id). */
  url: string;
  /** The running process (the last one started). */
  proc: RelayProcess;
  /** Whether it was killed and not restarted. */
  dead: boolean;
  /** Sends a signal; SIGKILL waits for the exit. */
  kill(signal: Deno.Signal): Promise<void>;
  /** Starts it again on its port (after a kill). */
  restart(): Promise<void>;
  /** Its /metrics, parsed (`name{labels}` -> value). */
  metrics(): Promise<Map<string, number>>;
}

/** A running cluster. */
export interface Cluster {
  /** The temp tree (the bridge's HOME and config are in it). */
  dirs: TestDirs;
  /** The shared redis-server. */
  redis: RedisServer;
  /** The instances, A, B, C. */
  instances: Instance[];
  /** nginx in front of them (TLS 1.3 with a throwaway CA). */
  nginx: Nginx;
  /** nginx's https URL, which every instance calls its public one: the IDE's Origin. */
  publicUrl: string;
  /** The throwaway CA's certificate (PEM) and its file, for clients of {@linkcode Cluster.publicUrl}. */
  ca: string;
  /** The CA file (a bridge's `--ca-file`). */
  caFile: string;
  /** fetch that trusts the CA. */
  fetch: typeof fetch;
  /** Stops everything and removes the tree. */
  stop(): Promise<void>;
}

/** Options for {@linkcode startCluster}. */
export interface ClusterOptions {
  /** More `relay serve` flags for every instance. */
  relayArgs?: string[];
}

/**
 * Starts redis-server, three relay instances sharing it, and nginx in front.
 *
 * @param options More relay flags.
 * @returns The running cluster; call its `stop` when done.
 */
export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const dirs = await makeTestDirs();
  const keys = `${dirs.root}/keys`;
  const nginxDir = `${dirs.root}/nginx`;
  const certDir = `${dirs.root}/certs`;
  await Deno.mkdir(keys, { mode: 0o700 });
  await Deno.mkdir(nginxDir);
  await Deno.mkdir(certDir);
  await makeTestCertificates(certDir);
  const ca = await Deno.readTextFile(`${certDir}/ca.pem`);
  const client = Deno.createHttpClient({ caCerts: [ca] });
  // The shared secrets, as an operator makes them (docs/OPERATIONS.md): openssl, mode 0600.
  const jwtKey = `${keys}/jwt-ed25519.pem`;
  const meshKey = `${keys}/mesh.key`;
  const made = await runProgram("sh", [
    "-c",
    `umask 077 && openssl genpkey -algorithm ed25519 -out '${jwtKey}' && openssl rand -hex 32 > '${meshKey}'`,
  ], keys);
  assert.equal(made.code, 0, made.out);
  const redis = await startRedisServer();
  const ports = SHIPPED_PORTS.map(() => freePort());
  let nginx: Nginx | undefined;
  const instances: Instance[] = [];
  try {
    const listen = { http: freePort(), https: freePort() };
    const site = renderClusterSite(await Deno.readTextFile(CLUSTER_SITE), ports, listen, certDir);
    nginx = await startNginx(nginxDir, site, listen.https);
    const publicUrl = `https://127.0.0.1:${listen.https}`;
    const start = (name: string, port: number) =>
      startRelayProcess(dirs, [
        "--data-dir",
        `${dirs.root}/relay-${name}`,
        "--jwt-key-file",
        jwtKey,
        "--redis-url",
        redis.url,
        "--advertise-url",
        `http://127.0.0.1:${port}`,
        "--mesh-key-file",
        meshKey,
        "--public-url",
        publicUrl,
        ...(options.relayArgs ?? []),
      ], port);
    const names = ["A", "B", "C"];
    const procs = await Promise.all(ports.map((port, i) => start(names[i], port)));
    for (const [i, port] of ports.entries()) {
      const instance: Instance = {
        name: names[i],
        port,
        url: `http://127.0.0.1:${port}`,
        proc: procs[i],
        dead: false,
        async kill(signal) {
          try {
            instance.proc.child.kill(signal);
          } catch {
            // Gone already.
          }
          if (signal === "SIGKILL") {
            await instance.proc.status;
            instance.dead = true;
          }
        },
        async restart() {
          await instance.proc.status;
          instance.proc = await start(instance.name, port);
          instance.dead = false;
        },
        async metrics() {
          const res = await fetch(`${instance.url}/metrics`);
          return parseExposition(await res.text());
        },
      };
      instances.push(instance);
    }
    const cluster: Cluster = {
      dirs,
      redis,
      instances,
      nginx,
      publicUrl,
      ca,
      caFile: `${certDir}/ca.pem`,
      fetch: (input, init) => fetch(input, { ...init, client }),
      async stop() {
        for (const i of instances) {
          try {
            i.proc.child.kill("SIGCONT");
          } catch {
            // Gone.
          }
        }
        await Promise.all(instances.map((i) => i.proc.stop()));
        await nginx?.stop();
        await redis.stop();
        client.close();
        await dirs.cleanup();
      },
    };
    return cluster;
  } catch (error) {
    await Promise.all(instances.map((i) => i.proc.stop()));
    await nginx?.stop();
    await redis.stop();
    client.close();
    await dirs.cleanup();
    throw error;
  }
}

/**
 * Runs `fn` with a fresh cluster, printing the instances' stderr and nginx's
 * error log when it fails, and stopping everything after.
 */
export async function withCluster(
  fn: (cluster: Cluster) => Promise<void>,
  options: ClusterOptions = {},
): Promise<void> {
  const cluster = await startCluster(options);
  try {
    await fn(cluster);
  } catch (error) {
    for (const i of cluster.instances) {
      console.error(`--- instance ${i.name} (${i.url}) stderr:\n${i.proc.stderr.text}`);
    }
    console.error(`--- nginx error log:\n${(await cluster.nginx.log()).split("\n").slice(-40).join("\n")}`);
    throw error;
  } finally {
    await cluster.stop();
  }
}

/**
 * Which instances hold a bridge socket and IDE sockets now, from their
 * gauges (a socket forwarded over the mesh counts at the session's home, not
 * at the instance it arrived at).
 */
export async function whereAreSockets(cluster: Cluster): Promise<{ bridges: number[]; ides: number[] }> {
  const bridges: number[] = [], ides: number[] = [];
  for (const [i, instance] of cluster.instances.entries()) {
    if (instance.dead) continue;
    const m = await instance.metrics().catch(() => undefined);
    if (!m) continue;
    if ((m.get("coder1_bridges_connected") ?? 0) > 0) bridges.push(i);
    if ((m.get("coder1_ide_sockets_connected") ?? 0) > 0) ides.push(i);
  }
  return { bridges, ides };
}

/**
 * A loopback TCP proxy standing for a load balancer whose choice the test
 * makes: it forwards to `target`, which `switchTo` changes (cutting every
 * connection through it, as a balancer's failover does).
 */
export function switchableProxy(target: number): {
  url: string;
  switchTo(port: number): void;
  cut(): void;
  close(): void;
} {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  let current = target;
  const closeAll = () => {
    for (const c of [...open]) {
      open.delete(c);
      try {
        c.close();
      } catch {
        // Already closed.
      }
    }
  };
  (async () => {
    for await (const client of listener) {
      Deno.connect({ hostname: "127.0.0.1", port: current }).then((upstream) => {
        open.add(client).add(upstream);
        const end = () => {
          for (const c of [client, upstream]) {
            open.delete(c);
            try {
              c.close();
            } catch {
              // Already closed.
            }
          }
        };
        client.readable.pipeTo(upstream.writable, { preventClose: true }).catch(() => {}).finally(end);
        upstream.readable.pipeTo(client.writable, { preventClose: true }).catch(() => {}).finally(end);
      }).catch(() => client.close());
    }
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    switchTo(port) {
      current = port;
      closeAll();
    },
    cut: closeAll,
    close() {
      listener.close();
      closeAll();
    },
  };
}
