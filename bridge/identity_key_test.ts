import assert from "node:assert/strict";
import { loadIdentityKey } from "./identity_key.ts";

Deno.test("the bridge identity key is created once with mode 0600 and loaded the same afterwards", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const first = await loadIdentityKey(`${dir}/coder1`);
    assert.equal(first.publicKey.byteLength, 32);
    if (Deno.build.os !== "windows") assert.equal((await Deno.stat(first.file)).mode! & 0o777, 0o600);
    const again = await loadIdentityKey(`${dir}/coder1`);
    assert.deepEqual(again.publicKey, first.publicKey);
    assert.equal(again.fingerprint, first.fingerprint);
    // The loaded private key cannot be exported.
    await assert.rejects(crypto.subtle.exportKey("jwk", again.keyPair.privateKey));
    // A loosened file is tightened on load.
    if (Deno.build.os !== "windows") {
      await Deno.chmod(first.file, 0o644);
      await loadIdentityKey(`${dir}/coder1`);
      assert.equal((await Deno.stat(first.file)).mode! & 0o777, 0o600);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a corrupt identity key file is an error that says how to start over, not a silent new key", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/identity.jwk`, '{"kty":"RSA"}', { mode: 0o600 });
    await assert.rejects(loadIdentityKey(dir), /Cannot load the bridge identity key .*Move it away/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
