/**
 * What the bench reads about processes from Linux's /proc: resident set size
 * and CPU time spent (user + system), for the relay and the bench's helpers.
 *
 * @module
 */

/** Clock ticks per second in /proc/PID/stat (USER_HZ; 100 on every mainstream Linux). */
const TICKS_PER_SECOND = 100;

/**
 * The resident set size of a process.
 *
 * @param pid The process id.
 * @returns Bytes resident (VmRSS).
 * @throws {Error} When the process is gone or /proc is missing.
 */
export function rssBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`Cannot read RSS: no VmRSS for process ${pid}`);
  return Number(m[1]) * 1024;
}

/**
 * CPU time a process has used so far, user plus system.
 *
 * @param pid The process id.
 * @returns Milliseconds of CPU time (10 ms resolution).
 */
export function cpuMs(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // The command name may hold spaces and parentheses: fields start after the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of the full line, 12 and 13 after the name.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND;
}

/**
 * The private (anonymous) part of a process's resident set: heap and stacks,
 * without the pages of its executable and libraries, which are shared with
 * other processes and paged in once, on first use.
 *
 * @param pid The process id.
 * @returns Bytes resident and anonymous (RssAnon).
 * @throws {Error} When the process is gone or /proc is missing.
 */
export function rssAnonBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const m = /^RssAnon:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`Cannot read RSS: no RssAnon for process ${pid}`);
  return Number(m[1]) * 1024;
}

/**
 * The processes below `pid` (children, their children, ...) alive now.
 *
 * @param pid The ancestor.
 * @returns Their process ids (not `pid` itself).
 */
export function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      // The fields after the command name: state, then the parent's id.
      parent.set(Number(entry.name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // Gone meanwhile.
    }
  }
  const out: number[] = [];
  const below = new Set([pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [child, ppid] of parent) {
      if (below.has(ppid) && !below.has(child)) {
        below.add(child);
        out.push(child);
        grew = true;
      }
    }
  }
  return out;
}

/**
 * CPU time of a set of processes, each counted only if it can still be read.
 *
 * @param pids Process ids.
 * @returns Milliseconds of CPU time per pid that was readable.
 */
export function cpuMsOf(pids: readonly number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of pids) {
    try {
      out.set(pid, cpuMs(pid));
    } catch {
      // Exited.
    }
  }
  return out;
}

/** What the machine is, for the report. */
export interface MachineInfo {
  /** CPU model name. */
  cpu: string;
  /** Logical CPUs the bench may use. */
  cores: number;
  /** Total memory, MiB. */
  memoryMiB: number;
  /** Kernel release. */
  kernel: string;
  /** Distribution name. */
  os: string;
  /** Deno, V8 and TypeScript versions. */
  deno: string;
  v8: string;
  /** OpenSSH version, or why it is missing. */
  openssh: string;
  /** Load averages (1, 5, 15 min) when the bench started. */
  loadAverage: number[];
}

/**
 * Describes the machine from /proc and the OS.
 *
 * @returns CPU, cores, memory, kernel, distribution, runtime and OpenSSH versions.
 */
export async function machineInfo(): Promise<MachineInfo> {
  const read = (path: string) => {
    try {
      return Deno.readTextFileSync(path);
    } catch {
      return "";
    }
  };
  const cpu = /^model name\s*:\s*(.+)$/m.exec(read("/proc/cpuinfo"))?.[1]?.trim() ?? "unknown";
  const memKb = Number(/^MemTotal:\s+(\d+)/m.exec(read("/proc/meminfo"))?.[1] ?? 0);
  const os = /^PRETTY_NAME="?([^"\n]+)"?/m.exec(read("/etc/os-release"))?.[1] ?? Deno.build.os;
  let openssh = "not installed";
  try {
    const out = await new Deno.Command("ssh", { args: ["-V"], stdout: "piped", stderr: "piped" }).output();
    openssh = new TextDecoder().decode(out.stderr).trim().split(",")[0] || openssh;
  } catch {
    // Reported as not installed.
  }
  return {
    cpu,
    cores: navigator.hardwareConcurrency,
    memoryMiB: Math.round(memKb / 1024),
    kernel: Deno.osRelease(),
    os,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    openssh,
    loadAverage: Deno.loadavg().map((v) => Math.round(v * 100) / 100),
  };
}
