/**
 * The bridge's link to its relay: dial out over WebSocket (npm:ws, which sets
 * TCP_NODELAY; Deno's own client stalls ~40 ms on every message over 1 KiB),
 * authenticate with a pairing code or the session JWT (in the upgrade
 * request's headers, shared/bridge_credential.ts), answer heartbeats,
 * pass end-to-end frames through the {@linkcode E2eGate} (handshake,
 * approval, sealing) to the {@linkcode CommandManager} and the
 * {@linkcode TerminalManager}, and reconnect with exponential backoff and
 * jitter until told to stop.
 *
 * @module
 */
import WebSocket from "ws";
import { backoffDelay } from "../shared/backoff.ts";
import { bridgeCredentialHeaders } from "../shared/bridge_credential.ts";
import { type Clock, systemClock } from "../shared/clock.ts";
import { useSyncAead } from "../shared/e2e_crypto.ts";
import { nodeAead } from "../shared/node_aead.ts";
import { E2eError } from "../shared/e2e_session.ts";
import { decodeAuthOk, decodeFlow, isRoutingKey } from "../shared/frame_bodies.ts";
import { bodyBytes, decodeFrame, encodeFrame } from "../shared/frame_codec.ts";
import {
  type AuthBody,
  type AuthOkBody,
  CloseCode,
  type CrashBody,
  type Frame,
  FrameType,
  HANDSHAKE_TIMEOUT_MS,
  HEARTBEAT_TIMEOUT_MS,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  RECONNECT_BASE_MS,
  RECONNECT_MAX_MS,
  SEND_HIGH_WATER,
  STOP_FLUSH_MS,
  TERMINAL_TYPES,
  WS_SUBPROTOCOL,
} from "../shared/protocol.ts";
import type { RelayUrl } from "../shared/relay_url.ts";
import type { CommandFrame, CommandManager, FrameSender } from "./command_manager.ts";
import { E2eGate, type E2eGateOptions } from "./e2e_gate.ts";
import { StreamTable } from "./stream_table.ts";
import { TerminalManager } from "./terminal_manager.ts";
import { FlowGate } from "../shared/stream.ts";

/**
 * The most often the heartbeat watchdog looks at the time (it looks four
 * times per heartbeat limit when that is shorter, as tests make it).
 */
const WATCHDOG_TICK_MS = 1_000;

/** Who the bridge says it is (the relay learns only the version; the rest goes sealed to the IDE). */
export interface BridgeIdentity {
  /** Display name. */
  name: string;
  /** coder1 version. */
  version: string;
  /** Operating system. */
  os: string;
}

/** End-to-end settings: the identity key, the pin and the approval callbacks. */
export type LinkE2eOptions = Omit<E2eGateOptions, "bridgeId" | "info" | "deliver" | "send" | "debug" | "streams">;

/** How {@linkcode runRelayLink} ended. */
export interface LinkExit {
  /** Exit code for the process. */
  code: number;
  /** What to tell the user (empty when stopped on request). */
  message: string;
  /** True when the stored token is dead and should be deleted. */
  dropToken?: boolean;
  /** True when the relay itself refused the token (no need to revoke it there). */
  refusedByRelay?: boolean;
  /** Why the relay refused the token, kept for `coder1 bridge status`. */
  note?: string;
}

/** Options for {@linkcode runRelayLink}. */
export interface RelayLinkOptions {
  /** The relay. */
  relay: RelayUrl;
  /** Extra CA certificate (PEM) to trust. */
  ca?: string;
  /** Name, version, OS. */
  identity: BridgeIdentity;
  /** Identity key, pinned IDE key and approval callbacks. */
  e2e: LinkE2eOptions;
  /** First credential: a pairing code, or a stored token. */
  auth: { code: string } | { token: string };
  /**
   * The routing key stored with the token (none on a first pairing): sent as
   * `?r=` on `/ws/bridge`. Each `auth.ok` that carries one replaces it for
   * the next connection.
   */
  routingKey?: string;
  /** Runs commands; built by the caller with {@linkcode RelayLink.send} as its sender. */
  commands: (send: FrameSender) => CommandManager;
  /**
   * Runs terminals; built by the caller with the same sender, and told which
   * streams have their IDE socket now. Without it the bridge says it has none
   * (`e2e.info` `terminals: "disabled"`).
   */
  terminals?: (send: FrameSender, connected: (handle: number) => boolean) => TerminalManager;
  /** Called after each successful auth; `token` is set when a code was redeemed. */
  onAuthenticated: (ok: AuthOkBody, first: boolean) => Promise<void> | void;
  /** Progress and events for the user. */
  print: (message: string) => void;
  /** Verbose events (connection details, IDE sockets). */
  debug: (message: string) => void;
  /**
   * Stops the link (closes with 1000 and ends running commands). Aborted with
   * `{ linkExit }` as the reason ({@linkcode endLink}), that is how the link ends.
   */
  signal: AbortSignal;
  /** Heartbeat silence limit (tests shrink it). */
  heartbeatTimeoutMs?: number;
  /** The time the heartbeat watchdog compares against (default: the system clock). */
  clock?: Clock;
  /** How long a stream whose IDE is away is kept (tests shrink it). */
  streamLingerMs?: number;
  /**
   * The token stored on disk now: after a `4409`, the bridge reconnects when it
   * is still the token in use (no other process here rotated it), and exits otherwise.
   */
  storedToken?: () => Promise<string | undefined>;
  /** False with `CODER1_TELEMETRY=false`: `auth` says so and no crash report is sent. */
  telemetry?: boolean;
  /**
   * A crash report from an earlier run, sent once a relay offers
   * `crashReports` (bridge/crash_report.ts): `take` returns it (scrubbed),
   * `sent` deletes it.
   */
  crashReport?: { take(): CrashBody | undefined; sent(): void };
}

interface Attempt {
  authed: boolean;
  /** The relay refused the upgrade (an HTTP answer), as the close code it stands for and the relay's message. */
  refused?: { code?: number; reason: string };
  /** The relay upgraded without our subprotocol: it is older than this bridge. */
  olderRelay?: boolean;
  /** The end-to-end failure this side closed the connection for. */
  e2eFailure?: string;
  closeCode?: number;
  closeReason?: string;
  error?: string;
}

/**
 * Keeps the bridge connected until stopped or refused for good.
 *
 * @param options Relay, credential, command manager factory and callbacks.
 * @returns How and why it ended.
 */
export async function runRelayLink(options: RelayLinkOptions): Promise<LinkExit> {
  // Small bodies (keystrokes, their echo, acknowledgements) are sealed and
  // opened on this thread: no WebCrypto thread hop on the typing path.
  useSyncAead(nodeAead);
  // Commands write into their IDE's stream, which outlives connections: it
  // numbers and keeps every frame until the IDE acknowledges it, and makes the
  // command wait (stop reading the child) while a window is unacknowledged.
  const streams = new StreamTable({
    onForget: (handle) => {
      manager.closeStream(handle);
      terminals.closeStream(handle);
    },
    lingerMs: options.streamLingerMs,
    debug: options.debug,
  });
  const send = (frame: CommandFrame): Promise<void> =>
    streams.push(frame.handle, { t: frame.t, id: frame.id, body: bodyBytes(frame.body) });
  const manager = options.commands(send);
  const terminals = options.terminals?.(send, (handle) => streams.connected(handle)) ??
    new TerminalManager({
      root: ".",
      send,
      unavailable: { reason: "disabled", message: "this bridge runs no terminals" },
    });
  const stopCommands = async () => {
    // Stop the children first (their exit reports go into the streams), give
    // the IDE a moment to acknowledge them, then hang up.
    await Promise.all([manager.stopAll(), terminals.stopAll()]);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<void>((resolve) => timer = setTimeout(resolve, STOP_FLUSH_MS));
    await Promise.race([streams.drained(), late]).finally(() => clearTimeout(timer));
  };
  const telemetry = options.telemetry === false ? { telemetry: false } : {};
  // rotate: this bridge stores the new token every login brings (auth.ok), before using it.
  let auth: AuthBody = { ...options.auth, version: options.identity.version, rotate: true, ...telemetry };
  // A key from a hand-edited file that does not fit in a URL is left out, not sent.
  let routingKey = isRoutingKey(options.routingKey) ? options.routingKey : undefined;
  let failures = 0;
  let connectedOnce = false;
  const stopped = new Promise<void>((resolve) =>
    options.signal.addEventListener("abort", () => resolve(), { once: true })
  );

  try {
    while (!options.signal.aborted) {
      options.print(
        connectedOnce ? `Reconnecting to ${options.relay.ws} ...` : `Connecting to ${options.relay.ws} ...`,
      );
      const attempt = await _connect(
        options,
        auth,
        routingKey,
        manager,
        terminals,
        streams,
        stopCommands,
        async (ok) => {
          // Stored first (onAuthenticated), used second: should storing fail, the
          // connection ends and the next one presents the token still on disk.
          await options.onAuthenticated(ok, !connectedOnce);
          if (ok.token) auth = { token: ok.token, version: options.identity.version, rotate: true, ...telemetry };
          if (ok.routingKey) routingKey = ok.routingKey;
          connectedOnce = true;
          failures = 0;
        },
      );
      streams.detachAll();
      if (options.signal.aborted) break;
      const pairing = "code" in options.auth && !connectedOnce;
      const why = attempt.closeReason || attempt.error || `closed with code ${attempt.closeCode}`;
      if (attempt.closeCode === CloseCode.UnsupportedVersion || attempt.olderRelay) {
        return {
          code: 1,
          message: attempt.olderRelay
            ? `The relay at ${options.relay.http} speaks an older protocol than this bridge (${PROTOCOL_VERSION}): update the relay, or use a bridge of the relay's version.`
            : `The relay refused this bridge's protocol: ${why}.`,
        };
      }
      if (!attempt.authed && attempt.closeCode === CloseCode.AuthTimeout) {
        // Only a relay from before the login moved into the upgrade request waits for an `auth` frame.
        return {
          code: 1,
          message: `The relay at ${options.relay.http} is an older coder1 relay (it waits for the credential in a ` +
            "first frame, this bridge sends it in the upgrade request): update the relay, or use a bridge of the relay's version.",
        };
      }
      if (pairing && !attempt.authed) {
        if (attempt.closeCode === CloseCode.AuthFailed) {
          return {
            code: 1,
            message:
              "Pairing failed: the code is wrong, expired or already used. Get a new code in the IDE and run `coder1 bridge start` again.",
          };
        }
        if (attempt.closeCode === CloseCode.RateLimited) return { code: 1, message: `Pairing refused: ${why}` };
        if (attempt.closeCode === undefined || attempt.error) {
          return { code: 1, message: `Cannot reach the relay at ${options.relay.http}: ${why}` };
        }
        return { code: 1, message: `Pairing failed: ${why}` };
      }
      if (attempt.closeCode === CloseCode.AuthFailed || attempt.closeCode === CloseCode.Revoked) {
        const theft = /theft/.test(why);
        return {
          code: 1,
          dropToken: true,
          refusedByRelay: true,
          note: why,
          message: theft
            ? `The relay revoked all of this machine's tokens: ${why}. Someone else may hold a copy of this machine's token (check who can read ~/.config/coder1). Pair again: coder1 bridge start --pair`
            : "The relay no longer accepts this machine's token (revoked or expired). Pair again: coder1 bridge start --pair",
        };
      }
      if (attempt.closeCode === CloseCode.SessionTaken) {
        return {
          code: 1,
          message:
            `The relay refused this bridge: ${why}. Another bridge the IDE approved is connected to that IDE session.`,
        };
      }
      const sameCredential = attempt.closeCode === CloseCode.Replaced && /this bridge's credential/.test(why);
      if (sameCredential && auth.token && (await options.storedToken?.()) === auth.token) {
        // Nobody on this machine rotated the token, yet a connection with it took over:
        // it is a copy. Presenting ours again makes the relay take the session back
        // (the copy's successor is then dead) or detect the reuse and revoke everything.
        options.print(
          "Connection closed: another connection with this machine's token took over (a copy?); reconnecting to check",
        );
      } else if (attempt.closeCode === CloseCode.Replaced) {
        return {
          code: 1,
          message:
            "Another bridge connection took over this IDE session (the same token, or a new pairing), so this one stopped.",
        };
      }
      if (attempt.e2eFailure) {
        options.print(`Connection closed: end-to-end check failed (${attempt.e2eFailure}); re-keying on reconnect`);
      }
      const delay = backoffDelay(failures++, { baseMs: RECONNECT_BASE_MS, maxMs: RECONNECT_MAX_MS, jitter: "equal" });
      options.print(`Connection to the relay lost (${why}); retrying in ${(delay / 1000).toFixed(1)}s`);
      await Promise.race([stopped, new Promise((r) => setTimeout(r, delay))]);
    }
    return _linkExit(options.signal.reason) ?? { code: 0, message: "" };
  } finally {
    await Promise.all([manager.stopAll(), terminals.stopAll()]);
    streams.clear();
  }
}

/**
 * Ends a link from outside with a given outcome (a rejection in the IDE, an
 * approval timeout): aborts `controller` with the exit as its reason.
 *
 * @param controller The controller whose signal the link watches.
 * @param exit How the link should end.
 */
export function endLink(controller: AbortController, exit: LinkExit): void {
  controller.abort({ linkExit: exit });
}

function _linkExit(reason: unknown): LinkExit | undefined {
  return typeof reason === "object" && reason !== null && "linkExit" in reason
    ? (reason as { linkExit: LinkExit }).linkExit
    : undefined;
}

function _connect(
  options: RelayLinkOptions,
  auth: AuthBody,
  routingKey: string | undefined,
  manager: CommandManager,
  terminals: TerminalManager,
  streams: StreamTable,
  beforeClose: () => Promise<void>,
  onAuthed: (ok: AuthOkBody) => Promise<void>,
): Promise<Attempt> {
  const result: Attempt = { authed: false };
  const done = Promise.withResolvers<Attempt>();
  // `?r=`: behind several relay instances, the balancer places the socket by it (docs/OPERATIONS.md).
  const url = `${options.relay.ws}/ws/bridge${routingKey ? `?r=${routingKey}` : ""}`;
  const ws = new WebSocket(url, [WS_SUBPROTOCOL], {
    // The credential is checked before the upgrade; a refusal is an HTTP answer ("unexpected-response" below).
    headers: bridgeCredentialHeaders(auth),
    perMessageDeflate: false,
    maxPayload: MAX_FRAME_BYTES,
    handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    ...(options.ca ? { ca: options.ca } : {}),
    ...(options.relay.secure || options.relay.loopback ? { generateMask: _zeroMask } : {}),
  });
  // npm:ws's default delivers each message as a Buffer (a Uint8Array) without copying it.
  ws.binaryType = "nodebuffer";
  let gate: E2eGate | undefined;
  const socketSend = async (bytes: Uint8Array): Promise<void> => {
    if (ws.readyState !== WebSocket.OPEN) return;
    if (ws.bufferedAmount < SEND_HIGH_WATER) return ws.send(bytes);
    await new Promise<void>((resolve) => ws.send(bytes, () => resolve()));
  };
  // The relay pauses routes whose IDE is behind (`flow`); frames for a
  // paused route wait, in order, behind one another.
  const flows = new Map<number, FlowGate>();
  const rawSend = (bytes: Uint8Array, route?: number): Promise<void> => {
    const flow = route === undefined ? undefined : flows.get(route);
    return flow ? flow.send(() => socketSend(bytes)) : socketSend(bytes);
  };
  const clock = options.clock ?? systemClock;
  let lastSeen = clock.now();
  const limit = options.heartbeatTimeoutMs ?? HEARTBEAT_TIMEOUT_MS;
  const watchdog = setInterval(() => {
    if (clock.now() - lastSeen > limit) {
      result.error = "no heartbeat from the relay";
      ws.terminate();
    }
  }, Math.min(WATCHDOG_TICK_MS, limit / 4));
  const onAbort = () => {
    // Bounded: stopAll waits at most the kill grace, the flush STOP_FLUSH_MS.
    beforeClose().catch(() => {}).finally(() => ws.close(CloseCode.Normal, "bridge stopping"));
  };
  options.signal.addEventListener("abort", onAbort, { once: true });

  ws.on("open", () => options.debug("WebSocket open; waiting for auth.ok"));
  ws.on(
    "unexpected-response",
    (request: { destroy(): void }, response: AsyncIterable<Uint8Array> & { statusCode?: number }) => {
      _refusal(response).then((refused) => {
        result.refused = refused;
        options.debug(`relay refused the upgrade: ${response.statusCode} ${refused.reason}`);
      }).finally(() => {
        request.destroy();
        ws.terminate();
      });
    },
  );
  let queue = Promise.resolve();
  ws.on("message", (data: Uint8Array) => {
    lastSeen = clock.now();
    queue = queue.then(async () => {
      if (result.e2eFailure) return; // Hanging up: nothing more is trusted.
      let frame: Frame | undefined;
      try {
        frame = decodeFrame(data, { skipUnknown: true });
      } catch (error) {
        options.debug(`bad frame from relay: ${(error as Error).message}`);
        return;
      }
      if (!frame) return; // A newer relay's or IDE's type: skipped.
      if (!result.authed) {
        if (frame.t !== FrameType.AuthOk) return;
        const body = decodeAuthOk(frame.body);
        result.authed = true;
        gate = new E2eGate({
          ...options.e2e,
          bridgeId: body.bridgeId,
          // termKeys: this bridge takes paced, padded keystrokes (and ignores chaff), terminals or not.
          // termSignal: this bridge takes term.signal (Force stop in a terminal).
          info: { ...options.identity, terminals: terminals.support, termKeys: true, termSignal: true },
          streams,
          // Stream frames go to whoever runs their kind: terminals or commands.
          deliver: (handle, f) => TERMINAL_TYPES.has(f.t) ? terminals.handle(handle, f) : manager.handle(handle, f),
          send: rawSend,
          debug: options.debug,
        });
        try {
          await onAuthed(body);
        } catch (error) {
          result.error = `cannot store the new token: ${(error as Error).message}`;
          ws.close(CloseCode.Normal, "cannot store the new token");
          return;
        }
        // Only to a relay that asked for them, and never with telemetry off.
        const crash = body.crashReports === true && options.telemetry !== false
          ? options.crashReport?.take()
          : undefined;
        if (crash && ws.readyState === WebSocket.OPEN) {
          ws.send(encodeFrame({ t: FrameType.Crash, body: crash }));
          options.crashReport!.sent();
          options.debug("sent the crash report of an earlier run");
        }
        return;
      }
      // One switch for everything the relay sends an authenticated bridge.
      switch (frame.t) {
        case FrameType.Ping:
          ws.send(encodeFrame({ t: FrameType.Pong }));
          return;
        case FrameType.IdeOpen:
          options.debug(`IDE socket ${frame.r} joined`);
          return;
        case FrameType.IdeClose:
          options.debug(`IDE socket ${frame.r} left`);
          if (frame.r !== undefined) {
            gate?.closeRoute(frame.r);
            flows.get(frame.r)?.resume();
            flows.delete(frame.r);
          }
          return;
        case FrameType.Flow: {
          if (frame.r === undefined) return;
          const { paused } = decodeFlow(frame.body);
          let flow = flows.get(frame.r);
          if (!flow) flows.set(frame.r, flow = new FlowGate());
          if (paused) flow.pause();
          else flow.resume();
          return;
        }
        case FrameType.AuthOk:
        case FrameType.BridgeStatus:
          // Not for a bridge, or not now: a relay bug, harmless to skip.
          return;
        default:
          // Every end-to-end type goes to the gate, which refuses the ones an IDE may not send.
          await gate?.handle(frame);
      }
    }).catch((error) => {
      if (!(error instanceof E2eError)) return options.debug(`frame handling failed: ${error}`);
      // Whoever altered, replayed or forged the frame, this connection's keys
      // are no longer trusted: hang up and re-key on the next connection.
      result.e2eFailure = error.message;
      if (ws.readyState === WebSocket.OPEN) ws.close(CloseCode.E2eFailure, "e2e-failure");
    });
  });
  ws.on("error", (error: Error) => {
    if (result.refused) return; // Said better by the relay's answer.
    // npm:ws fails the handshake when the relay picks no subprotocol: a relay
    // from before protocol 4.
    if (/no subprotocol/i.test(error.message)) result.olderRelay = true;
    result.error = _describe(error);
  });
  ws.on("close", (code: number, reason: Uint8Array) => {
    clearInterval(watchdog);
    for (const flow of flows.values()) flow.resume();
    options.signal.removeEventListener("abort", onAbort);
    if (result.refused) {
      result.closeCode = result.refused.code;
      result.closeReason = result.refused.reason;
      if (result.closeCode === undefined) result.error = result.refused.reason;
    } else {
      if (code !== 1006 && code !== 1005) result.closeCode = code;
      result.closeReason = new TextDecoder().decode(reason);
    }
    done.resolve(result);
  });
  return done.promise;
}

/** Largest refusal body the bridge reads (the relay's are small JSON objects). */
const MAX_REFUSAL_BYTES = 8192;

/**
 * What the relay's refusal of the upgrade stands for: 401 a bad credential
 * (as close 4401), 429 too many attempts (4429, its message says when to
 * retry), 426 another protocol (4426), 409 an approved bridge holds the
 * session (4411); any other status is a failure to connect, retried like one.
 */
async function _refusal(response: AsyncIterable<Uint8Array> & { statusCode?: number }): Promise<{
  code?: number;
  reason: string;
}> {
  const status = response.statusCode ?? 0;
  let text = "";
  try {
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of response) {
      size += chunk.byteLength;
      if (size > MAX_REFUSAL_BYTES) break;
      chunks.push(chunk);
    }
    const bytes = new Uint8Array(Math.min(size, MAX_REFUSAL_BYTES));
    let at = 0;
    for (const chunk of chunks) {
      bytes.set(chunk.subarray(0, bytes.byteLength - at), at);
      at += chunk.byteLength;
    }
    const body = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof body?.message === "string") text = body.message;
  } catch {
    // Not the relay's JSON (a proxy's page, say): the status says enough.
  }
  const reason = text.slice(0, 300) || `the relay answered HTTP ${status}`;
  const code = status === 401
    ? CloseCode.AuthFailed
    : status === 429
    ? CloseCode.RateLimited
    : status === 426
    ? CloseCode.UnsupportedVersion
    : status === 409
    ? CloseCode.SessionTaken
    : undefined;
  return { code, reason: code === undefined ? `the relay answered HTTP ${status}: ${reason}` : reason };
}

/**
 * The masking key for frames to the relay: all zeros, which makes npm:ws skip
 * masking (without a native helper its byte-by-byte XOR was a quarter of the
 * bridge's CPU while streaming output; docs/BENCHMARKS.md). Masking (RFC 6455
 * section 10.3) keeps script-chosen bytes from reaching intermediaries that do
 * not speak WebSocket; it is used only where no such intermediary can see the
 * frames (TLS, or a loopback relay, the only plain transport the bridge
 * accepts), and what the bridge sends is mostly AES-GCM ciphertext anyway.
 */
function _zeroMask(mask: Uint8Array): void {
  mask.fill(0);
}

function _describe(error: Error & { code?: string }): string {
  if (error.code === "ECONNREFUSED") return "connection refused (is the relay running?)";
  if (error.code === "ENOTFOUND") return "host not found";
  if (/certificate|self.signed|unable to verify/i.test(error.message)) {
    return `TLS certificate not trusted (${error.message}); for a private CA pass --ca-file`;
  }
  return error.message;
}
