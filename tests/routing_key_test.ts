/**
 * The routing key that lets a load balancer in front of several relay
 * instances place both ends of a session on the same one
 * (deploy/nginx/cluster.conf hashes `?r=`). The relay gives it with the
 * browser session; the IDE client sends it on `/ws/ide`. The bridge gets it in
 * `auth.ok`, stores it with its token and sends it on later `/ws/bridge`
 * connections, tested here with a real bridge process against a stand-in
 * relay that records the URLs it is asked for; and the bundled page in
 * Chromium.
 */
import assert from "node:assert/strict";
import { encodeFrame } from "../shared/frame_codec.ts";
import { FrameType, WS_SUBPROTOCOL } from "../shared/protocol.ts";
import type { IdeClient } from "../shared/ide_client.ts";
import {
  type Coder1Process,
  haveProgram,
  ideClient,
  makeTestDirs,
  pairedSetup,
  ROOT,
  runCollect,
  startBridgeProcess,
  startRelayProcess,
  wsFactory,
} from "./helpers.ts";
import { indicator, launchChromium } from "./web_browser.ts";

const KEY = /^[0-9a-f]{16}$/;

Deno.test({
  name: "routing key: the session API gives one per session, and the IDE socket carries it as ?r=",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dirs = await makeTestDirs();
    const relay = await startRelayProcess(dirs);
    const urls: string[] = [];
    const factory = wsFactory()!;
    const ide = ideClient(relay.url, { webSocket: (url, h, p) => (urls.push(url), factory(url, h, p)) });
    try {
      // POST /api/sessions and GET /api/session agree; another session has another key.
      const created = await fetch(`${relay.url}/api/sessions`, { method: "POST" });
      const { routingKey: key, expiresAt } = await created.json();
      assert.match(key, KEY);
      assert.equal(typeof expiresAt, "number");
      const cookie = created.headers.getSetCookie()[0].split(";")[0];
      const again = await (await fetch(`${relay.url}/api/session`, { headers: { cookie } })).json();
      assert.deepEqual(again, { ok: true, routingKey: key });
      assert.ok(!cookie.includes(key), "the key is not a piece of the cookie");
      const other = await (await fetch(`${relay.url}/api/sessions`, { method: "POST" })).json();
      assert.notEqual(other.routingKey, key);

      // The IDE client keeps the key and opens /ws/ide?r=<key>, which the relay serves as before.
      assert.equal(ide.routingKey, undefined);
      await ide.createSession();
      const mine = ide.routingKey;
      assert.match(mine ?? "", KEY);
      const status = await ide.connect();
      assert.equal(status.state, "disconnected");
      assert.equal(urls.at(-1), `${relay.url.replace(/^http/, "ws")}/ws/ide?r=${mine}`);
      // A reloaded page (ensureSession on a valid cookie) gets the same key again.
      const tab = ideClient(relay.url, { sessionCookie: ide.sessionCookie, webSocket: factory });
      assert.equal(await tab.ensureSession(), false);
      assert.equal(tab.routingKey, mine);
      tab.close();
    } finally {
      ide.close();
      await relay.stop();
      await dirs.cleanup();
    }
  },
});

/**
 * A stand-in relay for `/ws/bridge`: records each upgrade's URL, answers with
 * `auth.ok` (a new token and `routingKey`), then closes with 1012 (restart)
 * so that the bridge reconnects.
 */
function fakeRelay(auth: { routingKey?: string }) {
  const urls: string[] = [];
  const arrived: Array<() => void> = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const url = new URL(request.url);
    if (url.pathname !== "/ws/bridge") return new Response("not found", { status: 404 });
    urls.push(`${url.pathname}${url.search}`);
    arrived.splice(0).forEach((wake) => wake());
    const { socket, response } = Deno.upgradeWebSocket(request, { protocol: WS_SUBPROTOCOL });
    socket.onopen = () => {
      const body = { bridgeId: "b1", token: `token-${urls.length}`, expiresAt: Date.now() + 86_400_000, ...auth };
      socket.send(encodeFrame({ t: FrameType.AuthOk, body }));
      setTimeout(() => socket.close(1012, "restarting"), 50);
    };
    return response;
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    urls,
    /** Resolves once `n` upgrades have arrived. */
    async upgrades(n: number): Promise<void> {
      while (urls.length < n) await new Promise<void>((resolve) => arrived.push(resolve));
    },
    stop: () => server.shutdown(),
  };
}

Deno.test({
  name: "routing key: the bridge stores the key from auth.ok with its token and sends ?r= on later connections",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dirs = await makeTestDirs();
    const relay = fakeRelay({ routingKey: "644ab2d723dad42f" });
    const file = `${dirs.env.XDG_CONFIG_HOME}/coder1/credentials.json`;
    try {
      // A first pairing lands anywhere (no key yet); the reconnection after auth.ok carries it.
      const bridge = startBridgeProcess(dirs, relay.url, { code: "123456" });
      await relay.upgrades(2);
      await bridge.stop();
      assert.deepEqual(relay.urls.slice(0, 2), ["/ws/bridge", "/ws/bridge?r=644ab2d723dad42f"]);
      const stored = JSON.parse(await Deno.readTextFile(file)).relays[relay.url];
      assert.equal(stored.routingKey, "644ab2d723dad42f");
      assert.match(stored.token, /^token-\d$/);

      // A later start with the stored token sends the key from its first connection on.
      const before = relay.urls.length;
      const again = startBridgeProcess(dirs, relay.url);
      await relay.upgrades(before + 1);
      await again.stop();
      assert.equal(relay.urls[before], "/ws/bridge?r=644ab2d723dad42f");
    } finally {
      await relay.stop();
      await dirs.cleanup();
    }
  },
});

Deno.test({
  name: "routing key: a credentials file from before routing keys, and a relay that sends none, connect without ?r=",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dirs = await makeTestDirs();
    const relay = fakeRelay({});
    const dir = `${dirs.env.XDG_CONFIG_HOME}/coder1`;
    try {
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      const credential = { token: "old", bridgeId: "b1", expiresAt: Date.now() + 86_400_000, pairedAt: 1 };
      await Deno.writeTextFile(
        `${dir}/credentials.json`,
        JSON.stringify({ version: 1, lastRelay: relay.url, relays: { [relay.url]: credential } }),
        { mode: 0o600 },
      );
      const bridge = startBridgeProcess(dirs, relay.url);
      await relay.upgrades(2);
      await bridge.stop();
      assert.deepEqual(relay.urls.slice(0, 2), ["/ws/bridge", "/ws/bridge"]);
      const stored = JSON.parse(await Deno.readTextFile(`${dir}/credentials.json`)).relays[relay.url];
      assert.equal(stored.routingKey, undefined);
      assert.match(stored.token, /^token-\d$/, "rotated as before");
    } finally {
      await relay.stop();
      await dirs.cleanup();
    }
  },
});

/** Whether relay/hub.ts puts the routing key in `auth.ok` yet (the line lands with the cluster hub). */
const HUB_SENDS_ROUTING_KEY = /routingKey\(/.test(await Deno.readTextFile(`${ROOT}/relay/hub.ts`));
if (!HUB_SENDS_ROUTING_KEY) console.log("SKIP routing key through a real relay's auth.ok: relay/hub.ts sends none yet");

Deno.test({
  name: "routing key: a real relay's auth.ok carries the session's key; the bridge stores it and reconnects with ?r=",
  ignore: !HUB_SENDS_ROUTING_KEY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dirs = await makeTestDirs();
    const relay = await startRelayProcess(dirs);
    let ide: IdeClient | undefined;
    let bridge: Coder1Process | undefined;
    try {
      ({ ide, bridge } = await pairedSetup(dirs, relay.url));
      const file = `${dirs.env.XDG_CONFIG_HOME}/coder1/credentials.json`;
      const stored = JSON.parse(await Deno.readTextFile(file)).relays[relay.url];
      assert.equal(stored.routingKey, ide.routingKey, "the bridge's key is the IDE's");
      // A restart with the stored token opens /ws/bridge?r=<key>, which the relay serves as before.
      await bridge.stop();
      bridge = startBridgeProcess(dirs, relay.url);
      await bridge.stdout.waitFor(/Bridge connected/);
      await ide.waitForBridge(20_000);
      assert.equal((await runCollect(ide, "echo placed")).stdout, "placed\n");
    } finally {
      ide?.close();
      await bridge?.stop();
      await relay.stop();
      await dirs.cleanup();
    }
  },
});

Deno.test({
  name: "routing key: the bundled web page opens /ws/ide?r=<its session's key> (Chromium)",
  ignore: !haveProgram("chromium", "the web page's routing key in Chromium"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dirs = await makeTestDirs();
    const relay = await startRelayProcess(dirs);
    const browser = await launchChromium();
    try {
      const page = await (await browser.newContext()).newPage();
      const sockets: string[] = [];
      page.on("websocket", (ws) => sockets.push(ws.url()));
      await page.goto(relay.url);
      await indicator(page, "disconnected");
      const key = await page.evaluate(async () => (await (await fetch("/api/session")).json()).routingKey);
      assert.match(key, KEY);
      assert.deepEqual(sockets, [`${relay.url.replace(/^http/, "ws")}/ws/ide?r=${key}`]);
    } finally {
      await browser.close();
      await relay.stop();
      await dirs.cleanup();
    }
  },
});
