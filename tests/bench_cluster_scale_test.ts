/**
 * A smoke run of the bench's item 9 (issue 15's soak figure,
 * bench/measure_cluster_scale.ts) with tiny counts: one relay without Redis,
 * one with Redis alone in its cluster, and three instances sharing a
 * redis-server, 20 idle bridges each (60 on the single relays), a CPU window
 * of one lease round. Every bridge stays up, the figures are sane, and the
 * instances really renewed leases and presence in Redis during the window.
 * Skipped with a printed reason without redis-server (under
 * CODER1_REQUIRE_ALL=1 it runs and fails).
 */
import assert from "node:assert/strict";
import type { ClusterScaleFigures } from "../bench/measure_cluster_scale.ts";
import type { BenchResults } from "../bench/report.ts";
import { ROOT } from "./helpers.ts";
import { haveRedis } from "./redis_server.ts";

const HAVE_REDIS = haveRedis("bench cluster-scale smoke test");

Deno.test({
  name: "bench cluster-scale smoke: 3 instances × 20 idle bridges against one relay with 60, leases renewed in Redis",
  ignore: !HAVE_REDIS,
  async fn() {
    const out = await Deno.makeTempDir({ prefix: "coder1-bench-cluster-scale-" });
    try {
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-all",
          "--no-prompt",
          `${ROOT}/bench/bench.ts`,
          "--quick",
          "--only",
          "cluster-scale",
          "--out",
          out,
        ],
        cwd: ROOT,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
      const run = await child.output();
      clearTimeout(timer);
      const output = new TextDecoder().decode(run.stdout) + new TextDecoder().decode(run.stderr);
      assert.equal(run.code, 0, output);

      const results: BenchResults = JSON.parse(await Deno.readTextFile(`${out}/results.json`));
      assert.ok(results.durationS < 60, `took ${results.durationS} s`);
      const ids = results.rows.map((r) => r.id);
      assert.deepEqual(ids, [
        "cluster-scale-rss",
        "cluster-scale-rss-redis",
        "cluster-scale-cpu",
        "cluster-scale-cpu-redis",
        "cluster-scale-redis-server",
      ]);
      for (const row of results.rows) {
        assert.equal(row.item, 9, row.id);
        assert.equal(row.skipped, undefined, row.id);
        if (row.met !== null) assert.equal(row.met, true, `${row.id}: ${row.coder1}`);
      }

      const { figures } = results.sections.clusterScale as { figures: ClusterScaleFigures[] };
      assert.deepEqual(figures.map((f) => [f.variant, f.relays, f.redis]), [
        ["single", 1, false],
        ["solo", 1, true],
        ["cluster", 3, true],
      ]);
      for (const f of figures) {
        const what = `${f.variant}: ${JSON.stringify(f)}`;
        assert.deepEqual(f.levels.map((l) => [l.bridges, l.authed]), [[30, 30], [60, 60]], what);
        assert.equal(f.failed, 0, what);
        assert.equal(f.dropped, 0, what);
        assert.equal(f.window.bridges, 60, what);
        assert.ok(f.idleRss > 0 && f.levels[1].relayRss > f.idleRss, what);
        assert.ok(f.bytesPerBridge > 0 && f.bytesPerBridge < 2 ** 20, what);
        assert.ok(f.window.relayCpuMs >= 0 && f.window.ms >= 4_900 && f.window.idleRelayCpuMs >= 0, what);
        assert.ok(Number.isFinite(f.window.relayUsPerBridgePerIntervalAboveIdle), what);
        if (!f.redis) {
          assert.equal(f.redisServer, undefined, what);
          continue;
        }
        // Every home renewed its bridges' leases (a Lua script: EVALSHA) and their presence (SET) in the window.
        const r = f.redisServer!;
        assert.ok(r.idleRss > 0 && r.rss > 0, what);
        assert.ok((r.commands.evalsha ?? 0) >= 60 && (r.commands.set ?? 0) >= 60, what);
        assert.ok(r.commandsPerBridgePerRound >= 1.5, what);
      }
      assert.ok(figures[2].idleRss > figures[0].idleRss, "three relay processes take more memory than one");
      assert.match(await Deno.readTextFile(`${out}/BENCHMARKS.md`), /3 instances × 20 idle bridges/);
    } finally {
      await Deno.remove(out, { recursive: true }).catch(() => {});
    }
  },
});
