/**
 * A strict reader of the Prometheus text format for tests: every line must be
 * a HELP, a TYPE before its samples, or a sample `name{labels} value`.
 *
 * @module
 */
import assert from "node:assert/strict";

/** Parses Prometheus text into `name{labels}` -> value, checking every line's shape. */
export function parseExposition(text: string): Map<string, number> {
  assert.ok(text.endsWith("\n"));
  const values = new Map<string, number>();
  const typed = new Set<string>();
  for (const line of text.trimEnd().split("\n")) {
    if (line.startsWith("# HELP ")) continue;
    const type = /^# TYPE (\w+) (counter|gauge)$/.exec(line);
    if (type) {
      assert.ok(!typed.has(type[1]), `TYPE twice for ${type[1]}`);
      typed.add(type[1]);
      continue;
    }
    const m = /^(\w+)((?:\{(?:\w+="[^"\\]*"(?:,|(?=\})))+\})?) (-?\d+(?:\.\d+)?)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    assert.ok(typed.has(m[1]), `sample before its TYPE: ${line}`);
    assert.ok(!values.has(m[1] + m[2]), `duplicate series ${m[1]}${m[2]}`);
    values.set(m[1] + m[2], Number(m[3]));
  }
  return values;
}
