/**
 * The web IDE in a real browser: Playwright (playwright-core) drives Debian's
 * Chromium against a real relay process and a real bridge process. Pairing,
 * the SAS, approval, a bridge started with --no-terminal (the page says so
 * and falls back to the one-shot command runner: commands, Ctrl-C, history),
 * reload without pairing, forgetting the bridge, the crypto vectors in the
 * page, and a foreign origin's attempt to open the IDE socket. The terminal
 * tabs are tests/web_terminal_test.ts's. Screenshots of the main states go to
 * artifacts/web/ (ignored by git).
 */
import assert from "node:assert/strict";
import type { Browser, Page } from "playwright-core";
import { type Coder1Process, haveProgram, makeTestDirs, startBridgeProcess, startRelayProcess } from "./helpers.ts";
import { indicator, launchChromium, shot, waitForTerminal } from "./web_browser.ts";

const HAVE_CHROMIUM = haveProgram("chromium", "web IDE tests in Chromium");

async function typeCommand(page: Page, command: string): Promise<void> {
  await page.click("#terminal");
  await page.keyboard.type(command);
  await page.keyboard.press("Enter");
}

Deno.test({
  name:
    "web IDE in Chromium: pair with the SAS; a --no-terminal bridge: the page says so, commands, Ctrl-C; reload without pairing, forget",
  ignore: !HAVE_CHROMIUM,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dirs = await makeTestDirs();
    const work = `${dirs.root}/work`;
    await Deno.mkdir(work);
    await Deno.writeTextFile(`${work}/readme-for-ls.txt`, "x");
    let relay = await startRelayProcess(dirs);
    let browser: Browser | undefined;
    let bridge: Coder1Process | undefined;
    const problems: string[] = [];
    try {
      browser = await launchChromium();
      const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
      const page = await context.newPage();
      page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
      page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));

      await t.step("the page loads under a strict CSP with the usual security headers", async () => {
        const response = await page.goto(relay.url);
        const headers = response!.headers();
        assert.match(headers["content-security-policy"], /default-src 'self'/);
        assert.match(headers["content-security-policy"], /script-src 'self'(;|$)/);
        assert.equal(headers["x-content-type-options"], "nosniff");
        assert.equal(headers["x-frame-options"], "DENY");
        await indicator(page, "disconnected");
        await page.waitForSelector("#terminals-empty:text-matches('^Connect a bridge')");
        assert.match((await page.textContent("#ide-fingerprint"))!, /^([0-9a-f]{4} ){7}[0-9a-f]{4}$/);
        await shot(page, "01-start");
      });

      await t.step("the crypto vectors pass in the page", async () => {
        const results = await page.evaluate(async () => {
          const m = await import("/assets/vectors.js");
          return await m.run() as { name: string; ok: boolean; detail?: string }[];
        });
        assert.ok(results.length >= 20, `${results.length} checks`);
        assert.deepEqual(results.filter((r) => !r.ok), []);
      });

      let code = "";
      await t.step("Connect Bridge shows a code, a countdown and the command line", async () => {
        await page.click("#connect-bridge");
        await page.waitForSelector("#pairing-code[data-code]");
        code = (await page.getAttribute("#pairing-code", "data-code"))!;
        assert.match(code, /^\d{6}$/);
        assert.match((await page.textContent("#pairing-expiry"))!, /Expires in [45]:\d\d/);
        assert.equal(await page.textContent("#bridge-command"), `coder1 bridge start --relay ${relay.url}`);
        // For a user with a checkout but no coder1 command yet, the same through npx, and the install.
        assert.equal(
          await page.textContent("#bridge-command-checkout"),
          `npx -y deno@2.9.6 task coder1 bridge start --relay ${relay.url}`,
        );
        assert.equal(await page.textContent("#install-command"), "npx -y deno@2.9.6 task install");
        await indicator(page, "waiting");
        await shot(page, "02-pairing-code");
      });

      await t.step("the SAS on the page equals the bridge's; approving connects", async () => {
        bridge = startBridgeProcess(dirs, relay.url, {
          code,
          args: ["--cwd", work, "--name", "web-test-box", "--no-terminal"],
        });
        await page.waitForSelector("#approve-dialog[open]", { timeout: 20_000 });
        const pageSas = (await page.textContent("#sas"))!;
        const bridgeSas = (await bridge.stdout.waitFor(/Check that the IDE shows: (\d{3} \d{3})/))[1];
        assert.equal(pageSas, bridgeSas);
        assert.equal(await page.textContent("#approve-name"), "web-test-box");
        assert.equal(await page.textContent("#approve-os"), "linux");
        await indicator(page, "approve");
        await shot(page, "03-approve-dialog");
        await bridge.write(`${bridgeSas}\n`);
        await page.click("#approve");
        await indicator(page, "connected");
        assert.equal(await page.isVisible("#approve-dialog"), false);
      });

      await t.step("the page says terminals are turned off and offers the one-shot runner", async () => {
        await page.waitForSelector("#terminal-notice:not([hidden])");
        assert.match((await page.textContent("#terminal-notice"))!, /--no-terminal: terminals are turned off/);
        assert.equal(await page.isVisible("#workspace"), false);
        await page.waitForSelector("#runner #terminal .xterm");
      });

      await t.step("commands run: output, stderr, exit status", async () => {
        await typeCommand(page, "echo hello");
        await waitForTerminal(page, /\nhello\n\[exit 0 · \d+ ms\]/);
        await typeCommand(page, "ls");
        await waitForTerminal(page, /readme-for-ls\.txt\n\[exit 0/);
        await typeCommand(page, "echo oops >&2; exit 3");
        await waitForTerminal(page, /oops\n\[exit 3 · \d+ ms\]/);
      });

      await t.step("Ctrl-C stops a sleep 30", async () => {
        const started = Date.now();
        await typeCommand(page, "sleep 30");
        await new Promise((r) => setTimeout(r, 500));
        await page.keyboard.press("Control+C");
        await waitForTerminal(page, /\[killed by SIGINT · \d+ ms\]/, { timeoutMs: 10_000 });
        assert.ok(Date.now() - started < 10_000);
        await shot(page, "04-terminal");
      });

      await t.step("history: up arrow recalls the last command", async () => {
        await page.click("#terminal");
        await page.keyboard.press("ArrowUp");
        await page.keyboard.press("ArrowUp");
        await page.keyboard.press("Enter");
        await waitForTerminal(page, /oops\n\[exit 3[\s\S]*oops\n\[exit 3/);
      });

      await t.step("a reload reconnects to the approved bridge without pairing", async () => {
        await page.reload();
        await indicator(page, "connected");
        assert.equal(await page.isVisible("#approve-dialog"), false);
        await page.waitForSelector("#terminal-notice:not([hidden])");
        await typeCommand(page, "echo after-reload");
        await waitForTerminal(page, /after-reload\n\[exit 0/);
        assert.equal(bridge!.stdout.text.match(/Check that the IDE shows/g)?.length, 1);
      });

      await t.step("keyboard: Tab reaches labelled controls; the layout holds at 200% zoom", async () => {
        await page.focus("#connect-bridge");
        const label = await page.evaluate(() =>
          (globalThis as unknown as { document: { activeElement: { textContent: string } | null } }).document
            .activeElement?.textContent
        );
        assert.equal(label, "Connect Bridge");
        await page.setViewportSize({ width: 550, height: 380 }); // 1100x760 at 200%
        for (const id of ["#connect-bridge", "#bridge-indicator"]) {
          const box = (await page.locator(id).boundingBox())!;
          assert.ok(box.x >= 0 && box.x + box.width <= 550, `${id} fits the width`);
        }
        await shot(page, "05-zoom-200");
        await page.setViewportSize({ width: 1100, height: 760 });
      });

      await t.step("after a relay restart the page and the bridge reconnect by themselves", async () => {
        const port = relay.port;
        await relay.stop();
        await indicator(page, "reconnecting");
        await shot(page, "06-reconnecting");
        relay = await startRelayProcess(dirs, [], port);
        await indicator(page, "connected", 30_000);
        await typeCommand(page, "echo back");
        await waitForTerminal(page, /back\n\[exit 0/);
      });

      await t.step("Forget this bridge asks first, then revokes it", async () => {
        await page.click("#forget-bridge");
        await page.waitForSelector("#forget-dialog[open]");
        await page.click("#forget-confirm");
        const status = await bridge!.status;
        assert.equal(status.code, 1);
        assert.match(bridge!.stderr.text, /no longer accepts this machine's token/);
        await indicator(page, "disconnected");
        await shot(page, "07-forgotten");
      });

      await t.step("the Bridges list shows the credential: paired when and from where, approved, revoked", async () => {
        await page.click("#show-bridges");
        const row = page.locator("#bridge-rows .bridge-row").first();
        await row.waitFor({ timeout: 10_000 });
        assert.equal(await row.getAttribute("data-state"), "revoked");
        const text = (await row.textContent())!;
        assert.match(text, /paired .* from 127\.0\.0\.1/);
        assert.match(text, /approved · revoked here/);
        assert.equal(await page.locator("#bridge-rows .revoke-bridge").count(), 0, "nothing left to revoke");
        await shot(page, "07b-bridge-list");
        await page.click("#show-bridges");
      });

      await t.step("new codes respect the rate limit and say when to retry", async () => {
        await page.click("#connect-bridge");
        for (let i = 0; i < 6 && !(await page.textContent("#pairing-error")); i++) {
          await page.click("#new-code");
          await page.waitForTimeout(100);
        }
        assert.match((await page.textContent("#pairing-error"))!, /You can get a new code in \d+ s/);
        assert.equal(await page.isDisabled("#new-code"), true);
        await shot(page, "08-rate-limited");
      });

      await t.step("a page from a foreign origin cannot open the IDE socket", async () => {
        const foreign = Deno.serve(
          { hostname: "127.0.0.1", port: 0, onListen: () => {} },
          () => new Response("<!doctype html><title>elsewhere</title>", { headers: { "content-type": "text/html" } }),
        );
        try {
          const other = await context.newPage();
          await other.goto(`http://127.0.0.1:${foreign.addr.port}/`);
          const outcome = await other.evaluate((url) =>
            new Promise<string>((resolve) => {
              const ws = new WebSocket(url);
              ws.onopen = () => resolve("open");
              ws.onclose = (e) => resolve(`closed ${e.code}`);
            }), `${relay.url.replace("http", "ws")}/ws/ide`);
          assert.notEqual(outcome, "open");
          const apiStatus = await other.evaluate(async (url) => {
            try {
              const res = await fetch(`${url}/api/pairing-codes`, { method: "POST", credentials: "include" });
              return res.status;
            } catch {
              return "blocked";
            }
          }, relay.url);
          assert.ok(apiStatus === "blocked" || apiStatus === 403, String(apiStatus));
          await other.close();
        } finally {
          await foreign.shutdown();
        }
      });
      const unexpected = problems.filter((p) => !/status of (401|403|429)|net::ERR|WebSocket connection/.test(p));
      assert.deepEqual(unexpected, [], "no script errors or CSP violations in the page");
    } finally {
      await browser?.close();
      await bridge?.stop();
      await relay.stop();
      await dirs.cleanup();
    }
  },
});
