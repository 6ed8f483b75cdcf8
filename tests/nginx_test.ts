/**
 * The shipped reverse-proxy config, run for real: Debian's nginx with
 * deploy/nginx/coder1.conf (only its ports and certificate paths substituted,
 * each substitution checked) terminates TLS 1.3 in front of a relay on
 * loopback, with a throwaway CA made by openssl. An IDE client and a bridge
 * process pair and run commands through it; TLS 1.2 is refused; plain HTTP
 * redirects; /metrics is not served to the outside. Then the client address
 * for rate limits: without --trust-proxy every client behind nginx is
 * 127.0.0.1 (one shared budget); with it, the rightmost X-Forwarded-For entry
 * (the address nginx saw) counts, and what a client writes to its left does
 * not. Different clients are different loopback addresses (127.0.0.2, .3).
 *
 * nginx runs as the current user with everything (pid, logs, temp paths) in a
 * temp dir, `daemon off`, on loopback ports. Skipped with a printed reason
 * when nginx or openssl is missing; under CODER1_REQUIRE_ALL=1 it runs and fails.
 */
import assert from "node:assert/strict";
import { decodeFrame, parseJsonObject } from "../shared/frame_codec.ts";
import { FrameType, REDEEM_PER_ADDRESS_PER_WINDOW } from "../shared/protocol.ts";
import {
  approveBridge,
  bridgeSocket,
  type Coder1Process,
  freePort,
  haveProgram,
  ideClient,
  makeTestCertificates,
  makeTestDirs,
  type RelayProcess,
  ROOT,
  runCollect,
  runProgram,
  startBridgeProcess,
  startRelayProcess,
  type TestDirs,
  wsFactory,
} from "./helpers.ts";
import { type Nginx as NginxProcess, renderSiteFile, startNginx as startNginxProcess } from "./nginx_server.ts";

const HAVE_TOOLS = haveProgram("nginx", "nginx reverse-proxy tests") &&
  haveProgram("openssl", "nginx reverse-proxy tests");

const SITE = `${ROOT}/deploy/nginx/coder1.conf`;

/**
 * deploy/nginx/coder1.conf with loopback ports and the test's certificates:
 * every substitution must match exactly as often as expected, so a change to
 * the shipped file that this test would no longer cover fails here.
 */
export function renderSite(
  site: string,
  ports: { relay: number; http: number; https: number },
  certDir: string,
): string {
  return renderSiteFile("deploy/nginx/coder1.conf", site, [
    ["server 127.0.0.1:8787;", `server 127.0.0.1:${ports.relay};`, 1],
    ["listen 80;", `listen 127.0.0.1:${ports.http};`, 1],
    ["listen [::]:80;", "# (no IPv6 in the test)", 1],
    ["listen 443 ssl;", `listen 127.0.0.1:${ports.https} ssl;`, 1],
    ["listen [::]:443 ssl;", "# (no IPv6 in the test)", 1],
    ["/etc/letsencrypt/live/relay.example.com/fullchain.pem", `${certDir}/server.pem`, 1],
    ["/etc/letsencrypt/live/relay.example.com/privkey.pem", `${certDir}/server.key`, 1],
  ]);
}

interface Nginx extends NginxProcess {
  https: string;
  http: string;
}

async function startNginx(dir: string, relayPort: number, certDir: string): Promise<Nginx> {
  const ports = { relay: relayPort, http: freePort(), https: freePort() };
  const site = renderSite(await Deno.readTextFile(SITE), ports, certDir);
  const nginx = await startNginxProcess(dir, site, ports.https);
  return { ...nginx, https: `https://127.0.0.1:${ports.https}`, http: `http://127.0.0.1:${ports.http}` };
}

/**
 * One redemption attempt with a wrong code from `localAddress`, through nginx;
 * resolves with the HTTP status of the refusal (401, or 429 when rate-limited).
 */
async function guess(nginx: Nginx, ca: string, localAddress: string, headers: Record<string, string> = {}) {
  // Not a live code: no code is issued in these steps.
  const socket = bridgeSocket(nginx.https, { code: "000000", version: "0.3.0" }, headers, { ca, localAddress });
  const { code } = await socket.closed;
  return code;
}

async function withSetup(
  fn: (ctx: { dirs: TestDirs; certDir: string; ca: string; nginx: Nginx; relayPort: number }) => Promise<void>,
): Promise<void> {
  const dirs = await makeTestDirs();
  const certDir = `${dirs.root}/certs`;
  const nginxDir = `${dirs.root}/nginx`;
  await Deno.mkdir(certDir);
  await Deno.mkdir(nginxDir);
  await makeTestCertificates(certDir);
  const relayPort = freePort();
  const nginx = await startNginx(nginxDir, relayPort, certDir);
  try {
    await fn({ dirs, certDir, ca: await Deno.readTextFile(`${certDir}/ca.pem`), nginx, relayPort });
  } catch (error) {
    console.error(`nginx error log:\n${await nginx.log()}`);
    throw error;
  } finally {
    await nginx.stop();
    await dirs.cleanup();
  }
}

Deno.test({
  name: "nginx (deploy/nginx/coder1.conf): TLS 1.3 in front of the relay; pairing and commands work through it",
  ignore: !HAVE_TOOLS,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withSetup(async ({ dirs, certDir, ca, nginx, relayPort }) => {
      const relay: RelayProcess = await startRelayProcess(
        dirs,
        ["--public-url", nginx.https, "--trust-proxy"],
        relayPort,
      );
      const client = Deno.createHttpClient({ caCerts: [ca] });
      const tlsFetch: typeof fetch = (input, init) => fetch(input, { ...init, client });
      const ide = ideClient(nginx.https, { fetch: tlsFetch, webSocket: wsFactory({ ca }) });
      let bridge: Coder1Process | undefined;
      try {
        const health = await tlsFetch(`${nginx.https}/healthz`);
        assert.equal(health.status, 200);
        assert.equal((await health.json()).status, "ok");
        const session = await tlsFetch(`${nginx.https}/api/sessions`, { method: "POST" });
        assert.equal(session.status, 201);
        await session.body?.cancel();
        assert.match(session.headers.get("set-cookie") ?? "", /; Secure/, "the public URL is https");

        await ide.createSession();
        const { code } = await ide.requestPairingCode();
        await ide.connect();
        bridge = startBridgeProcess(dirs, nginx.https, { code, args: ["--ca-file", `${certDir}/ca.pem`] });
        await approveBridge(ide, bridge);
        assert.equal((await runCollect(ide, "echo through nginx")).stdout, "through nginx\n");
        // A stream bigger than any proxy buffer, and stdin the other way.
        const big = await runCollect(ide, "head -c 3000000 /dev/zero | tr '\\0' a");
        assert.equal(big.stdout.length, 3_000_000);
        assert.ok(/^a+$/.test(big.stdout));
        const out: Uint8Array[] = [];
        const cat = ide.run("tr a-z A-Z", { onStdout: (b) => out.push(b) });
        cat.write("piped through the proxy\n");
        cat.closeStdin();
        assert.equal((await cat.exited).code, 0);
        assert.equal(out.map((b) => new TextDecoder().decode(b)).join(""), "PIPED THROUGH THE PROXY\n");

        // /metrics is not served to the outside; on loopback it is.
        const outside = await tlsFetch(`${nginx.https}/metrics`);
        assert.equal(outside.status, 404);
        await outside.body?.cancel();
        const inside = await fetch(`${relay.url}/metrics`);
        assert.match(await inside.text(), /coder1_commands_started_total 3/);

        // Plain HTTP only redirects to https.
        const plain = await fetch(`${nginx.http}/healthz`, { redirect: "manual" });
        assert.equal(plain.status, 301);
        assert.equal(plain.headers.get("location"), `https://127.0.0.1/healthz`);
        await plain.body?.cancel();

        // TLS 1.3 only: 1.2 is refused.
        const port = new URL(nginx.https).port;
        const connect = ["s_client", "-connect", `127.0.0.1:${port}`, "-CAfile", `${certDir}/ca.pem`];
        const v13 = await runProgram("openssl", [...connect, "-tls1_3"], certDir, "Q\n");
        assert.match(v13.out, /Protocol\s*:\s*TLSv1\.3|New, TLSv1\.3/, v13.out);
        assert.match(v13.out, /Verify return code: 0 \(ok\)/, v13.out);
        const v12 = await runProgram("openssl", [...connect, "-tls1_2"], certDir, "Q\n");
        assert.notEqual(v12.code, 0, v12.out);
        assert.doesNotMatch(v12.out, /Cipher is [A-Z0-9_-]{6,}/, v12.out);
      } finally {
        ide.close();
        await bridge?.stop();
        client.close();
        await relay.stop();
      }
    });
  },
});

Deno.test({
  name:
    "nginx: --trust-proxy off, every client behind the proxy shares 127.0.0.1's budget; on, the forwarded address counts",
  ignore: !HAVE_TOOLS,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withSetup(async ({ dirs, ca, nginx, relayPort }) => {
      for (const trust of [false, true]) {
        const relay = await startRelayProcess(
          dirs,
          ["--public-url", nginx.https, ...(trust ? ["--trust-proxy"] : [])],
          relayPort,
        );
        try {
          // Client A (127.0.0.2) spends its redemption budget on wrong codes.
          for (let i = 0; i < REDEEM_PER_ADDRESS_PER_WINDOW; i++) {
            assert.equal(await guess(nginx, ca, "127.0.0.2"), 401, `attempt ${i + 1}`);
          }
          assert.equal(await guess(nginx, ca, "127.0.0.2"), 429);
          // Forging an X-Forwarded-For entry does not help: nginx appends the real one, rightmost.
          assert.equal(
            await guess(nginx, ca, "127.0.0.2", { "x-forwarded-for": "203.0.113.9" }),
            429,
          );
          // Client B (127.0.0.3): with trust, its own budget; without, 127.0.0.1's spent one.
          assert.equal(
            await guess(nginx, ca, "127.0.0.3"),
            trust ? 401 : 429,
            `trust-proxy ${trust}`,
          );
          // Why --trust-proxy is only for a relay that nothing but the proxy can reach: a client that
          // talks to the relay directly chooses the address it is counted under.
          if (trust) {
            const direct = bridgeSocket(relay.url, { code: "000000", version: "0.3.0" }, {
              "x-forwarded-for": "127.0.0.3",
            });
            assert.equal((await direct.closed).code, 401, "counted for 127.0.0.3, not 127.0.0.1");
          }
        } finally {
          await relay.stop();
        }
      }
      // The attempts really went through nginx, from the two client addresses.
      const access = await nginx.accessLog();
      assert.match(access, /^127\.0\.0\.2 .*"GET \/ws\/bridge HTTP\/1\.1" (401|429) /m);
      assert.match(access, /^127\.0\.0\.3 .*"GET \/ws\/bridge HTTP\/1\.1" (401|429) /m);
      // A code redemption through nginx still reaches auth.ok under trust.
      const relay = await startRelayProcess(dirs, ["--public-url", nginx.https, "--trust-proxy"], relayPort);
      try {
        const client = Deno.createHttpClient({ caCerts: [ca] });
        const tlsFetch: typeof fetch = (input, init) => fetch(input, { ...init, client });
        const res = await tlsFetch(`${nginx.https}/api/sessions`, { method: "POST" });
        const cookie = res.headers.getSetCookie()[0].split(";")[0];
        await res.body?.cancel();
        const codeRes = await tlsFetch(`${nginx.https}/api/pairing-codes`, { method: "POST", headers: { cookie } });
        const { code } = await codeRes.json();
        client.close();
        const socket = bridgeSocket(nginx.https, { code, version: "0.3.0" }, {}, { ca, localAddress: "127.0.0.4" });
        await socket.opened;
        const ok = decodeFrame(await socket.next());
        assert.equal(ok.t, FrameType.AuthOk);
        assert.equal(typeof parseJsonObject(ok.body, ok.t).bridgeId, "string");
        socket.close();
        await socket.closed;
      } finally {
        await relay.stop();
      }
    });
  },
});
