import assert from "node:assert/strict";
import { checkDuration, type CommandSpec, parseDuration, parseFlags, usage, UsageError } from "./args.ts";

const spec: CommandSpec = {
  name: "demo run",
  summary: "Demo.",
  flags: [
    {
      name: "port",
      kind: "string",
      value: "PORT",
      help: "Port",
      check: (v) => (/^\d+$/.test(v) ? undefined : "must be a number"),
    },
    { name: "verbose", kind: "boolean", help: "Talk" },
    { name: "origin", kind: "multi", value: "URL", help: "Origins" },
  ],
};

Deno.test("parseFlags: values, =values, booleans, repeats", () => {
  assert.deepEqual(parseFlags(spec, ["--port", "1", "--verbose", "--origin=a", "--origin", "b"]), {
    port: "1",
    verbose: true,
    origin: ["a", "b"],
  });
  assert.deepEqual(parseFlags(spec, []), { verbose: false, origin: [] });
  assert.equal(parseFlags(spec, ["--help"]).help, true);
});

Deno.test("parseFlags: usage errors", () => {
  for (
    const [args, msg] of [
      [["--nope"], /unknown flag --nope/],
      [["--port"], /--port needs a value/],
      [["--port", "--verbose"], /--port needs a value/],
      [["--port", "x"], /--port must be a number/],
      [["--port", "1", "--port", "2"], /given twice/],
      [["--verbose=yes"], /takes no value/],
      [["stray"], /unexpected argument/],
    ] as [string[], RegExp][]
  ) {
    assert.throws(() => parseFlags(spec, args), (e: unknown) => e instanceof UsageError && msg.test(e.message));
  }
});

Deno.test("usage lists every flag and --help", () => {
  const text = usage(spec);
  assert.match(text, /^Usage: coder1 demo run \[--port PORT\] \[--verbose\] \[--origin URL\]\.\.\./);
  for (const f of ["--port PORT", "--verbose", "--origin URL", "--help"]) assert.ok(text.includes(f), f);
});

Deno.test("parseDuration and checkDuration: a whole number and s, m, h or d", () => {
  assert.equal(parseDuration("90s"), 90_000);
  assert.equal(parseDuration("30m"), 1_800_000);
  assert.equal(parseDuration("24h"), 86_400_000);
  assert.equal(parseDuration("7d"), 604_800_000);
  for (const bad of ["", "0h", "1.5h", "10", "h", "-1d", "1w", "1 h"]) assert.equal(parseDuration(bad), undefined, bad);
  const check = checkDuration(2 ** 31 - 1);
  assert.equal(check("24d"), undefined);
  assert.match(check("25d")!, /at most 24d/);
  assert.match(check("soon")!, /e\.g\. 30m/);
});
