import assert from "node:assert/strict";
import { ManualClock } from "../shared/clock.ts";
import { CredentialStore } from "./credentials.ts";
import { FirstPairing } from "./first_pairing.ts";

Deno.test("credentials are stored per relay, mode 0600 in a 0700 dir, and deleted cleanly", async () => {
  const home = await Deno.makeTempDir();
  try {
    const store = new CredentialStore(`${home}/coder1`);
    assert.equal(await store.get("https://a.example"), undefined);
    const cred = { token: "t1", bridgeId: "b1", expiresAt: 1, pairedAt: 0 };
    await store.put("https://a.example", cred);
    await store.put("https://b.example", { ...cred, token: "t2" });
    assert.equal((await store.get("https://a.example"))?.token, "t1");
    assert.equal(await store.lastRelay(), "https://b.example");
    assert.equal((await Deno.stat(store.file)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(store.dir)).mode! & 0o777, 0o700);
    await Deno.chmod(store.file, 0o644);
    assert.equal(await store.delete("https://a.example"), true);
    assert.equal((await Deno.stat(store.file)).mode! & 0o777, 0o600, "a loosened file is tightened on write");
    assert.equal(await store.delete("https://a.example"), false);
    assert.equal((await store.get("https://b.example"))?.token, "t2");
    assert.deepEqual([...Deno.readDirSync(store.dir)].map((e) => e.name), ["credentials.json"], "no temp files left");
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("a corrupt credentials file gives a clear error, not a silent reset", async () => {
  const home = await Deno.makeTempDir();
  try {
    const store = new CredentialStore(home);
    await Deno.writeTextFile(store.file, "{not json");
    await assert.rejects(store.get("x"), /not a coder1 credentials file/);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("a rotated token replaces the stored one and keeps the pin; pending revocations and notes are kept", async () => {
  const home = await Deno.makeTempDir();
  try {
    const store = new CredentialStore(`${home}/coder1`);
    await store.put("https://a.example", { token: "t1", bridgeId: "b1", expiresAt: 1, pairedAt: 5 });
    await store.pin("https://a.example", "ide-key");
    assert.equal(await store.rotate("https://a.example", "b1", "t2", 9), true);
    assert.deepEqual(await store.get("https://a.example"), {
      token: "t2",
      bridgeId: "b1",
      expiresAt: 9,
      pairedAt: 5,
      pinnedIde: "ide-key",
    });
    assert.equal(await store.rotate("https://a.example", "other", "t3", 9), false, "another bridge id: not a rotation");
    assert.equal((await store.get("https://a.example"))?.token, "t2");

    await store.addPending("https://a.example", "old", 1);
    await store.addPending("https://b.example", "other-relay", 1);
    assert.deepEqual((await store.pending("https://a.example")).map((p) => p.token), ["old"]);
    await store.donePending("old");
    assert.deepEqual(await store.pending("https://a.example"), []);
    assert.equal((await store.pending("https://b.example")).length, 1);

    await store.setNote("https://a.example", { at: 1, reason: "possible theft" });
    assert.equal((await store.note("https://a.example"))?.reason, "possible theft");
    await store.put("https://a.example", { token: "t4", bridgeId: "b2", expiresAt: 1, pairedAt: 6 });
    assert.equal(await store.note("https://a.example"), undefined, "a new pairing clears the note");
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("the routing key from auth.ok is stored with the token and kept across rotations; old files work without it", async () => {
  const home = await Deno.makeTempDir();
  try {
    const store = new CredentialStore(`${home}/coder1`);
    // A file written before routing keys existed: read as is, no key.
    await Deno.mkdir(store.dir, { recursive: true, mode: 0o700 });
    const old = { token: "t0", bridgeId: "b0", expiresAt: 1, pairedAt: 0, pinnedIde: "ide" };
    await Deno.writeTextFile(
      store.file,
      JSON.stringify({ version: 1, lastRelay: "https://a.example", relays: { "https://a.example": old } }),
    );
    assert.deepEqual(await store.get("https://a.example"), old);
    assert.equal(await store.rotate("https://a.example", "b0", "t1", 2), true, "a relay that sends no key");
    assert.equal((await store.get("https://a.example"))?.routingKey, undefined);
    assert.equal(await store.rotate("https://a.example", "b0", "t2", 3, "644ab2d723dad42f"), true);
    assert.deepEqual(await store.get("https://a.example"), {
      ...old,
      token: "t2",
      expiresAt: 3,
      routingKey: "644ab2d723dad42f",
    });
    assert.equal(await store.rotate("https://a.example", "b0", "t3", 4), true, "auth.ok without a key keeps it");
    assert.equal((await store.get("https://a.example"))?.routingKey, "644ab2d723dad42f");

    // A first pairing (a redeemed code) stores the key with the new credential.
    const pairing = new FirstPairing({
      store,
      relay: "https://b.example",
      end: () => {},
      prompt: () => Promise.resolve(),
      readLine: () => Promise.resolve(undefined),
      say: () => {},
      warn: () => {},
      clock: new ManualClock(7),
    });
    await pairing.saveCredential({ bridgeId: "b1", token: "jwt", expiresAt: 9, routingKey: "00ff00ff00ff00ff" });
    assert.deepEqual(await store.get("https://b.example"), {
      token: "jwt",
      bridgeId: "b1",
      expiresAt: 9,
      pairedAt: 7,
      routingKey: "00ff00ff00ff00ff",
    });
    await pairing.saveCredential({ bridgeId: "b1", token: "jwt2", expiresAt: 10, routingKey: "1111222233334444" });
    assert.equal((await store.get("https://b.example"))?.routingKey, "1111222233334444");
    pairing.stop();
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});
