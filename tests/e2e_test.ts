/**
 * End-to-end encryption against a hostile relay. The relay runs in this
 * process with a test-only frame tap (relay/hub.ts `FrameTap`) so it can
 * record, drop, replay, reorder, alter, forge and man-in-the-middle every
 * frame it forwards; the bridge is a real `coder1 bridge start` process and
 * the IDE is the real IDE client over real loopback sockets.
 */
import assert from "node:assert/strict";
import { createLogger } from "../relay/logger.ts";
import type { FrameTap, TapResult } from "../relay/hub.ts";
import { type RelayHandle, startRelay } from "../relay/relay.ts";
import { fingerprint, generateIdentity, rawPublicKey, toBase64Url } from "../shared/e2e_crypto.ts";
import { BridgeHandshake, type E2eSession, IdeHandshake } from "../shared/e2e_session.ts";
import { bodyBytes, decodeFrame, encodeFrame, type FrameInit, parseJsonObject } from "../shared/frame_codec.ts";
import { type IdeClient, type IdeClientError, MemoryPinStore } from "../shared/ide_client.ts";
import { CloseCode, FrameType } from "../shared/protocol.ts";
import {
  approveBridge,
  type Coder1Process,
  ideClient,
  makeTestDirs,
  nextApproval,
  runCollect,
  spawnCoder1,
  startBridgeProcess,
  startRelayProcess,
  type TestDirs,
} from "./helpers.ts";

const SANITIZE = { sanitizeOps: false, sanitizeResources: false };

/** A relay in this process whose forwarding goes through `tap` (set or swapped at any time). */
async function tappedRelay(): Promise<{
  relay: RelayHandle;
  logs: string[];
  dataDir: string;
  setTap(tap: FrameTap | undefined): void;
}> {
  const dataDir = await Deno.makeTempDir({ prefix: "coder1-e2e-relay-" });
  const logs: string[] = [];
  let current: FrameTap | undefined;
  const relay = await startRelay({
    port: 0,
    dataDir,
    log: createLogger({ level: "debug", write: (line) => logs.push(line) }),
    tap: (direction, bytes, channel) => current ? current(direction, bytes, channel) : [bytes],
  });
  return { relay, logs, dataDir, setTap: (tap) => (current = tap) };
}

/** A fresh IDE session with a pairing code and an open socket. */
async function ideWithCode(url: string, options: Parameters<typeof ideClient>[1] = {}) {
  const ide = ideClient(url, options);
  await ide.createSession();
  const { code } = await ide.requestPairingCode();
  await ide.connect();
  return { ide, code };
}

async function pairThrough(
  relayUrl: string,
  dirs: TestDirs,
  bridgeOptions: Parameters<typeof startBridgeProcess>[2] = {},
) {
  const { ide, code } = await ideWithCode(relayUrl);
  const bridge = startBridgeProcess(dirs, relayUrl, { ...bridgeOptions, code });
  await approveBridge(ide, bridge);
  return { ide, bridge };
}

function marker(): string {
  return `mk${crypto.randomUUID().replaceAll("-", "")}`;
}

function latin1(chunks: Uint8Array[]): string {
  let s = "";
  for (const c of chunks) for (const b of c) s += String.fromCharCode(b);
  return s;
}

async function readTree(dir: string): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    out.push(new TextEncoder().encode(path));
    if (entry.isDirectory) out.push(...await readTree(path));
    else if (entry.isFile) out.push(await Deno.readFile(path));
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

function typeOf(bytes: Uint8Array): string {
  return decodeFrame(bytes).t;
}

function closedWith(ide: IdeClient): Promise<IdeClientError> {
  return new Promise((resolve) => {
    const off = ide.onClose((e) => {
      off();
      resolve(e);
    });
  });
}

Deno.test({
  name: "recording relay: no command text, output, stderr, stdin, environment or path reaches the relay",
  ...SANITIZE,
  async fn() {
    const dirs = await makeTestDirs();
    const { relay, logs, dataDir, setTap } = await tappedRelay();
    const recording: Uint8Array[] = [];
    setTap((_d, bytes) => {
      recording.push(bytes.slice());
      return [bytes];
    });
    const m = {
      command: marker(),
      stdout: marker(),
      stderr: marker(),
      stdin: marker(),
      env: marker(),
      dir: marker(),
      file: marker(),
    };
    const work = `${dirs.root}/work`;
    await Deno.mkdir(`${work}/dir-${m.dir}`, { recursive: true });
    await Deno.writeTextFile(`${work}/dir-${m.dir}/file-${m.file}`, "x");
    const { ide, bridge } = await pairThrough(relay.url, dirs, {
      args: ["--cwd", work],
      env: { CODER1_TEST_MARK: m.env },
    });
    try {
      // Output markers are built by the shell from halves, so they appear only in the output.
      const half = (s: string) => [s.slice(0, 10), s.slice(10)];
      const [oa, ob] = half(m.stdout), [ea, eb] = half(m.stderr);
      const r1 = await runCollect(
        ide,
        `: ${m.command}; a=${oa}; b=${ob}; echo "$a$b"; x=${ea}; y=${eb}; echo "$x$y" >&2`,
      );
      assert.equal(r1.stdout, `${m.stdout}\n`);
      assert.equal(r1.stderr, `${m.stderr}\n`);
      const r2 = await runCollect(ide, "printenv CODER1_TEST_MARK");
      assert.equal(r2.stdout, `${m.env}\n`);
      const r3 = await runCollect(ide, "pwd; ls", { cwd: `dir-${m.dir}` });
      assert.ok(r3.stdout.includes(m.dir) && r3.stdout.includes(m.file), r3.stdout);
      const out: Uint8Array[] = [];
      const cat = ide.run("cat", { onStdout: (b) => out.push(b) });
      cat.write(`${m.stdin}\n`);
      cat.closeStdin();
      await cat.exited;
      assert.equal(new TextDecoder().decode(out[0]), `${m.stdin}\n`);
    } finally {
      ide.close();
      await bridge.stop();
      await relay.shutdown();
    }
    // The relay did forward the whole session: handshake, sealed info, commands and their output.
    const types = new Set(recording.map(typeOf));
    for (const t of ["e2e.hello", "e2e.reply", "e2e.confirm", "e2e.info", "e2e.approve", "cmd.start", "cmd.stdout"]) {
      assert.ok(types.has(t), `recorded a ${t} frame`);
    }
    const seen = {
      recording: latin1(recording),
      logs: logs.join("\n"),
      dataDir: latin1(await readTree(dataDir)),
    };
    for (const [where, text] of Object.entries(seen)) {
      for (const [what, value] of Object.entries(m)) {
        assert.ok(!text.includes(value), `the ${what} marker is in the relay's ${where}`);
      }
    }
    // The bridge's name and OS travel sealed too; only its version is visible.
    assert.ok(!seen.recording.includes("linux") && !seen.logs.includes("linux"));
    await Deno.remove(dataDir, { recursive: true });
    await dirs.cleanup();
  },
});

/**
 * A relay in the middle of the first pairing: it answers the IDE's hello as a
 * bridge and greets the bridge as an IDE, each with its own keys, and re-seals
 * e2e.info across. It can also forge sealed frames towards the bridge.
 */
function mitm(): {
  tap: FrameTap;
  toBridge?: E2eSession;
  bridgeChannel?: number;
  sealForBridge(init: FrameInit): Promise<Uint8Array>;
  /** What to send the bridge instead of a sealed frame from the IDE. */
  onIdeSealed?: () => Promise<Uint8Array[]>;
} {
  const state: ReturnType<typeof mitm> = {
    tap: async (direction, bytes, channel): Promise<TapResult> => {
      const frame = decodeFrame(bytes);
      identities ??= { asBridge: await generateIdentity(), asIde: await generateIdentity() };
      if (direction === "ide-to-bridge" && frame.t === FrameType.E2eHello) {
        const hello = parseJsonObject(frame.body, frame.t);
        const asBridge = await BridgeHandshake.respond(identities.asBridge, String(hello.pairingId), hello);
        towardsIde = asBridge.handshake;
        const asIde = await IdeHandshake.start(identities.asIde, String(hello.pairingId));
        towardsBridge = asIde.handshake;
        state.bridgeChannel = channel;
        return {
          back: [encodeFrame({ t: FrameType.E2eReply, body: { ...asBridge.reply } })],
          forward: [encodeFrame({ t: FrameType.E2eHello, r: channel, body: { ...asIde.hello } })],
        };
      }
      if (direction === "bridge-to-ide" && frame.t === FrameType.E2eReply) {
        const { session: ch, confirm } = await towardsBridge!.finish(parseJsonObject(frame.body, frame.t));
        state.toBridge = ch;
        return { back: [encodeFrame({ t: FrameType.E2eConfirm, r: channel, body: { ...confirm } })] };
      }
      if (direction === "ide-to-bridge" && frame.t === FrameType.E2eConfirm) {
        const finished = await towardsIde!.finish(parseJsonObject(frame.body, frame.t));
        toIde = finished.session;
        signatureForIde = finished.signature;
        return [];
      }
      if (direction === "ide-to-bridge" && state.onIdeSealed) return await state.onIdeSealed();
      if (direction === "bridge-to-ide" && frame.t === FrameType.E2eInfo && toIde) {
        // Re-seal the bridge's info for the IDE, signed by the relay's own "bridge" key.
        const info = JSON.parse(new TextDecoder().decode(await state.toBridge!.open(frame)));
        const body = bodyBytes({ ...info, signature: signatureForIde });
        return [await toIde.seal({ t: frame.t, body })];
      }
      return []; // Everything else is swallowed: the MITM holds both ends.
    },
    sealForBridge: (init) =>
      state.toBridge!.seal({ t: init.t, id: init.id, r: state.bridgeChannel, body: bodyBytes(init.body) }),
  };
  let identities: { asBridge: CryptoKeyPair; asIde: CryptoKeyPair } | undefined;
  let towardsIde: BridgeHandshake | undefined, towardsBridge: IdeHandshake | undefined, toIde: E2eSession | undefined;
  let signatureForIde = "";
  return state;
}

Deno.test({
  name: "man in the middle: the two SAS differ, a forged approval and a validly sealed injected command run nothing",
  ...SANITIZE,
  async fn() {
    const dirs = await makeTestDirs();
    const { relay, dataDir, setTap } = await tappedRelay();
    const attack = mitm();
    setTap(attack.tap);
    const work = `${dirs.root}/work`;
    await Deno.mkdir(work);
    const { ide, code } = await ideWithCode(relay.url);
    const bridge = startBridgeProcess(dirs, relay.url, { code, args: ["--cwd", work, "--verbose"] });
    try {
      const request = await nextApproval(ide);
      const bridgeSas = (await bridge.stdout.waitFor(/Check that the IDE shows: (\d{3} \d{3})/))[1];
      assert.notEqual(request.sas, bridgeSas, "a relay in the middle shows different digits on each side");
      // The IDE user approves carelessly despite the mismatch. The relay swallows that
      // approval and instead approves on the bridge's channel (it holds its keys) and
      // sends a correctly sealed command.
      attack.onIdeSealed = async () => [
        await attack.sealForBridge({ t: FrameType.E2eApprove }),
        await attack.sealForBridge({
          t: FrameType.CmdStart,
          id: "evil",
          body: JSON.stringify({ command: `touch ${work}/pwned` }),
        }),
      ];
      await request.approve();
      // The bridge treats a command on an unconfirmed channel as an end-to-end failure and hangs up.
      await bridge.stderr.waitFor(/end-to-end check failed/);
      assert.equal(await exists(`${work}/pwned`), false, "the injected command did not run");
      // The user at the bridge sees other digits than the IDE's and says no.
      await bridge.write("n\n");
      const status = await bridge.status;
      assert.equal(status.code, 1);
      assert.match(bridge.stderr.text, /digits typed are not the ones this bridge computed/);
      assert.equal(await exists(`${work}/pwned`), false);
    } finally {
      ide.close();
      await bridge.stop();
      await relay.shutdown();
      await Deno.remove(dataDir, { recursive: true });
      await dirs.cleanup();
    }
  },
});

Deno.test({
  name: "man in the middle: swapped ephemeral keys or keys that break the commitment are refused; nothing is approved",
  ...SANITIZE,
  async fn(t) {
    const dirs = await makeTestDirs();
    const { relay, dataDir, setTap } = await tappedRelay();
    const mallory = await generateEphemeralRaw();
    const { ide, code } = await ideWithCode(relay.url);
    const bridge = startBridgeProcess(dirs, relay.url, { code });
    const failures = () => bridge.stderr.text.match(/end-to-end check failed/g)?.length ?? 0;
    try {
      await t.step(
        "the bridge's ephemeral key swapped in the reply: the IDE's signature fails at the bridge",
        async () => {
          setTap((direction, bytes) => {
            const frame = decodeFrame(bytes);
            if (direction !== "bridge-to-ide" || frame.t !== FrameType.E2eReply) return [bytes];
            return [encodeFrame({ t: frame.t, body: { ...parseJsonObject(frame.body, frame.t), ephemeral: mallory } })];
          });
          await bridge.stderr.waitFor(
            /end-to-end check failed \(Cannot trust IDE: its handshake signature does not verify\)/,
          );
        },
      );
      await t.step("the IDE's revealed ephemeral key swapped in the confirm: the commitment fails", async () => {
        const before = failures();
        setTap((direction, bytes) => {
          const frame = decodeFrame(bytes);
          if (direction !== "ide-to-bridge" || frame.t !== FrameType.E2eConfirm) return [bytes];
          return [
            encodeFrame({
              t: frame.t,
              r: frame.r,
              body: { ...parseJsonObject(frame.body, frame.t), ephemeral: mallory },
            }),
          ];
        });
        await bridge.stderr.waitFor(/do not match the commitment/, 30_000);
        assert.ok(failures() > before);
      });
      assert.equal(ide.approval, undefined, "no approval was ever asked for");
      assert.ok(!bridge.stdout.text.includes("Check that the IDE shows"), "the bridge never got to a SAS");
    } finally {
      ide.close();
      await bridge.stop();
      await relay.shutdown();
      await Deno.remove(dataDir, { recursive: true });
      await dirs.cleanup();
    }
  },
});

/** A fresh X25519 public key, base64url: what a relay in the middle would substitute. */
async function generateEphemeralRaw(): Promise<string> {
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]) as CryptoKeyPair;
  return toBase64Url(await rawPublicKey(pair.publicKey));
}

Deno.test({
  name: "tampering relay: replayed, reordered, bit-flipped and injected frames are rejected, hung up on, and re-keyed",
  ...SANITIZE,
  async fn(t) {
    const dirs = await makeTestDirs();
    const { relay, dataDir, setTap } = await tappedRelay();
    const work = `${dirs.root}/work`;
    await Deno.mkdir(work);
    const { ide, bridge } = await pairThrough(relay.url, dirs, { args: ["--cwd", work] });
    const failures = () => bridge.stderr.text.match(/end-to-end check failed/g)?.length ?? 0;
    // After a bridge-side failure the bridge reconnects and the IDE re-keys with the pinned keys (no SAS).
    const recovered = async () => {
      await ide.waitForBridge(20_000);
      assert.equal((await runCollect(ide, "echo again")).stdout, "again\n");
    };
    const lines = async (file: string) =>
      (await exists(file)) ? (await Deno.readTextFile(file)).split("\n").length - 1 : 0;
    try {
      await t.step("replay: a command frame delivered twice runs once", async () => {
        let replayed = false;
        setTap((direction, bytes) => {
          if (direction === "ide-to-bridge" && typeOf(bytes) === FrameType.CmdStart && !replayed) {
            replayed = true;
            return [bytes, bytes];
          }
          return [bytes];
        });
        const before = failures();
        ide.run(`echo once >> ${work}/replay`).exited.catch(() => {});
        await bridge.stderr.waitFor(new RegExp(`(end-to-end check failed[\\s\\S]*){${before + 1}}`));
        setTap(undefined);
        await recovered();
        assert.equal(await lines(`${work}/replay`), 1);
      });

      await t.step(
        "reorder: swapped command frames are refused; after re-keying each runs once, in order",
        async () => {
          let held: Uint8Array | undefined;
          setTap((direction, bytes) => {
            if (direction !== "ide-to-bridge" || typeOf(bytes) !== FrameType.CmdStart) return [bytes];
            if (!held) {
              held = bytes;
              return [];
            }
            return [bytes, held];
          });
          const before = failures();
          const first = ide.run(`echo first >> ${work}/order`);
          const second = ide.run(`echo second >> ${work}/order`);
          await bridge.stderr.waitFor(new RegExp(`(end-to-end check failed[\\s\\S]*){${before + 1}}`));
          setTap(undefined);
          await recovered();
          // The swapped frames never ran; the IDE's stream resent both (lossless) on the new keys.
          assert.equal((await first.exited).code, 0);
          assert.equal((await second.exited).code, 0);
          assert.equal(await Deno.readTextFile(`${work}/order`), "first\nsecond\n");
        },
      );

      await t.step("injection: a forged unsealed command never runs", async () => {
        setTap((direction, bytes, channel) => {
          if (direction !== "ide-to-bridge" || typeOf(bytes) !== FrameType.CmdStart) return [bytes];
          const s = decodeFrame(bytes).s!;
          const forged = encodeFrame({
            t: FrameType.CmdStart,
            r: channel,
            id: "evil",
            s,
            body: JSON.stringify({ command: `touch ${work}/pwned` }),
          });
          return [forged, bytes];
        });
        const before = failures();
        ide.run("true").exited.catch(() => {});
        await bridge.stderr.waitFor(new RegExp(`(end-to-end check failed[\\s\\S]*){${before + 1}}`));
        setTap(undefined);
        await recovered();
        assert.equal(await exists(`${work}/pwned`), false);
      });

      await t.step("bit flip: altered output is refused by the IDE, which hangs up with 4420", async () => {
        setTap((direction, bytes) => {
          if (direction !== "bridge-to-ide" || typeOf(bytes) !== FrameType.CmdStdout) return [bytes];
          const altered = bytes.slice();
          altered[altered.length - 1] ^= 1;
          return [altered];
        });
        const closed = closedWith(ide);
        ide.run("echo secret").exited.catch(() => {});
        const error = await closed;
        assert.equal(error.status, CloseCode.E2eFailure);
        setTap(undefined);
        // The IDE reconnects its socket and re-keys with the pinned bridge key: no SAS.
        let asked = false;
        const off = ide.onApprovalRequest(() => (asked = true));
        await ide.connect();
        await recovered();
        off();
        assert.equal(asked, false);
      });

      await t.step("truncation: a cut body is refused too", async () => {
        setTap((direction, bytes) => {
          if (direction !== "bridge-to-ide" || typeOf(bytes) !== FrameType.CmdExit) return [bytes];
          return [bytes.subarray(0, bytes.length - 3)];
        });
        const closed = closedWith(ide);
        ide.run("true").exited.catch(() => {});
        assert.equal((await closed).status, CloseCode.E2eFailure);
        setTap(undefined);
        await ide.connect();
        await recovered();
      });
      assert.equal(
        bridge.stdout.text.match(/Check that the IDE shows/g)?.length,
        1,
        "the SAS was shown once, at pairing",
      );
    } finally {
      ide.close();
      await bridge.stop();
      await relay.shutdown();
      await Deno.remove(dataDir, { recursive: true });
      await dirs.cleanup();
    }
  },
});

Deno.test({
  name:
    "stolen code: the thief's bridge gets a pending pairing the IDE rejects; it receives only the handshake and runs nothing",
  ...SANITIZE,
  async fn() {
    const thiefDirs = await makeTestDirs();
    const { relay, dataDir, setTap } = await tappedRelay();
    const toBridge: string[] = [];
    setTap((direction, bytes) => {
      if (direction === "ide-to-bridge") toBridge.push(typeOf(bytes));
      return [bytes];
    });
    const { ide, code } = await ideWithCode(relay.url);
    // The thief redeems the code first and happily confirms its own digits.
    const thief = startBridgeProcess(thiefDirs, relay.url, { code });
    try {
      const request = await nextApproval(ide);
      await thief.stdout.waitFor(/Check that the IDE shows/);
      await thief.write(`${(await thief.stdout.waitFor(/Check that the IDE shows: (\d{3} \d{3})/))[1]}\n`);
      // Before approval the IDE sends no commands at all.
      await assert.rejects(ide.run("echo hi").exited, (e: IdeClientError) => e.reason === "not-approved");
      const credentials = JSON.parse(
        await Deno.readTextFile(`${thiefDirs.env.XDG_CONFIG_HOME}/coder1/credentials.json`),
      );
      const token = (Object.values(credentials.relays)[0] as { token: string }).token;
      const states: string[] = [];
      ide.onStateChange((state) => states.push(state));
      // The user did not start this bridge: reject.
      await request.reject();
      const status = await thief.status;
      assert.equal(status.code, 1);
      assert.ok(states.includes("rejected"), states.join());
      assert.deepEqual(toBridge, ["e2e.hello", "e2e.confirm", "e2e.reject"]);
      // The thief's token is revoked at the relay (and the thief dropped it).
      const res = await fetch(`${relay.url}/api/bridge`, { headers: { authorization: `Bearer ${token}` } });
      await res.body?.cancel();
      assert.equal(res.status, 401);
      assert.match(thief.stderr.text, /rejected this bridge|no longer accepts this machine's token/);
      assert.equal(relay.hub.stats.bridges, 0);
    } finally {
      ide.close();
      await thief.stop();
      await relay.shutdown();
      await Deno.remove(dataDir, { recursive: true });
      await thiefDirs.cleanup();
    }
  },
});

Deno.test({
  name: "reconnect: after a relay restart bridge and IDE re-key without a SAS and carry on",
  ...SANITIZE,
  async fn() {
    const dirs = await makeTestDirs();
    let relay = await startRelayProcess(dirs);
    const { ide, bridge } = await pairThrough(relay.url, dirs);
    try {
      assert.equal((await runCollect(ide, "echo before")).stdout, "before\n");
      const port = relay.port;
      const lost = closedWith(ide);
      await relay.stop();
      await lost;
      relay = await startRelayProcess(dirs, [], port);
      await bridge.stdout.waitFor(/Bridge reconnected/, 30_000);
      let asked = false;
      ide.onApprovalRequest(() => (asked = true));
      await ide.connect();
      await ide.waitForBridge(20_000);
      assert.equal((await runCollect(ide, "echo after")).stdout, "after\n");
      assert.equal(asked, false, "no approval asked again");
      assert.equal(bridge.stdout.text.match(/Check that the IDE shows/g)?.length, 1);
    } finally {
      ide.close();
      await bridge.stop();
      await relay.stop();
      await dirs.cleanup();
    }
  },
});

Deno.test({
  name:
    "pinned keys: another IDE key is refused by the bridge, another bridge key by the IDE; a second tab of the same identity works",
  ...SANITIZE,
  async fn(t) {
    const dirs = await makeTestDirs();
    const relay = await startRelayProcess(dirs);
    const identity = await generateIdentity();
    const pins = new MemoryPinStore();
    const { ide, code } = await ideWithCode(relay.url, { identity, pins });
    let bridge: Coder1Process = startBridgeProcess(dirs, relay.url, { code });
    try {
      await approveBridge(ide, bridge);

      await t.step("a second tab with the same identity re-keys without a SAS", async () => {
        const tab = ideClient(relay.url, { identity, pins, sessionCookie: ide.sessionCookie });
        await tab.connect();
        await tab.waitForBridge(10_000);
        assert.equal((await runCollect(tab, "echo tab")).stdout, "tab\n");
        tab.close();
      });

      await t.step("an IDE with another identity key on the same session is refused and runs nothing", async () => {
        // What a relay could do: hand the session to a key of its own.
        const impostor = ideClient(relay.url, { sessionCookie: ide.sessionCookie });
        await impostor.connect();
        await assert.rejects(impostor.waitForBridge(10_000), (e: IdeClientError) => e.reason === "refused");
        await assert.rejects(impostor.run("echo hi").exited, (e: IdeClientError) => e.reason === "not-approved");
        await bridge.stderr.waitFor(/refused an IDE whose identity key/);
        impostor.close();
        assert.equal((await runCollect(ide, "echo still-mine")).stdout, "still-mine\n");
      });

      await t.step("coder1 bridge status shows the pinned IDE identity's fingerprint", async () => {
        const expected = await fingerprint(await rawPublicKey(identity.publicKey));
        const status = spawnCoder1(["bridge", "status", "--relay", relay.url], { env: dirs.env });
        assert.equal((await status.status).code, 0, status.stderr.text);
        assert.ok(status.stdout.text.includes(`pinned IDE identity ${expected}`), status.stdout.text);
      });

      await t.step("a bridge that comes back with another identity key is refused by the IDE", async () => {
        await bridge.stop();
        await Deno.remove(`${dirs.env.XDG_CONFIG_HOME}/coder1/identity.jwk`);
        bridge = startBridgeProcess(dirs, relay.url); // Same token, new identity key.
        const refused = new Promise<string | undefined>((resolve) =>
          ide.onStateChange((state, detail) => state === "refused" && resolve(detail))
        );
        assert.match((await refused) ?? "", /not the approved/);
        await assert.rejects(ide.run("echo hi").exited, (e: IdeClientError) => e.reason === "not-approved");
      });

      await t.step("--pair starts over: a new code, a new SAS and a new pin", async () => {
        await bridge.stop();
        const { code } = await ide.requestPairingCode();
        bridge = startBridgeProcess(dirs, relay.url, { code, args: ["--pair"] });
        await approveBridge(ide, bridge);
        assert.equal((await runCollect(ide, "echo re-paired")).stdout, "re-paired\n");
      });
    } finally {
      ide.close();
      await bridge.stop();
      await relay.stop();
      await dirs.cleanup();
    }
  },
});

Deno.test({
  name: "approval has a visible deadline: without approval the bridge gives up, runs nothing and says how to retry",
  ...SANITIZE,
  async fn() {
    const dirs = await makeTestDirs();
    const relay = await startRelayProcess(dirs);
    const { ide, code } = await ideWithCode(relay.url);
    const bridge = startBridgeProcess(dirs, relay.url, { code, args: ["--approval-timeout", "2"] });
    try {
      await nextApproval(ide);
      await bridge.stdout.waitFor(/waiting 0:02, until \d\d:\d\d:\d\d/);
      const status = await bridge.status;
      assert.equal(status.code, 1);
      assert.match(bridge.stderr.text, /No approval from the IDE in time, so nothing was run/);
    } finally {
      ide.close();
      await bridge.stop();
      await relay.stop();
      await dirs.cleanup();
    }
  },
});

Deno.test({
  name: "a relay that restarts the handshake again and again to hunt for equal SAS values is cut off after 5 tries",
  ...SANITIZE,
  async fn() {
    const dirs = await makeTestDirs();
    const { relay, dataDir, setTap } = await tappedRelay();
    // The relay plays the IDE towards the bridge, and after every e2e.info starts over.
    const relayIde = await generateIdentity();
    let handshake: IdeHandshake | undefined;
    let pairingId = "";
    const hello = async (c: number) => {
      const started = await IdeHandshake.start(relayIde, pairingId);
      handshake = started.handshake;
      return encodeFrame({ t: FrameType.E2eHello, r: c, body: started.hello });
    };
    setTap(async (direction, bytes, channel) => {
      const frame = decodeFrame(bytes);
      if (direction === "ide-to-bridge") {
        if (frame.t !== FrameType.E2eHello) return [];
        pairingId = String(parseJsonObject(frame.body, frame.t).pairingId);
        return [await hello(channel)];
      }
      if (frame.t === FrameType.E2eReply) {
        const { confirm } = await handshake!.finish(parseJsonObject(frame.body, frame.t));
        return { back: [encodeFrame({ t: FrameType.E2eConfirm, r: channel, body: { ...confirm } })] };
      }
      if (frame.t === FrameType.E2eInfo) return { back: [await hello(channel)] };
      return [];
    });
    const { ide, code } = await ideWithCode(relay.url);
    const bridge = startBridgeProcess(dirs, relay.url, { code });
    try {
      const status = await bridge.status;
      assert.equal(status.code, 1);
      assert.equal(bridge.stdout.text.match(/Check that the IDE shows/g)?.length, 5);
      assert.match(bridge.stderr.text, /5 handshakes asked for approval in this run/);
    } finally {
      ide.close();
      await bridge.stop();
      await relay.shutdown();
      await Deno.remove(dataDir, { recursive: true });
      await dirs.cleanup();
    }
  },
});

Deno.test({
  name: "a relay that sends hello after hello (never confirming) to collect SAS values is cut off after 10",
  ...SANITIZE,
  async fn() {
    const dirs = await makeTestDirs();
    const { relay, dataDir, setTap } = await tappedRelay();
    const relayIde = await generateIdentity();
    let pairingId = "";
    const hello = async (c: number) => {
      const started = await IdeHandshake.start(relayIde, pairingId);
      return encodeFrame({ t: FrameType.E2eHello, r: c, body: started.hello });
    };
    let replies = 0;
    setTap(async (direction, bytes, channel) => {
      const frame = decodeFrame(bytes);
      if (direction === "ide-to-bridge") {
        if (frame.t !== FrameType.E2eHello) return [];
        pairingId = String(parseJsonObject(frame.body, frame.t).pairingId);
        return [await hello(channel)];
      }
      // Each reply is one SAS value the relay can compute; ask for another.
      if (frame.t === FrameType.E2eReply) {
        replies++;
        return { back: [await hello(channel)] };
      }
      return [];
    });
    const { ide, code } = await ideWithCode(relay.url);
    const bridge = startBridgeProcess(dirs, relay.url, { code });
    try {
      const status = await bridge.status;
      assert.equal(status.code, 1);
      assert.equal(replies, 10);
      assert.match(bridge.stderr.text, /10 handshakes were started before any IDE was approved/);
    } finally {
      ide.close();
      await bridge.stop();
      await relay.shutdown();
      await Deno.remove(dataDir, { recursive: true });
      await dirs.cleanup();
    }
  },
});
