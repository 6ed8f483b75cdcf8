/**
 * The first ten minutes (issue 16), in Chromium against a real relay and real
 * bridge processes, at a desktop size (1280×800) and a phone size (390×844):
 * two tabs of one browser session show one code and one approval (the bridge
 * prints one SAS); a refusal at the bridge is explained and a new code
 * offered, the used code gone; an expired code goes too; after approval no
 * old code stays behind the dialog; Forget asks first; on a phone the
 * bridge's state stays in view while the page scrolls; a command that
 * ignores Ctrl-C is ended with Force stop (SIGKILL to its process group), in
 * the command runner and in a terminal tab.
 * Screenshots go to artifacts/first-run/ (desktop-*.png, phone-*.png).
 */
import assert from "node:assert/strict";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { CODE_TTL_MS } from "../shared/protocol.ts";
import {
  type Coder1Process,
  haveProgram,
  makeTestDirs,
  ROOT,
  startBridgeProcess,
  startRelayProcess,
} from "./helpers.ts";
import { indicator, launchChromium, waitForTerminal } from "./web_browser.ts";

const HAVE_CHROMIUM = haveProgram("chromium", "first-run tests of the web IDE in Chromium");
const SHOTS = `${ROOT}/artifacts/first-run`;
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const SAS_LINE = /Check that the IDE shows: (\d{3} \d{3})/;

async function shot(page: Page, name: string): Promise<void> {
  await Deno.mkdir(SHOTS, { recursive: true });
  await page.screenshot({ path: `${SHOTS}/${name}.png` });
}

async function code(page: Page): Promise<string> {
  await page.waitForSelector("#pairing-code[data-code]", { timeout: 10_000 });
  return (await page.getAttribute("#pairing-code", "data-code"))!;
}

/** Whether the element is laid out inside the viewport. */
async function inView(page: Page, selector: string): Promise<boolean> {
  const box = await page.locator(selector).boundingBox();
  const size = page.viewportSize()!;
  return box !== null && box.y >= 0 && box.y + box.height <= size.height && box.x >= 0 &&
    box.x + box.width <= size.width;
}

/** Waits until element `id`'s text matches `pattern`. */
async function waitForText(page: Page, id: string, pattern: RegExp, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    last = (await page.textContent(`#${id}`)) ?? "";
    if (pattern.test(last)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`#${id} never matched ${pattern}: "${last}"`);
}

function sasLines(bridge: Coder1Process): number {
  return bridge.stdout.text.match(new RegExp(SAS_LINE.source, "g"))?.length ?? 0;
}

/** Pids of live processes whose command line contains `marker`. */
function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).replaceAll("\0", " ");
      if (cmdline.includes(marker)) found.push(Number(entry.name));
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

Deno.test({
  name:
    "first run in Chromium: one pairing per session across tabs, refusals explained, Forget asks, phone layout, Force stop",
  ignore: !HAVE_CHROMIUM,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dirs = await makeTestDirs();
    const work = `${dirs.root}/work`;
    await Deno.mkdir(work);
    const relay = await startRelayProcess(dirs);
    let browser: Browser | undefined;
    const bridges: Coder1Process[] = [];
    let phoneDirs: Awaited<ReturnType<typeof makeTestDirs>> | undefined;
    const problems: string[] = [];
    const watch = (page: Page) => {
      page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
      page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
    };
    try {
      browser = await launchChromium();
      const desktop: BrowserContext = await browser.newContext({ viewport: DESKTOP });
      const tab1 = await desktop.newPage();
      watch(tab1);
      await tab1.goto(relay.url);
      await indicator(tab1, "disconnected");
      const tab2 = await desktop.newPage();
      watch(tab2);
      await tab2.goto(relay.url);
      await indicator(tab2, "disconnected");

      let first = "";
      await t.step("two tabs of one session show the same code", async () => {
        await tab1.click("#connect-bridge");
        first = await code(tab1);
        await tab2.click("#connect-bridge");
        assert.equal(await code(tab2), first);
        assert.equal(await tab1.textContent("#pairing-expiry"), await tab2.textContent("#pairing-expiry"));
        await shot(tab1, "desktop-01-code-tab1");
        await shot(tab2, "desktop-02-code-tab2");
      });

      await t.step("one approval in both tabs, one SAS at the bridge; the used code is gone", async () => {
        const bridge = startBridgeProcess(dirs, relay.url, { code: first, args: ["--cwd", work, "--name", "box-one"] });
        bridges.push(bridge);
        const bridgeSas = (await bridge.stdout.waitFor(SAS_LINE))[1];
        for (const tab of [tab1, tab2]) {
          await tab.waitForSelector("#approve-dialog[open]", { timeout: 20_000 });
          await waitForText(tab, "sas", new RegExp(`^${bridgeSas}$`));
          assert.equal(await tab.textContent("#approve-name"), "box-one");
          assert.equal(await tab.isVisible("#pairing-code"), false, "the used code is not shown");
          assert.match((await tab.textContent("#pairing-status"))!, /A bridge used this code/);
          assert.equal(await tab.isVisible("#new-code"), false, "no new code while this pairing is under way");
        }
        await indicator(tab2, "approve");
        // Both tabs have had time to start a handshake of their own: still one SAS.
        await new Promise((r) => setTimeout(r, 1_000));
        assert.equal(sasLines(bridge), 1, bridge.stdout.text);
        await shot(tab1, "desktop-03-approval-tab1");
        await shot(tab2, "desktop-04-approval-tab2");
      });

      await t.step("a refusal at the bridge is explained in both tabs and a new code offered", async () => {
        const bridge = bridges[0];
        await bridge.write("000 001\n"); // Not the SAS: the bridge refuses and ends.
        assert.equal((await bridge.status).code, 1);
        for (const tab of [tab1, tab2]) {
          await tab.waitForSelector("#approve-dialog:not([open])", { state: "attached" });
          await waitForText(tab, "pairing-status", /ended the pairing before it was approved/);
          assert.equal(await tab.isVisible("#pairing-code"), false, "the used code is not shown");
          assert.equal(await tab.textContent("#new-code"), "Get a new code");
          await indicator(tab, "disconnected");
        }
        await shot(tab1, "desktop-05-refused-at-bridge");
      });

      let second = "";
      await t.step("a new code in one tab appears in the other; approving in either clears the old code", async () => {
        await tab1.click("#new-code");
        second = await code(tab1);
        assert.notEqual(second, first);
        assert.equal(await code(tab2), second, "the other tab shows the new code");
        const bridge = startBridgeProcess(dirs, relay.url, {
          code: second,
          args: ["--cwd", work, "--name", "box-two"],
        });
        bridges.push(bridge);
        const bridgeSas = (await bridge.stdout.waitFor(SAS_LINE))[1];
        for (const tab of [tab1, tab2]) {
          await tab.waitForSelector("#approve-dialog[open]", { timeout: 20_000 });
          await waitForText(tab, "sas", new RegExp(`^${bridgeSas}$`));
        }
        // Approve in the second tab (whichever tab runs the handshake, both follow).
        await tab2.click("#approve");
        for (const tab of [tab1, tab2]) {
          await waitForText(tab, "approve-status", /type the same digits on the bridge/);
          assert.equal(await tab.isVisible("#pairing-code"), false, "no old code behind the dialog");
          assert.equal(await tab.textContent("#pairing-expiry"), "");
        }
        await shot(tab1, "desktop-06-approved-waiting-for-bridge");
        await bridge.write(`${bridgeSas}\n`);
        await bridge.stdout.waitFor(/Approved in the IDE/);
        for (const tab of [tab1, tab2]) {
          await indicator(tab, "connected");
          assert.equal(await tab.isVisible("#approve-dialog"), false);
          assert.equal(await tab.isVisible("#pairing"), false);
        }
        assert.equal(sasLines(bridge), 1, bridge.stdout.text);
        await tab1.waitForSelector(".terminal-pane.active .xterm");
        await shot(tab1, "desktop-07-connected");
      });

      await t.step("a terminal job that ignores Ctrl-C gets Force stop (SIGKILL); the shell stays", async () => {
        const seconds = `${100 + Math.floor(Math.random() * 800)}.75`;
        await tab1.click(".terminal-pane.active .xterm");
        await tab1.keyboard.type(`sh -c "trap '' INT; echo trapped; sleep ${seconds}"`);
        await tab1.keyboard.press("Enter");
        await waitForTerminal(tab1, /\ntrapped\n/, { screen: true });
        assert.equal(await tab1.isVisible("#force-stop-terminal"), false);
        await tab1.keyboard.press("Control+C");
        await tab1.waitForSelector("#force-stop-terminal", { state: "visible", timeout: 10_000 });
        assert.ok(processesWith(`sleep ${seconds}`).length > 0, "Ctrl-C did not end it");
        await shot(tab1, "desktop-08-terminal-force-stop");
        await tab1.click("#force-stop-terminal");
        await tab1.waitForSelector("#force-stop-terminal", { state: "hidden" });
        const deadline = Date.now() + 5_000;
        while (processesWith(`sleep ${seconds}`).length > 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 50));
        }
        assert.deepEqual(processesWith(`sleep ${seconds}`), [], "the job's process group is gone");
        await tab1.keyboard.type("echo still-$((20+1))");
        await tab1.keyboard.press("Enter");
        await waitForTerminal(tab1, /still-21/, { screen: true });
      });

      await t.step("Forget this bridge asks first; Keep it keeps it", async () => {
        await tab1.click("#forget-bridge");
        await tab1.waitForSelector("#forget-dialog[open]");
        assert.match((await tab1.textContent("#forget-help"))!, /“box-two”/);
        await shot(tab1, "desktop-09-forget-asks");
        await tab1.click("#forget-cancel");
        await tab1.waitForSelector("#forget-dialog:not([open])", { state: "attached" });
        await new Promise((r) => setTimeout(r, 500));
        await indicator(tab1, "connected");
        assert.equal(await tab1.isVisible("#forget-bridge"), true);
        // Escape answers no as well.
        await tab1.click("#forget-bridge");
        await tab1.waitForSelector("#forget-dialog[open]");
        await tab1.keyboard.press("Escape");
        await tab1.waitForSelector("#forget-dialog:not([open])", { state: "attached" });
        await indicator(tab1, "connected");
        assert.ok(!bridges[1].stderr.text.includes("no longer accepts"), "the bridge was not revoked");
      });

      await t.step("an expired code disappears and a new one is offered", async () => {
        const context = await browser!.newContext({ viewport: DESKTOP });
        const page = await context.newPage();
        watch(page);
        await page.clock.install();
        await page.goto(relay.url);
        await indicator(page, "disconnected");
        await page.click("#connect-bridge");
        await code(page);
        await page.clock.fastForward(CODE_TTL_MS + 1_000);
        await waitForText(page, "pairing-status", /expired unused/);
        assert.equal(await page.isVisible("#pairing-code"), false);
        assert.equal(await page.textContent("#new-code"), "Get a new code");
        await shot(page, "desktop-10-code-expired");
        await context.close();
      });

      await t.step("a pairing nobody approves in time ends, and the page says so", async () => {
        const context = await browser!.newContext({ viewport: DESKTOP });
        const page = await context.newPage();
        watch(page);
        await page.goto(relay.url);
        await indicator(page, "disconnected");
        await page.click("#connect-bridge");
        const slowDirs = await makeTestDirs();
        try {
          const bridge = startBridgeProcess(slowDirs, relay.url, {
            code: await code(page),
            args: ["--approval-timeout", "2"],
          });
          bridges.push(bridge);
          await page.waitForSelector("#approve-dialog[open]", { timeout: 20_000 });
          assert.equal((await bridge.status).code, 1);
          assert.match(bridge.stdout.text + bridge.stderr.text, /No approval from the IDE in time/);
          await waitForText(page, "pairing-status", /its time to approve ran out/);
          assert.equal(await page.isVisible("#approve-dialog"), false);
          assert.equal(await page.isVisible("#pairing-code"), false);
          await indicator(page, "disconnected");
          await shot(page, "desktop-11-approval-timed-out");
        } finally {
          await context.close();
          await slowDirs.cleanup();
        }
      });

      const phone = await browser.newContext({ viewport: PHONE, isMobile: true, hasTouch: true });
      const page = await phone.newPage();
      watch(page);
      await page.goto(relay.url);
      await indicator(page, "disconnected");
      await shot(page, "phone-01-start");

      await t.step("phone: the bridge's state stays in view while the page scrolls", async () => {
        await page.click("#connect-bridge");
        const phoneCode = await code(page);
        await shot(page, "phone-02-code");
        const scrollable = await page.evaluate<number>("document.documentElement.scrollHeight - innerHeight");
        assert.ok(scrollable > 100, `the page scrolls at 390×844 (${scrollable} px)`);
        await page.evaluate("scrollTo(0, document.documentElement.scrollHeight)");
        assert.ok(await page.evaluate<number>("scrollY") > 100);
        assert.ok(await inView(page, "#bridge-indicator"), "the status badge is in view after scrolling");
        await indicator(page, "waiting");
        await shot(page, "phone-03-scrolled-state-visible");
        await page.evaluate("scrollTo(0, 0)");
        // Another machine: its own config (the desktop's bridge keeps its token and pin).
        phoneDirs = await makeTestDirs();
        const bridge = startBridgeProcess(phoneDirs, relay.url, {
          code: phoneCode,
          args: ["--cwd", work, "--name", "phone-box", "--no-terminal"],
        });
        bridges.push(bridge);
        const bridgeSas = (await bridge.stdout.waitFor(SAS_LINE))[1];
        await page.waitForSelector("#approve-dialog[open]", { timeout: 20_000 });
        assert.equal(await page.textContent("#sas"), bridgeSas);
        assert.ok(await inView(page, "#approve"), "Approve fits the phone's screen");
        await shot(page, "phone-04-approval");
        await bridge.write(`${bridgeSas}\n`);
        await page.click("#approve");
        await indicator(page, "connected");
        await page.waitForSelector("#runner #terminal .xterm");
        await page.evaluate("scrollTo(0, document.documentElement.scrollHeight)");
        assert.ok(await inView(page, "#bridge-indicator"), "the status badge is in view once connected");
        await shot(page, "phone-05-connected");
      });

      await t.step("phone: a command that ignores Ctrl-C is ended with Force stop (SIGKILL)", async () => {
        const marker = `${60 + Math.floor(Math.random() * 1000)}.25`;
        await page.click("#terminal");
        await page.keyboard.type(`trap '' INT; echo trapped pid=$$; sleep ${marker}`);
        await page.keyboard.press("Enter");
        const pid = Number((await waitForTerminal(page, /trapped pid=(\d+)/)).match(/trapped pid=(\d+)/)![1]);
        assert.equal(await page.textContent("#stop-command"), "Stop (Ctrl-C)");
        await page.keyboard.press("Control+C");
        // Ignored: still running, and after a few seconds Force stop is offered.
        await waitForText(page, "stop-command", /^Force stop \(SIGKILL\)$/, 10_000);
        await waitForTerminal(page, /still running 3 s after Ctrl-C/);
        assert.ok(processesWith(`sleep ${marker}`).length > 0, "the command still runs after Ctrl-C");
        assert.ok(await inView(page, "#stop-command"), "Force stop is on screen");
        await shot(page, "phone-06-force-stop-offered");
        await page.click("#stop-command");
        await waitForTerminal(page, /\[killed by SIGKILL · \d+ ms\]/, { timeoutMs: 10_000 });
        await page.waitForSelector("#stop-command", { state: "hidden" });
        const deadline = Date.now() + 5_000;
        while (processesWith(`sleep ${marker}`).length > 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 50));
        }
        assert.deepEqual(processesWith(`sleep ${marker}`), [], "the whole process group is gone");
        assert.equal(await Deno.stat(`/proc/${pid}`).then(() => true, () => false), false);
        await shot(page, "phone-07-force-stopped");
      });

      const unexpected = problems.filter((p) => !/status of (401|403|429)|net::ERR|WebSocket connection/.test(p));
      assert.deepEqual(unexpected, [], "no script errors or CSP violations in the page");
    } finally {
      await browser?.close();
      for (const bridge of bridges) await bridge.stop().catch(() => {});
      await relay.stop();
      await dirs.cleanup();
      await phoneDirs?.cleanup();
    }
  },
});
