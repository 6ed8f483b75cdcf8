/**
 * bridge/pty.ts against real processes in real pseudo-terminals: TTY checks,
 * resize, Ctrl-C and job control in `bash -i`, 50 MB out and a 4 MB paste in
 * (SHA-256), backpressure, exit status, hangup on close, no leaked
 * descriptors, and 200 idle terminals next to a busy one. Each test skips
 * with a printed reason off Linux, or when a program it needs is missing
 * (under CODER1_REQUIRE_ALL=1 that fails instead). Figures are printed as
 * `PTY <what>: <value>` lines.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cpuUsage } from "node:process";
import { PosixPty, PTY_OUTPUT_HIGH_WATER_BYTES, ptySupport } from "./pty.ts";
import type { PtyProcess, PtySpawnOptions } from "./pty_types.ts";
import { haveProgram, REQUIRE_ALL } from "../tests/helpers.ts";

// Loaded here, outside any test, so the library is not counted as a test's leak.
const SUPPORT = ptySupport();
const ON_LINUX = Deno.build.os === "linux";
const encoder = new TextEncoder();

/** Whether a test can run here; prints why not. */
function canRun(name: string, programs: string[] = []): boolean {
  if (!ON_LINUX) {
    console.log(`SKIP ${name}: the PTY tests run on Linux (this is ${Deno.build.os})`);
    if (REQUIRE_ALL) throw new Error("CODER1_REQUIRE_ALL=1: the PTY tests need Linux");
    return false;
  }
  assert.ok(SUPPORT.supported, SUPPORT.reason ?? "");
  return programs.every((p) => haveProgram(p, name));
}

/** A terminal under test: its output as text, with waits for patterns. */
class Term {
  readonly pty: PtyProcess;
  text = "";
  bytes = 0;
  readonly done: Promise<void>;
  #waiters: (() => void)[] = [];

  constructor(pty: PtyProcess, keepText = true) {
    this.pty = pty;
    const decoder = new TextDecoder();
    this.done = (async () => {
      for await (const chunk of pty.output) {
        this.bytes += chunk.length;
        if (keepText) this.text += decoder.decode(chunk, { stream: true });
        for (const wake of this.#waiters.splice(0)) wake();
      }
    })();
  }

  /** Waits for `pattern` in the output after offset `from`. */
  async waitFor(pattern: RegExp, from = 0, timeoutMs = 10_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const m = this.text.slice(from).match(pattern);
      if (m) return m;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`Timed out waiting for ${pattern} in:\n${JSON.stringify(this.text.slice(from))}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        timer = setTimeout(resolve, left);
        this.#waiters.push(resolve);
      });
      clearTimeout(timer);
    }
  }

  type(text: string): Promise<void> {
    return this.pty.write(encoder.encode(text));
  }

  /** Hangs up and waits for the leader, the output and the poller. */
  async close(): Promise<void> {
    this.pty.close();
    await Promise.all([this.pty.exited, this.done]);
  }
}

function spawn(file: string, args: string[], options: Partial<PtySpawnOptions> = {}): Term {
  return new Term(
    new PosixPty().spawn({
      file,
      args,
      cwd: options.cwd ?? Deno.cwd(),
      env: options.env ?? { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", TERM: "xterm-256color", LANG: "C" },
      cols: options.cols ?? 80,
      rows: options.rows ?? 24,
    }),
  );
}

/** `bash -i` without startup files, with a plain prompt and no history file. */
async function bash(home: string): Promise<Term> {
  const term = spawn("bash", ["--norc", "--noprofile", "-i"], {
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      TERM: "xterm-256color",
      HOME: home,
      PS1: "PROMPT$ ",
      HISTFILE: "",
      LANG: "C",
    },
  });
  await term.waitFor(/PROMPT\$ $/);
  return term;
}

/** Fields of /proc/PID/stat after the command name: state, ppid, pgrp, session, tty_nr, tpgid, ... */
function procStat(pid: number): string[] {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

/** The terminal's foreground process group, as the kernel sees it. */
function foregroundGroup(pid: number): number {
  return Number(procStat(pid)[5]);
}

/**
 * The command name of the terminal's foreground job (its group leader), once
 * it is not the shell. Waiting for the name, not just the group, matters: the
 * shell's forked child owns the terminal before it execs the program, and
 * until then it ignores Ctrl-C and Ctrl-Z as an interactive shell does.
 */
function foregroundCommand(pid: number): string | undefined {
  const group = foregroundGroup(pid);
  if (group === pid) return undefined;
  try {
    return Deno.readTextFileSync(`/proc/${group}/comm`).trim();
  } catch {
    return undefined;
  }
}

/** Polls `condition` (for state that has no event to await, such as /proc). */
async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** `size` bytes of pseudo-random data, every byte value included. */
function randomBytes(size: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 65_536) crypto.getRandomValues(bytes.subarray(i, Math.min(size, i + 65_536)));
  return bytes;
}

Deno.test("pty: stdin, stdout and stderr are the terminal, which is the session's controlling terminal", async () => {
  if (!canRun("pty isatty")) return;
  const term = spawn("sh", [
    "-c",
    'test -t 0 && test -t 1 && test -t 2 && echo "TTY=$(tty)"; exec 3</dev/tty && echo CTTY-OK; stty size; read x',
  ], { cols: 91, rows: 17 });
  try {
    const [, tty] = await term.waitFor(/TTY=(\/dev\/pts\/\d+)\r\n/);
    await term.waitFor(/CTTY-OK\r\n17 91\r\n/);
    const [, , pgrp, session, ttyNr, tpgid] = procStat(term.pty.pid);
    assert.equal(Number(session), term.pty.pid, "the shell leads its own session");
    assert.equal(Number(pgrp), term.pty.pid, "and its own process group");
    assert.equal(Number(tpgid), term.pty.pid, "which is the terminal's foreground group");
    const rdev = Deno.statSync(tty).rdev ?? -1;
    assert.equal(Number(ttyNr), rdev, "its controlling terminal is the one it prints");
  } finally {
    await term.close();
    await PosixPty.idle();
  }
});

Deno.test("pty: the program sees its directory and exactly the environment it was given", async () => {
  if (!canRun("pty environment")) return;
  const dir = await Deno.makeTempDir({ prefix: "coder1-pty-" });
  const term = spawn("sh", ["-c", 'echo "cwd=$(pwd)"; echo "foo=$FOO"; env | sort | tr "\\n" " "'], {
    cwd: dir,
    env: { PATH: "/usr/bin:/bin", FOO: "bar baz", TERM: "dumb" },
  });
  try {
    await term.done;
    assert.deepEqual(await term.pty.exited, { code: 0, signal: null });
    assert.match(term.text, new RegExp(`cwd=${Deno.realPathSync(dir)}\r\n`));
    assert.match(term.text, /foo=bar baz\r\n/);
    const names = term.text.split("\r\n")[2].trim().split(" ").map((v) => v.split("=")[0]);
    // sh adds PWD (and dash OLDPWD/SHLVL may vary by shell); nothing from the test's own environment.
    assert.ok(!names.includes("HOME") && !names.includes("LANG"), names.join(" "));
    assert.ok(["FOO", "PATH", "TERM"].every((n) => names.includes(n)), names.join(" "));
  } finally {
    await term.close();
    await Deno.remove(dir, { recursive: true });
    await PosixPty.idle();
  }
});

Deno.test("pty: stty size and tput cols follow a resize, and the program gets SIGWINCH", async () => {
  if (!canRun("pty resize", ["stty", "tput"])) return;
  const term = spawn("sh", [
    "-c",
    'trap \'echo "WINCH $(stty size) $(tput cols)"\' WINCH; echo "START $(stty size) $(tput cols)"; ' +
    "while :; do sleep 0.05; done",
  ], { cols: 80, rows: 24 });
  try {
    await term.waitFor(/START 24 80 80\r\n/);
    term.pty.resize(132, 50);
    await term.waitFor(/WINCH 50 132 132\r\n/);
    term.pty.resize(40, 10);
    await term.waitFor(/WINCH 10 40 40\r\n/);
    assert.throws(() => term.pty.resize(0, 10), RangeError);
    assert.throws(() => term.pty.resize(80, 70_000), RangeError);
    assert.throws(() => term.pty.resize(80.5, 24), RangeError);
  } finally {
    await term.close();
    await PosixPty.idle();
  }
});

Deno.test("pty: Ctrl-C ends a foreground sleep in bash -i, whose $? is then 130", async () => {
  if (!canRun("pty Ctrl-C", ["bash"])) return;
  const home = await Deno.makeTempDir({ prefix: "coder1-pty-" });
  const term = await bash(home);
  try {
    await term.type("sleep 30\r");
    const pid = term.pty.pid;
    await until(() => foregroundCommand(pid) === "sleep", "sleep is the foreground job");
    const started = performance.now();
    await term.type("\x03");
    await until(() => foregroundGroup(pid) === pid, "bash is in the foreground again", 5_000);
    const mark = term.text.length;
    await term.type('echo "R$?R"\r');
    const [, status] = await term.waitFor(/R(\d+)R/, mark);
    console.log(`PTY Ctrl-C to prompt: ${(performance.now() - started).toFixed(1)} ms`);
    assert.equal(status, "130");
    assert.match(term.text, /\^C/, "the line discipline echoes ^C");
    await term.type("exit 3\r");
    assert.deepEqual(await term.pty.exited, { code: 3, signal: null });
  } finally {
    await term.close();
    await Deno.remove(home, { recursive: true });
    await PosixPty.idle();
  }
});

Deno.test("pty: Ctrl-Z stops a foreground job and fg resumes it (job control in bash -i)", async () => {
  if (!canRun("pty job control", ["bash"])) return;
  const home = await Deno.makeTempDir({ prefix: "coder1-pty-" });
  const term = await bash(home);
  const pid = term.pty.pid;
  try {
    await term.type("cat\r");
    await until(() => foregroundCommand(pid) === "cat", "cat is the foreground job");
    const cat = foregroundGroup(pid);
    await term.type("\x1a");
    await term.waitFor(/Stopped\s+cat/);
    assert.equal(foregroundGroup(pid), pid, "bash took the terminal back");
    assert.equal(procStat(cat)[0], "T", "cat is stopped");

    await term.type("fg\r");
    await until(() => foregroundGroup(pid) === cat, "cat is in the foreground again");
    const mark = term.text.length;
    await term.type("zebra\r");
    // Once echoed by the line discipline, once written back by cat.
    await term.waitFor(/zebra\r\n(.|\r\n)*zebra\r\n/, mark);
    await term.type("\x04");
    await until(() => foregroundGroup(pid) === pid, "cat ended");
    const after = term.text.length;
    await term.type('echo "R$?R"\r');
    assert.equal((await term.waitFor(/R(\d+)R/, after))[1], "0");
  } finally {
    await term.close();
    await Deno.remove(home, { recursive: true });
    await PosixPty.idle();
  }
});

Deno.test("pty: 50 MB of cat output arrive byte for byte (SHA-256)", async () => {
  if (!canRun("pty 50 MB cat", ["stty", "cat"])) return;
  const dir = await Deno.makeTempDir({ prefix: "coder1-pty-" });
  const file = `${dir}/data`;
  const data = randomBytes(50 * 1024 * 1024);
  await Deno.writeFile(file, data);
  const expected = sha256(data);
  const started = performance.now();
  // Raw mode: no \n -> \r\n on output, nothing echoed.
  const pty = new PosixPty().spawn({
    file: "sh",
    args: ["-c", 'stty raw -echo && exec cat "$0"', file],
    cwd: dir,
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
    cols: 80,
    rows: 24,
  });
  try {
    const hash = createHash("sha256");
    let bytes = 0;
    for await (const chunk of pty.output) {
      hash.update(chunk);
      bytes += chunk.length;
    }
    const seconds = (performance.now() - started) / 1000;
    console.log(`PTY 50 MB cat: ${seconds.toFixed(2)} s, ${(data.length / 1e6 / seconds).toFixed(0)} MB/s`);
    assert.equal(bytes, data.length);
    assert.equal(hash.digest("hex"), expected);
    assert.deepEqual(await pty.exited, { code: 0, signal: null });
  } finally {
    pty.close();
    await pty.exited;
    await Deno.remove(dir, { recursive: true });
    await PosixPty.idle();
  }
});

Deno.test("pty: a 4 MB paste arrives whole (SHA-256 of the file it was written to)", async () => {
  if (!canRun("pty 4 MB paste", ["stty", "head"])) return;
  const dir = await Deno.makeTempDir({ prefix: "coder1-pty-" });
  const file = `${dir}/pasted`;
  const data = randomBytes(4 * 1024 * 1024);
  // Raw mode: every byte value passes (no signals, no line editing, no 4096-byte
  // canonical line limit); head ends after exactly that many bytes.
  const term = spawn("sh", ["-c", `stty raw -echo && echo READY && head -c ${data.length} > "$0" && echo DONE`, file], {
    cwd: dir,
  });
  try {
    await term.waitFor(/READY/);
    const started = performance.now();
    await term.pty.write(data);
    const written = performance.now() - started;
    await term.waitFor(/DONE/);
    console.log(
      `PTY 4 MB paste: write() resolved after ${written.toFixed(0)} ms, on disk after ${
        (performance.now() - started).toFixed(0)
      } ms`,
    );
    assert.deepEqual(await term.pty.exited, { code: 0, signal: null });
    assert.equal(sha256(await Deno.readFile(file)), sha256(data));
  } finally {
    await term.close();
    await Deno.remove(dir, { recursive: true });
    await PosixPty.idle();
  }
});

Deno.test("pty: a reader that stops reading stops the program (backpressure), and loses nothing", async () => {
  if (!canRun("pty backpressure", ["stty", "head"])) return;
  const total = 64 * 1024 * 1024;
  const pty = new PosixPty().spawn({
    file: "sh",
    args: ["-c", `stty raw -echo && exec head -c ${total} /dev/zero`],
    cwd: "/",
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
    cols: 80,
    rows: 24,
  });
  try {
    const reader = pty.output.getReader();
    const first = await reader.read();
    let bytes = first.value?.length ?? 0;
    // Not reading: the program fills the stream's buffer and the kernel's, then blocks.
    const io = () => Number(/wchar: (\d+)/.exec(Deno.readTextFileSync(`/proc/${pty.pid}/io`))?.[1]);
    let last = -1;
    await until(() => {
      const now = io();
      const still = now === last;
      last = now;
      return still;
    }, "the writer stalls");
    await new Promise((resolve) => setTimeout(resolve, 300));
    const stalled = io();
    console.log(`PTY backpressure: the writer stalled after ${(stalled / 1024).toFixed(0)} KiB of ${total >> 20} MiB`);
    assert.equal(io(), stalled, "still stalled");
    assert.ok(stalled < PTY_OUTPUT_HIGH_WATER_BYTES + 4 * 1024 * 1024, `stalled at ${stalled} bytes`);
    assert.equal(procStat(pty.pid)[0], "S", "blocked in write");
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      bytes += value.length;
    }
    assert.equal(bytes, total);
    assert.deepEqual(await pty.exited, { code: 0, signal: null });
  } finally {
    pty.close();
    await pty.exited;
    await PosixPty.idle();
  }
});

Deno.test("pty: the child starts with no signal blocked and SIGPIPE not ignored (Deno ignores it)", async () => {
  if (!canRun("pty signal dispositions", ["grep"])) return;
  // grep itself is the spawned program: a shell in between may block signals around its forks.
  const term = spawn("grep", ["-E", "^Sig(Blk|Ign)", "/proc/self/status"]);
  try {
    await term.done;
    const blocked = BigInt(`0x${/SigBlk:\s*([0-9a-f]+)/.exec(term.text)?.[1]}`);
    const ignored = BigInt(`0x${/SigIgn:\s*([0-9a-f]+)/.exec(term.text)?.[1]}`);
    assert.equal(blocked, 0n, term.text);
    // glibc's posix_spawn leaves only its two internal signals (32, 33) ignored, as for Deno.Command.
    assert.equal(ignored & ~0x180000000n, 0n, term.text);
  } finally {
    await term.close();
    await PosixPty.idle();
  }
});

Deno.test("pty: the exit status gives the code or the signal; kill() signals the session's group", async () => {
  if (!canRun("pty exit status")) return;
  const cases: [string[], { code: number | null; signal: string | null }][] = [
    [["-c", "exit 7"], { code: 7, signal: null }],
    [["-c", "true"], { code: 0, signal: null }],
    [["-c", "kill -TERM $$"], { code: null, signal: "SIGTERM" }],
    [["-c", "kill -SEGV $$"], { code: null, signal: "SIGSEGV" }],
  ];
  for (const [args, expected] of cases) {
    const term = spawn("sh", args);
    await term.done;
    assert.deepEqual(await term.pty.exited, expected, args.join(" "));
    term.pty.close();
  }
  const term = spawn("sh", ["-c", "sleep 30 & echo CHILD=$!; wait"]);
  try {
    const [, child] = await term.waitFor(/CHILD=(\d+)/);
    // Deno still reaps its own children while the terminals' SIGCHLD listener is active.
    const command = await new Deno.Command("sh", { args: ["-c", "exit 5"] }).output();
    assert.equal(command.code, 5);
    term.pty.kill("SIGKILL");
    assert.deepEqual(await term.pty.exited, { code: null, signal: "SIGKILL" });
    // The whole group got it: the background sleep too.
    await until(() => {
      try {
        return procStat(Number(child))[0] === "Z";
      } catch {
        return true; // Reaped by init.
      }
    }, "the background sleep is gone");
  } finally {
    await term.close();
    await PosixPty.idle();
  }
});

Deno.test("pty: close() hangs up: the shell gets SIGHUP, output ends, writes fail", async () => {
  if (!canRun("pty hangup", ["bash"])) return;
  const dir = await Deno.makeTempDir({ prefix: "coder1-pty-" });
  try {
    const trapped = spawn("sh", [
      "-c",
      `trap 'echo HUP > "$0"; exit 0' HUP; echo READY; while :; do sleep 0.05; done`,
      `${dir}/hup`,
    ]);
    await trapped.waitFor(/READY/);
    trapped.pty.close();
    assert.deepEqual(await trapped.pty.exited, { code: 0, signal: null });
    await trapped.done;
    assert.equal(await Deno.readTextFile(`${dir}/hup`), "HUP\n");
    await assert.rejects(trapped.type("x"), /closed/);
    trapped.pty.resize(10, 10); // Ignored once closed.
    trapped.pty.close(); // Twice is fine.

    // An interactive bash ends by SIGHUP.
    const shell = await bash(dir);
    shell.pty.close();
    assert.deepEqual(await shell.pty.exited, { code: null, signal: "SIGHUP" });
    await shell.done;
  } finally {
    await Deno.remove(dir, { recursive: true });
    await PosixPty.idle();
  }
});

Deno.test("pty: no descriptor of the bridge leaks into the child, not even one without O_CLOEXEC", async () => {
  if (!canRun("pty descriptors", ["ls"])) return;
  // A descriptor the child would inherit if the spawn did not close them: dup() clears O_CLOEXEC.
  const libc = Deno.dlopen("libc.so.6", {
    dup: { parameters: ["i32"], result: "i32" },
    close: { parameters: ["i32"], result: "i32" },
  });
  const leaky = libc.symbols.dup(2);
  assert.ok(leaky > 2);
  const term = spawn("sh", ["-c", "echo FDS $(ls /proc/self/fd | sort -n | tr '\\n' ' '); echo READY; read x"]);
  try {
    await term.waitFor(/READY/);
    // ls lists its own descriptors: 0-2 from the terminal, 3 its directory handle.
    assert.match(term.text, /FDS 0 1 2 3\r\n/);
    const fds = [...Deno.readDirSync(`/proc/${term.pty.pid}/fd`)].map((e) => Number(e.name)).sort((a, b) => a - b);
    assert.deepEqual(fds, [0, 1, 2], "the shell holds only the terminal");
    const targets = new Set(fds.map((fd) => Deno.readLinkSync(`/proc/${term.pty.pid}/fd/${fd}`)));
    assert.equal(targets.size, 1);
    assert.match([...targets][0], /^\/dev\/pts\/\d+$/);
  } finally {
    libc.symbols.close(leaky);
    libc.close();
    await term.close();
    await PosixPty.idle();
  }
});

Deno.test("pty: a missing program, a missing directory and bad sizes are clear errors", () => {
  if (!canRun("pty errors")) return;
  const base = { args: [], cwd: "/", env: { PATH: "/usr/bin:/bin" }, cols: 80, rows: 24 };
  const pty = new PosixPty();
  assert.throws(() => pty.spawn({ ...base, file: "coder1-no-such-program" }), /not found in PATH/);
  assert.throws(() => pty.spawn({ ...base, file: "/nonexistent/prog" }), /No such file or directory/);
  assert.throws(() => pty.spawn({ ...base, file: "sh", cwd: "/nonexistent-dir" }), /No such file or directory/);
  assert.throws(() => pty.spawn({ ...base, file: "sh", cols: 0 }), RangeError);
  assert.throws(() => pty.spawn({ ...base, file: "sh", args: ["a\0b"] }), TypeError);
});

Deno.test("pty: 200 idle terminals neither slow a new one nor burn CPU", async () => {
  if (!canRun("pty 200 idle", ["stty", "sleep", "cat"])) return;
  const idle: Term[] = [];
  const echoer = () => spawn("sh", ["-c", "stty raw -echo && echo READY && exec cat"]);
  /** Echo round trips through `cat` in raw mode: median and max in ms. */
  const roundTrips = async (term: Term, count: number) => {
    const times: number[] = [];
    for (let i = 0; i < count; i++) {
      const mark = term.text.length;
      const started = performance.now();
      await term.type(`${i % 10}`);
      await term.waitFor(new RegExp(`^${i % 10}`), mark, 2_000);
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    return { median: times[times.length >> 1], max: times[times.length - 1] };
  };
  const before = echoer();
  try {
    await before.waitFor(/READY\r?\n/);
    before.text = "";
    const base = await roundTrips(before, 20);
    await before.close();

    const started = performance.now();
    for (let i = 0; i < 200; i++) idle.push(new Term(spawnIdle(), false));
    console.log(`PTY 200 terminals started in ${(performance.now() - started).toFixed(0)} ms`);
    // Every one of them is really running before the measurements.
    await until(() => idle.every((t) => procStat(t.pty.pid)[0] === "S"), "200 idle shells are asleep");

    const cpu0 = cpuUsage();
    const wall0 = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const cpu = cpuUsage(cpu0);
    const cpuMs = (cpu.user + cpu.system) / 1000;
    console.log(
      `PTY idle CPU with 200 terminals: ${cpuMs.toFixed(1)} ms over ${(performance.now() - wall0).toFixed(0)} ms`,
    );

    const fresh = echoer();
    try {
      await fresh.waitFor(/READY\r?\n/);
      fresh.text = "";
      const busy = await roundTrips(fresh, 20);
      console.log(
        `PTY echo round trip: median ${base.median.toFixed(2)} ms, max ${base.max.toFixed(2)} ms alone; ` +
          `median ${busy.median.toFixed(2)} ms, max ${busy.max.toFixed(2)} ms beside 200 idle terminals`,
      );
      assert.ok(busy.max < 200, `echo round trip beside 200 idle terminals: ${busy.max} ms`);
    } finally {
      await fresh.close();
    }
    assert.ok(cpuMs < 100, `idle CPU: ${cpuMs} ms in 2 s`);
  } finally {
    await Promise.all(idle.map((t) => t.close()));
    await PosixPty.idle();
  }
});

function spawnIdle(): PtyProcess {
  return new PosixPty().spawn({
    file: "sh",
    args: ["-c", "sleep 60"],
    cwd: "/",
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
    cols: 80,
    rows: 24,
  });
}

Deno.test({
  name: "pty: environment() is the process's own environment, read from libc",
  ignore: !SUPPORT.supported,
  fn: () => {
    const env = new PosixPty().environment();
    // This test runs with --allow-all, so Deno's view can be compared.
    assert.deepEqual(env, { ...Deno.env.toObject() });
  },
});
