import assert from "node:assert/strict";
import { CloseCode } from "../shared/protocol.ts";
import { closeReason, RelayMetrics } from "./metrics.ts";
import { parseExposition } from "../tests/prometheus_text.ts";

Deno.test("metrics render valid Prometheus text with every series declared at zero", () => {
  const metrics = new RelayMetrics({ startSeconds: 1_700_000_000 });
  const values = parseExposition(metrics.render());
  assert.equal(values.get(`coder1_pairing_codes_total{event="expired"}`), 0);
  assert.equal(values.get(`coder1_frames_relayed_total{direction="bridge_to_ide"}`), 0);
  assert.equal(values.get(`coder1_socket_closes_total{role="bridge",reason="heartbeat_timeout"}`), 0);
  assert.equal(values.get("coder1_commands_started_total"), 0);
  assert.equal(values.get("coder1_bridges_connected"), 0);
  assert.equal(values.get("coder1_start_time_seconds"), 1_700_000_000);
  assert.ok([...values.keys()].some((k) => k.startsWith("coder1_build_info{version=")));
});

Deno.test("metrics count what they are told, and gauges come from the source", () => {
  const metrics = new RelayMetrics();
  metrics.setGaugeSource(() => ({ bridges: 2, ides: 5 }));
  metrics.pairing("issued");
  metrics.pairing("issued");
  metrics.pairing("rejected");
  metrics.rateLimited("code_redeem");
  metrics.relayed("ide_to_bridge", 100);
  metrics.relayed("ide_to_bridge", 50);
  metrics.commandStarted();
  metrics.commandEnded("exit");
  metrics.commandEnded("error");
  metrics.heartbeatTimeout();
  metrics.socketClosed("ide", CloseCode.HeartbeatTimeout);
  metrics.socketClosed("bridge", 4999);
  metrics.crashReport("stored");
  const values = parseExposition(metrics.render());
  const expected: Record<string, number> = {
    "coder1_bridges_connected": 2,
    "coder1_ide_sockets_connected": 5,
    'coder1_pairing_codes_total{event="issued"}': 2,
    'coder1_pairing_codes_total{event="rejected"}': 1,
    'coder1_rate_limited_total{limit="code_redeem"}': 1,
    'coder1_frames_relayed_total{direction="ide_to_bridge"}': 2,
    'coder1_bytes_relayed_total{direction="ide_to_bridge"}': 150,
    "coder1_commands_started_total": 1,
    'coder1_commands_ended_total{how="exit"}': 1,
    'coder1_commands_ended_total{how="error"}': 1,
    "coder1_heartbeat_timeouts_total": 1,
    'coder1_socket_closes_total{role="ide",reason="heartbeat_timeout"}': 1,
    'coder1_socket_closes_total{role="bridge",reason="other"}': 1,
    'coder1_crash_reports_total{outcome="stored"}': 1,
  };
  for (const [k, v] of Object.entries(expected)) assert.equal(values.get(k), v, k);
  assert.equal(metrics.value("coder1_pairing_codes_total", { event: "issued" }), 2);
});

Deno.test("labels come from fixed lists only: no per-user label names, bounded series", () => {
  const metrics = new RelayMetrics();
  // A peer choosing arbitrary close codes adds no series.
  for (let code = 1000; code < 5000; code++) metrics.socketClosed("bridge", code);
  // Nor do refused upgrades with odd statuses.
  for (let status = 100; status < 600; status++) metrics.upgradeRefused("bridge", status);
  const values = parseExposition(metrics.render());
  assert.ok(values.size < 100, `${values.size} series`);
  const labelNames = new Set<string>();
  for (const key of values.keys()) for (const m of key.matchAll(/(\w+)="/g)) labelNames.add(m[1]);
  assert.deepEqual([...labelNames].sort(), [
    "direction",
    "event",
    "how",
    "limit",
    "outcome",
    "reason",
    "role",
    "status",
    "version",
    "why",
  ]);
  assert.equal(closeReason(4401), "auth_failed");
  assert.equal(closeReason(3000), "other");
});
