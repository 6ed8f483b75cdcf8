import assert from "node:assert/strict";
import { ManualClock } from "../shared/clock.ts";
import { Coder1Error } from "../shared/errors.ts";
import { CloseCode, REDEEM_GLOBAL_PER_WINDOW, REDEEM_PER_ADDRESS_PER_WINDOW } from "../shared/protocol.ts";
import { drawCode, Pairing, type RandomSource } from "./pairing.ts";
import { CredentialLedger } from "./credential_ledger.ts";
import { MemoryStore } from "./store.ts";

/** A random source that returns the given 32-bit values in turn. */
function fixed(values: number[]): RandomSource {
  let i = 0;
  return (bytes) => new DataView(bytes.buffer).setUint32(0, values[i++ % values.length]);
}

Deno.test("drawCode rejects the biased top of the 32-bit range", () => {
  // 2^32 - 1 lies above the largest multiple of 10^6 and must be redrawn.
  assert.equal(drawCode(fixed([2 ** 32 - 1, 42])), "000042");
  assert.equal(drawCode(fixed([4_294_000_000 - 1])), "999999");
  assert.equal(drawCode(fixed([4_294_000_000, 7])), "000007");
});

Deno.test("drawCode from the CSPRNG: 6 digits, roughly uniform first digit", () => {
  const counts = new Array(10).fill(0);
  const random: RandomSource = (b) => crypto.getRandomValues(b);
  for (let i = 0; i < 20_000; i++) {
    const code = drawCode(random);
    assert.match(code, /^\d{6}$/);
    counts[Number(code[0])]++;
  }
  for (const c of counts) assert.ok(c > 1700 && c < 2300, `first-digit counts ${counts}`);
});

Deno.test("codes are unique among live codes (a colliding draw is redrawn)", async () => {
  const store = new MemoryStore();
  const clock = new ManualClock(0);
  const pairing = new Pairing({ store, clock, random: fixed([5, 5, 6]) });
  const a = await pairing.issue("s1", "a1");
  const b = await pairing.issue("s2", "a2");
  assert.equal(a.code, "000005");
  assert.equal(b.code, "000006");
});

Deno.test("the global redemption budget holds across many addresses", async () => {
  const store = new MemoryStore();
  const clock = new ManualClock(0);
  const pairing = new Pairing({ store, clock, random: (b) => crypto.getRandomValues(b) });
  let refusedGlobally = 0;
  for (let i = 0; i < REDEEM_GLOBAL_PER_WINDOW + 50; i++) {
    const address = `127.0.${i >> 8}.${i & 255}`;
    try {
      await pairing.redeem("999999", address);
    } catch (e) {
      assert.ok(e instanceof Coder1Error);
      if (e.closeCode === CloseCode.RateLimited) refusedGlobally++;
    }
  }
  assert.equal(refusedGlobally, 50);
  clock.advance(60_001);
  await assert.rejects(pairing.redeem("999999", "10.0.0.1"), (e: Coder1Error) => e.closeCode === CloseCode.AuthFailed);
});

Deno.test("per-address redemption budget", async () => {
  const store = new MemoryStore();
  const pairing = new Pairing({ store, clock: new ManualClock(0), random: (b) => crypto.getRandomValues(b) });
  const codes: number[] = [];
  for (let i = 0; i <= REDEEM_PER_ADDRESS_PER_WINDOW; i++) {
    await pairing.redeem("123456", "198.51.100.7").catch((e: Coder1Error) => codes.push(e.closeCode));
  }
  assert.equal(codes.filter((c) => c === CloseCode.RateLimited).length, 1);
  // Another address is unaffected.
  await assert.rejects(
    pairing.redeem("123456", "198.51.100.8"),
    (e: Coder1Error) => e.closeCode === CloseCode.AuthFailed,
  );
});

Deno.test("revocations persist across store instances (credentials.sqlite)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/credentials.sqlite`;
    const ledgerA = new CredentialLedger(file);
    await new MemoryStore({ revocations: ledgerA }).revoke("jti-1", Date.now() + 60_000);
    ledgerA.close();
    const ledgerB = new CredentialLedger(file);
    const b = new MemoryStore({ revocations: ledgerB });
    assert.equal(await b.isRevoked("jti-1"), true);
    assert.equal(await b.isRevoked("jti-2"), false);
    await b.sweep(Date.now() + 120_000);
    ledgerB.close();
    const ledgerC = new CredentialLedger(file);
    assert.equal(await new MemoryStore({ revocations: ledgerC }).isRevoked("jti-1"), false, "expired are dropped");
    ledgerC.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("retiring a session's old code never deletes another session's code with the same digits", async () => {
  const store = new MemoryStore();
  const clock = new ManualClock(0);
  const pairing = new Pairing({ store, clock, random: fixed([5, 5, 6]) });
  const a = await pairing.issue("A", "a");
  assert.equal(await pairing.redeem(a.code, "x"), "A"); // A's code 000005 is used up
  const b = await pairing.issue("B", "b"); // draws 000005 again, now B's
  assert.equal(b.code, a.code);
  await pairing.issue("A", "a"); // A asks again: must not retire B's live code
  assert.equal(await pairing.redeem(b.code, "y"), "B");
});

Deno.test("an address past its own budget spends none of the global one", async () => {
  const store = new MemoryStore();
  const pairing = new Pairing({ store, clock: new ManualClock(0), random: (b) => crypto.getRandomValues(b) });
  for (let i = 0; i < REDEEM_GLOBAL_PER_WINDOW * 2; i++) await pairing.redeem("111111", "203.0.113.9").catch(() => {});
  // The flooder used only its own 10; everyone else still has the rest.
  let allowed = 0;
  for (let i = 0; i < REDEEM_GLOBAL_PER_WINDOW; i++) {
    await pairing.redeem("111111", `203.0.114.${i}`).catch((e: Coder1Error) => {
      if (e.closeCode === CloseCode.AuthFailed) allowed++;
    });
  }
  assert.equal(allowed, REDEEM_GLOBAL_PER_WINDOW - REDEEM_PER_ADDRESS_PER_WINDOW);
});

Deno.test("a flood that spends the global budget does not stop a bridge at its browser's address", async () => {
  const store = new MemoryStore();
  const clock = new ManualClock(0);
  const pairing = new Pairing({ store, clock, random: (b) => crypto.getRandomValues(b) });
  const home = await pairing.issue("sid-home", "192.0.2.10");
  const away = await pairing.issue("sid-away", "192.0.2.20");
  // Guesses from many addresses spend the whole relay-wide budget.
  for (let i = 0; i < REDEEM_GLOBAL_PER_WINDOW; i++) {
    await pairing.redeem("000000", `10.1.${i >> 8}.${i & 255}`).catch(() => {});
  }
  await assert.rejects(pairing.redeem("000000", "10.2.0.1"), (e: Coder1Error) => e.closeCode === CloseCode.RateLimited);
  // The bridge next to its browser pairs at once.
  assert.equal(await pairing.redeem(home.code, "192.0.2.10"), "sid-home");
  // A bridge elsewhere waits for the window: refused now, redeemed after it, the code still live.
  await assert.rejects(
    pairing.redeem(away.code, "198.51.100.1"),
    (e: Coder1Error) => e.closeCode === CloseCode.RateLimited && e.retryAfterSeconds! <= 60,
  );
  clock.advance(60_001);
  assert.equal(await pairing.redeem(away.code, "198.51.100.1"), "sid-away");
});

Deno.test("the same-address lookup matches only codes issued to that address", async () => {
  const store = new MemoryStore();
  const clock = new ManualClock(0);
  const pairing = new Pairing({ store, clock, random: (b) => crypto.getRandomValues(b) });
  const victim = await pairing.issue("sid-victim", "192.0.2.10");
  // The attacker asks for its own code, so it too has a same-address code.
  await pairing.issue("sid-attacker", "203.0.113.5");
  for (let i = 0; i < REDEEM_GLOBAL_PER_WINDOW; i++) {
    await pairing.redeem("000000", `10.1.${i >> 8}.${i & 255}`).catch(() => {});
  }
  // Even the right digits from the attacker's address go through the (spent) global budget.
  await assert.rejects(
    pairing.redeem(victim.code, "203.0.113.5"),
    (e: Coder1Error) => e.closeCode === CloseCode.RateLimited,
  );
  // And the victim's code was left alone: it still works from home.
  assert.equal(await pairing.redeem(victim.code, "192.0.2.10"), "sid-victim");
  // The per-address budget still applies to the same-address path.
  const again = await pairing.issue("sid-victim", "192.0.2.10");
  for (let i = 1; i < REDEEM_PER_ADDRESS_PER_WINDOW; i++) await pairing.redeem("000001", "192.0.2.10").catch(() => {});
  await assert.rejects(
    pairing.redeem(again.code, "192.0.2.10"),
    (e: Coder1Error) => e.closeCode === CloseCode.RateLimited,
  );
});
