import assert from "node:assert/strict";
import { StreamTable } from "./stream_table.ts";

const ide = new Uint8Array(32).fill(7);
const exit = { t: "cmd.exit" as const, id: "a", body: new Uint8Array(2) };

async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => (done = true), () => (done = true));
  await new Promise((r) => setTimeout(r, 0));
  return done;
}

Deno.test("stream table: drained waits for every attached stream's IDE to acknowledge, not for detached ones", async () => {
  const forgotten: number[] = [];
  const table = new StreamTable({ onForget: (handle) => forgotten.push(handle) });
  try {
    const a = table.open("stream-a", ide, 1).stream;
    const b = table.open("stream-b", ide, 2).stream;
    const away = table.open("stream-c", ide, 3).stream;
    for (const s of [a, b, away]) s.sender.attach(() => Promise.resolve(), 0);
    for (const s of [a, b, away]) await table.push(s.handle, exit);
    table.detachRoute(3); // Its IDE left: nobody will acknowledge, so it is not waited for.
    await table.push(away.handle, exit);

    const drained = table.drained();
    assert.equal(await settled(drained), false);
    a.sender.ack(1);
    assert.equal(await settled(drained), false, "stream b is not acknowledged yet");
    b.sender.ack(1);
    assert.equal(await settled(drained), true);
  } finally {
    table.clear();
  }
  assert.equal(forgotten.length, 3);
});

Deno.test("stream table: drained resolves when a waiting stream detaches or is closed", async () => {
  const table = new StreamTable({ onForget: () => {} });
  try {
    const a = table.open("stream-a", ide, 1).stream;
    const b = table.open("stream-b", ide, 2).stream;
    for (const s of [a, b]) {
      s.sender.attach(() => Promise.resolve(), 0);
      await table.push(s.handle, exit);
    }
    const drained = table.drained();
    table.detachRoute(1);
    assert.equal(await settled(drained), false);
    table.close(2); // The IDE is done with it: forgotten.
    assert.equal(await settled(drained), true);
    assert.equal(await settled(table.drained()), true, "nothing attached: nothing to wait for");
  } finally {
    table.clear();
  }
});
