import assert from "node:assert/strict";
import { ManualClock } from "../shared/clock.ts";
import { fingerprint, toBase64Url } from "../shared/e2e_crypto.ts";
import { MAX_APPROVAL_ATTEMPTS, MAX_UNPINNED_HELLOS } from "../shared/protocol.ts";
import type { RelayCredential } from "./credentials.ts";
import { FirstPairing, type FirstPairingOptions, type Schedule } from "./first_pairing.ts";
import type { LinkExit } from "./relay_link.ts";

/** Timers that fire only when the test moves the clock (or fires them early). */
class FakeTimers {
  #timers: { at: number; run: () => void }[] = [];
  constructor(readonly clock: ManualClock) {}

  readonly schedule: Schedule = (run, ms) => {
    const timer = { at: this.clock.now() + ms, run };
    this.#timers.push(timer);
    return () => (this.#timers = this.#timers.filter((t) => t !== timer));
  };

  /** Timers not yet fired or cancelled. */
  get pending(): number {
    return this.#timers.length;
  }

  /** Moves the clock by `ms`, firing each timer when its time comes. */
  advance(ms: number): void {
    const end = this.clock.now() + ms;
    for (;;) {
      const due = this.#timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.#timers.splice(this.#timers.indexOf(due), 1);
      this.clock.advance(Math.max(0, due.at - this.clock.now()));
      due.run();
    }
    this.clock.advance(end - this.clock.now());
  }

  /** Fires every pending timer now, without moving the clock (a timer that runs early). */
  fireNow(): void {
    const timers = this.#timers;
    this.#timers = [];
    for (const t of timers) t.run();
  }
}

/** A pairing with recorded output, ends, stored credentials and a manual clock. */
function setup(overrides: Partial<FirstPairingOptions> = {}, lines: (string | undefined)[] = []) {
  const clock = new ManualClock(Date.UTC(2026, 0, 1, 12, 0, 0));
  const timers = new FakeTimers(clock);
  const said: string[] = [], warned: string[] = [], prompts: string[] = [], debug: string[] = [];
  const ends: LinkExit[] = [];
  const puts: [string, RelayCredential][] = [];
  const pins: [string, string][] = [];
  const pairing = new FirstPairing({
    store: {
      put: (relay, credential) => Promise.resolve(void puts.push([relay, credential])),
      pin: (relay, key) => Promise.resolve(void pins.push([relay, key])),
      rotate: () => Promise.resolve(false),
    },
    relay: "https://relay.example",
    end: (exit) => ends.push(exit),
    prompt: (text) => Promise.resolve(void prompts.push(text)),
    readLine: () => Promise.resolve(lines.shift()),
    say: (m) => said.push(m),
    warn: (m) => warned.push(m),
    debug: (m) => debug.push(m),
    clock,
    schedule: timers.schedule,
    ...overrides,
  });
  return { pairing, clock, timers, said, warned, prompts, debug, ends, puts, pins };
}

Deno.test("first pairing: the SAS and a visible deadline, a reminder every minute, then a timeout on the clock", () => {
  const { pairing, timers, said, debug, ends } = setup({ approvalTimeoutMs: 150_000 });
  assert.equal(pairing.onApprovalNeeded("123 456", "abcd ef01"), true);
  assert.equal(said[0], "Check that the IDE shows: 123 456");
  assert.match(
    said[1],
    /^If the IDE shows the same digits, type them here and approve in the IDE \(waiting 2:30, until \d\d:\d\d:\d\d\)\.$/,
  );
  assert.deepEqual(debug, ["IDE identity fingerprint: abcd ef01"]);

  timers.fireNow(); // A timer that runs before its time changes nothing.
  assert.equal(ends.length, 0);
  assert.equal(timers.pending, 1, "re-armed for what is left");

  timers.advance(60_000);
  assert.equal(said.at(-1), "Still waiting for approval in the IDE (1:30 left)");
  timers.advance(60_000);
  assert.equal(said.at(-1), "Still waiting for approval in the IDE (0:30 left)");
  timers.advance(29_999);
  assert.equal(ends.length, 0);
  timers.advance(1);
  assert.deepEqual(ends, [{
    code: 1,
    message:
      "No approval from the IDE in time, so nothing was run. Run `coder1 bridge start` again to retry, or `--pair` to start over.",
  }]);
  assert.equal(ends[0].dropToken, undefined, "the token is kept: the next start asks again");
  assert.equal(timers.pending, 0);
});

Deno.test("first pairing: a clock that jumps past the deadline ends the wait at the next timer", () => {
  const { pairing, clock, timers, said, ends } = setup();
  pairing.onApprovalNeeded("123 456", "f");
  assert.match(said[1], /waiting 5:00/);
  clock.advance(10 * 60_000); // Suspended laptop, say.
  timers.fireNow();
  assert.equal(ends.length, 1);
  assert.match(ends[0].message, /^No approval from the IDE in time/);
  assert.ok(!said.some((m) => m.startsWith("Still waiting")), "no reminder past the deadline");
});

Deno.test("first pairing: a second handshake shows its SAS but keeps the first deadline", () => {
  const { pairing, timers, said, ends } = setup({ approvalTimeoutMs: 90_000 });
  pairing.onApprovalNeeded("111 111", "f");
  timers.advance(45_000);
  pairing.onApprovalNeeded("222 222", "f");
  assert.deepEqual(said.slice(2), ["Check that the IDE shows: 222 222"]);
  assert.equal(timers.pending, 1);
  timers.advance(45_000);
  assert.match(ends[0]?.message ?? "", /^No approval from the IDE in time/);
});

Deno.test(`first pairing: more than ${MAX_APPROVAL_ATTEMPTS} handshakes asking for approval end the pairing`, () => {
  const { pairing, said, ends, timers } = setup();
  for (let i = 0; i < MAX_APPROVAL_ATTEMPTS; i++) assert.equal(pairing.onApprovalNeeded(`00${i} 000`, "f"), true);
  assert.equal(ends.length, 0);
  assert.equal(pairing.onApprovalNeeded("999 999", "f"), false);
  assert.equal(said.filter((m) => m.startsWith("Check that the IDE shows")).length, MAX_APPROVAL_ATTEMPTS);
  assert.deepEqual(ends, [{
    code: 1,
    message:
      `Pairing stopped: ${MAX_APPROVAL_ATTEMPTS} handshakes asked for approval in this run, more than pairing needs; someone (possibly the relay) may be trying to get in the middle. Nothing was run. Pair again with a new code.`,
  }]);
  assert.equal(timers.pending, 0, "the approval clock stopped");
});

Deno.test(`first pairing: more than ${MAX_UNPINNED_HELLOS} hellos before any approval end the pairing`, () => {
  const { pairing, ends } = setup();
  for (let i = 0; i < MAX_UNPINNED_HELLOS; i++) assert.equal(pairing.onUnpinnedHello(), true);
  assert.equal(ends.length, 0);
  assert.equal(pairing.onUnpinnedHello(), false);
  assert.equal(pairing.onUnpinnedHello(), false, "and stays refused");
  assert.equal(ends[0].code, 1);
  assert.equal(ends[0].dropToken, undefined);
  assert.equal(
    ends[0].message,
    `Pairing stopped: ${MAX_UNPINNED_HELLOS} handshakes were started before any IDE was approved, more than pairing needs; someone (possibly the relay) may be hunting for matching digits. Nothing was run. Pair again with a new code.`,
  );
});

Deno.test("first pairing: the SAS prompt, and what an answer or the end of input does", async () => {
  const { pairing, prompts, said, ends } = setup({}, ["123 456", "123456", "no", undefined]);
  assert.equal(await pairing.askSas(), "123 456");
  assert.deepEqual(prompts, ["Type the 6 digits the IDE shows to confirm (anything else refuses): "]);
  assert.deepEqual(said, ["Typed here; approve the bridge in the IDE too."]);
  assert.equal(await pairing.askSas(), "123456");
  assert.equal(said.length, 2);
  assert.equal(await pairing.askSas(), "no", "the gate decides; nothing is said for non-digits");
  assert.equal(said.length, 2);
  assert.equal(ends.length, 0);
  assert.equal(await pairing.askSas(), undefined);
  assert.deepEqual(ends, [{
    code: 1,
    message:
      "Cannot confirm the pairing: standard input ended before an answer. Run the bridge in a terminal and type the digits the IDE shows.",
  }]);
});

Deno.test("first pairing: mismatched digits end the pairing and drop the token", () => {
  const { pairing, ends, timers } = setup();
  pairing.onApprovalNeeded("123 456", "f");
  pairing.onMismatch();
  assert.deepEqual(ends, [{
    code: 1,
    dropToken: true,
    message:
      "Pairing refused: the digits typed are not the ones this bridge computed, so someone (possibly the relay) may be in the middle. Nothing was run and the token was dropped; pair again with a new code.",
  }]);
  assert.equal(timers.pending, 0, "no timeout after the pairing ended");
});

Deno.test("first pairing: a rejection in the IDE ends the pairing and drops the token", () => {
  const { pairing, ends, timers } = setup();
  pairing.onApprovalNeeded("123 456", "f");
  pairing.onRejected();
  assert.deepEqual(ends, [{
    code: 1,
    dropToken: true,
    message: "The IDE rejected this bridge: the pairing is over and its token was dropped. Nothing was run.",
  }]);
  assert.equal(timers.pending, 0);
});

Deno.test("first pairing: approval pins the IDE key in the store, stops the clock and says so", async () => {
  const { pairing, pins, said, ends, timers } = setup();
  const key = new Uint8Array(32).fill(9);
  const callbacks = pairing.callbacks();
  assert.equal(callbacks.pinned(), undefined);
  callbacks.onApprovalNeeded("123 456", "f");
  await callbacks.onApproved(key);
  assert.deepEqual(pins, [["https://relay.example", toBase64Url(key)]]);
  assert.equal(pairing.pinned, key);
  assert.equal(callbacks.pinned(), key);
  assert.equal(
    said.at(-1),
    `Approved in the IDE (IDE key ${await fingerprint(key)}). Waiting for commands; Ctrl-C stops.`,
  );
  assert.equal(timers.pending, 0);
  timers.advance(60 * 60_000);
  assert.equal(ends.length, 0, "no timeout after approval");
});

Deno.test("first pairing: an earlier pin is kept; another IDE is refused with a warning", () => {
  const key = new Uint8Array(32).fill(1);
  const { pairing, warned, ends } = setup({ pinned: key });
  assert.equal(pairing.callbacks().pinned(), key);
  pairing.onRefused("aaaa bbbb");
  assert.equal(
    warned[0],
    "coder1: refused an IDE whose identity key (aaaa bbbb) is not the one approved for this bridge; it can run nothing. If you changed browsers on purpose, pair again: coder1 bridge start --pair",
  );
  assert.equal(ends.length, 0);
});

Deno.test("first pairing: a redeemed code's token is saved with the clock's time; auth.ok without one saves nothing", async () => {
  const { pairing, clock, puts } = setup();
  await pairing.saveCredential({ bridgeId: "b1", expiresAt: 5 });
  assert.equal(puts.length, 0);
  await pairing.saveCredential({ bridgeId: "b1", token: "jwt", expiresAt: 5 });
  assert.deepEqual(puts, [["https://relay.example", {
    token: "jwt",
    bridgeId: "b1",
    expiresAt: 5,
    pairedAt: clock.now(),
  }]]);
});
