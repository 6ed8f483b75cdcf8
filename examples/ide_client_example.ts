/**
 * A runnable example of the IDE client (shared/ide_client.ts) from Deno:
 * create a browser session, request a pairing code, wait for a bridge,
 * compare the short authentication string and approve it (type y), run a
 * command and print its output and exit status.
 *
 *     deno task relay                                  # terminal 1
 *     deno run -A examples/ide_client_example.ts       # terminal 2: prints a code
 *     deno task coder1 bridge start                    # terminal 3: type the code
 *
 * Arguments: [RELAY_URL] [COMMAND] (defaults: http://127.0.0.1:8787, "echo hello from coder1").
 *
 * @module
 */
import WebSocket from "ws";
import { useSyncAead } from "../shared/e2e_crypto.ts";
import { IdeClient, type WebSocketLike } from "../shared/ide_client.ts";
import { nodeAead } from "../shared/node_aead.ts";

const relayUrl = Deno.args[0] ?? "http://127.0.0.1:8787";
const command = Deno.args[1] ?? "echo hello from coder1";

// In Deno, small frame bodies (keystrokes and their echo) can be sealed on
// this thread, which saves a WebCrypto thread hop each way.
useSyncAead(nodeAead);

// Outside a browser the client needs a WebSocket that can send Cookie and
// Origin headers; npm:ws can (and has no Nagle stall).
const ide = new IdeClient({
  relayUrl,
  webSocket: (url, headers, protocols) => new WebSocket(url, protocols, { headers }) as unknown as WebSocketLike,
});

await ide.createSession();
const { code, expiresAt } = await ide.requestPairingCode();
console.log(`Pairing code: ${code} (valid until ${new Date(expiresAt).toLocaleTimeString()})`);
console.log(`On the machine to control, run: coder1 bridge start --relay ${relayUrl} --code ${code}`);

// On a first pairing the bridge prints a 6-digit SAS; approve only if this one matches.
ide.onApprovalRequest(async (request) => {
  console.log(`Bridge "${request.name}" (${request.os}, coder1 ${request.version}) asks to pair.`);
  console.log(`Check that the bridge shows: ${request.sas}`);
  await Deno.stdout.write(new TextEncoder().encode("Approve? [y/N] "));
  const answer = await readLine();
  if (/^y(es)?$/i.test(answer.trim())) await request.approve();
  else await request.reject();
});
await ide.connect();
await ide.waitForBridge(5 * 60_000);
console.log(`Bridge "${ide.bridgeInfo?.name}" approved; keys agreed.`);

const decoder = new TextDecoder();
const cmd = ide.run(command, {
  onStdout: (bytes) => Deno.stdout.writeSync(bytes),
  onStderr: (bytes) => console.error(`[stderr] ${decoder.decode(bytes).trimEnd()}`),
});
const result = await cmd.exited;

/** Reads one line from stdin. */
async function readLine(): Promise<string> {
  const reader = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
  let line = "";
  while (!line.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    line += value;
  }
  reader.releaseLock();
  return line;
}
console.log(`Exit: ${result.signal ? `signal ${result.signal}` : `code ${result.code}`} after ${result.durationMs} ms`);
ide.close();
