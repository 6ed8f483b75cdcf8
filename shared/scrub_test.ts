import assert from "node:assert/strict";
import { MAX_CRASH_MESSAGE_CHARS, MAX_CRASH_STACK_CHARS, sanitizeCrash, scrubText } from "./scrub.ts";

/** Asserts that none of `secrets` survives in `text`. */
function assertGone(text: string, secrets: string[]): void {
  for (const s of secrets) assert.ok(!text.includes(s), `"${s}" survived in: ${text}`);
}

Deno.test("scrubText: home directories and Unix paths", () => {
  const cases = [
    "/home/ada/projects/zeppelin/secret.txt",
    "/Users/ada/Library/zeppelin.plist",
    "/root/.ssh/id_ed25519",
    "/var/lib/zeppelin/db.sqlite",
    "//double/slash/zeppelin",
  ];
  for (const path of cases) {
    const out = scrubText(`ENOENT: no such file, open ${path} now`);
    assertGone(out, ["ada", "zeppelin", "ssh", "id_ed25519", "double"]);
    assert.match(out, /^ENOENT: no such file, open <path> now$/, out);
  }
  assert.equal(scrubText("see ~/zeppelin/notes and ~ada/x"), "see <path> and <path>");
  assert.equal(
    scrubText("relative src/zeppelin/main.ts and ./zeppelin and ../up"),
    "relative <path> and <path> and <path>",
  );
  assert.equal(scrubText("readfile:/home/ada/zeppelin"), "readfile:<path>");
});

Deno.test("scrubText: Windows drive and UNC paths", () => {
  for (
    const path of [
      String.raw`C:\Users\ada\zeppelin\plan.docx`,
      "D:/work/zeppelin/x.ts",
      String.raw`\\fileserver\share\zeppelin`,
      String.raw`c:\zeppelin`,
    ]
  ) {
    const out = scrubText(`failed at ${path}`);
    assertGone(out, ["ada", "zeppelin", "fileserver", "plan"]);
    assert.equal(out, "failed at <path>");
  }
});

Deno.test("scrubText: quoted strings of every kind, escapes and unterminated quotes", () => {
  assert.equal(scrubText(`Unexpected token in "rm -rf zeppelin"`), "Unexpected token in <str>");
  assert.equal(scrubText("bad 'zeppelin secret' here"), "bad <str> here");
  assert.equal(scrubText("template `echo ${zeppelin}` failed"), "template <str> failed");
  assert.equal(scrubText(String.raw`escaped "a \" zeppelin \" b" end`), "escaped <str> end");
  // An apostrophe inside a word does not open a quote.
  assert.equal(scrubText("can't find it, don't retry"), "can't find it, don't retry");
  // Whatever follows an unterminated quote on its line is hidden; the next line stays.
  assert.equal(scrubText('JSON at position 3: "zeppelin and more\nnext line'), "JSON at position 3: <str>\nnext line");
  assertGone(scrubText(`'zeppelin'"zeppelin"\`zeppelin\``), ["zeppelin"]);
});

Deno.test("scrubText: tokens, JWTs, ids, addresses, codes and assignments", () => {
  const jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLWJ5dGVz";
  const cases: [string, string][] = [
    [`token ${jwt} refused`, "token <token> refused"],
    ["Bearer abcDEF123ghiJKL456mnoPQR789", "Bearer <token>"],
    ["key 0123456789abcdef0123 ok", "key <hex> ok"],
    ["bridge 1f0c9a2e-1234-4abc-8def-0123456789ab gone", "bridge <id> gone"],
    ["from 203.0.113.7:443", "from <addr>"],
    ["mail ada@example.org now", "mail <email> now"],
    ["https://relay.example/api?token=zeppelin", "<url>"],
    ["pairing code 482913 refused", "pairing code <num> refused"],
    ["code482913", "code<num>"],
    ["SAS 123 456 differs", "SAS <num> differs"],
    ["SECRET_ZEPPELIN=hunter2 set", "<assignment> set"],
  ];
  for (const [input, expected] of cases) assert.equal(scrubText(input), expected, input);
});

Deno.test("scrubText: stack frames keep function names and positions, not paths", () => {
  const stack = [
    "TypeError: Cannot read properties of undefined (reading 'zeppelin')",
    "    at CommandManager.handle (file:///home/ada/coder1/bridge/command_manager.ts:120:15)",
    "    at eventLoopTick (ext:core/01_core.js:175:7)",
    String.raw`    at run (C:\Users\ada\coder1\main.ts:3:9)`,
  ].join("\n");
  const out = scrubText(stack);
  assertGone(out, ["ada", "zeppelin", "home"]);
  assert.equal(
    out,
    [
      "TypeError: Cannot read properties of undefined (reading <str>)",
      "    at CommandManager.handle (<path>:120:15)",
      "    at eventLoopTick (ext:<path>:175:7)",
      "    at run (<path>:3:9)",
    ].join("\n"),
  );
});

Deno.test("scrubText: caller secrets, control characters, length and idempotence", () => {
  const out = scrubText("user ada on host zeppelin-box said hi\x1b[31m\x00", { secrets: ["ada", "zeppelin-box", "x"] });
  assert.equal(out, "user <redacted> on host <redacted> said hi[31m");
  const long = "word ".repeat(10_000);
  assert.ok(scrubText(long).length <= 16 * 1024);
  const samples = [
    `open "/home/ada/x" 482913 eyJa.eyJb.c ~/y C:\\z a/b ${"Z9".repeat(20)}`,
    "at f (file:///a/b.ts:1:2)",
  ];
  for (const s of samples) assert.equal(scrubText(scrubText(s)), scrubText(s));
});

Deno.test("sanitizeCrash: checks types, scrubs every free-text field, caps lengths", () => {
  const clean = sanitizeCrash({
    errorClass: "TypeError",
    message: `cannot open "/home/ada/zeppelin" with token eyJa.eyJb.sig and code 482913`,
    stack: "TypeError: x\n    at f (file:///home/ada/zeppelin.ts:1:2)",
    version: "0.3.0",
    os: "linux",
    extra: "ignored zeppelin",
  });
  assert.ok(clean);
  assert.deepEqual(clean, {
    errorClass: "TypeError",
    message: "cannot open <str> with token <token> and code <num>",
    stack: "TypeError: x\n    at f (<path>:1:2)",
    version: "0.3.0",
    os: "linux",
  });
  assert.equal(sanitizeCrash({ errorClass: 1, message: "m", version: "v", os: "o" }), undefined);
  assert.equal(sanitizeCrash({ errorClass: "E", message: "m", version: 3, os: "o" }), undefined);
  assert.equal(sanitizeCrash({ errorClass: "E", message: "m", version: "v", os: "o", stack: 5 }), undefined);
  const odd = sanitizeCrash({ errorClass: "/home/ada", message: "m", version: "1 /x", os: "<script>" })!;
  assert.deepEqual([odd.errorClass, odd.version, odd.os], ["Error", "unknown", "unknown"]);
  const big = sanitizeCrash({
    errorClass: "E",
    message: "word ".repeat(5000),
    stack: "line\n".repeat(5000),
    version: "v",
    os: "o",
  })!;
  assert.ok(big.message.length <= MAX_CRASH_MESSAGE_CHARS && big.stack!.length <= MAX_CRASH_STACK_CHARS);
});
