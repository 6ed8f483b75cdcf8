/**
 * Item 7 of the bench (issue 13): a terminal through relay and bridge, each
 * figure beside `ssh -tt` over the same multiplexed connection to localhost
 * from the same run.
 *
 * - Keystroke echo: one byte typed through the IDE client until its echo is
 *   back, from `cat` in raw mode in a real terminal on the bridge (the program
 *   echoes, as a shell's line editor does), with keystroke timing obfuscation
 *   off and on (docs/PROTOCOL.md, "Keystroke timing"), against the same `cat`
 *   behind `ssh -tt`. Before each keystroke the bench waits a random time below
 *   one interval, so that keystrokes fall anywhere between two ticks, as a
 *   person's do.
 * - `cat` of a text file in a terminal in raw mode (no `\n` to `\r\n`
 *   translation, so the bytes that arrive are the file's), from the keystroke
 *   that starts it until its last byte, against the same behind `ssh -tt`.
 *
 * Samples of coder1 and OpenSSH are taken in alternating rounds.
 *
 * @module
 */
import type { IdeClient, RemoteTerminal } from "../shared/ide_client.ts";
import { KEYSTROKE_INTERVAL_MS } from "../shared/protocol.ts";
import type { OpenSsh } from "./openssh.ts";
import { cpuMs, cpuMsOf } from "./proc_stats.ts";
import type { Row } from "./report.ts";
import { ratio, round, summarize, type Summary } from "./stats.ts";

/** Repetitions for item 7. */
export interface TerminalConfig {
  /** Keystrokes per variant (coder1 off, coder1 on, OpenSSH). */
  keystrokes: number;
  /** Bytes of the file `cat` writes. */
  catBytes: number;
  /** `cat` runs per variant. */
  catRuns: number;
  /** Rounds the samples are interleaved in. */
  rounds: number;
}

/** The coder1 processes whose CPU time the terminal `cat` is charged with (the IDE client is this process). */
export interface TerminalPids {
  relay: number;
  bridge: number;
}

/** What item 7 produced. */
export interface TerminalResults {
  rows: Row[];
  sections: Record<string, unknown>;
  notes: string[];
}

const MB = 1e6;
/** What the remote side prints once it is set up (typed as `REA''DY`, so the echo of the command line is not it). */
const READY = "READY";
const DONE = "DONE";
/** Raw mode (no echo by the terminal, no output translation), a mark, then the program. */
const ECHO_COMMAND = `stty raw -echo; printf 'REA''DY'; exec cat`;
const catCommand = (file: string) => `stty raw -echo; printf 'REA''DY'; read -r _; cat '${file}'; printf 'DO''NE'`;

/** Where {@linkcode measureTerminal} finds its baseline and processes, and where progress goes. */
export interface TerminalOptions {
  /** The OpenSSH baseline, if there is one. */
  ssh?: OpenSsh;
  /** Why there is none. */
  sshMissing?: string;
  /** The relay and bridge processes, for CPU per MiB of the terminal `cat`. */
  pids: TerminalPids;
  /** Progress lines. */
  log: (line: string) => void;
}

/**
 * Measures item 7 on a paired IDE client whose bridge runs terminals.
 *
 * @param ide A ready IDE client (its bridge runs terminals and takes `term.keys`).
 * @param config Repetitions.
 * @param options The OpenSSH baseline (or why there is none), the processes to charge, progress.
 * @returns Rows, raw figures and notes (rows marked skipped when the bridge runs no terminals).
 */
export async function measureTerminal(
  ide: IdeClient,
  config: TerminalConfig,
  options: TerminalOptions,
): Promise<TerminalResults> {
  const { ssh, sshMissing, pids, log } = options;
  if (ide.terminalSupport !== "available") {
    const skipped = `the bridge runs no terminals here (${ide.terminalSupport ?? "not said"})`;
    const row = (id: string, measure: string): Row => ({
      id,
      item: 7,
      measure,
      coder1: "",
      baseline: "",
      ratio: null,
      target: "",
      met: null,
      skipped,
    });
    return {
      rows: [
        row("keystroke-echo", "Keystroke echo in a terminal"),
        row("keystroke-echo-obscured", "Keystroke echo, obfuscation on"),
        row("terminal-cat", "`cat` in a terminal"),
      ],
      sections: { keystrokeEcho: { skipped }, terminalCat: { skipped } },
      notes: [],
    };
  }
  const rows: Row[] = [];
  const sections: Record<string, unknown> = {};
  const sshObscure = ssh ? await ssh.knowsObscureKeystrokeTiming() : false;
  const file = await Deno.makeTempFile({ prefix: "coder1-bench-cat-" });
  const obscureBefore = ide.obscureKeystrokes;
  try {
    await Deno.writeFile(file, _text(config.catBytes));

    // Keystroke echo.
    const samples = { off: [] as number[], on: [] as number[], ssh: [] as number[] };
    const term = await _Typist.open(ide);
    const remote = ssh ? await _SshTypist.start(ssh, sshObscure ? false : undefined) : undefined;
    try {
      ide.setObscureKeystrokes(false);
      for (let i = 0; i < 5; i++) await term.echo(); // Warm-up.
      if (remote) { for (let i = 0; i < 5; i++) await remote.echo(); }
      for (let round = 0; round < config.rounds; round++) {
        const n = _share(config.keystrokes, config.rounds, round);
        ide.setObscureKeystrokes(false);
        for (let i = 0; i < n; i++) samples.off.push(await term.echo());
        ide.setObscureKeystrokes(true);
        for (let i = 0; i < n; i++) samples.on.push(await term.echo());
        ide.setObscureKeystrokes(false);
        if (remote) { for (let i = 0; i < n; i++) samples.ssh.push(await remote.echo()); }
      }
    } finally {
      await term.close();
      await remote?.close();
    }
    const echo = {
      off: summarize(samples.off),
      on: summarize(samples.on),
      ssh: samples.ssh.length ? summarize(samples.ssh) : null,
      sshObscureKeystrokeTiming: sshObscure ? "off" : "not in this OpenSSH (9.5 and later have it)",
    };
    sections.keystrokeEcho = { ...echo, unit: "ms", skipped: sshMissing };
    const sshFigure = echo.ssh ? `\`ssh -tt\`, multiplexed: ${_fmt(echo.ssh)}` : `OpenSSH: skipped (${sshMissing})`;
    rows.push({
      id: "keystroke-echo",
      item: 7,
      measure: "Keystroke echo: a byte typed in the IDE until `cat` (raw mode, real terminal) echoes it back " +
        "(relay + bridge), keystroke timing obfuscation off, vs `ssh -tt` multiplexed",
      coder1: _fmt(echo.off),
      baseline: sshFigure,
      ratio: echo.ssh ? ratio(echo.off.median, echo.ssh.median) : null,
      target: "at most OpenSSH's (ratio ≤ 1)",
      met: echo.ssh ? echo.off.median <= echo.ssh.median : null,
      ...(echo.ssh ? {} : { skipped: sshMissing }),
    });
    rows.push({
      id: "keystroke-echo-obscured",
      item: 7,
      measure: `Keystroke echo as above with keystroke timing obfuscation on (the default: a tick every ` +
        `${KEYSTROKE_INTERVAL_MS} ms, chaff between)`,
      coder1: _fmt(echo.on),
      baseline: `${sshFigure}; coder1 with it off: ${_fmt(echo.off)}`,
      ratio: echo.ssh ? ratio(echo.on.median, echo.ssh.median) : null,
      target: "none (reported; costs up to one interval)",
      met: null,
      ...(echo.ssh ? {} : { skipped: sshMissing }),
    });
    log(
      `link: keystroke echo coder1 off ${_fmt(echo.off)}, on ${_fmt(echo.on)}${
        echo.ssh ? `, ssh ${_fmt(echo.ssh)}` : ""
      }`,
    );

    // `cat` of a file in a terminal: a throughput figure, so the keystroke that starts it is not held for a tick.
    ide.setObscureKeystrokes(false);
    const mbps = { coder1: [] as number[], ssh: [] as number[] };
    // CPU per MiB of each process on the path (the shell and `cat` are not counted on either side).
    const cpu = { relay: [] as number[], bridge: [] as number[], ide: [] as number[], ssh: [] as number[] };
    const mib = config.catBytes / 2 ** 20;
    const catTerm = await _Typist.open(ide);
    try {
      for (let run = 0; run < config.catRuns; run++) {
        const all = { ...pids, ide: Deno.pid };
        const before = { relay: cpuMs(all.relay), bridge: cpuMs(all.bridge), ide: cpuMs(all.ide) };
        mbps.coder1.push(await catTerm.cat(file, config.catBytes));
        for (const k of ["relay", "bridge", "ide"] as const) cpu[k].push((cpuMs(all[k]) - before[k]) / mib);
        if (ssh) {
          const s0 = cpuMsOf(ssh.processIds());
          mbps.ssh.push(await _sshCat(ssh, file, config.catBytes));
          const s1 = cpuMsOf([...s0.keys()]);
          cpu.ssh.push([...s1].reduce((sum, [pid, ms]) => sum + ms - s0.get(pid)!, 0) / mib);
        }
        log(
          `link: terminal cat run ${run + 1}/${config.catRuns}: coder1 ${round(mbps.coder1.at(-1)!, 0)} MB/s${
            ssh ? `, ssh ${round(mbps.ssh.at(-1)!, 0)} MB/s` : ""
          }`,
        );
      }
    } finally {
      await catTerm.close();
    }
    const cat = {
      bytes: config.catBytes,
      coder1: summarize(mbps.coder1, 1),
      ssh: mbps.ssh.length ? summarize(mbps.ssh, 1) : null,
      cpuMsPerMiB: {
        relay: summarize(cpu.relay, 2).median,
        bridge: summarize(cpu.bridge, 2).median,
        ide: summarize(cpu.ide, 2).median,
        openssh: cpu.ssh.length ? summarize(cpu.ssh, 2).median : null,
      },
    };
    const c = cat.cpuMsPerMiB;
    sections.terminalCat = { ...cat, unit: "MB/s (10^6 bytes per second), median over runs", skipped: sshMissing };
    const size = `${round(config.catBytes / 2 ** 20, 1)} MiB`;
    rows.push({
      id: "terminal-cat",
      item: 7,
      measure: `\`cat\` of a ${size} text file in a terminal (raw mode), streamed to the IDE vs \`ssh -tt\``,
      coder1: `${_num(cat.coder1.median)} MB/s; CPU per MiB: bridge ${c.bridge} ms, IDE client ${c.ide}, relay ` +
        `${c.relay}`,
      baseline: cat.ssh
        ? `\`ssh -tt\`, multiplexed: ${_num(cat.ssh.median)} MB/s; CPU per MiB (sshd + ssh master): ${c.openssh} ms`
        : `OpenSSH: skipped (${sshMissing})`,
      ratio: cat.ssh ? ratio(cat.coder1.median, cat.ssh.median) : null,
      target: "≥ 0.5× OpenSSH",
      met: cat.ssh ? cat.coder1.median >= 0.5 * cat.ssh.median : null,
      ...(cat.ssh ? {} : { skipped: sshMissing }),
    });
  } finally {
    ide.setObscureKeystrokes(obscureBefore);
    await Deno.remove(file).catch(() => {});
  }
  const notes = [
    "Terminal (item 7): the bridge runs the user's login shell in a real pseudo-terminal; the bench types through " +
    "`RemoteTerminal.write` and reads `onData`, and drives `ssh -tt` (over the same ControlMaster connection as the " +
    "command rows) through its stdin and stdout. Keystroke echo: `stty raw -echo; exec cat` on both sides, one byte " +
    "at a time, each after a random wait below " +
    `${KEYSTROKE_INTERVAL_MS} ms (so that with obfuscation on a keystroke falls anywhere between two ticks), timed ` +
    "from the write to the echoed byte; the variants alternate in rounds. OpenSSH's own ObscureKeystrokeTiming: " +
    `${echo_(sshObscure)}. Terminal \`cat\`: \`stty raw -echo\` (no \\n → \\r\\n translation), then \`cat\` of a ` +
    "file of printable lines, timed from the keystroke that starts it until its last byte arrived (obfuscation " +
    "off, so that this keystroke does not wait for a tick).",
  ];
  return { rows, sections, notes };
}

function echo_(sshObscure: boolean): string {
  return sshObscure
    ? "turned off for the baseline (`-o ObscureKeystrokeTiming=no`)"
    : "not in this OpenSSH (it came in 9.5), so the baseline types without it";
}

/** A terminal on the bridge, typed into and read by the bench. */
class _Typist {
  #term: RemoteTerminal;
  #text = "";
  #bytes = 0;
  #waiters: (() => void)[] = [];
  /** Called with each chunk while a `cat` is counted. */
  #sink?: (chunk: Uint8Array) => void;

  private constructor(term: RemoteTerminal) {
    this.#term = term;
    term.onData((chunk) => {
      this.#bytes += chunk.byteLength;
      if (this.#sink) this.#sink(chunk);
      else if (this.#text.length < 1 << 16) this.#text += new TextDecoder().decode(chunk);
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  /** Opens a terminal and sets it up for keystroke echo (`cat` in raw mode). */
  static async open(ide: IdeClient): Promise<_Typist> {
    const t = new _Typist(ide.openTerminal({ cols: 80, rows: 24 }));
    await t.#term.ready;
    await t.#until(() => /[$#] $/.test(t.#text), "the shell's prompt");
    return t;
  }

  /** One keystroke until its echo: ms. Starts `cat` on first use. */
  async echo(): Promise<number> {
    if (!this.#text.includes(READY)) {
      this.#text = "";
      await this.#term.write(`${ECHO_COMMAND}\r`);
      await this.#until(() => this.#text.includes(READY), "cat to start");
    }
    await _sleep(Math.random() * KEYSTROKE_INTERVAL_MS);
    const expect = this.#bytes + 1;
    const t0 = performance.now();
    void this.#term.write("x");
    await this.#until(() => this.#bytes >= expect, "the echo");
    const ms = performance.now() - t0;
    if (this.#bytes !== expect) throw new Error(`Cannot measure echo: ${this.#bytes - expect + 1} bytes came back`);
    return ms;
  }

  /** One `cat` of `file` (`bytes` long) from the keystroke that starts it to its last byte: MB/s. */
  async cat(file: string, bytes: number): Promise<number> {
    this.#text = "";
    await this.#term.write(`${catCommand(file)}\r`);
    await this.#until(() => this.#text.includes(READY), "the cat command to be ready");
    // What follows READY is the file, then DONE, then the prompt.
    let got = 0;
    let tail = "";
    const done = Promise.withResolvers<number>();
    this.#sink = (chunk) => {
      const from = Math.max(0, bytes - got);
      if (from < chunk.byteLength) tail += new TextDecoder().decode(chunk.subarray(from, from + 4 - tail.length));
      const after = bytes + DONE.length - got; // Where the prompt starts in this chunk, if it does.
      got += chunk.byteLength;
      if (got < bytes + DONE.length) return;
      this.#sink = undefined;
      this.#text = new TextDecoder().decode(chunk.subarray(Math.max(0, after)));
      done.resolve(performance.now());
    };
    const t0 = performance.now();
    await this.#term.write("\n");
    const end = await _race(done.promise, 120_000, "the cat to finish");
    this.#sink = undefined;
    if (tail !== DONE || got < bytes + DONE.length) {
      throw new Error(`Cannot measure terminal cat: ${got} bytes, ending ${JSON.stringify(tail)}`);
    }
    await this.#until(() => /[$#] $/.test(this.#text), "the prompt after cat");
    return bytes / MB / ((end - t0) / 1000);
  }

  async close(): Promise<void> {
    this.#sink = undefined;
    await this.#term.close();
    await this.#term.exited.catch(() => {});
  }

  async #until(predicate: () => boolean, what: string): Promise<void> {
    const deadline = performance.now() + 30_000;
    while (!predicate()) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`Timed out waiting for ${what}: ${JSON.stringify(this.#text.slice(-200))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => (clearTimeout(timer), resolve()));
      });
    }
  }
}

/** `ssh -tt` running `cat` in raw mode, typed into one byte at a time. */
class _SshTypist {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #pending = "";

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.#reader = child.stdout.getReader();
  }

  static async start(ssh: OpenSsh, obscure: boolean | undefined): Promise<_SshTypist> {
    const t = new _SshTypist(ssh.spawnTty(ECHO_COMMAND, { obscure }));
    while (!t.#pending.includes(READY)) {
      const { value, done } = await _race(t.#reader.read(), 30_000, "ssh to start cat");
      if (done) throw new Error(`ssh ended before cat started: ${JSON.stringify(t.#pending)}`);
      t.#pending += new TextDecoder().decode(value);
    }
    t.#pending = t.#pending.slice(t.#pending.indexOf(READY) + READY.length);
    if (t.#pending.length) throw new Error(`Cannot measure ssh echo: unexpected ${JSON.stringify(t.#pending)}`);
    return t;
  }

  async echo(): Promise<number> {
    await _sleep(Math.random() * KEYSTROKE_INTERVAL_MS);
    const t0 = performance.now();
    await this.#writer.write(new Uint8Array([0x78]));
    const { value, done } = await _race(this.#reader.read(), 30_000, "the ssh echo");
    const ms = performance.now() - t0;
    if (done || value.byteLength !== 1) throw new Error(`Cannot measure ssh echo: got ${value?.byteLength} bytes`);
    return ms;
  }

  async close(): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch {
      // Gone already.
    }
    this.#reader.releaseLock();
    await this.#child.stdout.cancel().catch(() => {});
    await this.#writer.close().catch(() => {});
    await this.#child.status;
  }
}

/** One `cat` of `file` behind `ssh -tt`, from the keystroke that starts it to its last byte: MB/s. */
async function _sshCat(ssh: OpenSsh, file: string, bytes: number): Promise<number> {
  const child = ssh.spawnTty(catCommand(file));
  const writer = child.stdin.getWriter();
  const reader = child.stdout.getReader();
  try {
    let head = "";
    while (!head.includes(READY)) {
      const { value, done } = await _race(reader.read(), 30_000, "ssh to be ready");
      if (done) throw new Error(`ssh ended before cat: ${JSON.stringify(head)}`);
      head += new TextDecoder().decode(value);
    }
    if (!head.endsWith(READY)) throw new Error(`Cannot measure ssh cat: output before the keystroke: ${head}`);
    let got = 0;
    let tail = "";
    const t0 = performance.now();
    await writer.write(new Uint8Array([0x0a]));
    let end = 0;
    while (got < bytes + DONE.length) {
      const { value, done } = await _race(reader.read(), 120_000, "the ssh cat");
      if (done) break;
      const from = Math.max(0, bytes - got);
      if (from < value.byteLength) tail += new TextDecoder().decode(value.subarray(from, from + 4 - tail.length));
      got += value.byteLength;
      end = performance.now();
    }
    if (tail !== DONE || got < bytes + DONE.length) {
      throw new Error(`Cannot measure ssh cat: ${got} bytes, ending ${JSON.stringify(tail)}`);
    }
    return bytes / MB / ((end - t0) / 1000);
  } finally {
    reader.releaseLock();
    await child.stdout.cancel().catch(() => {});
    await writer.close().catch(() => {});
    try {
      child.kill("SIGTERM");
    } catch {
      // It ended with the command.
    }
    await child.status;
  }
}

/** Lines of 79 printable characters and a newline, `bytes` in all. */
function _text(bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  const random = new Uint8Array(65536);
  for (let at = 0; at < bytes; at += random.byteLength) {
    crypto.getRandomValues(random);
    const end = Math.min(bytes, at + random.byteLength);
    for (let i = at; i < end; i++) out[i] = i % 80 === 79 ? 0x0a : 0x61 + (random[i - at] % 26);
  }
  return out;
}

async function _race<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Timed out waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function _sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** This round's share of `total` samples spread over `rounds`. */
function _share(total: number, rounds: number, round: number): number {
  return Math.floor((total * (round + 1)) / rounds) - Math.floor((total * round) / rounds);
}

function _fmt(s: Summary): string {
  return `${_num(s.median)} ms (p99 ${_num(s.p99)})`;
}

function _num(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}
