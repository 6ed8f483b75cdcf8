import assert from "node:assert/strict";
import { OrphanGuard } from "./orphan_guard.ts";
import { ShellRunner } from "./shell_runner.ts";

function alive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "orphan guard: when its pipe closes (the bridge is gone) it ends the listed process groups, grandchildren too",
  ignore: Deno.build.os === "windows",
  async fn() {
    const guard = OrphanGuard.start();
    assert.ok(guard.pid, "the guard runs");
    const runner = new ShellRunner(() => "/bin/sh", guard);
    // The shell starts a grandchild in the same group and reports its pid.
    const proc = runner.spawn("sleep 300 & echo $!; wait", { cwd: "/tmp" });
    const reader = proc.stdout.getReader();
    const { value } = await reader.read();
    const grandchild = Number(new TextDecoder().decode(value).trim());
    assert.ok(alive(proc.pid) && alive(grandchild));
    const ended = runner.spawn("true", { cwd: "/tmp" });
    await ended.exited; // Listed and unlisted again: the guard must leave its (reused) id alone.
    // What the kernel does when the bridge dies: the guard's stdin reaches end of input.
    await guard.stop();
    const exit = await proc.exited;
    assert.equal(exit.signal, "SIGTERM");
    for (let i = 0; i < 50 && alive(grandchild); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(alive(grandchild), false, "the grandchild in the command's group is gone");
    reader.releaseLock();
    await proc.stdout.cancel().catch(() => {});
    await proc.stderr.cancel().catch(() => {});
    await proc.stdin.close().catch(() => {});
    await ended.stdout.cancel().catch(() => {});
    await ended.stderr.cancel().catch(() => {});
    await ended.stdin.close().catch(() => {});
  },
});
