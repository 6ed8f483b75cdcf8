/**
 * The layering rules, checked on the relative import specifiers of every
 * module (static and dynamic imports, re-exports, and
 * `new URL("...", import.meta.url)`, which is how bench/ names the scripts it
 * spawns):
 *
 * - bench/ imports nothing under tests/ (it uses tools/harness.ts), and no
 *   other module outside tests/ does either, unit tests beside their code
 *   excepted;
 * - relay/ and bridge/ import only shared/ and their own directory (plus
 *   npm: and node: packages), apart from the command entry points listed in
 *   {@linkcode KNOWN_CLI_IMPORTS}. Their unit tests are not checked.
 */
import assert from "node:assert/strict";
import { ROOT } from "../tools/harness.ts";

/** Generated files, and directories that are not source. */
const SKIP = new Set([".git", "node_modules", "dist", "artifacts", "relay/web_assets.ts"]);

/**
 * Imports of cli/ from relay/ and bridge/ that predate this test: the
 * command entry points read flags, specs, paths and permissions from cli/.
 * Nothing may be added here; an entry that no longer holds fails the test so
 * that the list only shrinks.
 */
const KNOWN_CLI_IMPORTS = new Set([
  "bridge/account_commands.ts -> cli/args.ts",
  "bridge/account_commands.ts -> cli/paths.ts",
  "bridge/account_commands.ts -> cli/permissions.ts",
  "bridge/account_commands.ts -> cli/specs.ts",
  "bridge/relay_choice.ts -> cli/args.ts",
  "bridge/start_command.ts -> cli/args.ts",
  "bridge/start_command.ts -> cli/paths.ts",
  "bridge/start_command.ts -> cli/permissions.ts",
  "bridge/start_command.ts -> cli/specs.ts",
  "relay/serve_command.ts -> cli/args.ts",
  "relay/serve_command.ts -> cli/paths.ts",
  "relay/serve_command.ts -> cli/permissions.ts",
  "relay/serve_command.ts -> cli/specs.ts",
  "relay/telemetry_command.ts -> cli/args.ts",
  "relay/telemetry_command.ts -> cli/paths.ts",
  "relay/telemetry_command.ts -> cli/permissions.ts",
]);

const SPECIFIER = new RegExp(
  [
    String.raw`\bfrom\s*["']([^"']+)["']`,
    String.raw`\bimport\s*\(\s*["']([^"']+)["']`,
    String.raw`\bimport\s+["']([^"']+)["']`,
    String.raw`new URL\(\s*["']([^"']+)["']\s*,\s*import\.meta\.url`,
  ].join("|"),
  "g",
);

/** One import: both paths relative to the repository root. */
interface Edge {
  from: string;
  to: string;
}

/** Every relative import of every .ts/.tsx/.js/.mjs module under the root. */
function _edges(): Edge[] {
  const edges: Edge[] = [];
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(`${ROOT}/${dir}`)) {
      const path = dir ? `${dir}/${entry.name}` : entry.name;
      if (SKIP.has(path) || SKIP.has(entry.name)) continue;
      if (entry.isDirectory) walk(path);
      else if (entry.isFile && /\.(ts|tsx|js|mjs)$/.test(entry.name)) {
        const source = Deno.readTextFileSync(`${ROOT}/${path}`);
        for (const m of source.matchAll(SPECIFIER)) {
          const specifier = m.slice(1).find((s) => s !== undefined)!;
          if (!specifier.startsWith("./") && !specifier.startsWith("../")) continue;
          const to = new URL(specifier, `file://${ROOT}/${path}`).pathname.slice(ROOT.length + 1);
          edges.push({ from: path, to });
        }
      }
    }
  };
  walk("");
  return edges;
}

const EDGES = _edges();
const topDir = (path: string) => path.includes("/") ? path.slice(0, path.indexOf("/")) : "";
const isTest = (path: string) => /_test\.tsx?$/.test(path);
const show = (edges: Edge[]) => edges.map((e) => `${e.from} -> ${e.to}`);

Deno.test("layering: the scan sees imports, re-exports and spawned-script URLs", () => {
  const seen = new Set(show(EDGES));
  for (
    const edge of [
      "bench/measure_link.ts -> tools/harness.ts",
      "tests/helpers.ts -> tools/harness.ts",
      "bench/idle_bridges.ts -> bench/idle_bridge_client.ts",
      "relay/relay.ts -> shared/clock.ts",
    ]
  ) assert.ok(seen.has(edge), `the scan missed ${edge}`);
});

Deno.test("layering: bench/ imports nothing under tests/", () => {
  assert.deepEqual(show(EDGES.filter((e) => topDir(e.from) === "bench" && topDir(e.to) === "tests")), []);
});

Deno.test("layering: no module outside tests/ imports tests/, unit tests beside their code excepted", () => {
  const bad = EDGES.filter((e) => topDir(e.from) !== "tests" && !isTest(e.from) && topDir(e.to) === "tests");
  assert.deepEqual(show(bad), []);
});

Deno.test("layering: relay/ and bridge/ import only shared/ and their own directory", () => {
  const checked = EDGES.filter((e) => ["relay", "bridge"].includes(topDir(e.from)) && !isTest(e.from));
  const outside = checked.filter((e) => ![topDir(e.from), "shared"].includes(topDir(e.to)));
  assert.deepEqual(show(outside).filter((e) => !KNOWN_CLI_IMPORTS.has(e)), [], "new imports outside shared/");
  const current = new Set(show(outside));
  assert.deepEqual(
    [...KNOWN_CLI_IMPORTS].filter((e) => !current.has(e)),
    [],
    "no longer imported: remove from KNOWN_CLI_IMPORTS",
  );
});
