/**
 * What `coder1 doctor` checks (cli/doctor_command.ts runs it), one by one, what a bridge on this machine needs,
 * and says how to fix each problem found: the relay answers, its TLS
 * certificate is trusted (and which CA file to pass if not), the clock agrees
 * with the relay's, the config directory and key files are private, the stored
 * credential is still accepted (asked read-only, `POST /api/bridge/verify`, so
 * a running bridge stays connected and nothing is rotated), the shell starts,
 * terminals work on this OS, and the telemetry setting reads.
 *
 * @module
 */
import tls from "node:tls";
import type { RelayUrl } from "../shared/relay_url.ts";
import { TELEMETRY_ENV, telemetryEnabled } from "../shared/telemetry_setting.ts";
import { VERSION } from "../shared/version.ts";
import { CredentialStore } from "./credentials.ts";
import { createPtySpawner } from "./pty_factory.ts";
import { relayFetch } from "./relay_choice.ts";
import { ShellRunner } from "./shell_runner.ts";

/** How long each network step and each test process may take. */
const DOCTOR_TIMEOUT_MS = 10_000;
/**
 * Largest clock difference with the relay that passes. The relay's `Date`
 * header has one-second resolution and a loopback round trip takes
 * milliseconds, so 30 s is far above measurement error; a machine without
 * time synchronisation drifts past it within weeks, and the bridge's own
 * reading of token expiry and of the pairing deadline it prints would be off.
 */
const MAX_CLOCK_SKEW_MS = 30_000;

/** The outcome of one check. */
export type CheckStatus = "ok" | "fail" | "skip";

/** One check's result, as printed and as `--json` gives it. */
export interface DoctorCheck {
  /** Stable id: `relay`, `tls`, `clock`, `config`, `credential`, `shell`, `terminals`, `telemetry`. */
  id: string;
  /** What is checked, for people. */
  title: string;
  /** Passed, failed, or not applicable here (or not checkable after an earlier failure). */
  status: CheckStatus;
  /** What was found. */
  detail: string;
  /** How to fix it (failures only). */
  fix?: string;
}

/** What {@linkcode runDoctor} checks against. */
export interface DoctorOptions {
  /** The relay (absent when it could not be resolved: then `relayError` says why). */
  relay?: RelayUrl;
  /** Why there is no relay URL to check. */
  relayError?: string;
  /** Extra CA certificate (PEM), as `--ca-file` gives it to the bridge. */
  ca?: string;
  /** The file `ca` came from, to name it. */
  caFile?: string;
  /** Why the CA file could not be used. */
  caError?: string;
  /** The bridge's config directory. */
  configDir: string;
}

/** Everything {@linkcode runDoctor} found; `--json` prints it as is. */
export interface DoctorReport {
  /** This coder1's version. */
  version: string;
  /** The relay checked, if any. */
  relay: string | null;
  /** Whether no check failed. */
  ok: boolean;
  /** The checks, in a fixed order. */
  checks: DoctorCheck[];
}

/**
 * Runs every check. Only reads: it asks the relay with `GET /healthz` and
 * `POST /api/bridge/verify` and writes nothing.
 *
 * @param options The relay, CA and config directory to check.
 * @returns The report.
 *
 * @example
 * ```ts ignore
 * import { formatDoctor, runDoctor } from "./doctor.ts";
 * const report = await runDoctor({ configDir: `${Deno.env.get("HOME")}/.config/coder1` });
 * console.log(formatDoctor(report));
 * ```
 */
export async function runDoctor(options: DoctorOptions): Promise<DoctorReport> {
  const { relay, relayError, ca, caFile, caError, configDir } = options;
  const store = new CredentialStore(configDir);
  const checks: DoctorCheck[] = [];
  const add = (check: DoctorCheck) => checks.push(check);

  // Relay, TLS, clock and credential depend on each other, in this order.
  let healthy: { date?: number; sent: number; received: number } | undefined;
  if (!relay) {
    add({
      id: "relay",
      title: "Relay reachable",
      status: "fail",
      detail: relayError ?? "no relay URL",
      fix: "Pass the relay's address, as its start-up banner prints it: coder1 doctor --relay https://relay.example",
    });
    add(_skip("tls", "TLS certificate trusted", "no relay to check"));
  } else {
    const trust = relay.secure && !caError ? await _checkTls(relay, ca, caFile) : undefined;
    if (caError) {
      add(_skip("relay", "Relay reachable", `not checked: ${caError}`));
      add({
        id: "tls",
        title: "TLS certificate trusted",
        status: "fail",
        detail: caError,
        fix: "Pass a PEM file holding the certificate of the CA that signed the relay's certificate.",
      });
    } else if (trust?.unreachable) {
      add(_unreachable(relay, trust.unreachable));
      add(_skip("tls", "TLS certificate trusted", "the relay did not answer"));
    } else {
      const answer = trust && trust.check.status !== "ok" ? undefined : await _checkHealth(relay, ca);
      if (answer?.check) add(answer.check);
      else if (!trust || trust.check.status === "ok") add(_unreachable(relay, answer!.error!));
      else {
        add({
          id: "relay",
          title: "Relay reachable",
          status: "ok",
          detail: `${relay.http} answers TLS (HTTP not checked until its certificate is trusted)`,
        });
      }
      if (trust) add(trust.check);
      else add(_skip("tls", "TLS certificate trusted", `plain http to ${relay.host} (loopback): no TLS`));
      healthy = answer?.timing;
    }
  }

  add(healthy ? _checkClock(healthy) : _skip("clock", "Clock agrees with the relay's", "the relay did not answer"));
  add(await _checkConfig(configDir));
  add(await _checkCredential(store, relay, healthy ? ca : undefined, Boolean(healthy)));
  const shell = new ShellRunner().shell;
  add(await _checkShell(shell));
  add(await _checkTerminals(shell));
  add(_checkTelemetry());
  const ok = !checks.some((c) => c.status === "fail");
  return { version: VERSION, relay: relay?.http ?? null, ok, checks };
}

/**
 * The report as text: one line per check, its fix below a failure, and a summary.
 *
 * @param report What {@linkcode runDoctor} found.
 * @returns Lines for a terminal.
 */
export function formatDoctor(report: DoctorReport): string {
  const { checks } = report;
  const failed = checks.filter((c) => c.status === "fail").length;
  const width = Math.max(...checks.map((c) => c.title.length)) + 2;
  const lines = [`coder1 doctor ${report.version}: this machine and ${report.relay ?? "its relay"}`];
  for (const c of checks) {
    lines.push(`  ${c.status === "fail" ? "FAIL" : c.status.padEnd(4)}  ${c.title.padEnd(width)}${c.detail}`);
    if (c.fix) lines.push(`        ${" ".repeat(width)}Fix: ${c.fix}`);
  }
  lines.push(
    failed === 0
      ? `All checks passed${checks.some((c) => c.status === "skip") ? " (some did not apply)" : ""}.`
      : `${failed} of ${checks.length} checks failed.`,
  );
  return lines.join("\n");
}

function _skip(id: string, title: string, detail: string): DoctorCheck {
  return { id, title, status: "skip", detail };
}

function _unreachable(relay: RelayUrl, why: string): DoctorCheck {
  return {
    id: "relay",
    title: "Relay reachable",
    status: "fail",
    detail: `${relay.http}: ${why}`,
    fix: relay.loopback
      ? "Start the relay (coder1 relay serve), or pass the right address with --relay."
      : "Check the address (--relay, as the relay's start-up banner prints it), this machine's network, " +
        "and that the relay is running.",
  };
}

/** Why a connection failed, in words. */
function _networkWhy(error: unknown, relay: RelayUrl): string {
  // fetch says "fetch failed" and keeps the reason in `cause`.
  const cause = (error as { cause?: Error })?.cause;
  const message = String((error as Error)?.message ?? error) + (cause?.message ? `: ${cause.message}` : "");
  const code = (error as { code?: string })?.code ?? "";
  if ((error as Error)?.name === "TimeoutError" || code === "ETIMEDOUT") {
    return `no answer within ${DOCTOR_TIMEOUT_MS / 1000} s (a firewall or proxy may drop the connection)`;
  }
  if (code === "ECONNREFUSED" || /connection refused/i.test(message)) {
    return "connection refused: nothing listens at that address and port";
  }
  if (code === "ENOTFOUND" || /dns error|failed to lookup|not known|No address/i.test(message)) {
    return `cannot resolve the host name ${relay.host}`;
  }
  return message;
}

/** The TLS handshake as the bridge's WebSocket (npm:ws over node:tls) does it, with `ca` added. */
async function _checkTls(
  relay: RelayUrl,
  ca: string | undefined,
  caFile: string | undefined,
): Promise<{ unreachable?: string; check: DoctorCheck }> {
  const url = new URL(relay.http);
  const port = Number(url.port || 443);
  const title = "TLS certificate trusted";
  const isIp = /^[\d.]+$|:/.test(relay.host);
  const outcome = await new Promise<{ error?: unknown; socket?: tls.TLSSocket }>((resolve) => {
    const socket = tls.connect({
      host: relay.host,
      port,
      servername: isIp ? undefined : relay.host,
      // As the bridge's socket does (bridge/relay_link.ts): the CA file replaces the built-in roots.
      ...(ca ? { ca } : {}),
      rejectUnauthorized: false,
    }, () => resolve({ socket }));
    socket.setTimeout(DOCTOR_TIMEOUT_MS, () => {
      resolve({ error: Object.assign(new Error("timed out"), { code: "ETIMEDOUT" }) });
      socket.destroy();
    });
    socket.on("error", (error) => resolve({ error }));
  });
  if (!outcome.socket) return { unreachable: _networkWhy(outcome.error, relay), check: _skip("tls", title, "") };
  const socket = outcome.socket;
  const cert = socket.getPeerCertificate(false);
  const authorized = socket.authorized;
  const why = socket.authorizationError ? String(socket.authorizationError) : "";
  socket.destroy();
  const name = (dn: Record<string, string> | undefined) =>
    dn ? Object.entries(dn).map(([k, v]) => `${k}=${v}`).join(", ") : "?";
  const subject = name(cert?.subject as unknown as Record<string, string>);
  const issuer = name(cert?.issuer as unknown as Record<string, string>);
  const withCa = caFile ? ` (with --ca-file ${caFile})` : "";
  // Deno's node:tls reports a name mismatch as the authorization error; Node checks it separately.
  const wrongName = /ALTNAME/.test(why) || (authorized && tls.checkServerIdentity(relay.host, cert) !== undefined);
  if (wrongName || authorized) {
    if (wrongName) {
      return {
        check: {
          id: "tls",
          title,
          status: "fail",
          detail: `the certificate (${subject}; ${
            cert.subjectaltname ?? "no alternative names"
          }) is not for ${relay.host}`,
          fix: "Use the name the certificate is for in --relay, or have the relay's operator add this name to it.",
        },
      };
    }
    return {
      check: {
        id: "tls",
        title,
        status: "ok",
        detail: `${subject}, issued by ${issuer}, valid until ${cert.valid_to}${withCa}`,
      },
    };
  }
  if (/EXPIRED|NOT_YET_VALID/.test(why)) {
    return {
      check: {
        id: "tls",
        title,
        status: "fail",
        detail: `the relay's certificate (${subject}) is ${
          /EXPIRED/.test(why) ? `expired (valid until ${cert.valid_to})` : `not valid yet (from ${cert.valid_from})`
        }`,
        fix: /EXPIRED/.test(why)
          ? "The relay's operator must renew its certificate."
          : "Check this machine's clock; else the relay's operator must fix the certificate.",
      },
    };
  }
  const selfSigned = why === "DEPTH_ZERO_SELF_SIGNED_CERT" || subject === issuer;
  return {
    check: {
      id: "tls",
      title,
      status: "fail",
      detail: `the relay's certificate (${subject}) is ${
        selfSigned ? "self-signed" : `issued by ${issuer}`
      }, which this machine does not trust${withCa} (${why || "untrusted"})`,
      fix: selfSigned
        ? `Pass the relay's own certificate: --ca-file relay-cert.pem (a PEM file with the certificate of ${subject}, from the relay's operator), to doctor and to coder1 bridge start.`
        : `Pass the certificate of the CA "${issuer}" that signed it: --ca-file ca.pem (a PEM file with that CA's certificate, from the relay's operator), to doctor and to coder1 bridge start.`,
    },
  };
}

/** `GET /healthz`, timed for the clock check. */
async function _checkHealth(
  relay: RelayUrl,
  ca: string | undefined,
): Promise<{ check?: DoctorCheck; error?: string; timing?: { date?: number; sent: number; received: number } }> {
  const sent = Date.now();
  let res: Response;
  try {
    res = await relayFetch(ca)(`${relay.http}/healthz`, { signal: AbortSignal.timeout(DOCTOR_TIMEOUT_MS) });
  } catch (error) {
    return { error: _networkWhy(error, relay) };
  }
  const received = Date.now();
  const body = await res.json().catch(() => undefined) as { status?: string; version?: string } | undefined;
  if (!res.ok || body?.status !== "ok" || typeof body.version !== "string") {
    return {
      check: {
        id: "relay",
        title: "Relay reachable",
        status: "fail",
        detail: `${relay.http} answered HTTP ${res.status}, but not as a coder1 relay does (GET /healthz)`,
        fix: "Check the address: the relay's start-up banner prints it (coder1 bridge start --relay ...).",
      },
    };
  }
  const date = Date.parse(res.headers.get("date") ?? "");
  return {
    check: {
      id: "relay",
      title: "Relay reachable",
      status: "ok",
      detail: `coder1 relay ${body.version} at ${relay.http}${
        body.version === VERSION ? "" : ` (this machine's coder1 is ${VERSION})`
      }`,
    },
    timing: { date: Number.isNaN(date) ? undefined : date, sent, received },
  };
}

/**
 * The relay's `Date` header is whole seconds, taken somewhere between sending
 * and receiving: this machine's offset lies in [sent - (date + 999), received
 * - date]. The offset reported is the end of that range nearest zero.
 */
function _checkClock(timing: { date?: number; sent: number; received: number }): DoctorCheck {
  const title = "Clock agrees with the relay's";
  if (timing.date === undefined) return _skip("clock", title, "the relay sent no Date header");
  const low = timing.sent - (timing.date + 999);
  const high = timing.received - timing.date;
  const skew = low > 0 ? low : high < 0 ? high : 0;
  const words = `${Math.abs(skew / 1000).toFixed(0)} s ${skew > 0 ? "ahead of" : "behind"} the relay's`;
  if (Math.abs(skew) <= MAX_CLOCK_SKEW_MS) {
    return {
      id: "clock",
      title,
      status: "ok",
      detail: skew === 0 ? "within a second of the relay's" : `${words} (at most ${MAX_CLOCK_SKEW_MS / 1000} s pass)`,
    };
  }
  return {
    id: "clock",
    title,
    status: "fail",
    detail: `this machine's clock is ${words} (more than ${MAX_CLOCK_SKEW_MS / 1000} s): token expiry and pairing ` +
      "deadlines are read against it",
    fix: "Turn on time synchronisation (timedatectl set-ntp true, or your OS's date and time settings); " +
      "if this machine is right, the relay's operator must fix the relay's clock.",
  };
}

/** The config dir and the key files in it: private to this user. */
async function _checkConfig(dir: string): Promise<DoctorCheck> {
  const title = "Config directory private";
  const problems: string[] = [];
  const fixes: string[] = [];
  const windows = Deno.build.os === "windows";
  const uid = windows ? undefined : Deno.uid();
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return { id: "config", title, status: "ok", detail: `${dir} not created yet (bridge start makes it, mode 0700)` };
    }
    return { id: "config", title, status: "fail", detail: `cannot read ${dir}: ${(error as Error).message}` };
  }
  if (!info.isDirectory) {
    return {
      id: "config",
      title,
      status: "fail",
      detail: `${dir} is not a directory`,
      fix: `Move ${dir} away; coder1 bridge start makes the directory.`,
    };
  }
  const mode = (m: number | null) => `0${((m ?? 0) & 0o777).toString(8)}`;
  if (!windows && (info.mode ?? 0) & 0o077) {
    problems.push(`${dir} is mode ${mode(info.mode)}: other users can look inside`);
    fixes.push(`chmod 700 ${dir}`);
  }
  if (uid !== undefined && info.uid !== null && info.uid !== uid) {
    problems.push(`${dir} belongs to uid ${info.uid}, not to you (uid ${uid})`);
    fixes.push(`chown -R $(id -u) ${dir}`);
  }
  for (const file of ["credentials.json", "identity.jwk"]) {
    const path = `${dir}/${file}`;
    let f: Deno.FileInfo;
    try {
      f = await Deno.stat(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue;
      problems.push(`cannot read ${path}: ${(error as Error).message}`);
      continue;
    }
    if (!windows && (f.mode ?? 0) & 0o077) {
      problems.push(
        `${path} is mode ${mode(f.mode)}: other users can read ${
          file === "identity.jwk" ? "the bridge's identity key" : "its tokens"
        }`,
      );
      fixes.push(`chmod 600 ${path}`);
    }
    if (uid !== undefined && f.uid !== null && f.uid !== uid) {
      problems.push(`${path} belongs to uid ${f.uid}, not to you (uid ${uid})`);
      if (!fixes.some((x) => x.startsWith("chown"))) fixes.push(`chown -R $(id -u) ${dir}`);
    }
    if (file === "identity.jwk") {
      try {
        const jwk = JSON.parse(await Deno.readTextFile(path));
        if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.d !== "string" || typeof jwk.x !== "string") {
          throw new Error("not an Ed25519 private key");
        }
      } catch (error) {
        problems.push(`${path} is not a bridge identity key (${(error as Error).message})`);
        fixes.push(`move ${path} away (a new key is made; you pair again)`);
      }
    }
  }
  if (problems.length) {
    return { id: "config", title, status: "fail", detail: problems.join("; "), fix: fixes.join("; ") || undefined };
  }
  return { id: "config", title, status: "ok", detail: `${dir}: mode 0700, key files 0600` };
}

/** The stored credential, checked by the relay without logging in. */
async function _checkCredential(
  store: CredentialStore,
  relay: RelayUrl | undefined,
  ca: string | undefined,
  reachable: boolean,
): Promise<DoctorCheck> {
  const title = "Stored credential accepted";
  if (!relay) return _skip("credential", title, "no relay to ask");
  const repair = `Pair again: coder1 bridge start --pair --relay ${relay.http}`;
  let credential;
  try {
    credential = await store.get(relay.http);
  } catch (error) {
    return {
      id: "credential",
      title,
      status: "fail",
      detail: (error as Error).message,
      fix: `Move ${store.file} away, then pair again: coder1 bridge start --relay ${relay.http}`,
    };
  }
  if (!credential) {
    return _skip(
      "credential",
      title,
      `not paired with ${relay.http} yet (coder1 bridge start --relay ${relay.http} pairs)`,
    );
  }
  if (!reachable) return _skip("credential", title, "the relay did not answer, so it could not be asked");
  const fetchRelay = relayFetch(ca);
  let res: Response;
  try {
    res = await fetchRelay(`${relay.http}/api/bridge/verify`, {
      method: "POST",
      headers: { authorization: `Bearer ${credential.token}` },
      signal: AbortSignal.timeout(DOCTOR_TIMEOUT_MS),
    });
    // A relay from before /api/bridge/verify: the older read-only route says yes or no.
    if (res.status === 404 || res.status === 405) {
      await res.body?.cancel();
      res = await fetchRelay(`${relay.http}/api/bridge`, {
        headers: { authorization: `Bearer ${credential.token}` },
        signal: AbortSignal.timeout(DOCTOR_TIMEOUT_MS),
      });
    }
  } catch (error) {
    return _skip("credential", title, `could not ask the relay: ${_networkWhy(error, relay)}`);
  }
  const body = await res.json().catch(() => ({})) as { reason?: string; expiresAt?: number; bridgeId?: string };
  if (res.ok) {
    const expiresAt = body.expiresAt ?? credential.expiresAt;
    const days = Math.floor((expiresAt - Date.now()) / 86_400_000);
    return {
      id: "credential",
      title,
      status: "ok",
      detail: `bridge ${credential.bridgeId.slice(0, 8)}, valid until ${
        new Date(expiresAt).toISOString().slice(0, 10)
      } (${days} days)${
        credential.pinnedIde ? "" : "; not approved in an IDE yet (the IDE asks when the bridge next connects)"
      }`,
    };
  }
  if (res.status === 429) {
    return {
      id: "credential",
      title,
      status: "fail",
      detail: "the relay refused to check: too many checks from this address",
      fix: `Try again in ${res.headers.get("retry-after") ?? "60"} s.`,
    };
  }
  if (res.status !== 401) {
    return { id: "credential", title, status: "fail", detail: `the relay answered HTTP ${res.status}`, fix: repair };
  }
  const detail = body.reason === "revoked"
    ? "the relay revoked this machine's token (logged out, or forgotten in the IDE)"
    : body.reason === "expired"
    ? `the token expired on ${new Date(credential.expiresAt).toISOString().slice(0, 10)}`
    : body.reason === "invalid"
    ? "the relay does not accept this token (it was not issued by this relay, or the relay's signing key changed)"
    : "the relay does not accept this token (revoked, expired or not its own)";
  return { id: "credential", title, status: "fail", detail, fix: repair };
}

/** Runs `shell -c 'exit 0'`, the way the bridge runs commands. */
async function _checkShell(shell: string): Promise<DoctorCheck> {
  const title = "Shell starts";
  const args = Deno.build.os === "windows" ? ["/d", "/s", "/c", "exit 0"] : ["-c", "exit 0"];
  try {
    const child = new Deno.Command(shell, { args, stdin: "null", stdout: "null", stderr: "piped" }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), DOCTOR_TIMEOUT_MS);
    const out = await child.output();
    clearTimeout(timer);
    if (out.code === 0) {
      return { id: "shell", title, status: "ok", detail: `${shell} (commands run with ${shell} -c)` };
    }
    const stderr = new TextDecoder().decode(out.stderr).trim().split("\n")[0];
    return {
      id: "shell",
      title,
      status: "fail",
      detail: `${shell} -c 'exit 0' ended with ${out.signal ?? `exit ${out.code}`}${stderr ? `: ${stderr}` : ""}`,
      fix: "Fix the shell's start-up files, or point SHELL at a working shell (for example SHELL=/bin/sh).",
    };
  } catch (error) {
    const missing = error instanceof Deno.errors.NotFound;
    return {
      id: "shell",
      title,
      status: "fail",
      detail: missing ? `${shell} does not exist` : `${shell} cannot be started: ${(error as Error).message}`,
      fix: `${
        Deno.build.os === "windows" ? "ComSpec" : "SHELL"
      } names the shell the bridge runs commands with: point it at an installed shell (for example SHELL=/bin/sh).`,
    };
  }
}

/** Opens a pseudo-terminal and runs the shell in it, as a terminal tab would. */
async function _checkTerminals(shell: string): Promise<DoctorCheck> {
  const title = "Terminals work here";
  const pty = await createPtySpawner();
  if (!pty.spawner) {
    const os = Deno.build.os === "windows";
    return {
      id: "terminals",
      title,
      status: os ? "skip" : "fail",
      detail: pty.unavailable.message,
      ...(os ? {} : { fix: "Use a build of coder1 for this OS; meanwhile the IDE offers one-shot commands." }),
    };
  }
  try {
    const env = pty.spawner.environment?.() ?? {};
    const proc = pty.spawner.spawn({
      file: shell,
      args: ["-c", "exit 0"],
      cwd: "/",
      env: { PATH: env.PATH ?? "/usr/bin:/bin", TERM: "xterm-256color" },
      cols: 80,
      rows: 24,
    });
    const drained = proc.output.pipeTo(new WritableStream()).catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exit = await Promise.race([
      proc.exited,
      new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), DOCTOR_TIMEOUT_MS)),
    ]);
    clearTimeout(timer);
    proc.close();
    await drained;
    if (!exit) throw new Error(`${shell} did not end within ${DOCTOR_TIMEOUT_MS / 1000} s in a terminal`);
    if (exit.code !== 0) throw new Error(`${shell} -c 'exit 0' in a terminal ended with ${exit.signal ?? exit.code}`);
    return { id: "terminals", title, status: "ok", detail: `pseudo-terminals open; ${shell} runs in one` };
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) {
      return {
        id: "terminals",
        title,
        status: "fail",
        detail: `Deno may not load libc here, which terminals need (${(error as Error).message})`,
        fix: "Run coder1 with the bridge's permission flags (they include --allow-ffi): the coder1 command, " +
          "or npx -y deno@2.9.6 task coder1 from a checkout.",
      };
    }
    return {
      id: "terminals",
      title,
      status: "fail",
      detail: `cannot run a terminal: ${(error as Error).message}`,
      fix: "Check that /dev/ptmx and /dev/pts are available (in a container: mount devpts); " +
        "meanwhile the IDE offers one-shot commands.",
    };
  }
}

function _checkTelemetry(): DoctorCheck {
  const title = "Telemetry setting";
  const value = Deno.env.get(TELEMETRY_ENV);
  try {
    return {
      id: "telemetry",
      title,
      status: "ok",
      detail: telemetryEnabled(value)
        ? `on: the relay keeps connection times, version, command counts and crash reports (${TELEMETRY_ENV}=false turns it off)`
        : `off (${TELEMETRY_ENV}=${value}): the relay is asked to keep nothing about this bridge`,
    };
  } catch (error) {
    return {
      id: "telemetry",
      title,
      status: "fail",
      detail: (error as Error).message,
      fix: `Set ${TELEMETRY_ENV}=true or ${TELEMETRY_ENV}=false, or unset it (on).`,
    };
  }
}
