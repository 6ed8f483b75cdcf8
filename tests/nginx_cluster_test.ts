/**
 * The shipped balancer config for several relays, run for real: Debian's
 * nginx with deploy/nginx/cluster.conf (only its ports and certificate paths
 * substituted, each substitution checked) terminates TLS in front of three
 * stand-in upstreams (tiny Deno HTTP servers that answer with their name).
 * Requests with the same routing key (`?r=`) reach the same upstream, plain
 * requests and WebSocket upgrades alike; requests without one are spread; and
 * when one upstream dies only the keys it held move, over 300 random keys.
 *
 * Skipped with a printed reason when nginx or openssl is missing; under
 * CODER1_REQUIRE_ALL=1 it runs and fails.
 */
import assert from "node:assert/strict";
import WebSocket from "ws";
import { freePort, haveProgram, makeTestCertificates, ROOT } from "./helpers.ts";
import { renderSiteFile, startNginx } from "./nginx_server.ts";

const HAVE_TOOLS = haveProgram("nginx", "nginx cluster config tests") &&
  haveProgram("openssl", "nginx cluster config tests");

const SITE = `${ROOT}/deploy/nginx/cluster.conf`;
/** The upstream ports as shipped, in order. */
const SHIPPED_PORTS = [8801, 8802, 8803];
/** How many random routing keys the placement is checked with. */
const KEYS = 300;

/** deploy/nginx/cluster.conf with loopback ports and the test's certificates. */
function renderCluster(site: string, upstreams: number[], ports: { http: number; https: number }, certDir: string) {
  return renderSiteFile("deploy/nginx/cluster.conf", site, [
    ...SHIPPED_PORTS.map((p, i) =>
      [`server 127.0.0.1:${p} `, `server 127.0.0.1:${upstreams[i]} `, 1] as [string, string, number]
    ),
    ["listen 80;", `listen 127.0.0.1:${ports.http};`, 1],
    ["listen [::]:80;", "# (no IPv6 in the test)", 1],
    ["listen 443 ssl;", `listen 127.0.0.1:${ports.https} ssl;`, 1],
    ["listen [::]:443 ssl;", "# (no IPv6 in the test)", 1],
    ["/etc/letsencrypt/live/relay.example.com/fullchain.pem", `${certDir}/server.pem`, 1],
    ["/etc/letsencrypt/live/relay.example.com/privkey.pem", `${certDir}/server.key`, 1],
  ]);
}

/** A stand-in relay: answers every request with its name; `/ws/*` upgrades and sends its name. */
function standIn(name: string, port: number) {
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, (request) => {
    if (request.headers.get("upgrade")?.toLowerCase() === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(request);
      socket.onopen = () => socket.send(`${name} ${new URL(request.url).search}`);
      return response;
    }
    return new Response(name);
  });
  return { name, stop: () => server.shutdown() };
}

/** A random routing key, as relay/routing_key.ts makes them (16 hex). */
function randomKey(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test({
  name: "nginx (deploy/nginx/cluster.conf): one upstream per routing key; a dead upstream moves only its own keys",
  ignore: !HAVE_TOOLS,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const root = await Deno.makeTempDir({ prefix: "coder1-nginx-cluster-" });
    const certDir = `${root}/certs`;
    await Deno.mkdir(certDir);
    await Deno.mkdir(`${root}/nginx`);
    await makeTestCertificates(certDir);
    const upstreamPorts = SHIPPED_PORTS.map(() => freePort());
    const upstreams = upstreamPorts.map((port, i) => standIn(`relay${i + 1}`, port));
    const ports = { http: freePort(), https: freePort() };
    const shipped = await Deno.readTextFile(SITE);
    assert.match(shipped, /^\s*hash \$coder1_route consistent;$/m, "consistent hashing");
    const site = renderCluster(shipped, upstreamPorts, ports, certDir);
    const nginx = await startNginx(`${root}/nginx`, site, ports.https);
    const ca = await Deno.readTextFile(`${certDir}/ca.pem`);
    const client = Deno.createHttpClient({ caCerts: [ca] });
    const base = `https://127.0.0.1:${ports.https}`;
    const who = async (path: string) => {
      const res = await fetch(`${base}${path}`, { client });
      assert.equal(res.status, 200, `${path}: ${res.status}`);
      return await res.text();
    };
    try {
      // Placement: every key has one upstream, asked twice; the keys spread over all three.
      const keys = Array.from({ length: KEYS }, randomKey);
      const placed = new Map<string, string>();
      for (const key of keys) placed.set(key, await who(`/api/session?r=${key}`));
      for (const key of keys.slice(0, 50)) assert.equal(await who(`/ws/ide?r=${key}`), placed.get(key), key);
      const counts = (names: Iterable<string>) => {
        const c: Record<string, number> = {};
        for (const n of names) c[n] = (c[n] ?? 0) + 1;
        return c;
      };
      const before = counts(placed.values());
      assert.deepEqual(Object.keys(before).sort(), ["relay1", "relay2", "relay3"], JSON.stringify(before));
      for (const n of Object.values(before)) assert.ok(n >= KEYS / 10, `a fair share each: ${JSON.stringify(before)}`);

      // A WebSocket upgrade with a key reaches that key's upstream; `?r=` arrives unchanged.
      const key = keys[0];
      const ws = new WebSocket(`wss://127.0.0.1:${ports.https}/ws/bridge?r=${key}`, { ca });
      const greeting = await new Promise<string>((resolve, reject) => {
        ws.once("message", (data) => resolve(String(data)));
        ws.once("error", reject);
      });
      ws.close();
      assert.equal(greeting, `${placed.get(key)} ?r=${key}`);

      // Requests without a key are spread (the request id is their hash key), not pinned to one instance.
      const plain = new Set<string>();
      for (let i = 0; i < 30; i++) plain.add(await who("/api/session"));
      assert.ok(plain.size >= 2, `spread: ${[...plain]}`);

      // Operators' endpoints and the mesh are not served to the outside.
      for (const path of ["/metrics", "/mesh/ide", "/mesh/bridge"]) {
        const res = await fetch(`${base}${path}`, { client });
        assert.equal(res.status, 404, path);
        await res.body?.cancel();
      }

      // relay2 dies: its keys move to the two others, every other key stays where it was.
      await upstreams[1].stop();
      let moved = 0;
      for (const key of keys) {
        const now = await who(`/ws/ide?r=${key}`);
        assert.notEqual(now, "relay2");
        if (placed.get(key) === "relay2") moved++;
        else assert.equal(now, placed.get(key), `key ${key} stayed on ${placed.get(key)}`);
      }
      assert.equal(moved, before.relay2);
      console.log(`cluster.conf: ${KEYS} keys ${JSON.stringify(before)}; relay2 killed: ${moved} moved, 0 others`);
    } finally {
      client.close();
      await nginx.stop();
      for (const u of [upstreams[0], upstreams[2]]) await u.stop();
      await Deno.remove(root, { recursive: true }).catch(() => {});
    }
  },
});
