/**
 * One first pairing in flight per browser session (issue 16), with IDE
 * clients in Deno against real relay and bridge processes: two clients of one
 * session (two tabs: one cookie, one identity key, one pin store) that share
 * a first-pairing lock get one code, the bridge prints one SAS, one approval
 * pairs both. Without the lock (the page before this change) the bridge
 * printed two SAS lines, one per tab. The page's Web Lock and the dialog in
 * every tab are tests/web_first_run_test.ts's.
 */
import assert from "node:assert/strict";
import { generateIdentity } from "../shared/e2e_crypto.ts";
import type { FirstPairingLock, IdeClient } from "../shared/ide_client.ts";
import { MemoryPinStore } from "../shared/pin_store.ts";
import {
  type Coder1Process,
  ideClient,
  makeTestDirs,
  nextApproval,
  startBridgeProcess,
  startRelayProcess,
} from "./helpers.ts";

const SAS_LINE = /Check that the IDE shows: (\d{3} \d{3})/g;

/** An in-memory lock with the Web Lock's shape: one holder at a time, in order of asking. */
function memoryLock(): FirstPairingLock {
  let tail = Promise.resolve();
  return (_bridgeId, signal) => {
    const before = tail;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    tail = before.then(() => held);
    return before.then(() => {
      if (!signal.aborted) return release;
      release();
      throw signal.reason;
    });
  };
}

async function twoTabs(relayUrl: string, lock?: FirstPairingLock): Promise<[IdeClient, IdeClient]> {
  const identity = await generateIdentity(false);
  const pins = new MemoryPinStore();
  const tab1 = ideClient(relayUrl, { identity, pins, firstPairingLock: lock });
  await tab1.createSession();
  const tab2 = ideClient(relayUrl, { identity, pins, firstPairingLock: lock, sessionCookie: tab1.sessionCookie });
  return [tab1, tab2];
}

Deno.test({
  name: "two tabs of one session pairing one bridge: one code, one SAS at the bridge, one approval pairs both",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dirs = await makeTestDirs();
    const relay = await startRelayProcess(dirs);
    const bridges: Coder1Process[] = [];
    const clients: IdeClient[] = [];
    try {
      await t.step("with the lock: one SAS, and both tabs are ready after one approval", async () => {
        const [tab1, tab2] = await twoTabs(relay.url, memoryLock());
        clients.push(tab1, tab2);
        const { code } = await tab1.requestPairingCode();
        assert.equal((await tab2.requestPairingCode()).code, code, "the second tab gets the same code");
        await Promise.all([tab1.connect(), tab2.connect()]);
        const approval = Promise.race([nextApproval(tab1), nextApproval(tab2)]);
        const bridge = startBridgeProcess(dirs, relay.url, { code });
        bridges.push(bridge);
        const request = await approval;
        const printed = (await bridge.stdout.waitFor(/Check that the IDE shows: (\d{3} \d{3})/))[1];
        assert.equal(printed, request.sas);
        await bridge.write(`${printed}\n`);
        await request.approve();
        await Promise.all([tab1.waitForBridge(20_000), tab2.waitForBridge(20_000)]);
        assert.equal(tab1.state, "ready");
        assert.equal(tab2.state, "ready");
        assert.equal(bridge.stdout.text.match(SAS_LINE)?.length, 1, bridge.stdout.text);
        const echoed = await new Promise<string>((resolve, reject) => {
          let out = "";
          const cmd = tab2.run("echo from-tab-2", { onStdout: (b) => (out += new TextDecoder().decode(b)) });
          cmd.exited.then(() => resolve(out), reject);
        });
        assert.equal(echoed, "from-tab-2\n");
      });

      await t.step("without it (before this change) each tab started its own pairing: two SAS lines", async () => {
        const other = await makeTestDirs();
        try {
          const [tab1, tab2] = await twoTabs(relay.url);
          clients.push(tab1, tab2);
          const { code } = await tab1.requestPairingCode();
          await Promise.all([tab1.connect(), tab2.connect()]);
          const bridge = startBridgeProcess(other, relay.url, { code });
          bridges.push(bridge);
          await bridge.stdout.waitFor(/Check that the IDE shows[\s\S]*Check that the IDE shows/);
          assert.equal(bridge.stdout.text.match(SAS_LINE)?.length, 2);
          await bridge.stop();
        } finally {
          await other.cleanup();
        }
      });
    } finally {
      for (const ide of clients) ide.close();
      for (const bridge of bridges) await bridge.stop().catch(() => {});
      await relay.stop();
      await dirs.cleanup();
    }
  },
});
