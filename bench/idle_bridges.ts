/**
 * Many idle, authenticated bridges on one relay, for the scale rows of
 * `deno task bench` and for `deno task soak`.
 *
 * Pairing thousands of bridges through codes is impossible by design (5
 * codes a minute per session, 120 redemptions a minute per relay), so the
 * bench mints bridge tokens itself with the relay's own signing key from its
 * data directory ({@linkcode mintBridgeTokens}), each for its own browser
 * session, the way the relay would after a redemption. The shipped relay has
 * no way to do this; only a process that can read the key file can.
 *
 * The sockets live in helper processes (bench/idle_bridge_client.ts, at most
 * {@linkcode SOCKETS_PER_PROCESS} each, so no process nears the open-file
 * limit) that send `auth` and answer `ping` with `pong` like a bridge.
 *
 * @module
 */
import { systemClock } from "../shared/clock.ts";
import { MemoryStore } from "../relay/store.ts";
import { loadSigningKey, TokenService } from "../relay/token_service.ts";
import type { IdleClientReport } from "./idle_bridge_client.ts";

/** Sockets per helper process. */
export const SOCKETS_PER_PROCESS = 2_500;
/**
 * Sockets per loopback source address: half the relay's default cap on open
 * connections per client address (MAX_CONNECTIONS_PER_ADDRESS, 64).
 */
export const SOCKETS_PER_ADDRESS = 32;
const CLIENT = new URL("./idle_bridge_client.ts", import.meta.url).pathname;

/**
 * Signs `count` bridge tokens with the relay's key in `dataDir`, creating the
 * key (mode 0600) when the relay has not yet, so that a relay started
 * afterwards on that data dir accepts them. Each token has its own bridge id
 * and browser session, since a session holds one bridge at a time.
 *
 * @param dataDir The relay's data directory.
 * @param count How many tokens.
 * @returns The tokens.
 */
export async function mintBridgeTokens(dataDir: string, count: number): Promise<string[]> {
  await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const key = await loadSigningKey(`${dataDir}/jwt-ed25519.jwk`, { create: true });
  const tokens = new TokenService(key, { clock: systemClock, store: new MemoryStore() });
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    out.push((await tokens.issueBridgeToken(crypto.randomUUID(), crypto.randomUUID())).token);
  }
  return out;
}

/**
 * Signs `count` bridge tokens with an existing key file, the one several
 * relay instances share through `--jwt-key-file` (Ed25519 JWK or PKCS#8
 * PEM), so that every instance started with that file accepts them.
 *
 * @param keyFile The shared signing key.
 * @param count How many tokens.
 * @returns The tokens, each with its own bridge id and browser session.
 */
export async function mintBridgeTokensWithKey(keyFile: string, count: number): Promise<string[]> {
  const key = await loadSigningKey(keyFile, { create: false });
  const tokens = new TokenService(key, { clock: systemClock, store: new MemoryStore() });
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    out.push((await tokens.issueBridgeToken(crypto.randomUUID(), crypto.randomUUID())).token);
  }
  return out;
}

/** The sum of the helper processes' reports. */
export interface FleetReport extends Omit<IdleClientReport, "rss"> {
  /** Bridges asked for so far. */
  total: number;
  /** RSS of all helper processes together, bytes. */
  clientRss: number;
}

/** Options for {@linkcode IdleBridgeFleet}. */
export interface FleetOptions {
  /** The relay's WebSocket base, e.g. `ws://127.0.0.1:8787`. */
  relayWs: string;
  /** Where the helpers' token files go (removed by {@linkcode IdleBridgeFleet.close}). */
  tmpDir: string;
  /** Sockets opening at once per helper (default 64). */
  concurrency?: number;
  /** Per-socket authentication limit (default 60 s). */
  authTimeoutMs?: number;
  /**
   * The fleet-wide number of this fleet's first socket (default 0), which
   * picks its source addresses: fleets on relays that share rate windows
   * (several instances over one Redis) give each fleet its own range, or
   * their logins add up per address.
   */
  firstIndex?: number;
}

interface Helper {
  child: Deno.ChildProcess;
  writer: WritableStreamDefaultWriter<Uint8Array>;
  lines: AsyncIterator<string>;
}

/** A growing set of idle bridges held by helper processes. */
export class IdleBridgeFleet {
  #options: FleetOptions;
  #helpers: Helper[] = [];
  #total = 0;

  /** @param options The relay, a temp dir and connection limits. */
  constructor(options: FleetOptions) {
    this.#options = options;
  }

  /** Bridges asked for so far. */
  get total(): number {
    return this.#total;
  }

  /** Process ids of the helpers. */
  get pids(): number[] {
    return this.#helpers.map((h) => h.child.pid);
  }

  /**
   * Connects one more bridge per token and resolves once every one of them
   * authenticated or failed.
   *
   * @param tokens Bridge tokens, one per socket.
   * @param options `mute`: how many of them never answer pings (at most {@linkcode SOCKETS_PER_PROCESS}).
   * @returns The fleet's report afterwards.
   */
  async add(tokens: string[], options: { mute?: number } = {}): Promise<FleetReport> {
    if ((options.mute ?? 0) > Math.min(tokens.length, SOCKETS_PER_PROCESS)) {
      throw new RangeError(
        `Cannot mute ${options.mute} bridges: at most ${SOCKETS_PER_PROCESS} and no more than added`,
      );
    }
    const started: Promise<unknown>[] = [];
    for (let at = 0; at < tokens.length; at += SOCKETS_PER_PROCESS) {
      const file = `${this.#options.tmpDir}/tokens-${this.#helpers.length}.json`;
      await Deno.writeTextFile(
        file,
        JSON.stringify({
          url: this.#options.relayWs,
          tokens: tokens.slice(at, at + SOCKETS_PER_PROCESS),
          concurrency: this.#options.concurrency ?? 64,
          authTimeoutMs: this.#options.authTimeoutMs ?? 60_000,
          perAddress: SOCKETS_PER_ADDRESS,
          firstIndex: (this.#options.firstIndex ?? 0) + this.#total + at,
          mute: at === 0 ? options.mute ?? 0 : 0,
        }),
      );
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-net",
          `--allow-read=${file}`,
          "--allow-env=WS_NO_BUFFER_UTIL,WS_NO_UTF_8_VALIDATE",
          "--no-prompt",
          CLIENT,
          file,
        ],
        stdin: "piped",
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const helper: Helper = {
        child,
        writer: child.stdin.getWriter(),
        lines: _lines(child.stdout)[Symbol.asyncIterator](),
      };
      this.#helpers.push(helper);
      started.push(this.#read(helper));
    }
    this.#total += tokens.length;
    await Promise.all(started);
    return await this.report();
  }

  /** Asks every helper for its counts and sums them. */
  report(): Promise<FleetReport> {
    return this.#ask("report");
  }

  /** Starts a new window for per-bridge ping counts (`minPings`, `maxPings`). */
  mark(): Promise<FleetReport> {
    return this.#ask("mark");
  }

  /** Closes every socket (1000) and ends the helpers. */
  async close(): Promise<void> {
    await Promise.all(this.#helpers.map(async (h) => {
      await h.writer.write(new TextEncoder().encode("close\n")).catch(() => {});
      const timer = setTimeout(() => _kill(h.child), 10_000);
      await h.child.status;
      clearTimeout(timer);
      await h.writer.close().catch(() => {});
      // Finish reading stdout so its pipe is released.
      await h.lines.return?.();
    }));
    this.#helpers = [];
  }

  async #ask(command: string): Promise<FleetReport> {
    const reports = await Promise.all(this.#helpers.map(async (h) => {
      await h.writer.write(new TextEncoder().encode(`${command}\n`));
      return await this.#read(h);
    }));
    const sum: FleetReport = {
      total: this.#total,
      authed: 0,
      pending: 0,
      failed: 0,
      dropped: 0,
      closeCodes: {},
      closeReasons: {},
      muteDropped: 0,
      muteCloseCodes: {},
      pings: 0,
      minPings: reports.length ? Infinity : 0,
      maxPings: 0,
      clientRss: 0,
    };
    for (const r of reports) {
      sum.authed += r.authed;
      sum.pending += r.pending;
      sum.failed += r.failed;
      sum.dropped += r.dropped;
      sum.muteDropped += r.muteDropped;
      for (const [why, n] of Object.entries(r.closeReasons)) sum.closeReasons[why] = (sum.closeReasons[why] ?? 0) + n;
      for (const [code, n] of Object.entries(r.muteCloseCodes)) {
        sum.muteCloseCodes[code] = (sum.muteCloseCodes[code] ?? 0) + n;
      }
      sum.pings += r.pings;
      sum.clientRss += r.rss;
      if (r.authed > 0) sum.minPings = Math.min(sum.minPings, r.minPings);
      sum.maxPings = Math.max(sum.maxPings, r.maxPings);
      for (const [code, n] of Object.entries(r.closeCodes)) sum.closeCodes[code] = (sum.closeCodes[code] ?? 0) + n;
    }
    if (sum.minPings === Infinity) sum.minPings = 0;
    return sum;
  }

  async #read(helper: Helper): Promise<IdleClientReport> {
    const next = await helper.lines.next();
    if (next.done) throw new Error(`Cannot read idle-bridge helper ${helper.child.pid}: it exited`);
    return JSON.parse(next.value);
  }
}

async function* _lines(stream: ReadableStream<Uint8Array>): AsyncIterable<string> {
  let buffered = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      yield buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
    }
  }
}

function _kill(child: Deno.ChildProcess): void {
  try {
    child.kill("SIGKILL");
  } catch {
    // Already gone.
  }
}
