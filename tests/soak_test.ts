/**
 * The 30-second soak (issue 5; `deno task soak` is the 5-minute, 5,000-bridge
 * run): 500 idle bridges authenticated with tokens from the relay's own key
 * stay connected to one relay process while it pings them every 2 s, 5 mute
 * bridges that never answer are dropped with 4000, and the relay's RSS stays
 * within the documented bound (bench/soak.ts, docs/BENCHMARKS.md).
 */
import assert from "node:assert/strict";
import { rssGrowthBound, runSoak } from "../bench/soak.ts";

Deno.test("soak, 30 s: 500 idle bridges with heartbeats, none dropped, mute ones dropped, RSS bounded", async () => {
  const result = await runSoak({
    bridges: 500,
    mute: 5,
    durationMs: 30_000,
    heartbeat: { intervalMs: 2_000, timeoutMs: 10_000 },
    sampleMs: 2_000,
    log: () => {},
  });
  const summary = `final ${JSON.stringify(result.final)}; RSS warm ${result.rssWarm}, max ${result.rssMax}`;
  assert.deepEqual(result.failures, [], summary);
  assert.equal(result.final.authed, 500, summary);
  assert.equal(result.final.dropped, 0, summary);
  assert.equal(result.final.muteDropped, 5, summary);
  assert.deepEqual(result.final.muteCloseCodes, { "4000": 5 }, summary);
  // 30 s at one ping every 2 s: about 15 rounds reached every bridge.
  assert.ok(result.final.minPings >= 13, summary);
  assert.ok(result.rssGrowth <= rssGrowthBound(result.rssWarm), summary);
  assert.ok(result.samples.length >= 10, "sampled along the way");
});

Deno.test("soak RSS bound: 10% of the warm RSS, at least 16 MiB", () => {
  assert.equal(rssGrowthBound(50 * 2 ** 20), 16 * 2 ** 20);
  assert.equal(rssGrowthBound(400 * 2 ** 20), 40 * 2 ** 20);
});
