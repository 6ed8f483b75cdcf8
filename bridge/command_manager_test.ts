import assert from "node:assert/strict";
import { decodeFrame, encodeFrame, parseJsonObject } from "../shared/frame_codec.ts";
import { FrameType, OUTPUT_CHUNK_BYTES } from "../shared/protocol.ts";
import { type CommandFrame, CommandManager } from "./command_manager.ts";
import type { CommandRunner, RunningProcess } from "./shell_runner.ts";
import { ShellRunner } from "./shell_runner.ts";

/** A runner that never spawns: it echoes the command line to stdout and exits 0. */
class EchoRunner implements CommandRunner {
  spawned: string[] = [];
  spawn(command: string, options: { cwd: string }): RunningProcess {
    this.spawned.push(`${options.cwd}$ ${command}`);
    const bytes = new TextEncoder().encode(command);
    return {
      pid: 1,
      stdout: new ReadableStream({ start: (c) => (c.enqueue(bytes), c.close()) }),
      stderr: new ReadableStream({ start: (c) => c.close() }),
      stdin: new WritableStream(),
      exited: Promise.resolve({ code: 0, signal: null }),
      kill: () => {},
    };
  }
}

/** Whether a process has ended (absent, or a zombie awaiting a reaper), polling up to 3 s. */
async function gone(pid: number): Promise<boolean> {
  for (let i = 0; i < 300; i++) {
    try {
      const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
      if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) return true;
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
}

function harness(runner: CommandRunner, root: string, maxCommands = 4) {
  const frames: CommandFrame[] = [];
  const waiters: (() => void)[] = [];
  const manager = new CommandManager({
    runner,
    root,
    maxCommands,
    send: (f) => {
      frames.push(f);
      waiters.splice(0).forEach((w) => w());
      return Promise.resolve();
    },
  });
  const start = (id: string, body: Record<string, unknown> | string) =>
    manager.handle(1, decodeFrame(encodeFrame({ t: FrameType.CmdStart, id, body })));
  const until = async (pred: () => boolean) => {
    while (!pred()) await new Promise<void>((r) => waiters.push(r));
  };
  const result = async (id: string) => {
    await until(() => frames.some((f) => f.id === id && (f.t === FrameType.CmdExit || f.t === FrameType.CmdError)));
    const f = frames.find((f) => f.id === id && (f.t === FrameType.CmdExit || f.t === FrameType.CmdError))!;
    return { t: f.t, body: parseJsonObject(decodeFrame(encodeFrame(f)).body, f.t) };
  };
  return { manager, frames, start, result };
}

Deno.test("an echo runner drives the manager without spawning anything", async () => {
  const runner = new EchoRunner();
  const root = Deno.realPathSync(Deno.cwd());
  const h = harness(runner, root);
  h.start("a", { command: "hello world" });
  const r = await h.result("a");
  assert.equal(r.t, FrameType.CmdExit);
  assert.equal(r.body.code, 0);
  const out = h.frames.find((f) => f.t === FrameType.CmdStdout && f.id === "a")!;
  assert.equal(new TextDecoder().decode(out.body as Uint8Array), "hello world");
  assert.deepEqual(runner.spawned, [`${root}$ hello world`]);
});

Deno.test("bad requests are answered with cmd.error, never a crash", async () => {
  const root = Deno.realPathSync(Deno.cwd());
  const h = harness(new EchoRunner(), root);
  const cases: [string, Record<string, unknown> | string, string][] = [
    ["j", "not json", "bad-request"],
    ["e", { command: "" }, "bad-request"],
    ["n", { command: 42 }, "bad-request"],
    ["l", { command: "x".repeat(64 * 1024 + 1) }, "bad-request"],
    ["t", { command: "x", timeoutMs: -1 }, "bad-request"],
    ["w", { command: "x", cwd: 5 }, "bad-request"],
    ["p", { command: "x", cwd: "../../.." }, "bad-cwd"],
    ["q", { command: "x", cwd: "/etc" }, "bad-cwd"],
  ];
  for (const [id, body, reason] of cases) {
    h.start(id, body);
    const r = await h.result(id);
    assert.equal(r.t, FrameType.CmdError, id);
    assert.equal(r.body.reason, reason, id);
  }
});

Deno.test("a symlink out of the bridge's directory is refused", async () => {
  const root = Deno.realPathSync(await Deno.makeTempDir());
  try {
    await Deno.symlink("/", `${root}/escape`);
    await Deno.mkdir(`${root}/inside`);
    const h = harness(new EchoRunner(), root);
    h.start("s", { command: "x", cwd: "escape" });
    assert.equal((await h.result("s")).body.reason, "bad-cwd");
    h.start("i", { command: "x", cwd: "inside" });
    assert.equal((await h.result("i")).t, FrameType.CmdExit);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("duplicate ids and the cap are refused; stopAll ends every process group", async () => {
  const root = Deno.realPathSync(Deno.cwd());
  const h = harness(new ShellRunner(() => "/bin/sh"), root, 2);
  // A command that starts a grandchild: stopAll must reach it through the process group.
  h.start("a", { command: "sleep 30 & echo $!; wait" });
  h.start("a", { command: "true" });
  assert.equal((await h.result("a")).body.reason, "duplicate-id");
  h.start("b", { command: "sleep 30" });
  h.start("c", { command: "true" });
  assert.equal((await h.result("c")).body.reason, "busy");
  // Learn the grandchild's pid from a's stdout.
  while (!h.frames.some((f) => f.t === FrameType.CmdStdout && f.id === "a")) await new Promise((r) => setTimeout(r, 5));
  const pid = Number(new TextDecoder().decode(h.frames.find((f) => f.t === FrameType.CmdStdout)!.body as Uint8Array));
  assert.equal(h.manager.size, 2);
  await h.manager.stopAll();
  assert.equal(h.manager.size, 0);
  assert.ok(await gone(pid), `the background grandchild ${pid} is gone too`);
});

Deno.test("closeStream hangs up the commands of one stream only", async () => {
  const root = Deno.realPathSync(Deno.cwd());
  const h = harness(new ShellRunner(() => "/bin/sh"), root);
  h.manager.handle(1, decodeFrame(encodeFrame({ t: FrameType.CmdStart, id: "keep", body: { command: "sleep 30" } })));
  h.manager.handle(2, decodeFrame(encodeFrame({ t: FrameType.CmdStart, id: "drop", body: { command: "sleep 30" } })));
  h.manager.closeStream(2);
  const r = await h.result("drop");
  assert.equal(r.body.signal, "SIGHUP");
  assert.equal(h.manager.size, 1);
  await h.manager.stopAll();
});

Deno.test("bulk output is joined into frames above a pipe read; short output goes out at once", async () => {
  const root = Deno.realPathSync(Deno.cwd());
  const h = harness(new ShellRunner(() => "/bin/sh"), root);
  h.start("bulk", { command: "head -c 8388608 /dev/zero" });
  await h.result("bulk");
  const bulk = h.frames.filter((f) => f.id === "bulk" && f.t === FrameType.CmdStdout);
  const sizes = bulk.map((f) => (f.body as Uint8Array).byteLength);
  assert.equal(sizes.reduce((a, b) => a + b, 0), 8 * 2 ** 20);
  assert.ok(Math.max(...sizes) > 64 * 1024, `largest frame ${Math.max(...sizes)} B`);
  assert.ok(Math.max(...sizes) <= OUTPUT_CHUNK_BYTES);
  h.start("slow", { command: "printf a; sleep 0.3; printf b" });
  await h.result("slow");
  const slow = h.frames.filter((f) => f.id === "slow" && f.t === FrameType.CmdStdout);
  assert.deepEqual(slow.map((f) => new TextDecoder().decode(f.body as Uint8Array)), ["a", "b"]);
});
