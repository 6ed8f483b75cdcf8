/**
 * Kills the bridge's commands when the bridge itself dies without cleaning
 * up (SIGKILL, a crash, the OOM killer). Commands run in their own process
 * groups, so nothing else would end them. The guard is one small `/bin/sh`
 * process per bridge, in its own session, that reads the bridge's live process
 * group ids from a pipe ("+PGID" when one starts, "-PGID" when it ends). The
 * kernel closes that pipe when the bridge exits in any way; the guard then
 * sends SIGTERM to every group still listed, and SIGKILL a second later. On a
 * clean stop the list is already empty. Unix only (on Windows the guard is
 * not started).
 *
 * @module
 */

/** The guard's script: keep a list of groups until end of input, then end them. */
const SCRIPT = `
trap '' INT TERM HUP QUIT
groups=' '
while IFS= read -r line; do
  case "$line" in
    +*) groups="$groups\${line#+} " ;;
    -*) groups=$(printf '%s' "$groups" | sed "s/ \${line#-} / /") ;;
  esac
done
left=''
for g in $groups; do kill -s TERM -- "-$g" 2>/dev/null && left="$left $g"; done
[ -n "$left" ] || exit 0
sleep 1
for g in $left; do kill -s KILL -- "-$g" 2>/dev/null; done
exit 0
`;

/** Keeps the guard process informed of the bridge's process groups. */
export class OrphanGuard {
  #writer?: WritableStreamDefaultWriter<Uint8Array>;
  #child?: Deno.ChildProcess;
  #chain: Promise<void> = Promise.resolve();
  #encoder = new TextEncoder();

  /**
   * Starts the guard process (nothing on Windows, or when `/bin/sh` cannot
   * be started: the bridge then works without it).
   *
   * @param onError Told why the guard could not start.
   */
  static start(onError: (message: string) => void = () => {}): OrphanGuard {
    const guard = new OrphanGuard();
    if (Deno.build.os === "windows") return guard;
    try {
      const child = new Deno.Command("/bin/sh", {
        args: ["-c", SCRIPT],
        stdin: "piped",
        stdout: "null",
        stderr: "null",
        detached: true,
      }).spawn();
      // The bridge must not wait for its guard to exit.
      child.unref();
      guard.#child = child;
      guard.#writer = child.stdin.getWriter();
    } catch (error) {
      onError(`cannot start the orphan guard: ${(error as Error).message}`);
    }
    return guard;
  }

  /** The guard's process id, if it runs. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** A command's process group started. */
  add(pgid: number): void {
    this.#write(`+${pgid}\n`);
  }

  /** A command's process group ended. */
  remove(pgid: number): void {
    this.#write(`-${pgid}\n`);
  }

  /** Ends the guard (a clean stop: every command has already ended). */
  async stop(): Promise<void> {
    const writer = this.#writer;
    this.#writer = undefined;
    if (!writer) return;
    await this.#chain;
    await writer.close().catch(() => {});
    // Wait for it (it has a second at most to end what is left).
    this.#child?.ref();
    await this.#child?.status.catch(() => {});
  }

  #write(line: string): void {
    const writer = this.#writer;
    if (!writer) return;
    const bytes = this.#encoder.encode(line);
    this.#chain = this.#chain.then(() => writer.write(bytes)).catch(() => {});
  }
}
