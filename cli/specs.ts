/**
 * Every command's flags and help, in one light module: main.ts parses with
 * them, and the launcher (tools/launch.ts) reads the same flags to scope Deno
 * permissions to the paths a command will touch.
 *
 * @module
 */
import { checkDuration, checkHttpUrl, checkPort, checkPositiveInt, type CommandSpec } from "./args.ts";
import {
  DEFAULT_MAX_COMMANDS,
  DEFAULT_PORT,
  DEFAULT_RELAY_URL,
  MAX_COMMAND_TIMEOUT_MS,
  MAX_CONNECTIONS_PER_ADDRESS,
  TERMINAL_LINGER_MS,
} from "../shared/protocol.ts";

const checkRelayUrl = (value: string) => {
  try {
    const url = new URL(value);
    return ["http:", "https:", "ws:", "wss:"].includes(url.protocol)
      ? undefined
      : `must be an http(s):// or ws(s):// URL, got "${value}"`;
  } catch {
    return `must be a URL, got "${value}"`;
  }
};

const relayFlag = {
  name: "relay",
  kind: "string",
  value: "URL",
  help:
    `Relay URL, http(s):// or ws(s):// (default: $CODER1_RELAY_URL, else the last relay paired with, else ${DEFAULT_RELAY_URL})`,
  check: checkRelayUrl,
} as const;

/** `coder1 relay serve`. */
export const RELAY_SERVE: CommandSpec = {
  name: "relay serve",
  summary: "Run the relay that pairs browser IDEs with bridges and forwards their frames.",
  flags: [
    { name: "host", kind: "string", value: "ADDR", help: "Address to listen on (default 127.0.0.1)" },
    {
      name: "port",
      kind: "string",
      value: "PORT",
      help: `Port to listen on; 0 picks a free one (default ${DEFAULT_PORT})`,
      check: checkPort,
    },
    {
      name: "tls-cert",
      kind: "string",
      value: "FILE",
      help: "PEM certificate chain: serve HTTPS and WSS (needs --tls-key)",
    },
    { name: "tls-key", kind: "string", value: "FILE", help: "PEM private key for --tls-cert" },
    {
      name: "public-url",
      kind: "string",
      value: "URL",
      help: "URL browsers use to reach this relay (its origin is allowed)",
      check: checkHttpUrl,
    },
    {
      name: "data-dir",
      kind: "string",
      value: "DIR",
      help: "Where the signing key, revocations and telemetry live (default $XDG_DATA_HOME/coder1)",
    },
    {
      name: "jwt-key-file",
      kind: "string",
      value: "FILE",
      help: "Ed25519 signing key (JWK or PKCS#8 PEM) instead of the data dir's",
    },
    {
      name: "allowed-origin",
      kind: "multi",
      value: "URL",
      help: "Another origin allowed to use the IDE API and socket (repeatable)",
      check: checkHttpUrl,
    },
    {
      name: "log-level",
      kind: "string",
      value: "LEVEL",
      help: "debug, info, warn, error or silent (default info)",
      check: (v) =>
        ["debug", "info", "warn", "error", "silent"].includes(v)
          ? undefined
          : `must be debug, info, warn, error or silent, got "${v}"`,
    },
    {
      name: "log-format",
      kind: "string",
      value: "FORMAT",
      help: "text (default) or json (one object per line)",
      check: (v) => ["text", "json"].includes(v) ? undefined : `must be text or json, got "${v}"`,
    },
    {
      name: "metrics-token",
      kind: "string",
      value: "TOKEN",
      help: "Require Authorization: Bearer TOKEN on GET /metrics (visible in ps; prefer the file)",
      check: (v) => /^[\x21-\x7e]{16,}$/.test(v) ? undefined : "must be at least 16 printable characters",
    },
    {
      name: "metrics-token-file",
      kind: "string",
      value: "FILE",
      help: "Read the /metrics bearer token from FILE",
    },
    {
      name: "trust-proxy",
      kind: "boolean",
      help: "Rate-limit by the rightmost X-Forwarded-For address (only behind a proxy that sets it)",
    },
    {
      name: "max-connections-per-address",
      kind: "string",
      value: "N",
      help: `Most WebSocket connections one client address may hold open (default ${MAX_CONNECTIONS_PER_ADDRESS})`,
      check: checkPositiveInt,
    },
    {
      name: "redis-url",
      kind: "string",
      value: "URL",
      help: "Several instances: share state through this Redis (redis:// or rediss://); needs the next two",
      check: (v) => /^rediss?:\/\/[^\s]+$/.test(v) ? undefined : `must be a redis:// or rediss:// URL, got "${v}"`,
    },
    {
      name: "advertise-url",
      kind: "string",
      value: "URL",
      help: "Several instances: how the other instances reach this one (http(s)://host:port)",
      check: (v) => {
        const bad = checkHttpUrl(v);
        if (bad) return bad;
        const url = new URL(v);
        return `${url.origin}/` === url.href ? undefined : `must be http(s)://host:port without a path, got "${v}"`;
      },
    },
    {
      name: "mesh-key-file",
      kind: "string",
      value: "FILE",
      help: "Several instances: the secret they authenticate each other with (>= 32 bytes, mode 600)",
    },
  ],
  notes: "State (sessions, codes, rate windows) is kept in memory; the data dir holds the token\n" +
    "signing key, the revocation list and telemetry.sqlite (metadata only, 30 days; see it with\n" +
    "coder1 relay telemetry). Env: CODER1_TELEMETRY=false stores no telemetry at all.\n" +
    "Operators: GET /healthz (alive), GET /readyz (accepting), GET /metrics (Prometheus).\n" +
    "Several instances behind a balancer: --redis-url, --advertise-url and --mesh-key-file on each,\n" +
    "with the same --jwt-key-file (docs/OPERATIONS.md, Running several relays).",
};

/** `coder1 relay telemetry`. */
export const RELAY_TELEMETRY: CommandSpec = {
  name: "relay telemetry",
  summary: "Print everything the relay's telemetry file holds (metadata only).",
  flags: [
    {
      name: "data-dir",
      kind: "string",
      value: "DIR",
      help: "The relay's data dir (default $XDG_DATA_HOME/coder1)",
    },
    {
      name: "since",
      kind: "string",
      value: "AGE",
      help: "Only rows from the last AGE: 30m, 12h, 7d (default: everything stored)",
      check: (v) => /^[1-9]\d{0,5}[mhd]$/.test(v) ? undefined : `must be a number and m, h or d (e.g. 7d), got "${v}"`,
    },
    { name: "json", kind: "boolean", help: "Print JSON instead of tables" },
  ],
  notes: "Reads <data dir>/telemetry.sqlite read-only; the relay may be running (it writes every 5 s).",
};

/** `coder1 bridge start`. */
export const BRIDGE_START: CommandSpec = {
  name: "bridge start",
  summary: "Connect this machine to a relay and run the paired IDE's commands and terminals here.",
  flags: [
    relayFlag,
    {
      name: "code",
      kind: "string",
      value: "CODE",
      help: "The 6-digit pairing code from the IDE (else prompted, or read from stdin)",
      check: (v) => /^\d{6}$/.test(v.replace(/\s/g, "")) ? undefined : `must be 6 digits, got "${v}"`,
    },
    {
      name: "name",
      kind: "string",
      value: "NAME",
      help: "Name the IDE shows for this bridge (default: host name)",
      check: (v) => v.length > 0 && v.length <= 64 ? undefined : "must be 1-64 characters",
    },
    {
      name: "cwd",
      kind: "string",
      value: "DIR",
      help: "Directory commands run in; the IDE may name subdirectories (default: current)",
    },
    { name: "ca-file", kind: "string", value: "FILE", help: "PEM CA certificate to trust for a self-hosted relay" },
    {
      name: "max-commands",
      kind: "string",
      value: "N",
      help: `Most commands running at once (default ${DEFAULT_MAX_COMMANDS})`,
      check: checkPositiveInt,
    },
    {
      name: "command-timeout",
      kind: "string",
      value: "SECONDS",
      help: "Kill commands that run longer (default: no limit; at most 2147483)",
      check: (v) =>
        checkPositiveInt(v) ??
          (Number(v) * 1000 > MAX_COMMAND_TIMEOUT_MS ? "must be at most 2147483 seconds" : undefined),
    },
    {
      name: "approval-timeout",
      kind: "string",
      value: "SECONDS",
      help: "How long a new pairing waits for approval in the IDE (default: 300)",
      check: (v) => checkPositiveInt(v) ?? (Number(v) > 86_400 ? "must be at most 86400 seconds" : undefined),
    },
    { name: "no-terminal", kind: "boolean", help: "Run one-shot commands only: no terminals (the IDE is told)" },
    {
      name: "terminal-linger",
      kind: "string",
      value: "DURATION",
      help: `Keep a terminal no IDE is attached to running this long: 30m, 12h, 7d (default ${
        TERMINAL_LINGER_MS / 3_600_000
      }h, at most 24d)`,
      // Timers hold at most 2^31 - 1 ms, as for command timeouts.
      check: checkDuration(MAX_COMMAND_TIMEOUT_MS),
    },
    { name: "allow-root", kind: "boolean", help: "Run even as root (commands then run as root)" },
    {
      name: "pair",
      kind: "boolean",
      help: "Revoke the stored token at the relay and forget the approved IDE key; pair again with a new code",
    },
    { name: "verbose", kind: "boolean", help: "Print connection events" },
    { name: "no-banner", kind: "boolean", help: "Do not print the start-up banner" },
  ],
  notes: 'First pairing: the bridge prints "Check that the IDE shows: 123 456". If the IDE shows the same\n' +
    "digits, type those 6 digits here (the prompt asks for them; anything else refuses the pairing)\n" +
    "and approve in the IDE; both are needed before anything runs. Later starts reuse the stored\n" +
    "token and the approved IDE key (--pair starts over).\n" +
    "Env: CODER1_RELAY_URL (default relay), CODER1_TELEMETRY=false (the relay keeps no telemetry\n" +
    "about this bridge, and it sends no crash reports).",
};

/** `coder1 bridge status`. */
export const BRIDGE_STATUS: CommandSpec = {
  name: "bridge status",
  summary: "Show whether the relay is reachable, whether this machine is paired, and when its token expires.",
  flags: [relayFlag, { name: "ca-file", kind: "string", value: "FILE", help: "PEM CA certificate to trust" }],
};

/** `coder1 bridge logout`. */
export const BRIDGE_LOGOUT: CommandSpec = {
  name: "bridge logout",
  summary: "Revoke this machine's token at the relay and delete it locally.",
  flags: [relayFlag, { name: "ca-file", kind: "string", value: "FILE", help: "PEM CA certificate to trust" }],
};

/** `coder1 doctor`. */
export const DOCTOR: CommandSpec = {
  name: "doctor",
  summary: "Check what a bridge on this machine needs, and say how to fix each problem found.",
  flags: [
    relayFlag,
    { name: "ca-file", kind: "string", value: "FILE", help: "PEM CA certificate to trust (as for bridge start)" },
    { name: "json", kind: "boolean", help: "Print one JSON object (for scripts) instead of text" },
  ],
  notes: "Checks: relay reachable, TLS certificate trusted, clock against the relay's, config directory\n" +
    "and key file modes, stored credential valid and not revoked (asked read-only: the running\n" +
    "bridge stays connected), the shell, terminals on this OS, the telemetry setting.\n" +
    "Exit 0 when every check passes, 1 otherwise.",
};

/** All commands by name: two words (`bridge start`), or one (`doctor`). */
export const COMMANDS: Record<string, CommandSpec> = {
  "relay serve": RELAY_SERVE,
  "relay telemetry": RELAY_TELEMETRY,
  "bridge start": BRIDGE_START,
  "bridge status": BRIDGE_STATUS,
  "bridge logout": BRIDGE_LOGOUT,
  doctor: DOCTOR,
};

/** The command groups (`relay`, `bridge`): the first word of the two-word commands. */
export const GROUPS: ReadonlySet<string> = new Set(
  Object.keys(COMMANDS).filter((c) => c.includes(" ")).map((c) => c.split(" ")[0]),
);

/**
 * The help of a command group: its commands, one line each.
 *
 * @param group `relay` or `bridge`.
 * @returns Multi-line help text.
 */
export function groupUsage(group: string): string {
  const names = Object.keys(COMMANDS).filter((c) => c.startsWith(`${group} `));
  const width = Math.max(...names.map((c) => c.length)) + 11;
  return [
    `Usage: coder1 ${group} COMMAND [options]`,
    "",
    "Commands:",
    ...names.map((c) => `  ${`coder1 ${c}`.padEnd(width)}${COMMANDS[c].summary}`),
    "",
    `Options of a command: coder1 help ${group} COMMAND (or coder1 ${group} COMMAND --help).`,
  ].join("\n");
}

/** `coder1 help`. */
export const TOP_USAGE = `coder1: run commands on your machine from a browser IDE, through a relay.

Usage:
  coder1 relay serve [options]     Run the relay (self-hostable)
  coder1 relay telemetry [options] Show what the relay's telemetry holds
  coder1 bridge start [options]    Pair this machine and run the IDE's commands
  coder1 bridge status [options]   Show relay reachability, pairing and token expiry
  coder1 bridge logout [options]   Revoke and delete this machine's token
  coder1 doctor [options]          Check this machine and its relay; say how to fix what fails
  coder1 help [COMMAND]            Show help (also: coder1 COMMAND --help, coder1 help bridge)
  coder1 --version                 Show the version

Quick start:
  coder1 relay serve                       # relay on http://127.0.0.1:${DEFAULT_PORT}
  coder1 bridge start --relay URL          # then type the 6-digit code from the IDE
  coder1 doctor --relay URL                # something wrong? checks this machine, says how to fix it`;
