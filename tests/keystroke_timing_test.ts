/**
 * Keystroke timing obfuscation across real processes: a relay in this process
 * whose frame tap records every frame it forwards (with its time), a real
 * `coder1 bridge start` running a shell in a real pseudo-terminal, and the
 * real IDE client. Typed at irregular times, the keystrokes must reach the
 * relay as frames on a fixed grid, all of one size, with chaff between them,
 * and reach the shell exactly once. The rules are in docs/PROTOCOL.md
 * ("Keystroke timing"); the scheduler's own tests are in
 * shared/keystroke_pacer_test.ts.
 */
import assert from "node:assert/strict";
import { createLogger } from "../relay/logger.ts";
import { startRelay } from "../relay/relay.ts";
import { decodeFrame } from "../shared/frame_codec.ts";
import type { RemoteTerminal } from "../shared/ide_client.ts";
import {
  FrameType,
  type FrameTypeName,
  KEYSTROKE_CHAFF_MIN_MS,
  KEYSTROKE_CHAFF_RANDOM_MS,
  KEYSTROKE_INTERVAL_MS,
} from "../shared/protocol.ts";
import { approveBridge, ideClient, makeTestDirs, REQUIRE_ALL, startBridgeProcess } from "./helpers.ts";

const HAVE_PTY = await Deno.stat(new URL("../bridge/pty.ts", import.meta.url)).then(() => true, () => false);
if (!HAVE_PTY) {
  console.log(
    `SKIP keystroke timing test: bridge/pty.ts is not in this tree${
      REQUIRE_ALL ? " (CODER1_REQUIRE_ALL=1: running it anyway, to fail)" : ""
    }`,
  );
}

/** One frame the relay forwarded from the IDE, as the relay saw it. */
interface Seen {
  at: number;
  t: FrameTypeName;
  bytes: number;
  q?: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Everything the terminal wrote, as text, with a wait for a pattern. */
function collect(term: RemoteTerminal): { text: () => string; waitFor(pattern: RegExp, from?: number): Promise<void> } {
  let text = "";
  const decoder = new TextDecoder();
  term.onData((b) => (text += decoder.decode(b, { stream: true })));
  return {
    text: () => text,
    async waitFor(pattern, from = 0) {
      const deadline = Date.now() + 20_000;
      while (!pattern.test(text.slice(from))) {
        if (Date.now() > deadline) throw new Error(`Timed out waiting for ${pattern} in ${JSON.stringify(text)}`);
        await sleep(10);
      }
    },
  };
}

Deno.test({
  name:
    "keystroke timing: typed keys reach the relay as one size of frame on a 20 ms grid with chaff, and the shell once",
  sanitizeOps: false,
  sanitizeResources: false,
  ignore: !HAVE_PTY && !REQUIRE_ALL,
  async fn() {
    const dirs = await makeTestDirs();
    const dataDir = await Deno.makeTempDir({ prefix: "coder1-keys-relay-" });
    const seen: Seen[] = [];
    const relay = await startRelay({
      port: 0,
      dataDir,
      log: createLogger({ level: "error", write: () => {} }),
      tap: (direction, bytes) => {
        if (direction === "ide-to-bridge") {
          const f = decodeFrame(bytes);
          seen.push({ at: performance.now(), t: f.t, bytes: bytes.byteLength, q: f.q });
        }
        return [bytes];
      },
    });
    const ide = ideClient(relay.url);
    let bridge: ReturnType<typeof startBridgeProcess> | undefined;
    try {
      await ide.createSession();
      const { code } = await ide.requestPairingCode();
      await ide.connect();
      bridge = startBridgeProcess(dirs, relay.url, { code });
      await approveBridge(ide, bridge);
      assert.equal(ide.keystrokesObscured, true, "on by default, with a bridge that takes term.keys");
      const term = ide.openTerminal({ cols: 80, rows: 24 });
      const out = collect(term);
      await term.ready;
      await out.waitFor(/[$#] $/);
      const file = `${dirs.root}/typed.txt`;
      await term.write(`cat > ${file}\r`);
      await out.waitFor(/cat > .*\r\n/);
      // Let the burst of the command line end, so that the typing below starts one of its own.
      await sleep(KEYSTROKE_CHAFF_MIN_MS + KEYSTROKE_CHAFF_RANDOM_MS + 200);

      // Irregular typing: gaps that are not multiples of the interval, some shorter than it.
      const marker = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => "abcdefghijklmnop"[b & 15]).join("");
      const gaps = [0, 7, 53, 3, 91, 31, 12, 140, 5, 66, 29, 2, 77, 44, 9, 38];
      const start = performance.now();
      const typedAt: number[] = [];
      for (let i = 0; i < marker.length; i++) {
        await sleep(gaps[i]);
        typedAt.push(performance.now());
        void term.write(marker[i]);
      }
      await sleep(25);
      typedAt.push(performance.now());
      void term.write("\r");
      await sleep(25);
      typedAt.push(performance.now());
      void term.write("\x04"); // End of input: cat exits.
      const lastKey = typedAt.at(-1)!;
      await out.waitFor(/[$#] $/, out.text().lastIndexOf(marker));
      // Past the longest tail: the chaff has stopped.
      await sleep(Math.max(0, lastKey + KEYSTROKE_CHAFF_MIN_MS + KEYSTROKE_CHAFF_RANDOM_MS + 300 - performance.now()));

      // Exactly once, in order, and no chaff got in (no NUL, nothing else).
      assert.equal(await Deno.readTextFile(file), `${marker}\n`);

      const burst = seen.filter((s) => s.at >= start - 1);
      const other = burst.filter((s) => s.t !== FrameType.TermKeys && s.t !== FrameType.StreamAck);
      assert.deepEqual(other, [], "while typing, only term.keys (and acknowledgements) leave the IDE");
      const keys = burst.filter((s) => s.t === FrameType.TermKeys);
      assert.ok(
        keys.length > marker.length + 2 + 40,
        `${keys.length} frames: keystrokes and a second of chaff or more`,
      );
      // One size: a frame with keys and one without are the same bytes long.
      assert.deepEqual(new Set(keys.map((s) => s.bytes)).size, 1, `sizes: ${[...new Set(keys.map((s) => s.bytes))]}`);
      // Numbered in the stream, chaff included, one after another.
      assert.ok(keys.every((s, i) => i === 0 || s.q === keys[i - 1].q! + 1), "q counts every frame");
      // A fixed grid: nearly every frame within a few ms of one phase of a 20 ms grid (timers on a shared machine fire
      // late at times; the pacer then skips a tick rather than catching up, which keeps the grid). The phase is the
      // circular mean of all frames', so one frame held up on its way (the first, say) does not move it.
      const I = KEYSTROKE_INTERVAL_MS;
      const angles = keys.map((s) => (2 * Math.PI * (s.at - keys[0].at)) / I);
      const phase = (Math.atan2(
        angles.reduce((a, x) => a + Math.sin(x), 0),
        angles.reduce((a, x) => a + Math.cos(x), 0),
      ) * I) / (2 * Math.PI);
      const offGrid = keys.filter((s) => {
        const d = (((s.at - keys[0].at - phase) % I) + I) % I;
        return Math.min(d, I - d) > 6;
      });
      // The relay runs in this process: a stall of the event loop delays what it sees (two frames then arrive
      // together), so a few frames may look off the grid; a pacer that followed the typing would put most off it.
      assert.ok(offGrid.length <= keys.length * 0.15, `${offGrid.length} of ${keys.length} frames off the 20 ms grid`);
      const gapsSeen = keys.slice(1).map((s, i) => s.at - keys[i].at);
      const sorted = [...gapsSeen].sort((a, b) => a - b);
      const median = sorted[sorted.length >> 1];
      assert.ok(Math.abs(median - I) < 2, `median gap ${median} ms`);
      const near = gapsSeen.filter((g) => Math.abs(g - I) <= 6).length;
      assert.ok(
        near >= gapsSeen.length * 0.8,
        `${near} of ${gapsSeen.length} gaps within 6 ms of 20: ${gapsSeen.map(Math.round)}`,
      );
      // The chaff ran 1 to 3 s past the last keystroke, and then stopped.
      const tail = keys.at(-1)!.at - lastKey;
      assert.ok(
        tail >= KEYSTROKE_CHAFF_MIN_MS - 2 * KEYSTROKE_INTERVAL_MS &&
          tail <= KEYSTROKE_CHAFF_MIN_MS + KEYSTROKE_CHAFF_RANDOM_MS + 100,
        `chaff ended ${Math.round(tail)} ms after the last keystroke`,
      );
      assert.ok(ide.keystrokeStats.keys >= 1 && ide.keystrokeStats.chaff > 40, JSON.stringify(ide.keystrokeStats));
      console.log(
        `keystroke timing: ${marker.length + 2} keys typed at irregular times; ` +
          `the relay saw ${keys.length} term.keys ` +
          `frames of ${keys[0].bytes} bytes, gaps median ${median.toFixed(1)} ms (min ${sorted[0].toFixed(1)}, max ` +
          `${sorted.at(-1)!.toFixed(1)}), ${offGrid.length} off the grid by more than 6 ms, chaff until ` +
          `${Math.round(tail)} ms after the last key; ${near} of ${gapsSeen.length} gaps within 6 ms of 20`,
      );

      // Turned off: each keystroke is its own term.input, when it is typed, and no chaff follows.
      ide.setObscureKeystrokes(false);
      const offStart = performance.now();
      await term.write(`printf '%s\\n' off-`);
      for (const c of "abc") {
        await sleep(33);
        await term.write(c);
      }
      await term.write("\r");
      await out.waitFor(/\r\noff-abc\r\n/);
      await sleep(3 * KEYSTROKE_INTERVAL_MS);
      const after = seen.filter((s) => s.at >= offStart && s.t !== FrameType.StreamAck);
      assert.deepEqual(after.map((s) => s.t), Array(5).fill(FrameType.TermInput));
      await term.close();
      await term.exited;
    } finally {
      ide.close();
      await bridge?.stop();
      await relay.shutdown();
      await Deno.remove(dataDir, { recursive: true });
      await dirs.cleanup();
    }
  },
});
