/**
 * What a peer can make a real relay process hold, and for how long (issue 14,
 * "unauthenticated memory pinning"): sockets that send most of a huge message
 * and go silent, messages just under the limit left unfinished, request heads
 * dribbled byte by byte, close handshakes nobody answers and connections that
 * send nothing. The relay's RSS stays within a stated bound, every such
 * connection is torn down at the TCP level within its deadline plus a few
 * seconds, and a paired user keeps working throughout. docs/RELIABILITY.md
 * ("Connections the relay holds") states the bounds this test checks.
 *
 * @module
 */
import assert from "node:assert/strict";
import { CLOSE_TEARDOWN_MS, REQUEST_HEAD_TIMEOUT_MS } from "../relay/http_server.ts";
import {
  CloseCode,
  HEARTBEAT_INTERVAL_MS,
  HEARTBEAT_TIMEOUT_MS,
  MAX_FRAME_BYTES,
  WS_SUBPROTOCOL,
} from "../shared/protocol.ts";
import { makeTestDirs, pairedSetup, runCollect, startRelayProcess } from "./helpers.ts";

const SANITIZE = { sanitizeOps: false, sanitizeResources: false };
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const MiB = 1024 * 1024;
/** Slack on every teardown deadline: scheduling on a loaded machine. */
const SLACK_MS = 3_000;
/**
 * How far above its baseline the relay's RSS may go over two attack rounds
 * (stated in docs/RELIABILITY.md). Before the fix the first round alone took
 * it past 1 GiB. RSS does not shrink back once the connections are gone (the
 * allocator keeps the freed pages for reuse), so the test runs the attack
 * twice and bounds the peak over both.
 */
const RSS_BOUND_BYTES = 128 * MiB;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function rssBytes(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))![1]) * 1024;
}

/** The upgrade request of a client of this version, with extra header lines. */
function upgradeRequest(path: string, host: string, extra = ""): Uint8Array {
  return encoder.encode(
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${btoa("coder1-pin-key!!")}\r\nSec-WebSocket-Version: 13\r\n` +
      `Sec-WebSocket-Protocol: ${WS_SUBPROTOCOL}\r\n${extra}\r\n`,
  );
}

/** The header of a masked binary frame of `length` bytes (64-bit length, mask 0). */
function bigFrameHeader(length: number): Uint8Array {
  const h = new Uint8Array(14);
  h[0] = 0x82;
  h[1] = 0x80 | 127;
  new DataView(h.buffer).setBigUint64(2, BigInt(length));
  return h;
}

/** A raw TCP connection that reads everything and notes when the relay ended it. */
class Probe {
  bytes = new Uint8Array(0);
  /** `performance.now()` when the relay closed or reset the connection. */
  readonly ended: Promise<number>;
  #dead = false;

  private constructor(readonly conn: Deno.Conn) {
    this.ended = (async () => {
      const chunk = new Uint8Array(64 * 1024);
      try {
        for (;;) {
          const n = await conn.read(chunk);
          if (n === null) break;
          if (this.bytes.length < 64 * 1024) {
            const grown = new Uint8Array(this.bytes.length + n);
            grown.set(this.bytes);
            grown.set(chunk.subarray(0, n), this.bytes.length);
            this.bytes = grown;
          }
        }
      } catch {
        // Reset: ended too.
      }
      this.#dead = true;
      return performance.now();
    })();
  }

  static async open(port: number): Promise<Probe> {
    return new Probe(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  get dead(): boolean {
    return this.#dead;
  }

  /** The HTTP status the relay answered with, once its head arrived. */
  status(): number | undefined {
    const text = decoder.decode(this.bytes);
    return text.includes("\r\n\r\n") ? Number(text.split(" ")[1]) : undefined;
  }

  /** The code of the first close frame after a 101, if one arrived. */
  closeCode(): number | undefined {
    let at = decoder.decode(this.bytes).indexOf("\r\n\r\n");
    if (at < 0) return undefined;
    at += 4;
    while (at + 2 <= this.bytes.length) {
      const opcode = this.bytes[at] & 0x0f;
      let length = this.bytes[at + 1] & 0x7f, start = at + 2;
      if (length === 126) [length, start] = [(this.bytes[at + 2] << 8) | this.bytes[at + 3], at + 4];
      else if (length === 127) return undefined;
      if (start + length > this.bytes.length) return undefined;
      if (opcode === 0x8) return (this.bytes[start] << 8) | this.bytes[start + 1];
      at = start + length;
    }
    return undefined;
  }

  /** Writes `bytes`; false once the relay has ended the connection (the write fails) or `deadline` passed. */
  async write(bytes: Uint8Array, deadline = Infinity): Promise<boolean> {
    if (this.#dead || performance.now() > deadline) return false;
    const timer = Promise.withResolvers<false>();
    const t = setTimeout(() => timer.resolve(false), Math.max(0, Math.min(deadline - performance.now(), 60_000)));
    try {
      return await Promise.race([this.conn.write(bytes).then(() => true, () => false), timer.promise]);
    } finally {
      clearTimeout(t);
    }
  }

  /** Sends the first `send` bytes of a message announced as `length` bytes, then goes silent. */
  async halfMessage(length: number, send: number, deadline: number): Promise<void> {
    if (!await this.write(bigFrameHeader(length), deadline)) return;
    const chunk = new Uint8Array(MiB);
    for (let sent = 0; sent < send;) {
      const n = Math.min(chunk.length, send - sent);
      if (!await this.write(chunk.subarray(0, n), deadline)) return;
      sent += n;
    }
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Closed by the relay.
    }
  }
}

async function newSession(url: string): Promise<string> {
  const res = await fetch(`${url}/api/sessions`, { method: "POST" });
  await res.body?.cancel();
  return res.headers.getSetCookie()[0].split(";")[0];
}

Deno.test({
  name: "relay process: half-sent huge messages, unfinished messages, dribbled heads, unanswered closes and silent " +
    "connections are bounded in memory and torn down in time; a paired user works on",
  ...SANITIZE,
  async fn() {
    const dirs = await makeTestDirs();
    const relay = await startRelayProcess(dirs);
    const { ide, bridge } = await pairedSetup(dirs, relay.url);
    const pid = relay.child.pid;
    const host = `127.0.0.1:${relay.port}`;
    const probes: Probe[] = [];
    let sampling = true;
    try {
      // A user runs commands the whole time; every output must be exact.
      let stop = false, ran = 0, slowest = 0;
      const failures: string[] = [];
      const user = (async () => {
        for (let i = 0; !stop; i++) {
          const t = performance.now();
          const r = await runCollect(ide, `echo pin-${i}`).catch((e) => ({ stdout: String(e), code: -1 }));
          slowest = Math.max(slowest, performance.now() - t);
          if (r.stdout !== `pin-${i}\n` || r.code !== 0) failures.push(`${i}: ${r.stdout}`);
          else ran++;
          await sleep(200);
        }
      })();
      await sleep(1_000);
      const baseline = rssBytes(pid);
      let peak = baseline;
      const sampler = (async () => {
        while (sampling) {
          peak = Math.max(peak, rssBytes(pid));
          await sleep(100);
        }
      })();

      // One attack round; `slow` adds the groups that take the head deadline (dribbled heads, silent connections).
      const round = async (slow: boolean) => {
        const t0 = performance.now();
        const cookie = await newSession(relay.url);
        const ideHead = upgradeRequest("/ws/ide", host, `Cookie: ${cookie}\r\nOrigin: ${relay.url}\r\n`);
        const open = (n: number) => Promise.all(Array.from({ length: n }, () => Probe.open(relay.port)));
        const groups = {
          // 16 unauthenticated bridge upgrades, each followed by 62 MiB of a 63 MiB message, then silence:
          // 401 before any socket exists, then the connection ends.
          unauthenticated: await open(16),
          // 8 IDE sockets (a session is free to get) doing the same: 4413 at the frame header, then teardown.
          oversized: await open(8),
          // 40 IDE sockets sending all but 4 KiB of a message of MAX_FRAME_BYTES, then silence:
          // held until the heartbeat timeout, then closed (4000) and torn down.
          unfinished: await open(40),
          // 10 IDE sockets that send a bad frame (closed with 4400) and never answer the close.
          unanswered: await open(10),
          // 20 request heads dribbled a byte every 300 ms: destroyed at the head deadline.
          dribblers: slow ? await open(20) : [],
          // 10 connections that send nothing at all: destroyed at the head deadline.
          idle: slow ? await open(10) : [],
        };
        const done = new Map<Probe, number>();
        const attack = async (p: Probe, act: () => Promise<unknown>) => {
          await act();
          if (!done.has(p)) done.set(p, performance.now());
        };
        const until = t0 + 30_000;
        const attacks = [
          // These two are timed from their request head: the relay must end them whatever follows it.
          ...groups.unauthenticated.map((p) =>
            attack(p, async () => {
              await p.write(upgradeRequest("/ws/bridge", host));
              done.set(p, performance.now());
              await p.halfMessage(63 * MiB, 62 * MiB, until);
            })
          ),
          ...groups.oversized.map((p) =>
            attack(p, async () => {
              await p.write(ideHead);
              done.set(p, performance.now());
              await p.halfMessage(63 * MiB, 62 * MiB, until);
            })
          ),
          ...groups.unfinished.map((p) =>
            attack(p, async () => {
              await p.write(ideHead);
              await p.halfMessage(MAX_FRAME_BYTES, MAX_FRAME_BYTES - 4096, until);
            })
          ),
          ...groups.unanswered.map((p) =>
            attack(p, async () => {
              await p.write(ideHead);
              // A text frame "x", masked with 0: closed with 4400; the probe reads but never sends its close.
              await p.write(new Uint8Array([0x81, 0x81, 0, 0, 0, 0, 0x78]));
            })
          ),
          ...groups.dribblers.map((p) =>
            attack(p, async () => {
              done.set(p, performance.now()); // the head deadline runs from the connection
              for (
                const byte of encoder.encode(`GET /healthz HTTP/1.1\r\nHost: ${host}\r\nX-Slow: ${"s".repeat(200)}`)
              ) {
                if (!await p.write(new Uint8Array([byte]))) return;
                await sleep(300);
              }
            })
          ),
          ...groups.idle.map((p) => attack(p, () => Promise.resolve())),
        ];
        probes.push(...Object.values(groups).flat());
        return { groups, done, attacks: Promise.all(attacks), t0 };
      };

      /** Asserts every probe of `group` ended within `ms` (plus slack) of its attack; returns the slowest. */
      const endedWithin = async (group: Probe[], done: Map<Probe, number>, what: string, ms: number) => {
        const late = await Promise.all(
          group.map((p) =>
            Promise.race([
              p.ended.then((e) => e - (done.get(p) ?? e)),
              sleep(ms + SLACK_MS + 30_000).then(() => Infinity),
            ])
          ),
        );
        const worst = Math.max(...late);
        assert.ok(
          worst <= ms + SLACK_MS,
          `${what}: the last ended ${worst.toFixed(0)} ms after its attack (limit ${ms} + ${SLACK_MS})`,
        );
        console.log(`${what}: all ${group.length} torn down, the last ${(worst / 1000).toFixed(1)} s after its attack`);
      };

      const first = await round(true);
      const { groups, done } = first;
      const early: Promise<unknown> = Promise.all([
        endedWithin(groups.unauthenticated, done, "unauthenticated bridge upgrades with 62 MiB", CLOSE_TEARDOWN_MS),
        endedWithin(groups.oversized, done, "IDE sockets with 62 MiB of 63 MiB messages", CLOSE_TEARDOWN_MS),
        endedWithin(groups.unanswered, done, "unanswered closes", CLOSE_TEARDOWN_MS),
        endedWithin(groups.idle, done, "silent connections", REQUEST_HEAD_TIMEOUT_MS),
        endedWithin(groups.dribblers, done, "dribbled request heads", REQUEST_HEAD_TIMEOUT_MS),
      ]);
      early.catch(() => {}); // awaited below; a failure must not surface as an uncaught error first
      // The attack has been sent (or refused): what it made the relay hold shows now.
      await first.attacks;
      await sleep(500);
      console.log(`round 1: relay RSS ${(baseline / MiB).toFixed(0)} -> peak ${(peak / MiB).toFixed(0)} MiB`);
      assert.ok(peak - baseline <= RSS_BOUND_BYTES, `RSS grew by ${((peak - baseline) / MiB).toFixed(0)} MiB`);
      await early;
      console.log(`round 1 sent in ${((performance.now() - first.t0) / 1000).toFixed(1)} s`);
      assert.deepEqual(new Set(groups.unauthenticated.map((p) => p.status())), new Set([401]));
      assert.deepEqual(new Set(groups.oversized.map((p) => p.closeCode())), new Set([CloseCode.TooBig]));
      assert.deepEqual(new Set(groups.unanswered.map((p) => p.closeCode())), new Set([CloseCode.BadFrame]));
      assert.ok(groups.unfinished.every((p) => !p.dead), "unfinished messages are held until the heartbeat timeout");
      // The unfinished messages: a heartbeat round after the timeout, then the teardown.
      await endedWithin(
        groups.unfinished,
        done,
        "IDE sockets with unfinished messages",
        HEARTBEAT_TIMEOUT_MS + HEARTBEAT_INTERVAL_MS + CLOSE_TEARDOWN_MS,
      );
      assert.deepEqual(new Set(groups.unfinished.map((p) => p.closeCode())), new Set([CloseCode.HeartbeatTimeout]));
      const peak1 = peak, after1 = rssBytes(pid);

      // The relay let go of it all: the same attack again stays within the same bound.
      const second = await round(false);
      await second.attacks;
      await Promise.all([
        endedWithin(second.groups.unauthenticated, second.done, "round 2: unauthenticated", CLOSE_TEARDOWN_MS),
        endedWithin(second.groups.oversized, second.done, "round 2: oversized", CLOSE_TEARDOWN_MS),
      ]);
      await sleep(1_000);
      const peak2 = peak;
      for (const p of second.groups.unfinished) p.close();
      stop = true;
      await user;
      sampling = false;
      await sampler;
      console.log(
        `relay RSS: baseline ${(baseline / MiB).toFixed(0)} MiB, peak ${(peak1 / MiB).toFixed(0)} MiB ` +
          `(+${((peak1 - baseline) / MiB).toFixed(0)}), after round 1 ${(after1 / MiB).toFixed(0)} MiB, peak over ` +
          `both rounds ${(peak2 / MiB).toFixed(0)} MiB (+${((peak2 - baseline) / MiB).toFixed(0)}, bound ` +
          `+${RSS_BOUND_BYTES / MiB}); ` +
          `user: ${ran} commands, slowest ${slowest.toFixed(0)} ms`,
      );
      assert.ok(peak2 - baseline <= RSS_BOUND_BYTES, `RSS grew by ${((peak2 - baseline) / MiB).toFixed(0)} MiB`);
      assert.deepEqual(failures, []);
      assert.ok(ran >= 20, `the user ran only ${ran} commands`);
    } finally {
      sampling = false;
      for (const p of probes) p.close();
      ide.close();
      await bridge.stop();
      await relay.stop();
      await dirs.cleanup();
    }
  },
});
