/**
 * Processes in real pseudo-terminals, through libc (`Deno.dlopen`): the
 * implementation of {@linkcode PtySpawner} from bridge/pty_types.ts.
 *
 * Why libc by hand: `Deno.Command` cannot give a child a controlling
 * terminal, and `forkpty()` through FFI crashes the child (fork in a
 * multithreaded runtime). What works (measured, see issue 13):
 * `posix_openpt` + `grantpt` + `unlockpt` + `ptsname_r`, then `posix_spawn`
 * with `POSIX_SPAWN_SETSID` and file actions that open the slave as
 * descriptor 0 (the first terminal a session leader opens becomes its
 * controlling terminal), duplicate it to 1 and 2, close every other
 * descriptor and change directory. No `fork()` runs in this process: glibc's
 * `posix_spawn` uses `clone(CLONE_VM | CLONE_VFORK)` and only async-signal-safe
 * calls before `exec`.
 *
 * Output, input and exits, without a thread per terminal:
 * - one {@linkcode FdPoller} (bridge/pty_poller.ts) waits for all masters
 *   with a single `poll()` on Deno's FFI thread pool; the reads and writes
 *   are non-blocking calls on the main thread;
 * - backpressure: a master is polled for output only while its stream wants
 *   more (`desiredSize > 0`); otherwise the kernel's buffers fill and the
 *   program blocks in `write()`;
 * - input: `write()` writes what the terminal takes now and waits for
 *   `POLLOUT` for the rest, so a large paste arrives whole;
 * - exits: `SIGCHLD` (one listener while any terminal's leader is alive),
 *   then `waitpid(pid, WNOHANG)` for each of our own children only (never
 *   `waitpid(-1)`: Deno reaps its own `Deno.Command` children). A signal
 *   listener does not keep Deno's event loop alive, so until a leader is
 *   reaped the poller keeps its `poll()` in flight (on the wake pipe alone if
 *   nothing else is watched).
 *
 * Linux is tested; the macOS constants and the arm64 calling convention for
 * variadic `ioctl`/`fcntl` are written from the headers and untested (and
 * macOS's poll(2) man page has long said it does not support devices: if
 * that still holds for PTY masters, the poller needs select() or kqueue
 * there). Other systems (Windows would need ConPTY) get a clear error.
 *
 * Needs unscoped `--allow-ffi` (`Deno.UnsafePointer` requires it) and
 * `--allow-run` (signals to the terminal's process group). SECURITY.md says
 * what that means for the bridge.
 *
 * @module
 */
import type { ProcessExit } from "./shell_runner.ts";
import type { PtyProcess, PtySpawner, PtySpawnOptions } from "./pty_types.ts";
import { FdPoller, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, type PollTarget } from "./pty_poller.ts";

/** Output buffered in a terminal's stream before the bridge stops reading the terminal. */
export const PTY_OUTPUT_HIGH_WATER_BYTES = 256 * 1024;
/** Largest output chunk read at once (a Linux PTY master hands out at most 4 KiB per read). */
const READ_CHUNK_BYTES = 64 * 1024;
/** Reads per terminal per poll round, so one busy terminal cannot starve the others. */
const READS_PER_ROUND = 16;
/** Largest window size in cells (`struct winsize` holds 16-bit fields). */
const MAX_CELLS = 0xffff;

/** What differs between the systems that have PTYs through libc. */
interface _Os {
  libc: string;
  errnoSymbol: string;
  /** posix_openpt flags. */
  openFlags: number;
  /** Set `FD_CLOEXEC` with fcntl after opening (where posix_openpt ignores O_CLOEXEC). */
  cloexecAfterOpen: boolean;
  O_RDWR: number;
  O_NONBLOCK: number;
  TIOCSWINSZ: number;
  /** Reads the terminal's foreground process group (Force stop). */
  TIOCGPGRP: number;
  /** POSIX_SPAWN_SETSID | SETSIGMASK | SETSIGDEF (| CLOEXEC_DEFAULT on macOS). */
  spawnFlags: number;
  EAGAIN: number;
  /** Variadic arguments go on the stack (Apple arm64), not in registers. */
  variadicOnStack: boolean;
  /** Signal names by number. */
  signals: string[];
}

const F_GETFL = 3;
const F_SETFL = 4;
const F_SETFD = 2;
const FD_CLOEXEC = 1;
const EINTR = 4;
const X_OK = 1;
const WNOHANG = 1;

const LINUX: _Os = {
  libc: "libc.so.6",
  errnoSymbol: "__errno_location",
  openFlags: 0o2 | 0o400 | 0o2000000, // O_RDWR | O_NOCTTY | O_CLOEXEC
  cloexecAfterOpen: false,
  O_RDWR: 0o2,
  O_NONBLOCK: 0o4000,
  TIOCSWINSZ: 0x5414,
  TIOCGPGRP: 0x540f,
  spawnFlags: 0x80 | 0x08 | 0x04, // glibc and musl: SETSID, SETSIGMASK, SETSIGDEF
  EAGAIN: 11,
  variadicOnStack: false,
  signals: [
    "",
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
  ],
};

const DARWIN: _Os = {
  libc: "/usr/lib/libSystem.B.dylib",
  errnoSymbol: "__error",
  openFlags: 0x2 | 0x20000, // O_RDWR | O_NOCTTY
  cloexecAfterOpen: true,
  O_RDWR: 0x2,
  O_NONBLOCK: 0x4,
  TIOCSWINSZ: 0x80087467,
  TIOCGPGRP: 0x40047477,
  // SETSID, SETSIGMASK, SETSIGDEF, CLOEXEC_DEFAULT (no closefrom file action there).
  spawnFlags: 0x400 | 0x08 | 0x04 | 0x4000,
  EAGAIN: 35,
  variadicOnStack: Deno.build.arch === "aarch64",
  signals: [
    "",
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGEMT",
    "SIGFPE",
    "SIGKILL",
    "SIGBUS",
    "SIGSEGV",
    "SIGSYS",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGURG",
    "SIGSTOP",
    "SIGTSTP",
    "SIGCONT",
    "SIGCHLD",
    "SIGTTIN",
    "SIGTTOU",
    "SIGIO",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGINFO",
    "SIGUSR1",
    "SIGUSR2",
  ],
};

/** Six register-sized fillers: on Apple arm64 they push the variadic argument onto the stack. */
const PAD = ["i64", "i64", "i64", "i64", "i64", "i64"] as const;

function _symbols(os: _Os) {
  return {
    posix_openpt: { parameters: ["i32"], result: "i32" },
    grantpt: { parameters: ["i32"], result: "i32" },
    unlockpt: { parameters: ["i32"], result: "i32" },
    ptsname_r: { parameters: ["i32", "buffer", "usize"], result: "i32" },
    fcntl: { parameters: ["i32", "i32", "i64"], result: "i32" },
    fcntl_stack: { name: "fcntl", parameters: ["i32", "i32", ...PAD, "i64"], result: "i32" },
    ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
    ioctl_stack: { name: "ioctl", parameters: ["i32", "u64", ...PAD, "buffer"], result: "i32" },
    read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
    write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
    close: { parameters: ["i32"], result: "i32" },
    pipe: { parameters: ["buffer"], result: "i32" },
    poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
    poll_now: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32" },
    waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" },
    access: { parameters: ["buffer", "i32"], result: "i32" },
    strerror: { parameters: ["i32"], result: "pointer" },
    errno_location: { name: os.errnoSymbol, parameters: [], result: "pointer" },
    posix_spawn: {
      parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
      result: "i32",
    },
    posix_spawnp: {
      parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
      result: "i32",
    },
    posix_spawn_file_actions_init: { parameters: ["buffer"], result: "i32" },
    posix_spawn_file_actions_destroy: { parameters: ["buffer"], result: "i32" },
    posix_spawn_file_actions_addopen: { parameters: ["buffer", "i32", "buffer", "i32", "u32"], result: "i32" },
    posix_spawn_file_actions_adddup2: { parameters: ["buffer", "i32", "i32"], result: "i32" },
    posix_spawn_file_actions_addchdir_np: { parameters: ["buffer", "buffer"], result: "i32" },
    // glibc 2.34+; without it, every descriptor of the bridge is O_CLOEXEC anyway.
    posix_spawn_file_actions_addclosefrom_np: { parameters: ["buffer", "i32"], result: "i32", optional: true },
    posix_spawnattr_init: { parameters: ["buffer"], result: "i32" },
    posix_spawnattr_destroy: { parameters: ["buffer"], result: "i32" },
    posix_spawnattr_setflags: { parameters: ["buffer", "i16"], result: "i32" },
    posix_spawnattr_setsigmask: { parameters: ["buffer", "buffer"], result: "i32" },
    posix_spawnattr_setsigdefault: { parameters: ["buffer", "buffer"], result: "i32" },
    sigemptyset: { parameters: ["buffer"], result: "i32" },
    sigfillset: { parameters: ["buffer"], result: "i32" },
    sigdelset: { parameters: ["buffer", "i32"], result: "i32" },
  } as const;
}

type _Symbols = Deno.DynamicLibrary<ReturnType<typeof _symbols>>["symbols"];

/** libc, bound once per process, with the poller and the reaper built on it. */
class _Libc {
  readonly os: _Os;
  readonly sym: _Symbols;
  readonly poller: FdPoller;
  readonly reaper: _Reaper;
  #errno: Deno.PointerValue = null;
  #environ?: { environ: Deno.PointerValue };
  #wake: [number, number];
  #byte = new Uint8Array(1);
  #sink = new Uint8Array(256);

  constructor(os: _Os) {
    this.os = os;
    this.sym = Deno.dlopen(os.libc, _symbols(os)).symbols;
    const ends = new Int32Array(2);
    if (this.sym.pipe(ends) !== 0) throw new Error(`Cannot create the terminals' wake pipe: ${this.lastError()}`);
    this.#wake = [ends[0], ends[1]];
    for (const fd of this.#wake) {
      this.fcntl(fd, F_SETFD, FD_CLOEXEC);
      this.fcntl(fd, F_SETFL, this.fcntl(fd, F_GETFL, 0) | os.O_NONBLOCK);
    }
    const sym = this.sym;
    this.poller = new FdPoller({
      pollAsync: (fds, count, timeout) => sym.poll(fds, BigInt(count), timeout),
      pollNow: (fds, count, timeout) => sym.poll_now(fds, BigInt(count), timeout),
      wakeFd: this.#wake[0],
      wake: () => void sym.write(this.#wake[1], this.#byte, 1n),
      drainWake: () => {
        while (Number(sym.read(this.#wake[0], this.#sink, BigInt(this.#sink.length))) > 0) { /* drained */ }
      },
    });
    this.reaper = new _Reaper(this);
  }

  /** The calling thread's errno (read right after the failing call, on the same thread). */
  errno(): number {
    this.#errno ??= this.sym.errno_location();
    return this.#errno ? new Deno.UnsafePointerView(this.#errno).getInt32() : 0;
  }

  /** The text for an error number. */
  strerror(code: number): string {
    const text = this.sym.strerror(code);
    return text ? Deno.UnsafePointerView.getCString(text) : `error ${code}`;
  }

  /** The text for errno. */
  lastError(): string {
    return this.strerror(this.errno());
  }

  /** The value of libc's `environ` (the process's environment table), or null. */
  environ(): Deno.PointerValue {
    this.#environ ??= Deno.dlopen(this.os.libc, { environ: { type: "pointer" } } as const).symbols;
    // Deno gives a pointer static as the symbol's address: read the variable there.
    const address = this.#environ.environ;
    return address ? new Deno.UnsafePointerView(address).getPointer(0) : null;
  }

  fcntl(fd: number, cmd: number, arg: number): number {
    return this.os.variadicOnStack
      ? this.sym.fcntl_stack(fd, cmd, 0n, 0n, 0n, 0n, 0n, 0n, BigInt(arg))
      : this.sym.fcntl(fd, cmd, BigInt(arg));
  }

  ioctl(fd: number, request: number, arg: Uint8Array<ArrayBuffer>): number {
    return this.os.variadicOnStack
      ? this.sym.ioctl_stack(fd, BigInt(request), 0n, 0n, 0n, 0n, 0n, 0n, arg)
      : this.sym.ioctl(fd, BigInt(request), arg);
  }
}

let _loaded: _Libc | undefined;

function _libc(): _Libc {
  if (_loaded) return _loaded;
  const os = Deno.build.os === "linux" ? LINUX : Deno.build.os === "darwin" ? DARWIN : undefined;
  if (!os) throw new Error(`Cannot start a terminal: terminals are not supported on ${Deno.build.os} yet`);
  _loaded = new _Libc(os);
  return _loaded;
}

/**
 * Reaps the terminals' session leaders: on SIGCHLD (and when a master hangs
 * up), `waitpid(pid, WNOHANG)` for each of ours. The signal listener exists
 * only while one of them is alive, so an idle bridge holds nothing.
 */
class _Reaper {
  #libc: _Libc;
  #children = new Map<number, (exit: ProcessExit) => void>();
  #status = new Int32Array(1);
  #listener = () => this.sweep();
  #listening = false;

  constructor(libc: _Libc) {
    this.#libc = libc;
  }

  /** Starts listening before a spawn, so no SIGCHLD is missed. */
  expect(): void {
    if (this.#listening) return;
    Deno.addSignalListener("SIGCHLD", this.#listener);
    this.#listening = true;
  }

  /** Stops listening when no child is left (a spawn failed, or the last one was reaped). */
  unexpect(): void {
    if (!this.#listening || this.#children.size > 0) return;
    Deno.removeSignalListener("SIGCHLD", this.#listener);
    this.#listening = false;
  }

  add(pid: number, onExit: (exit: ProcessExit) => void): void {
    this.#children.set(pid, onExit);
    this.#libc.poller.hold();
    this.sweep(); // In case it already ended.
  }

  sweep(): void {
    const sym = this.#libc.sym;
    for (const [pid, onExit] of this.#children) {
      let got = sym.waitpid(pid, this.#status, WNOHANG);
      while (got === -1 && this.#libc.errno() === EINTR) got = sym.waitpid(pid, this.#status, WNOHANG);
      if (got === 0) continue;
      this.#children.delete(pid);
      this.#libc.poller.release();
      // -1 (ECHILD) means something else reaped it: the status is lost.
      onExit(got === pid ? this.#decode(this.#status[0]) : { code: null, signal: null });
    }
    this.unexpect();
  }

  #decode(status: number): ProcessExit {
    const low = status & 0x7f;
    if (low === 0) return { code: (status >> 8) & 0xff, signal: null };
    return { code: null, signal: this.#libc.os.signals[low] ?? `SIG${low}` };
  }
}

/** One read buffer for every terminal: reads run one at a time on the main thread. */
let _readBuffer: Uint8Array<ArrayBuffer> | undefined;

/** A queued write. */
interface _Write {
  data: Uint8Array;
  offset: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

/** A process in its own pseudo-terminal. */
class _PtyChild implements PtyProcess, PollTarget {
  readonly pid: number;
  readonly output: ReadableStream<Uint8Array>;
  readonly exited: Promise<ProcessExit>;
  #libc: _Libc;
  #fd: number;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #writes: _Write[] = [];
  /** No more output will be read (EOF/EIO, or closed). */
  #outputEnded = false;
  /** The reader cancelled: output is read and dropped, so the program does not block. */
  #discarding = false;
  #reaped = false;
  #closed = false;

  constructor(libc: _Libc, fd: number, pid: number) {
    this.#libc = libc;
    this.#fd = fd;
    this.pid = pid;
    this.output = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#controller = controller;
      },
      // Called whenever the stream wants more: the master joins the next poll round.
      pull: () => this.#libc.poller.changed(),
      cancel: () => {
        this.#discarding = true;
        this.#libc.poller.changed();
      },
    }, { highWaterMark: PTY_OUTPUT_HIGH_WATER_BYTES, size: (chunk) => chunk.byteLength });
    let resolveExit!: (exit: ProcessExit) => void;
    this.exited = new Promise((resolve) => (resolveExit = resolve));
    libc.poller.add(this);
    libc.reaper.add(pid, (exit) => {
      this.#reaped = true;
      if (this.#outputEnded) this.#closeFd();
      resolveExit(exit);
    });
  }

  get fd(): number {
    return this.#fd;
  }

  interest(): number {
    if (this.#fd < 0) return 0;
    let events = 0;
    if (!this.#outputEnded && (this.#discarding || (this.#controller.desiredSize ?? 0) > 0)) events |= POLLIN;
    if (this.#writes.length > 0) events |= POLLOUT;
    return events;
  }

  ready(revents: number): void {
    if (revents & POLLNVAL) {
      this.#endOutput();
      return;
    }
    if (revents & (POLLIN | POLLHUP | POLLERR) && !this.#outputEnded) this.#read();
    if (revents & (POLLOUT | POLLHUP | POLLERR) && this.#writes.length > 0) this.#flush();
    // The last holder of the terminal is gone; the leader probably with it.
    if (revents & POLLHUP) this.#libc.reaper.sweep();
  }

  write(data: Uint8Array): Promise<void> {
    if (this.#fd < 0 || this.#outputEnded) {
      return Promise.reject(new Error("Cannot write to the terminal: it is closed"));
    }
    if (data.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const queued = this.#writes.length > 0;
      // Copied: the caller may reuse its buffer before the program reads it all.
      this.#writes.push({ data: data.slice(), offset: 0, resolve, reject });
      if (!queued) this.#flush();
      if (this.#writes.length > 0) this.#libc.poller.changed();
    });
  }

  resize(cols: number, rows: number): void {
    _checkSize(cols, rows);
    if (this.#fd < 0) return;
    if (this.#libc.ioctl(this.#fd, this.#libc.os.TIOCSWINSZ, _winsize(cols, rows)) !== 0) {
      throw new Error(`Cannot resize the terminal: ${this.#libc.lastError()}`);
    }
  }

  signalForeground(signal: Deno.Signal): number | undefined {
    if (this.#reaped || this.#fd < 0) return undefined;
    const pgrp = new Int32Array(1);
    const arg = new Uint8Array(pgrp.buffer);
    if (this.#libc.ioctl(this.#fd, this.#libc.os.TIOCGPGRP, arg) !== 0) return undefined;
    // The shell's own group: killing it would end the terminal, not a job in it.
    if (pgrp[0] <= 1 || pgrp[0] === this.pid) return undefined;
    try {
      Deno.kill(-pgrp[0], signal);
      return pgrp[0];
    } catch {
      return undefined; // Gone meanwhile, or not ours to signal (sudo).
    }
  }

  kill(signal: Deno.Signal): void {
    if (this.#reaped) return;
    try {
      Deno.kill(-this.pid, signal);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.kill("SIGHUP");
    this.#endOutput();
    // Closing the master also hangs up the terminal: the kernel sends SIGHUP
    // to the session leader and the foreground job.
    this.#closeFd();
  }

  #read(): void {
    const buffer = _readBuffer ??= new Uint8Array(READ_CHUNK_BYTES);
    const sym = this.#libc.sym;
    for (let i = 0; i < READS_PER_ROUND; i++) {
      if (!this.#discarding && (this.#controller.desiredSize ?? 0) <= 0) return;
      const n = Number(sym.read(this.#fd, buffer, BigInt(buffer.length)));
      if (n > 0) {
        if (!this.#discarding) this.#controller.enqueue(buffer.slice(0, n));
        continue;
      }
      if (n < 0) {
        const errno = this.#libc.errno();
        if (errno === this.#libc.os.EAGAIN) return;
        if (errno === EINTR) continue;
      }
      // 0 (end of file on macOS) or EIO (Linux: no process holds the terminal any more).
      this.#endOutput();
      return;
    }
  }

  #flush(): void {
    const sym = this.#libc.sym;
    while (this.#writes.length > 0) {
      const w = this.#writes[0];
      const rest = w.data.subarray(w.offset);
      const n = Number(sym.write(this.#fd, rest, BigInt(rest.length)));
      if (n > 0) {
        w.offset += n;
        if (w.offset === w.data.length) {
          this.#writes.shift();
          w.resolve();
        }
        continue;
      }
      const errno = n < 0 ? this.#libc.errno() : this.#libc.os.EAGAIN;
      if (errno === this.#libc.os.EAGAIN) return; // Wait for POLLOUT.
      if (errno === EINTR) continue;
      this.#failWrites(new Error(`Cannot write to the terminal: ${this.#libc.strerror(errno)}`));
      return;
    }
  }

  #failWrites(error: Error): void {
    for (const w of this.#writes.splice(0)) w.reject(error);
  }

  #endOutput(): void {
    if (this.#outputEnded) return;
    this.#outputEnded = true;
    try {
      this.#controller.close();
    } catch {
      // Cancelled by the reader.
    }
    this.#failWrites(new Error("Cannot write to the terminal: it hung up"));
    this.#libc.poller.remove(this);
    if (this.#reaped || this.#closed) this.#closeFd();
  }

  #closeFd(): void {
    if (this.#fd < 0) return;
    this.#libc.poller.remove(this);
    this.#libc.sym.close(this.#fd);
    this.#fd = -1;
  }
}

function _checkSize(cols: number, rows: number): void {
  for (const [name, value] of [["cols", cols], ["rows", rows]] as const) {
    if (!Number.isInteger(value) || value < 1 || value > MAX_CELLS) {
      throw new RangeError(`Cannot size the terminal: ${name} must be an integer from 1 to ${MAX_CELLS}, got ${value}`);
    }
  }
}

/** `struct winsize`: rows, cols, and pixel sizes left 0. */
function _winsize(cols: number, rows: number): Uint8Array<ArrayBuffer> {
  const ws = new Uint16Array([rows, cols, 0, 0]);
  return new Uint8Array(ws.buffer);
}

/** A NUL-terminated C string. */
function _cstring(value: string, what: string): Uint8Array<ArrayBuffer> {
  if (value.includes("\0")) throw new TypeError(`Cannot start a terminal: ${what} contains a NUL character`);
  return new TextEncoder().encode(`${value}\0`);
}

/** A NULL-terminated array of pointers to `strings` (which must stay alive while it is used). */
function _pointers(strings: Uint8Array<ArrayBuffer>[]): BigUint64Array<ArrayBuffer> {
  const array = new BigUint64Array(strings.length + 1);
  for (const [i, s] of strings.entries()) array[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(s)));
  return array;
}

/**
 * Whether this process can start terminals, and if not, why.
 *
 * @returns `{ supported: true }`, or `{ supported: false, reason }` (another OS, no `--allow-ffi`, no libc).
 *
 * @example
 * ```ts
 * import { ptySupport } from "./pty.ts";
 * const support = ptySupport();
 * console.log(support.supported || support.reason);
 * ```
 */
export function ptySupport(): { supported: boolean; reason?: string } {
  const os = Deno.build.os;
  if (os !== "linux" && os !== "darwin") {
    return { supported: false, reason: `terminals are not supported on ${os} yet` };
  }
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    return { supported: false, reason: "terminals need --allow-ffi" };
  }
  try {
    _libc();
  } catch (error) {
    return { supported: false, reason: `cannot load libc: ${(error as Error).message}` };
  }
  return { supported: true };
}

/**
 * Starts processes in pseudo-terminals on Linux (and, untested, macOS).
 *
 * @example
 * ```ts ignore
 * import { PosixPty } from "./pty.ts";
 * const pty = new PosixPty().spawn({
 *   file: "/bin/sh",
 *   args: ["-c", "tty"],
 *   cwd: "/",
 *   env: { TERM: "xterm-256color", PATH: "/usr/bin:/bin" },
 *   cols: 80,
 *   rows: 24,
 * });
 * for await (const chunk of pty.output) console.log(new TextDecoder().decode(chunk)); // /dev/pts/3
 * console.log(await pty.exited); // { code: 0, signal: null }
 * pty.close();
 * ```
 */
export class PosixPty implements PtySpawner {
  /**
   * Resolves once no `poll()` is in flight, i.e. every terminal is closed or
   * waits for nothing. Tests await it so no FFI call outlives them.
   *
   * @returns A promise that resolves when the shared poller is idle.
   */
  static idle(): Promise<void> {
    return _loaded ? _loaded.poller.idle() : Promise.resolve();
  }

  /**
   * The environment this process was started with, read from libc's
   * `environ`: what every child of the bridge inherits (Deno.Command passes
   * it on too). Terminals start from it, so the user's shell sees the same
   * variables (SSH_AUTH_SOCK, proxies, ...) as in any terminal, while the
   * bridge's own code may read only the variables it names
   * (cli/permissions.ts).
   *
   * @returns Name to value; entries without `=` are skipped.
   */
  environment(): Record<string, string> {
    const libc = _libc();
    const env: Record<string, string> = {};
    const table = libc.environ();
    if (!table) return env;
    const view = new Deno.UnsafePointerView(table);
    for (let i = 0; i < 65_536; i++) {
      const entry = view.getPointer(i * 8);
      if (!entry) break;
      const text = Deno.UnsafePointerView.getCString(entry);
      const eq = text.indexOf("=");
      if (eq > 0) env[text.slice(0, eq)] = text.slice(eq + 1);
    }
    return env;
  }

  /**
   * Starts `options.file` as the session leader of a new pseudo-terminal.
   *
   * @param options Program, arguments, directory, environment and size.
   * @returns The running process.
   * @throws {Error} When terminals are not supported here, or the program cannot be started.
   */
  spawn(options: PtySpawnOptions): PtyProcess {
    const libc = _libc();
    const { sym, os } = libc;
    _checkSize(options.cols, options.rows);
    const argv = [options.file, ...options.args].map((a) => _cstring(a, "an argument"));
    const envp = Object.entries(options.env).map(([k, v]) => {
      if (k.includes("=")) throw new TypeError(`Cannot start a terminal: environment name "${k}" contains "="`);
      return _cstring(`${k}=${v}`, `environment variable ${k}`);
    });
    const cwd = _cstring(options.cwd, "the directory");
    const program = _findProgram(libc, options.file, options.env.PATH);

    const master = sym.posix_openpt(os.openFlags);
    if (master < 0) throw new Error(`Cannot open a pseudo-terminal: ${libc.lastError()}`);
    let spawned = false;
    try {
      if (os.cloexecAfterOpen) libc.fcntl(master, F_SETFD, FD_CLOEXEC);
      if (sym.grantpt(master) !== 0 || sym.unlockpt(master) !== 0) {
        throw new Error(`Cannot open a pseudo-terminal: ${libc.lastError()}`);
      }
      const name = new Uint8Array(256);
      const err = sym.ptsname_r(master, name, BigInt(name.length));
      if (err !== 0) throw new Error(`Cannot open a pseudo-terminal: ${libc.strerror(err > 0 ? err : libc.errno())}`);
      const slave = name.subarray(0, name.indexOf(0) + 1);
      // The size is set before the program starts, so its first look is right.
      if (libc.ioctl(master, os.TIOCSWINSZ, _winsize(options.cols, options.rows)) !== 0) {
        throw new Error(`Cannot size the pseudo-terminal: ${libc.lastError()}`);
      }
      const flags = libc.fcntl(master, F_GETFL, 0);
      if (flags < 0 || libc.fcntl(master, F_SETFL, flags | os.O_NONBLOCK) < 0) {
        throw new Error(`Cannot make the pseudo-terminal non-blocking: ${libc.lastError()}`);
      }

      const pid = _posixSpawn(libc, { program, slave, cwd, argv, envp, file: options.file });
      spawned = true;
      return new _PtyChild(libc, master, pid);
    } finally {
      if (!spawned) sym.close(master);
    }
  }
}

/**
 * The program's path, looked up in the child's PATH (not the bridge's), or
 * `null` to let posix_spawnp use the default search when the child has none.
 */
function _findProgram(libc: _Libc, file: string, path: string | undefined): Uint8Array<ArrayBuffer> | null {
  if (file.includes("/")) return _cstring(file, "the program");
  if (file === "") throw new TypeError("Cannot start a terminal: the program is empty");
  if (path === undefined) return null;
  for (const dir of path.split(":")) {
    const candidate = _cstring(`${dir || "."}/${file}`, "PATH");
    if (libc.sym.access(candidate, X_OK) === 0) return candidate;
  }
  throw new Error(`Cannot start "${file}" in a terminal: not found in PATH`);
}

interface _SpawnPlan {
  /** Resolved path, or null for posix_spawnp with `file`. */
  program: Uint8Array<ArrayBuffer> | null;
  file: string;
  slave: Uint8Array<ArrayBuffer>;
  cwd: Uint8Array<ArrayBuffer>;
  argv: Uint8Array<ArrayBuffer>[];
  envp: Uint8Array<ArrayBuffer>[];
}

/** posix_spawn into a new session whose controlling terminal is `plan.slave`; returns the pid. */
function _posixSpawn(libc: _Libc, plan: _SpawnPlan): number {
  const { sym, os } = libc;
  // Opaque libc structs, larger than glibc's (80 and 336 bytes) and macOS's (a pointer).
  const actions = new Uint8Array(256);
  const attr = new Uint8Array(512);
  const empty = new Uint8Array(128); // sigset_t: 128 bytes on glibc, 4 on macOS.
  const all = new Uint8Array(128);
  const check = (what: string, err: number) => {
    if (err !== 0) throw new Error(`Cannot start "${plan.file}" in a terminal: ${what}: ${libc.strerror(err)}`);
  };
  check("file actions", sym.posix_spawn_file_actions_init(actions));
  try {
    check("spawn attributes", sym.posix_spawnattr_init(attr));
    try {
      // After setsid, the first terminal the leader opens becomes its controlling terminal.
      check("open the terminal", sym.posix_spawn_file_actions_addopen(actions, 0, plan.slave, os.O_RDWR, 0));
      check("stdout", sym.posix_spawn_file_actions_adddup2(actions, 0, 1));
      check("stderr", sym.posix_spawn_file_actions_adddup2(actions, 0, 2));
      if (sym.posix_spawn_file_actions_addclosefrom_np) {
        check("close descriptors", sym.posix_spawn_file_actions_addclosefrom_np(actions, 3));
      }
      check("directory", sym.posix_spawn_file_actions_addchdir_np(actions, plan.cwd));
      // Deno ignores SIGPIPE and may block signals: the child starts with defaults.
      sym.sigemptyset(empty);
      sym.sigfillset(all);
      // Their disposition cannot change; macOS may refuse to try.
      for (const name of ["SIGKILL", "SIGSTOP"]) sym.sigdelset(all, os.signals.indexOf(name));
      check("signal mask", sym.posix_spawnattr_setsigmask(attr, empty));
      check("signal defaults", sym.posix_spawnattr_setsigdefault(attr, all));
      check("flags", sym.posix_spawnattr_setflags(attr, os.spawnFlags));

      const argv = _pointers(plan.argv);
      const envp = _pointers(plan.envp);
      const pid = new Int32Array(1);
      libc.reaper.expect();
      const err = plan.program
        ? sym.posix_spawn(pid, plan.program, actions, attr, argv, envp)
        : sym.posix_spawnp(pid, _cstring(plan.file, "the program"), actions, attr, argv, envp);
      if (err !== 0) {
        libc.reaper.unexpect();
        check("spawn", err);
      }
      return pid[0];
    } finally {
      sym.posix_spawnattr_destroy(attr);
    }
  } finally {
    sym.posix_spawn_file_actions_destroy(actions);
  }
}
