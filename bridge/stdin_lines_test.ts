import assert from "node:assert/strict";
import { LineReader } from "./stdin_lines.ts";

function streamOf(chunks: string[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const c of chunks) controller.enqueue(enc.encode(c));
      controller.close();
    },
  });
}

Deno.test("LineReader keeps typed-ahead lines for the next question", async () => {
  const lines = new LineReader(streamOf(["123456\ny\n"]));
  assert.equal(await lines.next(), "123456");
  assert.equal(await lines.next(), "y");
  assert.equal(await lines.next(), undefined);
});

Deno.test("LineReader joins chunks, handles CRLF split across reads, and ends with a last unterminated line", async () => {
  const lines = new LineReader(streamOf(["12", "34\r", "\nyes\r\n", "tail"]));
  assert.equal(await lines.next(), "1234");
  assert.equal(await lines.next(), "yes");
  assert.equal(await lines.next(), "tail");
  assert.equal(await lines.next(), undefined);
});

Deno.test("LineReader: concurrent callers share one line", async () => {
  const lines = new LineReader(streamOf(["a\nb\n"]));
  const [x, y] = await Promise.all([lines.next(), lines.next()]);
  assert.equal(x, "a");
  assert.equal(y, "a");
  assert.equal(await lines.next(), "b");
});
