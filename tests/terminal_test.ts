/**
 * Terminals across real processes: a real relay, a real `coder1 bridge start`
 * and the real IDE client over loopback. The shell runs in a real
 * pseudo-terminal (bridge/pty.ts), so the tests that need one are skipped,
 * saying why, in a tree without that module; under CODER1_REQUIRE_ALL=1 they
 * run anyway and fail.
 */
import assert from "node:assert/strict";
import { createLogger } from "../relay/logger.ts";
import { startRelay } from "../relay/relay.ts";
import { generateIdentity } from "../shared/e2e_crypto.ts";
import { decodeFrame } from "../shared/frame_codec.ts";
import { type IdeClient, type IdeClientError, MemoryPinStore, type RemoteTerminal } from "../shared/ide_client.ts";
import {
  approveBridge,
  type Coder1Process,
  freePort,
  ideClient,
  makeTestDirs,
  REQUIRE_ALL,
  startBridgeProcess,
  startRelayProcess,
  type TestDirs,
} from "./helpers.ts";

const SANITIZE = { sanitizeOps: false, sanitizeResources: false };

const HAVE_PTY = await Deno.stat(new URL("../bridge/pty.ts", import.meta.url)).then(() => true, () => false);
if (!HAVE_PTY) {
  console.log(
    `SKIP terminal tests that need a pseudo-terminal: bridge/pty.ts is not in this tree${
      REQUIRE_ALL ? " (CODER1_REQUIRE_ALL=1: running them anyway, to fail)" : ""
    }`,
  );
}
const NEEDS_PTY = { ignore: !HAVE_PTY && !REQUIRE_ALL };

/** Everything a terminal wrote, as text, and waiting for a pattern in it. */
class TerminalText {
  text = "";
  #decoder = new TextDecoder();
  #waiters: (() => void)[] = [];

  constructor(term: RemoteTerminal) {
    term.onData((bytes) => {
      this.text += this.#decoder.decode(bytes, { stream: true });
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  /** Waits until `pattern` is in the text written since `from` (an earlier length of it). */
  async waitFor(pattern: RegExp, from = 0, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.text.slice(from).match(pattern);
      if (m) return m;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`Timed out waiting for ${pattern} in:\n${JSON.stringify(this.text.slice(from))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => (clearTimeout(timer), resolve()));
      });
    }
  }
}

/** The shell's prompt at the end of what it wrote: `$ ` (or `# ` as root). */
const PROMPT = /[$#] $/;

/** A marker no output or header could contain by chance. */
function marker(): string {
  return `mk${crypto.randomUUID().replaceAll("-", "")}`;
}

/**
 * A first IDE client, with an identity and pins a reloaded page would find
 * again, paired with a fresh bridge process.
 */
async function paired(relayUrl: string, dirs: TestDirs, bridgeArgs: string[] = []) {
  const identity = await generateIdentity(false);
  const pins = new MemoryPinStore();
  const ide = ideClient(relayUrl, { identity, pins });
  await ide.createSession();
  const { code } = await ide.requestPairingCode();
  await ide.connect();
  const bridge = startBridgeProcess(dirs, relayUrl, { code, args: bridgeArgs });
  await approveBridge(ide, bridge);
  /** The same browser session, identity and pins in a new client: the page after a reload. */
  const reload = async (): Promise<IdeClient> => {
    const again = ideClient(relayUrl, { identity, pins, sessionCookie: ide.sessionCookie });
    await again.connect();
    await again.waitForBridge();
    return again;
  };
  return { ide, bridge, reload };
}

/** Connects the IDE socket again whenever it closes (the page's job), until `stop()`. */
function keepConnected(ide: IdeClient): { stop(): void } {
  let stopped = false;
  const off = ide.onClose(async () => {
    for (let i = 0; i < 600 && !stopped; i++) {
      await new Promise((r) => setTimeout(r, 100));
      if (stopped) return;
      try {
        await ide.connect();
        return;
      } catch {
        // The relay is not back yet.
      }
    }
  });
  return {
    stop() {
      stopped = true;
      off();
    },
  };
}

async function stopAll(bridge: Coder1Process, ...ides: IdeClient[]): Promise<void> {
  for (const ide of ides) ide.close();
  await bridge.stop();
}

Deno.test({
  name: "terminal: --no-terminal is announced to the IDE, which then opens none",
  ...SANITIZE,
  async fn() {
    const dirs = await makeTestDirs();
    const relay = await startRelayProcess(dirs);
    const { ide, bridge } = await paired(relay.url, dirs, ["--no-terminal"]);
    try {
      assert.equal(ide.terminalSupport, "disabled");
      const term = ide.openTerminal({ cols: 80, rows: 24 });
      await assert.rejects(term.ready, (e: IdeClientError) => e.reason === "disabled");
      await assert.rejects(ide.listTerminals(), (e: IdeClientError) => e.reason === "disabled");
    } finally {
      await stopAll(bridge, ide);
      await relay.stop();
      await dirs.cleanup();
    }
  },
});

Deno.test({
  name: "terminal: $TERM, echo of typed input, tput cols after a resize, and a reloaded page attaching to the screen",
  ...SANITIZE,
  ...NEEDS_PTY,
  async fn() {
    const dirs = await makeTestDirs();
    const relay = await startRelayProcess(dirs);
    const { ide, bridge, reload } = await paired(relay.url, dirs);
    let again: IdeClient | undefined;
    try {
      assert.equal(ide.terminalSupport, "available");
      const term = ide.openTerminal({ cols: 80, rows: 24 });
      const out = new TerminalText(term);
      const first = await term.ready;
      assert.deepEqual([first.cols, first.rows], [80, 24]);
      await out.waitFor(PROMPT); // The login shell is up.
      await term.write("echo $TERM\r");
      await out.waitFor(/\r\nxterm-256color\r\n/);
      const typed = marker();
      let from = out.text.length;
      await term.write(`: ${typed}`);
      await out.waitFor(new RegExp(typed), from); // The line discipline echoes what is typed.
      await term.write("\r");
      await term.resize(100, 30);
      from = out.text.length;
      await term.write("tput cols; stty size\r");
      await out.waitFor(/\r\n100\r\n30 100\r\n/, from);
      // The page goes away (its stream is closed): the terminal runs on; a reload attaches to it.
      ide.close();
      again = await reload();
      const listed = await again.listTerminals();
      const info = listed.find((t) => t.id === term.id);
      assert.ok(info?.alive, JSON.stringify(listed));
      const back = again.attachTerminal(term.id, { cols: 100, rows: 30 });
      const backOut = new TerminalText(back);
      const snapshot = await back.ready;
      assert.deepEqual([snapshot.cols, snapshot.rows], [100, 30]);
      assert.ok(snapshot.data.includes(typed), "the screen as it was, typed marker included");
      assert.ok(snapshot.data.includes("xterm-256color"));
      await back.write("echo back-$((40 + 2))\r");
      await backOut.waitFor(/back-42/);
      await back.close();
      const exit = await back.exited;
      assert.ok(exit.signal === "SIGHUP" || exit.code === 129, JSON.stringify(exit));
      assert.deepEqual(await again.listTerminals(), []);
    } finally {
      await stopAll(bridge, ide, ...(again ? [again] : []));
      await relay.stop();
      await dirs.cleanup();
    }
  },
});

Deno.test({
  name: "terminal: the shell's exit status reaches the IDE, and full-screen output comes back in a snapshot",
  ...SANITIZE,
  ...NEEDS_PTY,
  async fn() {
    const dirs = await makeTestDirs();
    const relay = await startRelayProcess(dirs);
    const { ide, bridge, reload } = await paired(relay.url, dirs);
    let other: IdeClient | undefined;
    try {
      const term = ide.openTerminal({ cols: 80, rows: 24 });
      const out = new TerminalText(term);
      await term.ready;
      await out.waitFor(PROMPT);
      // What a full-screen program does: the alternate screen, a title, text at a position. (The
      // words are put together by printf, so the echo of the command line does not match.)
      await term.write("printf '\\033]2;fullscreen\\007\\033[?1049h\\033[5;10Hin the %s' middle\r");
      await out.waitFor(/in the middle/);
      // A second page (another client) sees it as it is.
      other = await reload();
      const second = other.attachTerminal(term.id, { cols: 80, rows: 24 });
      const snapshot = await second.ready;
      assert.equal(snapshot.title, "fullscreen");
      assert.equal(second.title, "fullscreen");
      assert.ok(snapshot.data.includes("\x1b[?1049h"), "on the alternate screen");
      assert.ok(snapshot.data.includes("in the middle"));
      await term.write("printf '\\033[?1049l'; exit 3\r");
      assert.deepEqual(await term.exited, { code: 3, signal: null });
      assert.deepEqual(await second.exited, { code: 3, signal: null }, "every attached page is told");
    } finally {
      await stopAll(bridge, ide, ...(other ? [other] : []));
      await relay.stop();
      await dirs.cleanup();
    }
  },
});

Deno.test({
  name:
    "terminal: the relay killed with SIGKILL mid-output and restarted: the same client gets every byte once, in order",
  ...SANITIZE,
  ...NEEDS_PTY,
  async fn() {
    const dirs = await makeTestDirs();
    const port = freePort();
    let relay = await startRelayProcess(dirs, [], port);
    const { ide, bridge } = await paired(relay.url, dirs);
    const keeper = keepConnected(ide);
    try {
      const term = ide.openTerminal({ cols: 80, rows: 24 });
      const out = new TerminalText(term);
      await term.ready;
      await out.waitFor(PROMPT);
      const from = out.text.length;
      await term.write("seq 1 300000; echo end-$((6 * 7))\r");
      await out.waitFor(/\r\n20000\r\n/, from);
      relay.child.kill("SIGKILL");
      await relay.status;
      const at = out.text.length;
      relay = await startRelayProcess(dirs, [], port);
      await out.waitFor(/\r\nend-42\r\n/, from, 60_000);
      assert.ok(at < out.text.length, "the relay died mid-output");
      const lines = Array.from({ length: 300000 }, (_, i) => String(i + 1)).join("\r\n");
      const got = out.text.slice(from);
      const start = got.indexOf("\r\n1\r\n") + 2;
      assert.equal(got.slice(start, got.indexOf("\r\nend-42")), lines, "every line once, in order");
      await bridge.stdout.waitFor(/Bridge reconnected/);
    } finally {
      keeper.stop();
      await stopAll(bridge, ide);
      await relay.stop();
      await dirs.cleanup();
    }
  },
});

Deno.test({
  name: "terminal: a recording relay sees no marker typed into or printed by a terminal",
  ...SANITIZE,
  ...NEEDS_PTY,
  async fn() {
    const dirs = await makeTestDirs();
    const dataDir = await Deno.makeTempDir({ prefix: "coder1-term-relay-" });
    const logs: string[] = [];
    const recording: Uint8Array[] = [];
    const relay = await startRelay({
      port: 0,
      dataDir,
      log: createLogger({ level: "debug", write: (line) => logs.push(line) }),
      tap: (_direction, bytes) => {
        recording.push(bytes.slice());
        return [bytes];
      },
    });
    const { ide, bridge } = await paired(relay.url, dirs);
    const typed = marker(), printed = marker(), title = marker();
    try {
      const term = ide.openTerminal({ cols: 80, rows: 24 });
      const out = new TerminalText(term);
      await term.ready;
      await out.waitFor(PROMPT);
      // The printed marker and the title are put together by the shell: typed, they are two halves.
      const [pa, pb] = [printed.slice(0, 10), printed.slice(10)];
      const [ta, tb] = [title.slice(0, 10), title.slice(10)];
      await term.write(
        `: ${typed}; a=${pa}; b=${pb}; echo "$a$b"; x=${ta}; y=${tb}; printf '\\033]2;%s\\007' "$x$y"\r`,
      );
      await out.waitFor(new RegExp(`\r\n${printed}\r\n`));
      assert.ok(out.text.includes(typed));
      const seen = ide.attachTerminal(term.id, { cols: 80, rows: 24 });
      await seen.ready;
      await term.close();
      await term.exited;
    } finally {
      await stopAll(bridge, ide);
      await relay.shutdown();
    }
    const types = new Set(recording.map((b) => decodeFrame(b).t));
    for (const t of ["term.open", "term.input", "term.snapshot", "term.output", "term.close", "term.exit"]) {
      assert.ok(types.has(t as never), `recorded a ${t} frame`);
    }
    let all = "";
    for (const c of recording) for (const b of c) all += String.fromCharCode(b);
    for (const [what, value] of Object.entries({ typed, printed, title })) {
      assert.ok(!all.includes(value), `the ${what} marker is in what the relay forwarded`);
      assert.ok(!logs.join("\n").includes(value), `the ${what} marker is in the relay's logs`);
    }
    await Deno.remove(dataDir, { recursive: true });
    await dirs.cleanup();
  },
});

/** Pids of live processes whose command line contains `text`. */
function processesWith(text: string): number[] {
  const found: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).replaceAll("\0", " ").includes(text)) {
        found.push(Number(entry.name));
      }
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

Deno.test({
  name:
    "terminal: Force stop (term.signal SIGKILL) ends a foreground job that ignores Ctrl-C; the shell stays; at its prompt nothing is sent",
  ...SANITIZE,
  ...NEEDS_PTY,
  async fn() {
    const dirs = await makeTestDirs();
    const relay = await startRelayProcess(dirs);
    const { ide, bridge } = await paired(relay.url, dirs);
    try {
      const term = ide.openTerminal({ cols: 80, rows: 24 });
      const out = new TerminalText(term);
      await term.ready;
      await out.waitFor(PROMPT);
      // The shell itself in the foreground: nothing is sent, the shell stays.
      await term.signal("SIGKILL");
      let mark = marker();
      let from = out.text.length;
      await term.write(`echo ${mark}-alive\r`);
      await out.waitFor(new RegExp(`\\r\\n${mark}-alive\\r\\n`), from);
      // A job that ignores SIGINT (its sleep inherits the ignored signal).
      const seconds = `${100 + Math.floor(Math.random() * 800)}.75`;
      from = out.text.length;
      await term.write(`sh -c "trap '' INT; echo trapped; sleep ${seconds}; echo not-killed"\r`);
      await out.waitFor(/\r\ntrapped\r\n/, from);
      await term.write("\x03");
      await new Promise((r) => setTimeout(r, 700));
      assert.equal(processesWith(`sleep ${seconds}`).length > 0, true, "Ctrl-C did not end it");
      from = out.text.length;
      await term.signal("SIGKILL");
      await out.waitFor(PROMPT, from);
      const deadline = Date.now() + 5_000;
      while (processesWith(`sleep ${seconds}`).length > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual(processesWith(`sleep ${seconds}`), [], "the job's whole process group is gone");
      assert.doesNotMatch(out.text.slice(from), /not-killed/);
      mark = marker();
      from = out.text.length;
      await term.write(`echo ${mark}-still-here\r`);
      await out.waitFor(new RegExp(`\\r\\n${mark}-still-here\\r\\n`), from);
      assert.equal(term.state, "attached");
    } finally {
      await stopAll(bridge, ide);
      await relay.stop();
      await dirs.cleanup();
    }
  },
});
