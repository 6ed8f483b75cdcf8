/**
 * The relay carries the web IDE as a generated module (relay/web_assets.ts);
 * it must match what tools/build_web.ts makes from web/ and shared/ now.
 */
import assert from "node:assert/strict";
import { ROOT } from "./helpers.ts";

Deno.test("relay/web_assets.ts is up to date with web/ and shared/ (deno task build:web)", async () => {
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-run", "--allow-read", "--allow-env", "--no-prompt", "tools/build_web.ts", "--check"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  assert.equal(result.code, 0, out);
});
