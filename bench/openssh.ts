/**
 * The OpenSSH baseline: a throwaway `sshd` (Debian's openssh-server) on a
 * loopback port, run by the bench as the current user with its own host key,
 * one client key authorized for it and nothing else (no passwords, no PAM),
 * plus a multiplexing master connection (ControlMaster) so that each measured
 * `ssh` reuses an authenticated connection, as a user's config with
 * ControlMaster/ControlPersist would.
 *
 * @module
 */
import { descendants } from "./proc_stats.ts";

/** Where Debian puts the server. */
export const SSHD = "/usr/sbin/sshd";

/** How one `ssh` run went. */
export interface SshRun {
  /** Wall time from spawn to exit, ms. */
  ms: number;
  /** Bytes the command wrote to stdout. */
  bytes: number;
  /** Exit code. */
  code: number;
}

/**
 * Why OpenSSH cannot be used here, or undefined when it can.
 *
 * @returns A reason such as "/usr/sbin/sshd is not installed".
 */
export function opensshMissing(): string | undefined {
  try {
    Deno.statSync(SSHD);
  } catch {
    return `${SSHD} is not installed (apt-get install openssh-server)`;
  }
  for (const program of ["ssh", "ssh-keygen"]) {
    const found = (Deno.env.get("PATH") ?? "").split(":").some((dir) => {
      try {
        return Deno.statSync(`${dir}/${program}`).isFile;
      } catch {
        return false;
      }
    });
    if (!found) return `${program} is not installed (apt-get install openssh-client)`;
  }
  return undefined;
}

/** A running throwaway sshd and a multiplexing master connection to it. */
export class OpenSsh {
  /** The port sshd listens on (127.0.0.1). */
  readonly port: number;
  /** The login shell sshd runs commands with (the user's, from the passwd database). */
  readonly shell: string;
  #dir: string;
  #user: string;
  #sshd: Deno.ChildProcess;
  #master?: Deno.ChildProcess;
  #stderr = "";

  private constructor(dir: string, port: number, user: string, shell: string, sshd: Deno.ChildProcess) {
    this.#dir = dir;
    this.port = port;
    this.#user = user;
    this.shell = shell;
    this.#sshd = sshd;
    (async () => {
      for await (const chunk of sshd.stderr.pipeThrough(new TextDecoderStream())) {
        this.#stderr = (this.#stderr + chunk).slice(-4000);
      }
    })().catch(() => {});
  }

  /**
   * Makes keys and a config in `dir`, starts sshd on a free loopback port and
   * opens the master connection.
   *
   * @param dir An empty temp directory (keys, config, control socket).
   * @returns The running server.
   * @throws {Error} When sshd or the master connection do not come up.
   */
  static async start(dir: string): Promise<OpenSsh> {
    const user = (await _output("id", ["-un"])).trim();
    const uid = Deno.uid() ?? 0;
    const passwd = await Deno.readTextFile("/etc/passwd").catch(() => "");
    const shell = passwd.split("\n").map((l) => l.split(":")).find((f) => f[0] === user)?.[6] || "/bin/sh";
    await _output("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/host_key`]);
    await _output("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/client_key`]);
    await Deno.copyFile(`${dir}/client_key.pub`, `${dir}/authorized_keys`);
    // sshd running as root wants its privilege separation directory.
    if (uid === 0) await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 });
    const port = _freePort();
    await Deno.writeTextFile(
      `${dir}/sshd_config`,
      [
        `Port ${port}`,
        "ListenAddress 127.0.0.1",
        `HostKey ${dir}/host_key`,
        `PidFile ${dir}/sshd.pid`,
        `AuthorizedKeysFile ${dir}/authorized_keys`,
        `AllowUsers ${user}`,
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PrintMotd no",
        "PrintLastLog no",
        "MaxSessions 64",
        "MaxStartups 64",
        "LogLevel ERROR",
        "SetEnv SHLVL=1",
        "",
      ].join("\n"),
    );
    const hostKey = (await Deno.readTextFile(`${dir}/host_key.pub`)).trim().split(" ").slice(0, 2).join(" ");
    await Deno.writeTextFile(`${dir}/known_hosts`, `[127.0.0.1]:${port} ${hostKey}\n`);
    const sshd = new Deno.Command(SSHD, {
      args: ["-D", "-e", "-f", `${dir}/sshd_config`],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const ssh = new OpenSsh(dir, port, user, shell, sshd);
    try {
      await ssh.#waitListening();
      await ssh.#openMaster();
    } catch (error) {
      await ssh.close();
      throw error;
    }
    return ssh;
  }

  /**
   * Runs `command` over ssh and reads its stdout to the end.
   *
   * @param command The remote command line.
   * @param options `mux`: reuse the master connection (default true).
   * @returns Time, bytes read and exit code.
   */
  async run(command: string, options: { mux?: boolean } = {}): Promise<SshRun> {
    const mux = options.mux ?? true;
    const t0 = performance.now();
    const child = new Deno.Command("ssh", {
      args: [...this.#args(mux ? ["-o", "ControlMaster=no", "-o", `ControlPath=${this.#dir}/ctl`] : []), command],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let bytes = 0;
    const errs: string[] = [];
    await Promise.all([
      (async () => {
        for await (const chunk of child.stdout) bytes += chunk.byteLength;
      })(),
      (async () => {
        for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) errs.push(chunk);
      })(),
    ]);
    const { code } = await child.status;
    const ms = performance.now() - t0;
    if (code !== 0) throw new Error(`ssh ${command} exited ${code}: ${errs.join("").trim()}`);
    return { ms, bytes, code };
  }

  /**
   * Starts `command` over the master connection with a remote terminal
   * (`ssh -tt`), its stdin and stdout piped to the caller: what a user's
   * interactive `ssh` is, with the bench typing and reading instead of a
   * local terminal. Kill it when done.
   *
   * @param command The remote command line (run by the login shell in the remote terminal).
   * @param options `obscure`: pass `ObscureKeystrokeTiming=yes|no` (only with an ssh that knows it, OpenSSH 9.5+).
   * @returns The running `ssh`.
   */
  spawnTty(command: string, options: { obscure?: boolean } = {}): Deno.ChildProcess {
    const obscure = options.obscure === undefined
      ? []
      : ["-o", `ObscureKeystrokeTiming=${options.obscure ? "yes" : "no"}`];
    return new Deno.Command("ssh", {
      args: [
        ...this.#args(["-tt", ...obscure, "-o", "ControlMaster=no", "-o", `ControlPath=${this.#dir}/ctl`]),
        command,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
  }

  /**
   * Whether this `ssh` has the ObscureKeystrokeTiming option (OpenSSH 9.5
   * and later; off in the bench's baselines unless asked for).
   *
   * @returns True when `ssh -G` accepts the option.
   */
  async knowsObscureKeystrokeTiming(): Promise<boolean> {
    const out = await new Deno.Command("ssh", {
      args: ["-G", "-o", "ObscureKeystrokeTiming=no", "-p", String(this.port), "127.0.0.1"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  }

  /**
   * The long-lived OpenSSH processes that carry multiplexed sessions: the
   * master `ssh` (the client end, which decrypts and writes to each session's
   * stdout) and sshd with the processes it forked for that connection.
   * Commands run over ssh and their shells are among them only while they run.
   *
   * @returns Process ids alive now.
   */
  processIds(): number[] {
    return [this.#sshd.pid, ...descendants(this.#sshd.pid), ...(this.#master ? [this.#master.pid] : [])];
  }

  /** Ends the master connection and sshd. */
  async close(): Promise<void> {
    for (const child of [this.#master, this.#sshd]) {
      if (!child) continue;
      try {
        child.kill("SIGTERM");
      } catch {
        // Already gone.
      }
      await child.status;
    }
  }

  #args(extra: string[]): string[] {
    return [
      "-F",
      "/dev/null",
      "-i",
      `${this.#dir}/client_key`,
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "BatchMode=yes",
      "-o",
      `UserKnownHostsFile=${this.#dir}/known_hosts`,
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      "LogLevel=ERROR",
      ...extra,
      "-p",
      String(this.port),
      `${this.#user}@127.0.0.1`,
    ];
  }

  async #waitListening(): Promise<void> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port: this.port })).close();
        return;
      } catch {
        if (Date.now() > deadline) throw new Error(`Cannot start sshd: not listening after 10 s\n${this.#stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  async #openMaster(): Promise<void> {
    this.#master = new Deno.Command("ssh", {
      args: this.#args(["-N", "-o", "ControlMaster=yes", "-o", `ControlPath=${this.#dir}/ctl`]),
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const deadline = Date.now() + 10_000;
    for (;;) {
      const check = await new Deno.Command("ssh", {
        args: this.#args(["-O", "check", "-o", `ControlPath=${this.#dir}/ctl`]),
        stdout: "null",
        stderr: "null",
      }).output();
      if (check.success) return;
      if (Date.now() > deadline) throw new Error(`Cannot open the ssh master connection\n${this.#stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

function _freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

async function _output(program: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(program, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`Cannot run ${program} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}
