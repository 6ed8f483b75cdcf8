/**
 * The container's health check: exit 0 when the relay on this host answers
 * `GET /readyz` with 200, else 1. Run by the Dockerfile's HEALTHCHECK with
 * `--allow-net=127.0.0.1` only.
 *
 * Usage: `deno run --allow-net=127.0.0.1 healthcheck.ts [PORT]` (default 8787).
 *
 * @module
 */
const port = Number(Deno.args[0] ?? "8787");
try {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2_000) });
  await res.body?.cancel();
  Deno.exit(res.status === 200 ? 0 : 1);
} catch {
  Deno.exit(1);
}
