import assert from "node:assert/strict";
import { decodeTermSnapshot } from "../shared/frame_bodies.ts";
import type { TermSnapshotBody } from "../shared/protocol.ts";
import { SCREEN_QUIET_MS, SCREEN_SLICE_BYTES, TerminalScreen } from "./terminal_screen.ts";

const enc = (s: string) => new TextEncoder().encode(s);

async function snap(screen: TerminalScreen, maxBytes?: number): Promise<TermSnapshotBody> {
  return decodeTermSnapshot(await screen.snapshot(maxBytes));
}

/** What a fresh terminal of the snapshot's size shows after writing the snapshot: its own snapshot. */
async function repaint(body: TermSnapshotBody): Promise<TermSnapshotBody> {
  const fresh = new TerminalScreen({ cols: body.cols, rows: body.rows });
  try {
    fresh.write(enc(body.data));
    return await snap(fresh);
  } finally {
    fresh.dispose();
  }
}

Deno.test("TerminalScreen: a snapshot repaints colours, the title and a full-screen program's alternate screen", async () => {
  const titles: string[] = [];
  const screen = new TerminalScreen({ cols: 40, rows: 10, onTitle: (t) => titles.push(t) });
  screen.write(enc("$ ls\r\n\x1b[1;34mdir\x1b[0m  file\r\n$ vim x\r\n"));
  // What vim does: title, alternate screen, application cursor keys, bracketed paste, a drawn screen.
  screen.write(enc("\x1b]2;x (~) - VIM\x07\x1b[?1049h\x1b[?1h\x1b[?2004h\x1b[H\x1b[2Jhello from vim\r\n~\r\n~"));
  screen.write(enc("\x1b[1;6H"));
  const body = await snap(screen);
  assert.equal(body.cols, 40);
  assert.equal(body.rows, 10);
  assert.equal(body.title, "x (~) - VIM");
  assert.deepEqual(titles, ["x (~) - VIM"]);
  assert.ok(body.data.includes("\x1b[?1049h"), "the alternate screen is entered");
  assert.ok(body.data.includes("hello from vim"));
  assert.ok(body.data.includes("dir"), "the normal screen underneath is there too");
  // Painting the snapshot into a fresh terminal gives the same screen, modes and cursor.
  assert.equal((await repaint(body)).data, body.data);
  screen.dispose();
});

Deno.test("TerminalScreen: resizes apply in order with the output around them", async () => {
  const screen = new TerminalScreen({ cols: 80, rows: 24 });
  screen.write(enc("before\r\n"));
  screen.resize(100, 30);
  screen.write(enc("after\r\n"));
  assert.equal(screen.cols, 100);
  const body = await snap(screen);
  assert.deepEqual([body.cols, body.rows], [100, 30]);
  assert.ok(body.data.includes("before") && body.data.includes("after"));
  screen.dispose();
});

Deno.test("TerminalScreen: a snapshot keeps to its size cap: less scrollback, then the screen's plain text", async () => {
  const screen = new TerminalScreen({ cols: 80, rows: 24, scrollback: 5000 });
  let out = "";
  for (let i = 0; i < 3000; i++) out += `\x1b[3${i % 8}mline ${i} ${"x".repeat(50)}\x1b[0m\r\n`;
  screen.write(enc(out));
  const full = await screen.snapshot();
  assert.ok(decodeTermSnapshot(full).data.includes("line 0 "), "all of it fits under the default cap");
  const capped = await screen.snapshot(20_000);
  assert.ok(capped.byteLength <= 20_000, `${capped.byteLength} bytes`);
  const body = decodeTermSnapshot(capped);
  assert.ok(body.data.includes("line 2999"), "the newest lines are kept");
  assert.ok(!body.data.includes("line 0 "), "the oldest scrollback is left out");
  assert.equal(body.truncated, undefined);
  const tiny = await screen.snapshot(600);
  assert.ok(tiny.byteLength <= 600);
  const plain = decodeTermSnapshot(tiny);
  assert.equal(plain.truncated, true);
  assert.ok(!plain.data.includes("\x1b[3"), "plain text, no colours");
  screen.dispose();
});

Deno.test("TerminalScreen: far behind, it drops the oldest bytes but keeps the screen, its modes and the title", async () => {
  const screen = new TerminalScreen({ cols: 40, rows: 5, backlogBytes: 4096, keepBytes: 1024 });
  // All queued in one turn: the emulator is busy with the first write and has parsed nothing else yet,
  // so the modes and the title are in what gets dropped.
  screen.write(enc("start\r\n"));
  // Split across writes, as a program's output may be.
  screen.write(enc("\x1b]0;flo"));
  screen.write(enc("od\x07\x1b[?104"));
  screen.write(enc("9h\x1b[?2004h\x1b[?25l\x1b[?25h"));
  for (let i = 0; i < 400; i++) screen.write(enc(`row ${i} ${"-".repeat(20)}\r\n`));
  assert.ok(screen.skipped > 0, "something was skipped");
  assert.ok(screen.pending <= 4096 + 1024);
  const body = await snap(screen);
  assert.ok(body.data.includes("row 399"), "the newest output is on the screen");
  assert.ok(!body.data.includes("row 10\r"), "old rows were dropped");
  assert.ok(body.data.includes("\x1b[?1049h"), "still on the alternate screen");
  assert.ok(body.data.includes("\x1b[?2004h"), "bracketed paste still on");
  assert.equal(body.title, "flood");
  screen.dispose();
});

Deno.test("TerminalScreen: while output keeps coming it rests between slices; a snapshot or a pause ends the rests", async () => {
  // A clock where every reading is 5 ms after the last: each slice seems to take 5 ms, and the output never pauses.
  let t = 0;
  const screen = new TerminalScreen({ cols: 40, rows: 5, parseShare: 0.2, now: () => (t += 5) });
  const line = enc(`${"x".repeat(30)}\r\n`);
  const chunk = new Uint8Array(SCREEN_SLICE_BYTES - (SCREEN_SLICE_BYTES % line.byteLength));
  for (let at = 0; at < chunk.byteLength; at += line.byteLength) chunk.set(line, at);
  for (let i = 0; i < 4; i++) screen.write(chunk);
  // The first slice is parsed, then the emulator rests (20 ms for a 5 ms slice at a 0.2 share) with the rest waiting.
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.ok(screen.pending >= 2 * chunk.byteLength, `resting with output waiting (${screen.pending} bytes)`);
  // A snapshot does not wait for the rests: everything before it is parsed at once.
  const body = await snap(screen);
  assert.equal(screen.pending, 0);
  assert.ok(body.data.includes("x".repeat(30)));
  screen.dispose();

  // The output paused long ago (the last write is far in the clock's past): no rests.
  let u = 0;
  const quiet = new TerminalScreen({ cols: 40, rows: 5, parseShare: 0.2, now: () => (u += SCREEN_QUIET_MS) });
  for (let i = 0; i < 4; i++) quiet.write(chunk);
  const deadline = Date.now() + 5_000;
  while (quiet.pending > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 1));
  assert.equal(quiet.pending, 0, "caught up without a snapshot");
  quiet.dispose();
  assert.throws(() => new TerminalScreen({ cols: 4, rows: 4, parseShare: 0 }), RangeError);
});

Deno.test("TerminalScreen: dispose rejects snapshots still waiting", async () => {
  const screen = new TerminalScreen({ cols: 20, rows: 5 });
  screen.write(enc("x".repeat(100_000)));
  const waiting = screen.snapshot();
  screen.dispose();
  await assert.rejects(waiting);
  await assert.rejects(screen.snapshot());
});

Deno.test("TerminalScreen: emoji and CJK take two cells, as in the page's terminal (Unicode 11 widths)", async () => {
  const screen = new TerminalScreen({ cols: 40, rows: 5 });
  try {
    screen.write(enc("日本🚀|"));
    await screen.snapshot();
    assert.deepEqual(screen.cursor, { x: 7, y: 0 });
  } finally {
    screen.dispose();
  }
});
