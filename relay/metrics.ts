/**
 * The relay's metrics, rendered for `GET /metrics` in the Prometheus text
 * format (version 0.0.4). Every label takes its values from a fixed list
 * (a direction, a close reason, a limit), never from a user, a session, a
 * bridge or an address, so the number of series is bounded and no series
 * describes one person.
 *
 * The hub, pairing and the HTTP API call the recording methods; gauges are
 * read from the hub when the metrics are rendered.
 *
 * @module
 */
import { CloseCode } from "../shared/protocol.ts";
import { VERSION } from "../shared/version.ts";

/** Which way a relayed frame went. */
export type Direction = "ide_to_bridge" | "bridge_to_ide";
/** What happened to a pairing code. */
export type PairingEvent = "issued" | "redeemed" | "expired" | "rejected";
/** Which rate limit refused a request. */
export type RateLimit =
  | "session_create"
  | "code_issue"
  | "code_redeem"
  | "socket_open"
  | "bridge_verify"
  | "token_login";
/** Which way a frame crossed a mesh link, seen from the instance that forwards a client's socket to the session's home. */
export type MeshDirection = "to_home" | "from_home";
/** Why a session's lease changed holder: this instance took it from a dead home, or lost it to another instance. */
export type LeaseMove = "takeover" | "lost";
/** Which kind of socket closed. */
export type SocketRole = "ide" | "bridge";

/** The Content-Type of {@linkcode RelayMetrics.render}'s output. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const DIRECTIONS: Direction[] = ["ide_to_bridge", "bridge_to_ide"];
const PAIRING_EVENTS: PairingEvent[] = ["issued", "redeemed", "expired", "rejected"];
const RATE_LIMITS: RateLimit[] = [
  "session_create",
  "code_issue",
  "code_redeem",
  "socket_open",
  "bridge_verify",
  "token_login",
];
const ROLES: SocketRole[] = ["ide", "bridge"];
const MESH_DIRECTIONS: MeshDirection[] = ["to_home", "from_home"];
const LEASE_MOVES: LeaseMove[] = ["takeover", "lost"];
/** HTTP statuses a refused WebSocket upgrade is counted under; any other counts as `other`. */
const REFUSAL_STATUSES = ["400", "401", "403", "409", "426", "429"];

/** Close codes by the reason label they are counted under; any other code counts as `other`. */
const CLOSE_REASONS: Record<number, string> = {
  [CloseCode.Normal]: "normal",
  [CloseCode.GoingAway]: "going_away",
  1005: "no_status",
  1006: "abnormal",
  1011: "internal_error",
  [CloseCode.HeartbeatTimeout]: "heartbeat_timeout",
  [CloseCode.BadFrame]: "bad_frame",
  [CloseCode.AuthFailed]: "auth_failed",
  [CloseCode.AuthTimeout]: "auth_timeout",
  [CloseCode.Replaced]: "replaced",
  [CloseCode.Revoked]: "revoked",
  [CloseCode.SessionMoved]: "session_moved",
  [CloseCode.TooBig]: "too_big",
  [CloseCode.E2eFailure]: "e2e_failure",
  [CloseCode.UnsupportedVersion]: "unsupported_version",
  [CloseCode.RateLimited]: "rate_limited",
  [CloseCode.SlowConsumer]: "slow_consumer",
  [CloseCode.IgnoredPause]: "ignored_pause",
};

/**
 * The reason label for a close code.
 *
 * @param code A WebSocket close code.
 * @returns A fixed reason name such as `heartbeat_timeout`, or `other`.
 */
export function closeReason(code: number): string {
  return CLOSE_REASONS[code] ?? "other";
}

type Labels = Record<string, string>;

/** Label text of each direction, built once (relayed() runs for every frame). */
const DIRECTION_KEYS: Record<Direction, string> = {
  ide_to_bridge: _labelText({ direction: "ide_to_bridge" }),
  bridge_to_ide: _labelText({ direction: "bridge_to_ide" }),
};
/** Label text of each mesh direction (meshForwarded() runs for every frame crossing a mesh link). */
const MESH_DIRECTION_KEYS: Record<MeshDirection, string> = {
  to_home: _labelText({ direction: "to_home" }),
  from_home: _labelText({ direction: "from_home" }),
};

interface Family {
  help: string;
  type: "counter" | "gauge";
  /** Series by their rendered label set (`{a="b"}` or ``). */
  series: Map<string, number>;
}

/** Live numbers the relay reads when rendering (connected sockets). */
export interface GaugeSource {
  /** Authenticated bridges and open IDE sockets right now. */
  (): { bridges: number; ides: number };
}

/** Counters and gauges of one relay process. */
export class RelayMetrics {
  #families = new Map<string, Family>();
  #gauges: GaugeSource = () => ({ bridges: 0, ides: 0 });
  #meshLinks: () => number = () => 0;
  #meshFrames: Map<string, number>;
  #beforeRender: (() => void)[] = [];
  #frames: Map<string, number>;
  #bytes: Map<string, number>;
  #startSeconds: number;

  /** @param options The process start time (seconds since the epoch; default now). */
  constructor(options: { startSeconds?: number } = {}) {
    this.#startSeconds = options.startSeconds ?? Math.floor(Date.now() / 1000);
    // Declare every series up front, so dashboards see zeros, not gaps.
    this.#declare(
      "coder1_pairing_codes_total",
      "counter",
      [
        "Pairing codes by event: issued; redeemed (a bridge paired with it); expired (its 5 minutes ran out",
        "unused); rejected (a redemption attempt with a wrong, used or expired code).",
      ].join(" "),
      PAIRING_EVENTS.map((event) => ({ event })),
    );
    this.#declare(
      "coder1_rate_limited_total",
      "counter",
      "Requests refused by a rate limit, by limit (socket_open: an upgrade past the cap of open sockets per address).",
      RATE_LIMITS.map((limit) => ({ limit })),
    );
    this.#declare(
      "coder1_frames_relayed_total",
      "counter",
      "Frames forwarded between IDE sockets and bridges, by direction.",
      DIRECTIONS.map((direction) => ({ direction })),
    );
    this.#declare(
      "coder1_bytes_relayed_total",
      "counter",
      "Bytes of the frames forwarded between IDE sockets and bridges, by direction.",
      DIRECTIONS.map((direction) => ({ direction })),
    );
    this.#frames = this.#families.get("coder1_frames_relayed_total")!.series;
    this.#bytes = this.#families.get("coder1_bytes_relayed_total")!.series;
    this.#declare(
      "coder1_commands_started_total",
      "counter",
      "cmd.start frames forwarded to bridges (from headers; resent frames after a reconnect count again).",
      [{}],
    );
    this.#declare(
      "coder1_commands_ended_total",
      "counter",
      "cmd.exit and cmd.error frames from bridges, by type.",
      [{ how: "exit" }, { how: "error" }],
    );
    this.#declare(
      "coder1_heartbeat_timeouts_total",
      "counter",
      "Sockets closed for silence (no frame within the heartbeat timeout).",
      [{}],
    );
    this.#declare(
      "coder1_socket_closes_total",
      "counter",
      "Closed WebSockets by role and close reason (the close code, named).",
      ROLES.flatMap((role) => [...new Set(Object.values(CLOSE_REASONS)), "other"].map((reason) => ({ role, reason }))),
    );
    this.#declare(
      "coder1_upgrades_refused_total",
      "counter",
      "WebSocket upgrades refused with an HTTP error before any socket existed, by role and status.",
      ROLES.flatMap((role) => [...REFUSAL_STATUSES, "other"].map((status) => ({ role, status }))),
    );
    this.#declare(
      "coder1_crash_reports_total",
      "counter",
      "crash frames from bridges: stored, or dropped (over the per-connection cap).",
      [{ outcome: "stored" }, { outcome: "dropped" }],
    );
    this.#declare(
      "coder1_mesh_forwarded_frames_total",
      "counter",
      "Frames this instance piped over mesh links between its clients and their sessions' home instances, by direction.",
      MESH_DIRECTIONS.map((direction) => ({ direction })),
    );
    this.#meshFrames = this.#families.get("coder1_mesh_forwarded_frames_total")!.series;
    this.#declare(
      "coder1_lease_moves_total",
      "counter",
      "Session leases that changed holder: taken over from a home that did not answer, or lost to another instance.",
      LEASE_MOVES.map((why) => ({ why })),
    );
  }

  /** Sets where the mesh-link gauge comes from (relay/mesh.ts). */
  setMeshLinkSource(source: () => number): void {
    this.#meshLinks = source;
  }

  /** Counts one frame piped over a mesh link (on the hot path of forwarded sockets: no label text is built). */
  meshForwarded(direction: MeshDirection): void {
    this.#bump(this.#meshFrames, MESH_DIRECTION_KEYS[direction], 1);
  }

  /** Counts a session lease that changed holder. */
  leaseMoved(why: LeaseMove): void {
    this.#add("coder1_lease_moves_total", { why });
  }

  /** Sets where the connected-socket gauges come from (the hub). */
  setGaugeSource(source: GaugeSource): void {
    this.#gauges = source;
  }

  /** Runs `fn` before every render (to bring lazily counted numbers up to date). */
  onRender(fn: () => void): void {
    this.#beforeRender.push(fn);
  }

  /** Counts a pairing-code event. */
  pairing(event: PairingEvent): void {
    this.#add("coder1_pairing_codes_total", { event });
  }

  /** Counts a request refused by a rate limit. */
  rateLimited(limit: RateLimit): void {
    this.#add("coder1_rate_limited_total", { limit });
  }

  /** Counts one forwarded frame of `bytes` bytes (on the hot path: no label text is built). */
  relayed(direction: Direction, bytes: number): void {
    const key = DIRECTION_KEYS[direction];
    this.#bump(this.#frames, key, 1);
    this.#bump(this.#bytes, key, bytes);
  }

  /** Counts a `cmd.start` sent to a bridge. */
  commandStarted(): void {
    this.#add("coder1_commands_started_total", {});
  }

  /** Counts a `cmd.exit` or `cmd.error` from a bridge. */
  commandEnded(how: "exit" | "error"): void {
    this.#add("coder1_commands_ended_total", { how });
  }

  /** Counts a socket dropped for silence. */
  heartbeatTimeout(): void {
    this.#add("coder1_heartbeat_timeouts_total", {});
  }

  /** Counts a WebSocket upgrade refused with an HTTP error (a bridge's bad credential: 401), by role and status. */
  upgradeRefused(role: SocketRole, status: number): void {
    const label = REFUSAL_STATUSES.includes(String(status)) ? String(status) : "other";
    this.#add("coder1_upgrades_refused_total", { role, status: label });
  }

  /** Counts a closed socket by role and close code. */
  socketClosed(role: SocketRole, code: number): void {
    this.#add("coder1_socket_closes_total", { role, reason: closeReason(code) });
  }

  /** Counts a crash report, stored or dropped. */
  crashReport(outcome: "stored" | "dropped"): void {
    this.#add("coder1_crash_reports_total", { outcome });
  }

  /**
   * The current value of one series (tests read it).
   *
   * @param name The metric name.
   * @param labels Its labels.
   * @returns The value (0 for an unknown series).
   */
  value(name: string, labels: Labels = {}): number {
    return this.#families.get(name)?.series.get(_labelText(labels)) ?? 0;
  }

  /**
   * Renders every metric in the Prometheus text format.
   *
   * @returns The exposition text, ending with a newline.
   *
   * @example
   * ```ts
   * import { RelayMetrics } from "./metrics.ts";
   * const metrics = new RelayMetrics();
   * metrics.commandStarted();
   * console.log(metrics.render().includes("coder1_commands_started_total 1")); // true
   * ```
   */
  render(): string {
    for (const fn of this.#beforeRender) fn();
    const { bridges, ides } = this.#gauges();
    const lines: string[] = [];
    const gauge = (name: string, help: string, value: number, labels: Labels = {}) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name}${_labelText(labels)} ${value}`);
    };
    gauge("coder1_build_info", "The relay's version (value always 1).", 1, { version: VERSION });
    gauge(
      "coder1_start_time_seconds",
      "When this relay process started (seconds since the epoch).",
      this.#startSeconds,
    );
    gauge("coder1_bridges_connected", "Authenticated bridge connections now.", bridges);
    gauge("coder1_ide_sockets_connected", "Open IDE sockets now.", ides);
    gauge(
      "coder1_mesh_links",
      "Mesh links open now: client sockets this instance forwards to their session's home instance.",
      this.#meshLinks(),
    );
    for (const [name, family] of this.#families) {
      lines.push(`# HELP ${name} ${family.help}`, `# TYPE ${name} ${family.type}`);
      for (const [labels, value] of family.series) lines.push(`${name}${labels} ${value}`);
    }
    return lines.join("\n") + "\n";
  }

  #declare(name: string, type: Family["type"], help: string, labelSets: Labels[]): void {
    const series = new Map<string, number>();
    for (const labels of labelSets) series.set(_labelText(labels), 0);
    this.#families.set(name, { type, help, series });
  }

  #bump(series: Map<string, number>, key: string, by: number): void {
    series.set(key, series.get(key)! + by);
  }

  #add(name: string, labels: Labels, by = 1): void {
    const family = this.#families.get(name)!;
    const key = _labelText(labels);
    // Only declared series exist: a label value outside the fixed lists is a bug, not a new series.
    if (!family.series.has(key)) throw new RangeError(`Cannot count ${name}${key}: not a declared series`);
    family.series.set(key, family.series.get(key)! + by);
  }
}

function _labelText(labels: Labels): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return "";
  const escape = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
  return `{${entries.map(([k, v]) => `${k}="${escape(v)}"`).join(",")}}`;
}
