/**
 * Bridge credentials a user can take back (issue 14), each attack run against
 * a real relay process with real bridge processes: a thief's code redemption
 * never displaces the approved bridge and is revoked from the page while it
 * is offline; a stolen token presented after rotation revokes the whole line
 * and both the bridge and `bridge status` say so; `--pair` and a refused
 * pairing revoke the old token at the relay.
 */
import assert from "node:assert/strict";
import { decodeFrame } from "../shared/frame_codec.ts";
import { CloseCode, FrameType } from "../shared/protocol.ts";
import {
  approveBridge,
  bridgeLogin,
  bridgeSocket,
  ideClient,
  makeTestDirs,
  pairedSetup,
  runCollect,
  spawnCoder1,
  startBridgeProcess,
  startRelayProcess,
} from "./helpers.ts";

type Login = { ok: Record<string, unknown> } | { close: { code: number; reason: string } };

/**
 * One bridge login over a raw socket (the credential in the upgrade request,
 * asking for rotation), then hang up. A refusal before the upgrade is
 * reported as the close code the bridge reads it as (401 as 4401, 409 as
 * 4411, 429 as 4429), with the relay's message as the reason.
 */
async function login(relayUrl: string, auth: { code: string } | { token: string }): Promise<Login> {
  const r = await bridgeLogin(relayUrl, { ...auth, version: "9.9.9-thief", rotate: true });
  r.socket.close();
  await r.socket.closed;
  if (r.ok) return { ok: r.ok };
  return { close: { code: HTTP_AS_CLOSE[r.close!.code] ?? r.close!.code, reason: r.close!.reason } };
}

/** How the bridge reads the relay's refusals of its upgrade (bridge/relay_link.ts). */
const HTTP_AS_CLOSE: Record<number, number> = {
  401: CloseCode.AuthFailed,
  409: CloseCode.SessionTaken,
  429: CloseCode.RateLimited,
};

function closeOf(r: Login): { code: number; reason: string } {
  if ("ok" in r) throw new Error(`expected a refusal, got auth.ok ${JSON.stringify(r.ok)}`);
  return r.close;
}

async function listBridges(relayUrl: string, cookie: string) {
  const res = await fetch(`${relayUrl}/api/bridges`, { headers: { cookie } });
  assert.equal(res.status, 200);
  return (await res.json()).bridges as {
    bridgeId: string;
    issuedFrom: string;
    lastSeen?: number;
    version?: string;
    approved: boolean;
    connected: boolean;
    revokedReason?: string;
  }[];
}

async function revoke(relayUrl: string, cookie: string, body: unknown): Promise<Response> {
  return await fetch(`${relayUrl}/api/bridge/revoke`, {
    method: "POST",
    headers: { cookie, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

function storedToken(dirs: { env: Record<string, string> }, relayUrl: string): string | undefined {
  const file = `${dirs.env.XDG_CONFIG_HOME}/coder1/credentials.json`;
  return JSON.parse(Deno.readTextFileSync(file)).relays[relayUrl]?.token;
}

Deno.test("a thief's redeemed code never displaces the approved bridge, and the page revokes it while it is offline", async () => {
  const dirs = await makeTestDirs();
  const relay = await startRelayProcess(dirs);
  const { ide, bridge } = await pairedSetup(dirs, relay.url);
  let bridge2: ReturnType<typeof startBridgeProcess> | undefined;
  try {
    const cookie = ide.sessionCookie!;
    // The user asks for a code (to pair a second machine); a thief redeems it first.
    const first = await ide.requestPairingCode();
    const refused = closeOf(await login(relay.url, { code: first.code }));
    assert.equal(refused.code, CloseCode.SessionTaken, "the approved bridge keeps its place");
    assert.equal((await runCollect(ide, "echo still-here")).stdout, "still-here\n");

    // While the approved bridge is offline the thief gets a token, and hangs up before the user rejects it.
    await bridge.stop("SIGTERM");
    const { code } = await ide.requestPairingCode();
    const stolen = await login(relay.url, { code });
    assert.ok("ok" in stolen, "the thief redeemed the code");
    const thiefToken = stolen.ok.token as string, thiefId = stolen.ok.bridgeId as string;

    // The real bridge comes back; the thief reconnecting does not make it leave (it used to get 4409 and exit).
    bridge2 = startBridgeProcess(dirs, relay.url);
    await bridge2.stdout.waitFor(/Bridge connected/);
    await ide.waitForBridge(20_000);
    const again = closeOf(await login(relay.url, { token: thiefToken }));
    assert.equal(again.code, CloseCode.SessionTaken);
    assert.equal((await runCollect(ide, "echo survived")).stdout, "survived\n");

    // The page lists both credentials, with when, from where, version, approval and presence.
    const list = await listBridges(relay.url, cookie);
    assert.equal(list.length, 2);
    const thief = list.find((b) => b.bridgeId === thiefId)!;
    const real = list.find((b) => b.bridgeId !== thiefId)!;
    assert.deepEqual([thief.approved, thief.connected, thief.issuedFrom], [false, false, "127.0.0.1"]);
    assert.deepEqual([real.approved, real.connected], [true, true]);
    assert.ok(real.version && real.lastSeen, "version and last seen are recorded");

    // Forget works while the thief is offline (it used to answer 404 no-bridge).
    const res = await revoke(relay.url, cookie, { bridgeId: thiefId });
    assert.equal(res.status, 200, await res.text());
    assert.equal(closeOf(await login(relay.url, { token: thiefToken })).code, CloseCode.AuthFailed);
    assert.equal((await runCollect(ide, "echo unaffected")).stdout, "unaffected\n");
    // Another session cannot revoke this session's bridges.
    const other = ideClient(relay.url);
    await other.createSession();
    assert.equal((await revoke(relay.url, other.sessionCookie!, { bridgeId: real.bridgeId })).status, 404);

    // Revoke all: the connected bridge is closed with 4410 and exits.
    const all = await revoke(relay.url, cookie, { all: true });
    assert.equal(all.status, 200);
    assert.equal((await bridge2.status).code, 1);
    assert.match(bridge2.stderr.text, /no longer accepts this machine's token/);
    assert.ok((await listBridges(relay.url, cookie)).every((b) => b.revokedReason === "user"));
  } finally {
    ide.close();
    await bridge.stop();
    await bridge2?.stop();
    await relay.stop();
    await dirs.cleanup();
  }
});

Deno.test("rotation: a stolen token presented after the bridge rotated revokes the whole line; bridge and status say so", async () => {
  const dirs = await makeTestDirs();
  const relay = await startRelayProcess(dirs);
  const { ide, bridge } = await pairedSetup(dirs, relay.url);
  let bridge2: ReturnType<typeof startBridgeProcess> | undefined;
  try {
    const copied = storedToken(dirs, relay.url)!; // What a thief copies from the disk.
    await bridge.stop("SIGTERM");
    bridge2 = startBridgeProcess(dirs, relay.url);
    await bridge2.stdout.waitFor(/Bridge connected/);
    await ide.waitForBridge(20_000);
    const rotated = storedToken(dirs, relay.url)!;
    assert.notEqual(rotated, copied, "each login rotates the stored token");
    // A plain check (bridge status, doctor) rotates nothing.
    const status = spawnCoder1(["bridge", "status", "--relay", relay.url], { env: dirs.env });
    assert.equal((await status.status).code, 0, status.stdout.text);
    assert.equal(storedToken(dirs, relay.url), rotated);

    // The thief presents the copy: reuse. The whole line is revoked and the live bridge told why.
    const theft = closeOf(await login(relay.url, { token: copied }));
    assert.equal(theft.code, CloseCode.AuthFailed);
    assert.match(theft.reason, /possible theft/);
    assert.equal((await bridge2.status).code, 1);
    assert.match(bridge2.stderr.text, /revoked all of this machine's tokens.*possible theft/);
    assert.equal(closeOf(await login(relay.url, { token: rotated })).code, CloseCode.AuthFailed);

    const after = spawnCoder1(["bridge", "status", "--relay", relay.url], { env: dirs.env });
    assert.equal((await after.status).code, 1);
    assert.match(after.stdout.text, /possible theft/);
    const list = await listBridges(relay.url, ide.sessionCookie!);
    assert.equal(list[0].revokedReason, "reuse");
  } finally {
    ide.close();
    await bridge.stop();
    await bridge2?.stop();
    await relay.stop();
    await dirs.cleanup();
  }
});

Deno.test("--pair and a pairing refused at the bridge revoke the old token at the relay", async () => {
  const dirs = await makeTestDirs();
  const relay = await startRelayProcess(dirs);
  const { ide, bridge } = await pairedSetup(dirs, relay.url);
  let repaired: ReturnType<typeof startBridgeProcess> | undefined;
  let refused: ReturnType<typeof startBridgeProcess> | undefined;
  try {
    await bridge.stop("SIGTERM");
    const old = storedToken(dirs, relay.url)!;
    const { code } = await ide.requestPairingCode();
    repaired = startBridgeProcess(dirs, relay.url, { code, args: ["--pair"] });
    await repaired.stdout.waitFor(/Revoked this machine's previous token at the relay/);
    await approveBridge(ide, repaired);
    // The old token no longer works (it used to, and kicked the re-paired bridge).
    assert.equal(closeOf(await login(relay.url, { token: old })).code, CloseCode.AuthFailed);
    assert.equal((await runCollect(ide, "echo re-paired")).stdout, "re-paired\n");
    await repaired.stop("SIGTERM");

    // Refused at the bridge (other digits typed): the token is revoked at the relay, not only deleted here.
    const next = await ide.requestPairingCode();
    refused = startBridgeProcess(dirs, relay.url, { code: next.code, args: ["--pair"] });
    await refused.stdout.waitFor(/Check that the IDE shows/);
    await refused.write("000 000\n");
    assert.equal((await refused.status).code, 1);
    const list = await listBridges(relay.url, ide.sessionCookie!);
    assert.equal(list[0].revokedReason, "logout", "the refused pairing's credential is revoked at the relay");
    assert.equal(storedToken(dirs, relay.url), undefined);
  } finally {
    ide.close();
    await bridge.stop();
    await repaired?.stop();
    await refused?.stop();
    await relay.stop();
    await dirs.cleanup();
  }
});

Deno.test("--pair while the relay is away: the old token is kept pending, said so, and revoked at the next logout", async () => {
  const dirs = await makeTestDirs();
  let relay = await startRelayProcess(dirs);
  const port = relay.port;
  const { ide, bridge } = await pairedSetup(dirs, relay.url);
  try {
    await bridge.stop("SIGTERM");
    const old = storedToken(dirs, relay.url)!;
    await relay.stop("SIGTERM");
    const repair = spawnCoder1(
      ["bridge", "start", "--relay", relay.url, "--pair", "--code", "123456", "--allow-root"],
      {
        env: dirs.env,
      },
    );
    assert.equal((await repair.status).code, 1);
    assert.match(repair.stderr.text, /could not revoke the old token at the relay .*kept and revoked at the next/s);
    const file = JSON.parse(await Deno.readTextFile(`${dirs.env.XDG_CONFIG_HOME}/coder1/credentials.json`));
    assert.equal(file.pending.length, 1);

    relay = await startRelayProcess(dirs, [], port);
    const status = spawnCoder1(["bridge", "status", "--relay", relay.url], { env: dirs.env });
    await status.status;
    assert.match(status.stdout.text, /1 old token\(s\) still to revoke/);
    const logout = spawnCoder1(["bridge", "logout", "--relay", relay.url], { env: dirs.env });
    assert.equal((await logout.status).code, 0, logout.stderr.text);
    assert.equal(closeOf(await login(relay.url, { token: old })).code, CloseCode.AuthFailed);
    const after = JSON.parse(await Deno.readTextFile(`${dirs.env.XDG_CONFIG_HOME}/coder1/credentials.json`));
    assert.deepEqual(after.pending, []);
  } finally {
    ide.close();
    await bridge.stop();
    await relay.stop();
    await dirs.cleanup();
  }
});

Deno.test("a copy of the current token that takes over is caught: the real bridge comes back and the relay sees the reuse", async () => {
  const dirs = await makeTestDirs();
  const relay = await startRelayProcess(dirs);
  const { ide, bridge } = await pairedSetup(dirs, relay.url);
  try {
    const copied = storedToken(dirs, relay.url)!; // Copied while the bridge runs: the current token.
    const thief = bridgeSocket(relay.url, { token: copied, version: "9.9.9-thief", rotate: true });
    await thief.opened;
    assert.equal(decodeFrame(await thief.next()).t, FrameType.AuthOk, "the copy logs in and rotates");
    // The real bridge is replaced (4409) but does not give up for good: its token on disk is still
    // the one it used, so it presents it again, which the relay sees as reuse while the copy is connected.
    const closed = await thief.closed;
    assert.equal(closed.code, CloseCode.Revoked);
    assert.match(closed.reason, /possible theft/);
    assert.equal((await bridge.status).code, 1);
    assert.match(bridge.stderr.text, /revoked all of this machine's tokens.*possible theft/);
    assert.equal((await listBridges(relay.url, ide.sessionCookie!))[0].revokedReason, "reuse");
  } finally {
    ide.close();
    await bridge.stop();
    await relay.stop();
    await dirs.cleanup();
  }
});
