/**
 * The coder1 wire protocol: the one place where the relay, the bridge and the
 * browser agree on frame types, limits, intervals and close codes. Nothing here
 * touches Deno APIs, so the browser bundle imports it unchanged.
 *
 * Protocol flow (the full story, with field tables, is docs/PROTOCOL.md):
 *
 * 1. Session. The IDE calls `POST /api/sessions` and receives an HttpOnly
 *    session cookie. `POST /api/pairing-codes` returns a 6-digit code bound to
 *    that session.
 * 2. IDE socket. The IDE opens `GET /ws/ide` with the cookie, an allowed
 *    Origin and the subprotocol {@linkcode WS_SUBPROTOCOL}. The relay sends
 *    `bridge.status` at once and on every change.
 * 3. Bridge login. The bridge opens `GET /ws/bridge` with the same
 *    subprotocol and its credential in the upgrade request's headers
 *    (`Authorization: Pairing-Code <code>` or `Bearer <session JWT>`;
 *    shared/bridge_credential.ts). The relay checks it before the upgrade and
 *    refuses a bad one with HTTP 401 or 429, so that no unauthenticated peer
 *    gets a socket; on an accepted one its first frame is `auth.ok` (with a
 *    fresh token when a code was redeemed).
 * 4. End-to-end handshake. For every IDE socket and every bridge connection
 *    the IDE sends `e2e.hello`, the bridge `e2e.reply`, the IDE `e2e.confirm`
 *    (X25519 ephemeral keys, Ed25519 identity signatures over the transcript;
 *    shared/e2e_session.ts). The bridge then sends a sealed `e2e.info`. On a
 *    first pairing both sides show a 6-digit short authentication string and
 *    the IDE user approves (`e2e.approve`) or rejects (`e2e.reject`); later
 *    connections are signed by the pinned identity keys and need no approval.
 * 5. Steady state. End-to-end frames flow sealed with AES-256-GCM between the
 *    IDE sockets of a session and its bridge. The relay reads only their
 *    fixed header: it stamps IDE-to-bridge frames with the route `r` of the
 *    IDE socket they came from and routes bridge-to-IDE frames by `r`,
 *    patching those four bytes in place. Every
 *    {@linkcode HEARTBEAT_INTERVAL_MS} the relay sends `ping` and the peer
 *    answers `pong`; a peer silent for {@linkcode HEARTBEAT_TIMEOUT_MS} is
 *    dropped.
 * 6. Close. Every close the relay initiates carries a {@linkcode CloseCode}.
 *
 * Frames are binary WebSocket messages: a header ({@linkcode HEADER_BYTES}
 * fixed bytes plus the command id; layout at {@linkcode HEADER_BYTES}) and a
 * body. For control frames the body is JSON the relay reads or writes; for
 * end-to-end frames it is opaque to the relay: public keys and signatures in
 * the three handshake frames, AES-256-GCM ciphertext in all others (the
 * counter is the header's `s`, the header is associated data).
 *
 * Names: a *route* is the relay's number for one IDE socket; an *e2e
 * session* (`E2eSession`) is the keys agreed over one route; a *stream* is
 * one IDE client's numbered frames, which outlive routes and sessions, and
 * which the bridge knows by a local *handle*.
 *
 * @module
 */

/**
 * Protocol version, carried in every header as `v`.
 *
 * Changelog:
 * - 1: envelopes (header + opaque body), pairing by code, session JWT,
 *   heartbeats, commands with stdin, signals and exit status.
 * - 2: end-to-end encryption between IDE and bridge: `e2e.*` handshake
 *   (X25519, Ed25519 signatures, HKDF), a short authentication string and
 *   approval in the IDE, and every end-to-end body sealed with AES-256-GCM
 *   (counter `s` in the header, header as associated data).
 * - 3: lossless streams: command frames carry a stream sequence number `q`,
 *   `stream.resume` / `stream.ack` / `stream.close` (sealed) resend what the
 *   peer missed after any reconnect, a send window bounds what is unacknowledged,
 *   and the relay's `flow` frame pauses a sender whose receiver is behind.
 *   Telemetry (compatible additions, no version change needed): `auth` may
 *   carry `telemetry: false`, `auth.ok` says `crashReports: true` when the
 *   relay takes `crash` frames (bridge -> relay, scrubbed metadata).
 * - 4: a fixed-width binary header (version, type code, flags, id length,
 *   route, `s`, `q`, id) instead of a JSON one, so the relay forwards an
 *   end-to-end frame by patching four bytes in place; one table of frame types
 *   ({@linkcode FRAME_TABLE}); the channel field is now called the route `r`;
 *   the associated data of a sealed frame is the binary header with the route
 *   zeroed; clients ask for the subprotocol {@linkcode WS_SUBPROTOCOL} and an
 *   older client is closed with 4426; `auth.ok` no longer lists channels.
 *   Terminals (compatible additions, no version change): the `term.*` types
 *   (0x50 to 0x5c: a login shell in a pseudo-terminal on the bridge, its
 *   screen, output, input, size and exit, numbered in the stream) and
 *   `terminals` in `e2e.info`. An IDE sends `term.*` only to a bridge whose
 *   `e2e.info` says `terminals: "available"`; a relay from before them closes
 *   an IDE socket that sends one with 4400.
 *   Keystroke timing (compatible additions, no version change): `term.keys`
 *   (0x57: keystrokes in a padded body, sent at a fixed interval with chaff
 *   while the user types) and `termKeys: true` in `e2e.info`. An IDE sends
 *   `term.keys` only to a bridge that says so; a relay from before it closes
 *   an IDE socket that sends one with 4400.
 *   Force stop (compatible addition, no version change): `term.signal` (0x5d:
 *   a signal for the process group in the foreground of a terminal, e.g.
 *   SIGKILL for a program that ignores Ctrl-C) and `termSignal: true` in
 *   `e2e.info`. An IDE sends `term.signal` only to a bridge that says so; a
 *   relay from before it closes an IDE socket that sends one with 4400.
 */
export const PROTOCOL_VERSION = 4;

/**
 * The WebSocket subprotocol a client of this version asks for
 * (`Sec-WebSocket-Protocol`). The relay closes sockets that did not ask for it
 * with {@linkcode CloseCode.UnsupportedVersion}, saying which side to update.
 */
export const WS_SUBPROTOCOL = `coder1.v${PROTOCOL_VERSION}`;

/**
 * Most unacknowledged stream bytes (command frame bodies plus
 * {@linkcode STREAM_FRAME_OVERHEAD} each) a sender keeps per direction of one
 * stream. When it is full the bridge stops reading its children's output (they
 * block on write) and the IDE holds stdin back, until acknowledgements arrive.
 */
export const STREAM_WINDOW_BYTES = 4 * 1024 * 1024;
/** What one buffered frame counts for besides its body. */
export const STREAM_FRAME_OVERHEAD = 64;
/** A receiver acknowledges after this many bytes ... */
export const ACK_EVERY_BYTES = 512 * 1024;
/** ... or this long after the first unacknowledged frame. */
export const ACK_DELAY_MS = 20;
/**
 * How long the bridge keeps a stream whose IDE is away (socket closed without
 * `stream.close`): its commands keep running, their output is kept up to the
 * window, and an IDE that comes back within this time gets all of it. After
 * it, the commands get SIGHUP and the stream is forgotten.
 */
export const STREAM_LINGER_MS = 10 * 60_000;
/**
 * How long an IDE keeps its commands pending while no bridge is connected;
 * after it they fail with reason `bridge-lost`.
 */
export const BRIDGE_RESUME_TIMEOUT_MS = 2 * 60_000;
/** The relay pauses a sender (`flow`) when its receiver has this much unsent ... */
export const FLOW_HIGH_BYTES = 2 * 1024 * 1024;
/** ... and resumes it when the receiver is down to this. */
export const FLOW_LOW_BYTES = 512 * 1024;

/** Largest WebSocket message either side accepts, header included. */
export const MAX_FRAME_BYTES = 1024 * 1024;
/** Largest header: the fixed part and the longest id. Tokens travel in the bridge's upgrade request, never in frame headers. */
export const MAX_HEADER_BYTES = 24 + 64;
/** Largest body of a relay-read JSON frame (`auth`, `auth.ok`, ...). */
export const MAX_CONTROL_BODY_BYTES = 8 * 1024;
/**
 * Bridges send command output in frames of at most this many plaintext bytes.
 * A child's pipe yields at most 64 KiB per read; when output comes faster
 * than that, the bridge joins what is already waiting into one frame, so bulk
 * output costs fewer frames (docs/BENCHMARKS.md).
 */
export const OUTPUT_CHUNK_BYTES = 256 * 1024;
/** Longest command line in `cmd.start` (UTF-16 code units). */
export const MAX_COMMAND_LENGTH = 64 * 1024;
/** Longest command id (`id` header field). */
export const MAX_ID_LENGTH = 64;

/** How often the relay pings each socket. */
export const HEARTBEAT_INTERVAL_MS = 15_000;
/** A socket that sent nothing for this long is dropped (three missed pings). */
export const HEARTBEAT_TIMEOUT_MS = 45_000;

/** A pairing code lives this long. */
export const CODE_TTL_MS = 5 * 60_000;
/** Number of digits in a pairing code. */
export const CODE_DIGITS = 6;
/** At most this many codes per session per {@linkcode CODE_RATE_WINDOW_MS}. */
export const CODES_PER_SESSION_PER_WINDOW = 5;
/** At most this many codes per client address per window. */
export const CODES_PER_ADDRESS_PER_WINDOW = 20;
/** The sliding window for code issuance limits. */
export const CODE_RATE_WINDOW_MS = 60_000;
/** At most this many redemption attempts (code logins) per address per window. */
export const REDEEM_PER_ADDRESS_PER_WINDOW = 10;
/** At most this many redemption attempts on the whole relay per window. */
export const REDEEM_GLOBAL_PER_WINDOW = 120;
/** The sliding window for redemption limits. */
export const REDEEM_RATE_WINDOW_MS = 60_000;
/** At most this many new browser sessions per address per window. */
export const SESSIONS_PER_ADDRESS_PER_WINDOW = 30;
/** The sliding window for token logins (a bridge's `auth` with a token). */
export const LOGIN_RATE_WINDOW_MS = 60_000;
/** Token logins per credential (bridge id) per window; more are closed with `4429`. */
export const LOGINS_PER_CREDENTIAL_PER_WINDOW = 20;
/** Token logins per client address per window; more are closed with `4429`. */
export const LOGINS_PER_ADDRESS_PER_WINDOW = 60;

/** Lifetime of a bridge session JWT; each rotation issues one with a full lifetime (a sliding expiry). */
export const BRIDGE_TOKEN_TTL_MS = 30 * 24 * 60 * 60_000;
/** Lifetime of a browser session (cookie and its signed value). */
export const BROWSER_SESSION_TTL_MS = 7 * 24 * 60 * 60_000;
/** Name of the browser session cookie over plain HTTP (loopback development). */
export const SESSION_COOKIE = "coder1_session";
/**
 * Name of the browser session cookie over HTTPS: the `__Host-` prefix makes
 * browsers refuse it unless set by this very host, `Secure`, `Path=/` and
 * without `Domain`, so a sibling subdomain cannot plant one.
 */
export const SECURE_SESSION_COOKIE = `__Host-${SESSION_COOKIE}`;

/**
 * A receiver whose send buffer at the relay has not shrunk for this long is
 * closed with {@linkcode CloseCode.SlowConsumer}.
 */
export const RECEIVER_STUCK_MS = 60_000;

/** A sender whose receiver has this much waiting at the relay, despite `flow` pauses, is closed (4509). */
export const MAX_BUFFERED_BYTES = 8 * 1024 * 1024;

/** Longest command timeout (the largest delay timers take: about 24.8 days). */
export const MAX_COMMAND_TIMEOUT_MS = 2 ** 31 - 1;

/** How long a newly paired bridge waits for the IDE user to approve it. */
export const APPROVAL_TIMEOUT_MS = 5 * 60_000;
/**
 * Handshakes that may ask for approval in one bridge run. A first pairing
 * needs one (a few if the IDE reconnects meanwhile); a relay trying again and
 * again for equal SAS values on both sides needs about a million. The bridge
 * stops pairing (exit 1) at the next one.
 */
export const MAX_APPROVAL_ATTEMPTS = 5;
/**
 * `e2e.hello` frames a bridge answers in one run before any IDE is approved.
 * Each answer lets its sender compute one SAS the bridge would show, so this
 * caps how many guesses a relay hunting for digits equal to the IDE's gets
 * (each hits with probability 10^-6). Every IDE tab and every reconnect during
 * pairing uses one; the bridge stops pairing (exit 1) at the next one.
 */
export const MAX_UNPINNED_HELLOS = 10;

/**
 * The wait before a handshake that follows one abandoned before the bridge
 * proved itself (its signature arrived); it doubles with each further one.
 * A relay restarting handshakes to search for equal SAS values on both sides
 * gets a handful of tries, not a million (docs/E2E.md).
 */
export const HANDSHAKE_BACKOFF_BASE_MS = 500;
/** The longest wait before a handshake, however many were abandoned. */
export const HANDSHAKE_BACKOFF_MAX_MS = 60_000;

/** Default cap on concurrent commands per bridge. */
export const DEFAULT_MAX_COMMANDS = 8;

/** Bridge reconnect backoff: first delay. */
export const RECONNECT_BASE_MS = 500;
/** Bridge reconnect backoff: largest delay (before jitter). */
export const RECONNECT_MAX_MS = 30_000;
/** How long the bridge's WebSocket opening handshake (TCP, TLS and the upgrade) may take. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * Above this many bytes not yet written to its relay socket, the bridge waits
 * for the socket to drain before it sends more (so its commands wait too).
 */
export const SEND_HIGH_WATER = 1024 * 1024;
/**
 * When the bridge stops, how long it waits for the IDE to acknowledge what its
 * streams hold (the exit reports of the commands it stopped) before it hangs up.
 */
export const STOP_FLUSH_MS = 1_000;

/**
 * Several relay instances (docs/OPERATIONS.md, "Running several relays"): a
 * browser session's home instance holds its lease this long unless renewed.
 */
export const LEASE_TTL_MS = 15_000;
/** The home renews the lease of each session it has a room for this often (and bridge presence, kept 3 times as long). */
export const LEASE_RENEW_MS = 5_000;
/** An instance whose mesh link does not answer within this long is taken for dead: its sessions' leases are taken over. */
export const MESH_CONNECT_TIMEOUT_MS = 2_000;
/** A mesh link's `Coder1-Mesh-Auth` time may differ from the receiver's clock by at most this much. */
export const MESH_AUTH_WINDOW_MS = 30_000;
/** A mesh link's nonce is remembered this long: the same header is refused a second time (replay). */
export const MESH_NONCE_TTL_MS = 60_000;
/** Shortest mesh key (`--mesh-key-file`), in bytes. */
export const MIN_MESH_KEY_BYTES = 32;

/** Default relay port. */
export const DEFAULT_PORT = 8787;
/** Default relay URL for bridges that know no other. */
export const DEFAULT_RELAY_URL = `http://127.0.0.1:${DEFAULT_PORT}`;

/**
 * WebSocket close codes the relay (and the bridge) use. Each name says why;
 * docs/PROTOCOL.md has the table with what the peer should do.
 */
export const CloseCode = {
  /** Normal close. */
  Normal: 1000,
  /** The relay is shutting down; reconnect later. */
  GoingAway: 1001,
  /** No frame (not even `pong`) for {@linkcode HEARTBEAT_TIMEOUT_MS}. */
  HeartbeatTimeout: 4000,
  /** Malformed frame: not binary, bad header, bad body, unknown or misdirected type, frame before auth. */
  BadFrame: 4400,
  /**
   * Pairing code wrong, expired or used; token invalid, expired or revoked.
   * Relays of this version answer the bridge's upgrade with HTTP 401 instead.
   */
  AuthFailed: 4401,
  /**
   * No `auth` frame in time. Relays of this version no longer send it: no
   * bridge socket exists before its credential was checked.
   */
  AuthTimeout: 4408,
  /** Another connection of the same bridge took over. */
  Replaced: 4409,
  /** The bridge's token was revoked while it was connected. */
  Revoked: 4410,
  /**
   * An approved bridge of this browser session is connected, and this one (another
   * credential, not approved by the user) may not take its place.
   */
  SessionTaken: 4411,
  /**
   * Several relay instances: this socket's session moved to another instance
   * (this one lost the session's lease, say after a pause past
   * {@linkcode LEASE_TTL_MS}, and another took it over). Reconnect: the
   * balancer sends the client where the session lives now.
   */
  SessionMoved: 4412,
  /** Frame larger than {@linkcode MAX_FRAME_BYTES}. */
  TooBig: 4413,
  /**
   * End-to-end failure, sent by the IDE or the bridge on its own socket: a
   * sealed frame that does not open or is out of order, a bad handshake
   * signature, or an end-to-end frame where none may be. The peer re-keys on
   * reconnect.
   */
  E2eFailure: 4420,
  /**
   * The peer speaks another protocol version (it did not ask for
   * {@linkcode WS_SUBPROTOCOL}, or sent a frame of another version); the
   * reason says which side to update.
   */
  UnsupportedVersion: 4426,
  /**
   * Too many redemption attempts; the reason says when to retry. Relays of
   * this version answer the bridge's upgrade with HTTP 429 instead.
   */
  RateLimited: 4429,
  /**
   * The receiver read nothing for too long: its send buffer at the relay did
   * not shrink for the stuck-receiver limit (60 s). Reconnect; streams resume.
   */
  SlowConsumer: 4508,
  /**
   * The sender kept sending after `flow {paused: true}` until its receiver had
   * {@linkcode MAX_BUFFERED_BYTES} waiting (honest peers stop within their
   * stream window).
   */
  IgnoredPause: 4509,
} as const;
/** One of the {@linkcode CloseCode} values. */
export type CloseCodeValue = typeof CloseCode[keyof typeof CloseCode];

/** Who sends a frame. */
export type Role = "ide" | "bridge" | "relay";

/**
 * What one frame type is: its wire code, who may send it, whether the relay
 * reads it, and how its body travels. {@linkcode FRAME_TABLE} holds one per
 * type; every set of types the code uses is derived from it.
 */
export interface FrameSpec {
  /** The type's byte in the header (1-255; 0 is never a type). */
  readonly code: number;
  /** Roles that may send it. */
  readonly from: readonly Role[];
  /**
   * `control`: between a peer and the relay; the relay reads (or writes) the
   * JSON body. `e2e`: between the IDE and the bridge; the relay forwards it
   * untouched and cannot read the body.
   */
  readonly kind: "control" | "e2e";
  /** End to end only: the body is AES-256-GCM ciphertext (false for the three handshake frames). */
  readonly sealed: boolean;
  /** Numbered with `q` in a lossless stream (kept until acknowledged, resent after reconnects). */
  readonly stream: boolean;
  /** The (plaintext) body: a JSON object, raw bytes, or nothing. */
  readonly body: "json" | "bytes" | "empty";
}

/**
 * Every frame type, by name. The name is what logs, metrics and docs use; the
 * `code` is what travels. New types take new codes; a code is never reused.
 */
export const FRAME_TABLE = {
  // Peer <-> relay (the relay reads the JSON body).
  /** Bridge -> relay, first frame of a connection: {@linkcode AuthBody}. */
  "auth": { code: 0x01, from: ["bridge"], kind: "control", sealed: false, stream: false, body: "json" },
  /** Relay -> bridge: {@linkcode AuthOkBody}. */
  "auth.ok": { code: 0x02, from: ["relay"], kind: "control", sealed: false, stream: false, body: "json" },
  /** Relay -> peer: answer with `pong`. */
  "ping": { code: 0x03, from: ["relay"], kind: "control", sealed: false, stream: false, body: "empty" },
  /** Peer -> relay. */
  "pong": { code: 0x04, from: ["ide", "bridge"], kind: "control", sealed: false, stream: false, body: "empty" },
  /** Relay -> IDE: {@linkcode BridgeStatusBody}, at once and on every change. */
  "bridge.status": { code: 0x05, from: ["relay"], kind: "control", sealed: false, stream: false, body: "json" },
  /** Relay -> bridge: the IDE socket with route `r` joined. */
  "ide.open": { code: 0x06, from: ["relay"], kind: "control", sealed: false, stream: false, body: "empty" },
  /** Relay -> bridge: the IDE socket with route `r` left (its stream lingers on the bridge). */
  "ide.close": { code: 0x07, from: ["relay"], kind: "control", sealed: false, stream: false, body: "empty" },
  /**
   * Relay -> peer: {@linkcode FlowBody}: stop (or start again) sending end-to-end
   * frames, for route `r` (to a bridge) or for the whole socket (to an IDE).
   */
  "flow": { code: 0x08, from: ["relay"], kind: "control", sealed: false, stream: false, body: "json" },
  /** Bridge -> relay: {@linkcode CrashBody}; only when `auth.ok` said `crashReports: true`. */
  "crash": { code: 0x09, from: ["bridge"], kind: "control", sealed: false, stream: false, body: "json" },

  // End to end, handshake (the relay forwards; bodies hold public values only).
  /** IDE -> bridge: start a key exchange; body `HelloBody` (shared/e2e_session.ts). */
  "e2e.hello": { code: 0x20, from: ["ide"], kind: "e2e", sealed: false, stream: false, body: "json" },
  /** Bridge -> IDE: signed answer; body `ReplyBody`. */
  "e2e.reply": { code: 0x21, from: ["bridge"], kind: "e2e", sealed: false, stream: false, body: "json" },
  /** IDE -> bridge: the IDE's keys and signature; body `ConfirmBody`. */
  "e2e.confirm": { code: 0x22, from: ["ide"], kind: "e2e", sealed: false, stream: false, body: "json" },
  // End to end, sealed (AES-256-GCM; the relay sees only the header).
  /** Bridge -> IDE: {@linkcode E2eInfoBody}. */
  "e2e.info": { code: 0x23, from: ["bridge"], kind: "e2e", sealed: true, stream: false, body: "json" },
  /** IDE -> bridge: the user approved this bridge (it pins the IDE's key). */
  "e2e.approve": { code: 0x24, from: ["ide"], kind: "e2e", sealed: true, stream: false, body: "empty" },
  /** IDE -> bridge: the user rejected this bridge. */
  "e2e.reject": { code: 0x25, from: ["ide"], kind: "e2e", sealed: true, stream: false, body: "empty" },

  // End to end, stream control (sealed).
  /** Both ways, {@linkcode StreamResumeBody}: IDE first, then the bridge's answer; then both resend. */
  "stream.resume": { code: 0x30, from: ["ide", "bridge"], kind: "e2e", sealed: true, stream: false, body: "json" },
  /** Both ways, {@linkcode StreamAckBody}: cumulative acknowledgement. */
  "stream.ack": { code: 0x31, from: ["ide", "bridge"], kind: "e2e", sealed: true, stream: false, body: "json" },
  /** IDE -> bridge: the IDE is done with this stream (hang up its commands now). */
  "stream.close": { code: 0x32, from: ["ide"], kind: "e2e", sealed: true, stream: false, body: "empty" },

  // End to end, commands (sealed, numbered in the stream).
  /** IDE -> bridge: start command `id`; {@linkcode CmdStartBody}. */
  "cmd.start": { code: 0x40, from: ["ide"], kind: "e2e", sealed: true, stream: true, body: "json" },
  /** IDE -> bridge: raw bytes for command `id`'s stdin. */
  "cmd.stdin": { code: 0x41, from: ["ide"], kind: "e2e", sealed: true, stream: true, body: "bytes" },
  /** IDE -> bridge: close command `id`'s stdin. */
  "cmd.eof": { code: 0x42, from: ["ide"], kind: "e2e", sealed: true, stream: true, body: "empty" },
  /** IDE -> bridge: send a signal to command `id`; {@linkcode CmdSignalBody}. */
  "cmd.signal": { code: 0x43, from: ["ide"], kind: "e2e", sealed: true, stream: true, body: "json" },
  /** Bridge -> IDE: raw stdout bytes of command `id`. */
  "cmd.stdout": { code: 0x44, from: ["bridge"], kind: "e2e", sealed: true, stream: true, body: "bytes" },
  /** Bridge -> IDE: raw stderr bytes of command `id`. */
  "cmd.stderr": { code: 0x45, from: ["bridge"], kind: "e2e", sealed: true, stream: true, body: "bytes" },
  /** Bridge -> IDE: command `id` ended; {@linkcode CmdExitBody}. */
  "cmd.exit": { code: 0x46, from: ["bridge"], kind: "e2e", sealed: true, stream: true, body: "json" },
  /** Bridge -> IDE: command `id` could not run; {@linkcode CmdErrorBody}. */
  "cmd.error": { code: 0x47, from: ["bridge"], kind: "e2e", sealed: true, stream: true, body: "json" },

  // End to end, terminals (sealed, numbered in the stream; the header id is the terminal id).
  /** IDE -> bridge: start terminal `id` (the user's login shell in a new pseudo-terminal); {@linkcode TermSizeBody}. */
  "term.open": { code: 0x50, from: ["ide"], kind: "e2e", sealed: true, stream: true, body: "json" },
  /** IDE -> bridge: send terminal `id` to this stream, sized for the page; {@linkcode TermSizeBody}. */
  "term.attach": { code: 0x51, from: ["ide"], kind: "e2e", sealed: true, stream: true, body: "json" },
  /** IDE -> bridge: raw bytes typed or pasted into terminal `id` (pastes, and all input when not paced). */
  "term.input": { code: 0x52, from: ["ide"], kind: "e2e", sealed: true, stream: true, body: "bytes" },
  /** IDE -> bridge: new size of terminal `id`; {@linkcode TermSizeBody}. */
  "term.resize": { code: 0x53, from: ["ide"], kind: "e2e", sealed: true, stream: true, body: "json" },
  /** IDE -> bridge: stop sending terminal `id` to this stream (it keeps running). */
  "term.detach": { code: 0x54, from: ["ide"], kind: "e2e", sealed: true, stream: true, body: "empty" },
  /** IDE -> bridge: hang terminal `id` up (SIGHUP to its session). */
  "term.close": { code: 0x55, from: ["ide"], kind: "e2e", sealed: true, stream: true, body: "empty" },
  /**
   * IDE -> bridge: which terminals are there (body `{}`, id: a request id);
   * bridge -> IDE: the answer, with the same id; {@linkcode TermListBody}.
   */
  "term.list": { code: 0x56, from: ["ide", "bridge"], kind: "e2e", sealed: true, stream: true, body: "json" },
  /**
   * IDE -> bridge: keystrokes for terminal `id`, paced while the user types
   * (one frame every {@linkcode KEYSTROKE_INTERVAL_MS}), in a padded body of
   * {@linkcode TERMINAL_KEYS_BODY_BYTES}: a u16 length, the bytes, zeros. A
   * length of 0 is chaff: the bridge ignores it. Only to a bridge whose
   * `e2e.info` says `termKeys: true`.
   */
  "term.keys": { code: 0x57, from: ["ide"], kind: "e2e", sealed: true, stream: true, body: "bytes" },
  /** Bridge -> IDE: terminal `id`'s screen and scrollback, to repaint from; {@linkcode TermSnapshotBody}. */
  "term.snapshot": { code: 0x58, from: ["bridge"], kind: "e2e", sealed: true, stream: true, body: "json" },
  /** Bridge -> IDE: raw bytes terminal `id` wrote (after its snapshot). */
  "term.output": { code: 0x59, from: ["bridge"], kind: "e2e", sealed: true, stream: true, body: "bytes" },
  /** Bridge -> IDE: terminal `id`'s title changed (OSC 0 or 2); {@linkcode TermTitleBody}. */
  "term.title": { code: 0x5a, from: ["bridge"], kind: "e2e", sealed: true, stream: true, body: "json" },
  /** Bridge -> IDE: terminal `id`'s shell ended; {@linkcode TermExitBody}. */
  "term.exit": { code: 0x5b, from: ["bridge"], kind: "e2e", sealed: true, stream: true, body: "json" },
  /** Bridge -> IDE: a `term.*` request for `id` failed; {@linkcode TermErrorBody}. */
  "term.error": { code: 0x5c, from: ["bridge"], kind: "e2e", sealed: true, stream: true, body: "json" },
  /**
   * IDE -> bridge: send a signal to the process group in the foreground of
   * terminal `id` (not to its shell; nothing when the shell itself is in the
   * foreground); {@linkcode TermSignalBody}. No answer. Only to a bridge whose
   * `e2e.info` says `termSignal: true`.
   */
  "term.signal": { code: 0x5d, from: ["ide"], kind: "e2e", sealed: true, stream: true, body: "json" },
} as const satisfies Record<string, FrameSpec>;

/** The name of a frame type: a key of {@linkcode FRAME_TABLE}. */
export type FrameTypeName = keyof typeof FRAME_TABLE;

/** Frame type names under code-friendly keys (each value is checked against the table). */
export const FrameType = {
  Auth: "auth",
  AuthOk: "auth.ok",
  Ping: "ping",
  Pong: "pong",
  BridgeStatus: "bridge.status",
  IdeOpen: "ide.open",
  IdeClose: "ide.close",
  Flow: "flow",
  Crash: "crash",
  E2eHello: "e2e.hello",
  E2eReply: "e2e.reply",
  E2eConfirm: "e2e.confirm",
  E2eInfo: "e2e.info",
  E2eApprove: "e2e.approve",
  E2eReject: "e2e.reject",
  StreamResume: "stream.resume",
  StreamAck: "stream.ack",
  StreamClose: "stream.close",
  CmdStart: "cmd.start",
  CmdStdin: "cmd.stdin",
  CmdEof: "cmd.eof",
  CmdSignal: "cmd.signal",
  CmdStdout: "cmd.stdout",
  CmdStderr: "cmd.stderr",
  CmdExit: "cmd.exit",
  CmdError: "cmd.error",
  TermOpen: "term.open",
  TermAttach: "term.attach",
  TermInput: "term.input",
  TermResize: "term.resize",
  TermDetach: "term.detach",
  TermClose: "term.close",
  TermList: "term.list",
  TermKeys: "term.keys",
  TermSnapshot: "term.snapshot",
  TermOutput: "term.output",
  TermTitle: "term.title",
  TermExit: "term.exit",
  TermError: "term.error",
  TermSignal: "term.signal",
} as const satisfies Record<string, FrameTypeName>;

const _names = Object.keys(FRAME_TABLE) as FrameTypeName[];
const _where = (test: (spec: FrameSpec) => boolean): ReadonlySet<FrameTypeName> =>
  new Set(_names.filter((name) => test(FRAME_TABLE[name])));

/** Frame type names by wire code (undefined for codes no type has). */
export const FRAME_NAME_BY_CODE: readonly (FrameTypeName | undefined)[] = (() => {
  const byCode: (FrameTypeName | undefined)[] = new Array(256).fill(undefined);
  for (const name of _names) byCode[FRAME_TABLE[name].code] = name;
  return byCode;
})();

/** Types an IDE socket may send to the relay. */
export const IDE_SENDS: ReadonlySet<FrameTypeName> = _where((f) => f.from.includes("ide"));
/** Types a bridge socket may send (`auth` only as its first frame). */
export const BRIDGE_SENDS: ReadonlySet<FrameTypeName> = _where((f) => f.from.includes("bridge"));
/** Types only the relay sends. */
export const RELAY_SENDS: ReadonlySet<FrameTypeName> = _where((f) => f.from.includes("relay"));
/** End-to-end types: the relay forwards them without reading the body. */
export const END_TO_END: ReadonlySet<FrameTypeName> = _where((f) => f.kind === "e2e");
/** Handshake types: end to end, with cleartext bodies of public keys and signatures. */
export const HANDSHAKE: ReadonlySet<FrameTypeName> = _where((f) => f.kind === "e2e" && !f.sealed);
/** Types that travel in a stream (numbered with `q`, resent after reconnects). */
export const STREAM_TYPES: ReadonlySet<FrameTypeName> = _where((f) => f.stream);
/** Sealed types the IDE may receive (the bridge sends them). */
export const SEALED_TO_IDE: ReadonlySet<FrameTypeName> = _where((f) => f.sealed && f.from.includes("bridge"));
/** Terminal types (`term.*`): the bridge's terminal manager and the IDE's terminals take them. */
export const TERMINAL_TYPES: ReadonlySet<FrameTypeName> = new Set(_names.filter((name) => name.startsWith("term.")));

/**
 * Frame header layout (protocol 4): a fixed-width binary prefix, then the
 * command id, then the body. All integers are big-endian.
 *
 *     offset size field
 *          0    1 version ({@linkcode PROTOCOL_VERSION})
 *          1    1 type code ({@linkcode FRAME_TABLE})
 *          2    1 flags: bit 0 `s` present, bit 1 `q` present; others 0
 *          3    1 id length L (0 = no id; at most {@linkcode MAX_ID_LENGTH})
 *          4    4 route `r` (the relay's number for an IDE socket; 0 = none)
 *          8    8 `s`: the AES-GCM counter of a sealed frame (0 when absent)
 *         16    8 `q`: the stream sequence number (0 when absent)
 *         24    L id (ASCII letters, digits, `-`, `_`)
 *     24 + L    - body (to the end of the WebSocket message)
 *
 * The relay routes by bytes 0-7 alone and re-stamps the route in place. For a
 * sealed frame the associated data is the whole header (24 + L bytes) with the
 * route zeroed: the relay may change the route and nothing else.
 */
export const HEADER_BYTES = 24;
/** Header offset of the route field (u32). */
export const ROUTE_OFFSET = 4;
/** Header flag: the `s` field is present. */
export const FLAG_SEQ = 0x01;
/** Header flag: the `q` field is present. */
export const FLAG_STREAM_SEQ = 0x02;

/** The cleartext header of every frame, decoded. */
export interface FrameHeader {
  /** Protocol version ({@linkcode PROTOCOL_VERSION}). */
  v: number;
  /** Frame type. */
  t: FrameTypeName;
  /**
   * Route: the relay's number for one IDE socket. The relay stamps it on
   * frames from an IDE socket and routes bridge frames by it; the bridge uses
   * it to tell its IDE sockets apart.
   */
  r?: number;
  /** Command id, chosen by the IDE (letters, digits, `-`, `_`). */
  id?: string;
  /** The AES-GCM counter of a sealed end-to-end frame, per direction and connection. */
  s?: number;
  /**
   * Stream sequence number of a stream frame (`cmd.*`): 1, 2, 3 ... per
   * direction of one IDE stream, kept across connections, so a frame resent
   * after a reconnect keeps its number and duplicates are dropped.
   */
  q?: number;
}

/** A decoded frame: its header fields, the header's bytes and its body bytes. */
export interface Frame extends FrameHeader {
  /** The header as received (a view; the associated data of a sealed frame, route zeroed). */
  header: Uint8Array;
  /** The body: JSON for control frames, opaque bytes for end-to-end frames (a view). */
  body: Uint8Array;
}

/**
 * A bridge's credential: exactly one of `code` and `token`. It was the body
 * of the `auth` frame; it now travels in the headers of the bridge's upgrade
 * request (shared/bridge_credential.ts), and an `auth` frame is refused.
 */
export interface AuthBody {
  /** A 6-digit pairing code (first pairing). */
  code?: string;
  /** A session JWT from an earlier `auth.ok` (every later connection). */
  token?: string;
  /**
   * The bridge's version: the one thing about the bridge the relay learns
   * (name and OS travel sealed, in `e2e.info`). Version 1 bridges also sent
   * `name` and `os`; the relay ignores them.
   */
  version: string;
  /**
   * `false` when the bridge runs with `CODER1_TELEMETRY=false`: the relay then
   * stores no telemetry about this connection and takes no crash reports.
   * Absent (older bridges) means true.
   */
  telemetry?: boolean;
  /**
   * `true` from bridges that store rotated tokens: every token login is then
   * answered with a new token in `auth.ok`, and the one presented is retired
   * (SECURITY.md, "Bridge credentials"). Once a credential has rotated, a login
   * without `rotate` is refused. Absent (older bridges): no rotation.
   */
  rotate?: boolean;
}

/** Body of `auth.ok`. */
export interface AuthOkBody {
  /** The bridge id (the token's `sub`). */
  bridgeId: string;
  /**
   * A new session JWT: after a pairing code, and after a token login with
   * `rotate: true` (the token presented is then retired). The bridge stores it
   * before anything else and presents it next time.
   */
  token?: string;
  /** When the token expires (ms since the epoch). */
  expiresAt: number;
  /**
   * True when the relay stores telemetry and this bridge did not opt out:
   * the bridge may then send `crash` frames. Absent otherwise (and from relays
   * that do not know `crash`, which would close the socket with 4400).
   */
  crashReports?: boolean;
  /**
   * The session's routing key (several relay instances behind a load
   * balancer): the bridge stores it with its token and adds `?r=<key>` to
   * `/ws/bridge` so that it lands on the instance of its IDE. Absent from
   * relays that do not send it; docs/OPERATIONS.md, "Running several relays".
   */
  routingKey?: string;
}

/** At most this many `crash` frames per bridge connection are kept; more are ignored. */
export const MAX_CRASH_REPORTS_PER_CONNECTION = 3;

/**
 * Body of `crash` (bridge -> relay, JSON, at most
 * {@linkcode MAX_CONTROL_BODY_BYTES}): an uncaught error of an earlier bridge
 * run. Scrubbed of home directories, paths, quoted strings, tokens and long
 * numbers by the bridge before sending and by the relay again before storing
 * (shared/scrub.ts).
 */
export interface CrashBody {
  /** The error's class name, e.g. `TypeError`. */
  errorClass: string;
  /** The scrubbed message. */
  message: string;
  /** The scrubbed stack. */
  stack?: string;
  /** The coder1 version that crashed. */
  version: string;
  /** `Deno.build.os` of the bridge. */
  os: string;
}

/** Body of `bridge.status`. */
export interface BridgeStatusBody {
  /** Whether a bridge is connected to this session now. */
  state: "connected" | "disconnected";
  /** The connected (or last) bridge's id (the pairing id of the handshake). */
  bridgeId?: string;
  /** Its version (name and OS come sealed, in `e2e.info`). */
  version?: string;
  /** This IDE socket's route (the relay's number for it). */
  route: number;
}

/** Plaintext of `e2e.info`: who the bridge is, and whether it needs approval. */
export interface E2eInfoBody {
  /** Bridge display name. */
  name: string;
  /** Bridge OS. */
  os: string;
  /** Bridge version. */
  version: string;
  /**
   * `needed`: the bridge has pinned no IDE key yet (first pairing): show the SAS
   * and ask. `pinned`: the bridge already trusts this IDE's key. `refused`: the
   * bridge trusts another IDE key and will take nothing from this one (the
   * other fields are then empty).
   */
  approval: "needed" | "pinned" | "refused";
  /**
   * The bridge's Ed25519 signature over the handshake transcript (base64url).
   * The IDE checks it before it trusts anything else in the session.
   */
  signature: string;
  /**
   * Whether the bridge runs terminals (`term.*`). Absent from bridges that
   * predate terminals: an IDE must then send no `term.*` frame (the bridge
   * would skip it, and the gap in `s` would end the session).
   */
  terminals?: TerminalSupport;
  /**
   * True when the bridge takes `term.keys` (paced, padded keystrokes and
   * chaff). Absent from bridges that predate it: an IDE then sends all input
   * as `term.input`, unpaced.
   */
  termKeys?: true;
  /**
   * True when the bridge takes `term.signal` (Force stop in a terminal).
   * Absent from bridges that predate it: an IDE then sends none.
   */
  termSignal?: true;
}

/**
 * Whether a bridge runs terminals: `available`; `disabled` (the user started
 * it with `--no-terminal`); `unsupported-os` (no pseudo-terminals here, e.g.
 * Windows, or this build has none). The last two are also `term.error` reasons.
 */
export type TerminalSupport = "available" | "disabled" | "unsupported-os";

/** Body of `flow` (relay -> peer, JSON). */
export interface FlowBody {
  /** True: hold end-to-end frames back; false: send again. */
  paused: boolean;
}

/** Plaintext of `stream.resume`. */
export interface StreamResumeBody {
  /** The IDE's stream id (random, base64url, chosen by the IDE once per client). */
  stream: string;
  /** How many command frames of this stream the sender has received (the highest `q`). */
  received: number;
  /** Bridge only: false when it has no state for this stream (it restarted, or the stream expired). */
  known?: boolean;
}

/** Plaintext of `stream.ack`. */
export interface StreamAckBody {
  /** The highest `q` received so far (cumulative). */
  received: number;
}

/** Body of `cmd.start`. */
export interface CmdStartBody {
  /** The command line, run with the user's shell (`$SHELL -c`). */
  command: string;
  /** Working directory, relative to (and inside) the bridge's root. */
  cwd?: string;
  /** Kill the command (SIGTERM, then SIGKILL) after this many milliseconds. */
  timeoutMs?: number;
}

/** Signals the IDE may send to a command. */
export const SIGNALS = ["SIGINT", "SIGTERM", "SIGKILL", "SIGHUP", "SIGQUIT"] as const;
/** One of {@linkcode SIGNALS}. */
export type CommandSignal = typeof SIGNALS[number];

/** Body of `term.signal`. */
export interface TermSignalBody {
  /** The signal to deliver to the terminal's foreground process group. */
  signal: CommandSignal;
}

/** Body of `cmd.signal`. */
export interface CmdSignalBody {
  /** The signal to deliver to the command's process group. */
  signal: CommandSignal;
}

/** Body of `cmd.exit`. */
export interface CmdExitBody {
  /** Exit code, or null when a signal ended the command. */
  code: number | null;
  /** The signal that ended the command, if any. */
  signal: string | null;
  /** Wall time from spawn to exit. */
  durationMs: number;
  /** True when the bridge killed it for exceeding its timeout. */
  timedOut?: boolean;
}

/** At most this many terminals run on one bridge at once; `term.open` past it gets `term.error` `limit`. */
export const MAX_TERMINALS = 16;
/**
 * A terminal no stream is attached to is hung up (SIGHUP) this long after the
 * last one detached (`coder1 bridge start --terminal-linger`). A stream whose
 * IDE is away stays attached until the bridge forgets it
 * ({@linkcode STREAM_LINGER_MS}).
 */
export const TERMINAL_LINGER_MS = 24 * 60 * 60_000;
/** Lines of scrollback the bridge keeps per terminal, above the screen. */
export const TERMINAL_SCROLLBACK_LINES = 5000;
/**
 * Largest `term.snapshot` body (its JSON). A snapshot holds the screen and as
 * much of the scrollback as fits; a screen that alone does not fit is sent as
 * plain text (`truncated: true`).
 */
export const TERMINAL_SNAPSHOT_MAX_BYTES = 768 * 1024;
/** Widest terminal (`cols` in `term.open`, `term.attach`, `term.resize`); the narrowest is 2. */
export const MAX_TERMINAL_COLS = 500;
/** Tallest terminal (`rows`); the shortest is 1. */
export const MAX_TERMINAL_ROWS = 200;
/** Longest terminal title the bridge reports (UTF-16 code units; longer ones are cut). */
export const MAX_TERMINAL_TITLE_LENGTH = 256;

/**
 * Every `term.keys` plaintext body is this long: a u16 length (big-endian),
 * that many bytes of input, zeros to the end. So a frame with one keystroke,
 * one with several and one with none (chaff) look alike to the relay. Input
 * that does not fit (more than this less 2 bytes waiting for one interval) is
 * not typing: it goes out at once as `term.input` (docs/PROTOCOL.md,
 * "Keystroke timing").
 */
export const TERMINAL_KEYS_BODY_BYTES = 128;
/**
 * While the user types into a terminal, its input leaves once per interval
 * (a keystroke waits for the next one), with chaff when nothing was typed:
 * OpenSSH's default for ObscureKeystrokeTiming.
 */
export const KEYSTROKE_INTERVAL_MS = 20;
/**
 * After each keystroke the chaff goes on for at least this long ...
 * (OpenSSH's SSH_KEYSTROKE_CHAFF_MIN_MS), so the end of the chaff does not
 * say when the last key was typed ...
 */
export const KEYSTROKE_CHAFF_MIN_MS = 1024;
/** ... plus a random time below this (OpenSSH's SSH_KEYSTROKE_CHAFF_RNG_MS): 1 to 3 s after the last keystroke. */
export const KEYSTROKE_CHAFF_RANDOM_MS = 2048;

/** Body of `term.open`, `term.attach` and `term.resize`: a size in character cells. */
export interface TermSizeBody {
  /** Columns, 2 to {@linkcode MAX_TERMINAL_COLS}. */
  cols: number;
  /** Rows, 1 to {@linkcode MAX_TERMINAL_ROWS}. */
  rows: number;
}

/**
 * Body of `term.snapshot`: what the bridge's copy of the terminal shows, as
 * escape sequences that repaint it (scrollback, screen, the alternate screen
 * of a full-screen program, cursor and modes). The IDE resets its terminal
 * to `cols` x `rows`, writes `data`, and applies `term.output` from there.
 */
export interface TermSnapshotBody {
  /** The terminal's size when the snapshot was taken. */
  cols: number;
  /** The terminal's size when the snapshot was taken. */
  rows: number;
  /** The title (OSC 0 or 2), or "". */
  title: string;
  /** The repaint: escape sequences and text, at most {@linkcode TERMINAL_SNAPSHOT_MAX_BYTES} as JSON. */
  data: string;
  /** Present when even the screen did not fit and `data` is its plain text. */
  truncated?: true;
}

/** Body of `term.title`. */
export interface TermTitleBody {
  /** The new title, at most {@linkcode MAX_TERMINAL_TITLE_LENGTH} characters. */
  title: string;
}

/** Body of `term.exit`: how the terminal's shell ended. */
export interface TermExitBody {
  /** Exit code, or null when a signal ended it. */
  code: number | null;
  /** The signal that ended it (`SIGHUP` after `term.close`), or null. */
  signal: string | null;
}

/** Why a `term.*` request failed (`term.error` `reason`). */
export type TerminalErrorReason =
  | "limit"
  | "unknown-terminal"
  | "disabled"
  | "unsupported-os"
  | "spawn-failed"
  | "bad-request";

/** Body of `term.error`. */
export interface TermErrorBody {
  /** A {@linkcode TerminalErrorReason} (IDEs must accept others: newer bridges may add some). */
  reason: string;
  /** A human-readable message. */
  message: string;
}

/** One terminal in a `term.list` answer. */
export interface TerminalInfo {
  /** The terminal id (the IDE chose it with `term.open`). */
  id: string;
  /** Its title, or "". */
  title: string;
  /** False once its shell has ended (the bridge keeps it while a stream is attached). */
  alive: boolean;
  /** Its size now. */
  cols: number;
  /** Its size now. */
  rows: number;
  /** When it was opened (ms since the epoch, the bridge's clock). */
  created: number;
  /** How many streams (IDE clients) are attached to it. */
  attached: number;
}

/** Body of the bridge's `term.list` answer. */
export interface TermListBody {
  /** Every terminal the bridge keeps, oldest first. */
  terminals: TerminalInfo[];
}

/** Body of `cmd.error`: why a command did not run (or was cut short). */
export interface CmdErrorBody {
  /** A stable reason: `busy`, `bad-cwd`, `spawn-failed`, `duplicate-id`, `bad-request`. */
  reason: string;
  /** A human-readable message. */
  message: string;
}

/**
 * Most WebSocket connections (`/ws/ide` and `/ws/bridge` together, counted
 * from the upgrade, so sockets that have not authenticated yet count too) one
 * client address may hold open at once. More upgrades get HTTP 429
 * `too-many-sockets`. `coder1 relay serve --max-connections-per-address`
 * changes it.
 */
export const MAX_CONNECTIONS_PER_ADDRESS = 64;
