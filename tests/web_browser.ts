/**
 * Test-only helpers for the web IDE in Chromium (tests/web_test.ts and
 * tests/web_terminal_test.ts): launching Debian's Chromium through
 * playwright-core, screenshots under artifacts/web/, waiting for the
 * indicator and the terminal's text, and pairing the page with a bridge
 * process through the real UI (code, SAS, approval).
 *
 * @module
 */
import assert from "node:assert/strict";
import { type Browser, chromium, type Page } from "playwright-core";
import { type Coder1Process, ROOT, startBridgeProcess, type TestDirs } from "./helpers.ts";

/** Debian's Chromium. */
export const CHROMIUM = "/usr/bin/chromium";

/** Where the screenshots go (ignored by git). */
export const ARTIFACTS = `${ROOT}/artifacts/web`;

/** Flags that keep Chromium off the network and working as root in a container. */
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-default-apps",
  "--disable-extensions",
  "--metrics-recording-only",
  "--no-default-browser-check",
];

/** Launches Chromium headless. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

/** Saves a screenshot of the page as artifacts/web/NAME.png. */
export async function shot(page: Page, name: string): Promise<void> {
  await Deno.mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: `${ARTIFACTS}/${name}.png` });
}

/** Waits for the bridge indicator's state. */
export async function indicator(page: Page, state: string, timeoutMs = 20_000): Promise<void> {
  await page.waitForSelector(`#bridge-indicator[data-state="${state}"]`, { timeout: timeoutMs });
}

/** Calls one of the page's `coder1` test hooks. */
export async function hook<T>(page: Page, name: string, ...args: unknown[]): Promise<T> {
  return await page.evaluate(
    ([name, args]) =>
      (globalThis as unknown as { coder1: Record<string, (...a: unknown[]) => unknown> }).coder1[name as string](
        ...(args as unknown[]),
      ),
    [name, args] as const,
  ) as T;
}

/** The text the page's main area shows (the active terminal's scrollback and screen, or the runner's). */
export function terminalText(page: Page): Promise<string> {
  return hook<string>(page, "terminalText");
}

/** Waits until the page's terminal text (or, with `screen`, the visible screen) matches `pattern`. */
export async function waitForTerminal(
  page: Page,
  pattern: RegExp,
  options: { timeoutMs?: number; screen?: boolean } = {},
): Promise<string> {
  const read = () => hook<string>(page, options.screen ? "screenText" : "terminalText");
  const deadline = Date.now() + (options.timeoutMs ?? 15_000);
  while (Date.now() < deadline) {
    const text = await read();
    if (pattern.test(text)) return text;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`terminal never showed ${pattern}:\n${await read()}`);
}

/**
 * Pairs the page with a new bridge process through the UI: Connect Bridge,
 * the code typed at the bridge, the same SAS on both sides, Approve.
 *
 * @returns The bridge process, connected and approved.
 */
export async function pairInPage(
  page: Page,
  dirs: TestDirs,
  relayUrl: string,
  options: { args?: string[]; env?: Record<string, string> } = {},
): Promise<Coder1Process> {
  await page.click("#connect-bridge");
  await page.waitForSelector("#pairing-code[data-code]", { timeout: 10_000 }).catch(async (e) => {
    throw new Error(`no pairing code (the page says: "${await page.textContent("#pairing-error")}")`, { cause: e });
  });
  const code = (await page.getAttribute("#pairing-code", "data-code"))!;
  const bridge = startBridgeProcess(dirs, relayUrl, { code, args: options.args, env: options.env });
  await page.waitForSelector("#approve-dialog[open]", { timeout: 20_000 });
  const pageSas = (await page.textContent("#sas"))!;
  const bridgeSas = (await bridge.stdout.waitFor(/Check that the IDE shows: (\d{3} \d{3})/))[1];
  assert.equal(pageSas, bridgeSas);
  await bridge.write(`${bridgeSas}\n`);
  await page.click("#approve");
  await indicator(page, "connected");
  return bridge;
}
