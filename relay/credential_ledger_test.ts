import assert from "node:assert/strict";
import { CredentialLedger } from "./credential_ledger.ts";
import { MemoryStore } from "./store.ts";

Deno.test("one revoke costs one row at 300,000 revocations (it used to rewrite them all), and expired ones are dropped", async () => {
  const dir = await Deno.makeTempDir({ prefix: "coder1-ledger-" });
  const ledger = new CredentialLedger(`${dir}/credentials.sqlite`);
  try {
    const now = Date.now();
    const entries = function* () {
      for (let i = 0; i < 300_000; i++) {
        yield [`old-${i}`, i < 150_000 ? now - 1 : now + 86_400_000] as [string, number];
      }
    };
    ledger.revokeTokens(entries());
    const store = new MemoryStore({ revocations: ledger });
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t = performance.now();
      await store.revoke(`new-${i}`, now + 60_000);
      times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    const median = times[10];
    // Rewriting 300,000 entries as JSON took 400-600 ms per revoke; one row takes well under a millisecond.
    assert.ok(median < 20, `median revoke ${median.toFixed(2)} ms at 300,000 entries`);
    assert.equal(await store.isRevoked("new-3"), true);
    assert.equal(await store.isRevoked("old-200000"), true);
    // The sweep drops expired rows in bounded batches, each short.
    let removed = 0, longest = 0;
    for (;;) {
      const t = performance.now();
      const n = ledger.sweep(now);
      longest = Math.max(longest, performance.now() - t);
      if (n === 0) break;
      removed += n;
    }
    assert.equal(removed, 150_000);
    assert.equal(await store.isRevoked("old-1"), false);
    assert.equal(ledger.revocationCount, 150_000 + 20);
    assert.ok(longest < 250, `longest sweep batch ${longest.toFixed(1)} ms`);
  } finally {
    ledger.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an older relay's revoked.json is imported once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "coder1-ledger-" });
  const ledger = new CredentialLedger(`${dir}/credentials.sqlite`);
  try {
    await Deno.writeTextFile(`${dir}/revoked.json`, JSON.stringify({ a: Date.now() + 1000, b: "junk" }));
    assert.equal(ledger.importJson(`${dir}/revoked.json`), 1);
    assert.equal(ledger.isTokenRevoked("a"), true);
    assert.equal(ledger.importJson(`${dir}/revoked.json`), 0, "renamed after import");
    await Deno.stat(`${dir}/revoked.json.imported`);
  } finally {
    ledger.close();
    await Deno.remove(dir, { recursive: true });
  }
});
