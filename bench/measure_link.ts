/**
 * Items 1-3 of the bench: what a user feels through relay and bridge, each
 * beside its baseline from the same run (and item 7, a terminal, in
 * bench/measure_terminal.ts, on the same paired bridge).
 *
 * - Command latency: `true` from the IDE client to its exit status through a
 *   real relay process and a real `coder1 bridge start` process, against
 *   OpenSSH running `true` over a multiplexed connection to localhost.
 * - Throughput: a command writing N bytes, streamed to the IDE client,
 *   against `ssh` running the same command and one direct WebSocket; the
 *   relay's CPU per MiB against a bare WebSocket forwarder carrying the same
 *   frames at the same rate (bench/measure_forward.ts).
 * - Round trip: a small frame IDE → relay → bridge → relay → IDE with a
 *   bench-only bridge that echoes stdin in memory (bench/echo_bridge.ts),
 *   against one direct WebSocket between the same kinds of endpoint.
 *
 * Everything goes through the public IDE client (shared/ide_client.ts) with
 * npm:ws sockets, with end-to-end encryption on. Samples of coder1 and its
 * baselines are taken in alternating rounds so that load from other
 * processes on the machine falls on both alike.
 *
 * @module
 */
import { permissionFlags, roleFor } from "../cli/permissions.ts";
import type { IdeClient } from "../shared/ide_client.ts";
import { KEYSTROKE_INTERVAL_MS, OUTPUT_CHUNK_BYTES } from "../shared/protocol.ts";
import {
  approveBridge,
  type Coder1Process,
  ideClient,
  makeTestDirs,
  OutputWatcher,
  ROOT,
  startBridgeProcess,
  startRelayProcess,
} from "../tools/harness.ts";
import { DirectClient } from "./direct_client.ts";
import { BareForwarder, type ForwardRun } from "./measure_forward.ts";
import { measureTerminal } from "./measure_terminal.ts";
import { OpenSsh } from "./openssh.ts";
import { cpuMs, cpuMsOf } from "./proc_stats.ts";
import type { Row } from "./report.ts";
import { ratio, round, summarize, type Summary } from "./stats.ts";

/** Repetitions for items 1-3. */
export interface LinkConfig {
  /** Round trips per variant and frame size. */
  roundTrips: number;
  /** Frame sizes for the round trip, bytes (the first is the headline). */
  frameSizes: number[];
  /** `true` runs per variant (coder1, ssh multiplexed). */
  commands: number;
  /** `true` runs over a fresh (not multiplexed) ssh connection. */
  freshSsh: number;
  /** Bytes the throughput command writes. */
  streamBytes: number;
  /** Throughput runs per variant. */
  streamRuns: number;
  /** Rounds the samples are interleaved in. */
  rounds: number;
  /** Keystrokes per variant for the terminal's echo (item 7, bench/measure_terminal.ts). */
  keystrokes: number;
  /** Bytes `cat` writes in a terminal (item 7). */
  terminalBytes: number;
  /** Terminal `cat` runs per variant (item 7). */
  terminalRuns: number;
}

/** What items 1-3 produced. */
export interface LinkResults {
  rows: Row[];
  sections: Record<string, unknown>;
  notes: string[];
}

const MB = 1e6;

/** Formats a time summary: "0.61 ms (p99 1.20)". */
export function fmtMs(s: Summary): string {
  return `${_num(s.median)} ms (p99 ${_num(s.p99)})`;
}

/**
 * Measures items 1-3.
 *
 * @param config Repetitions.
 * @param ssh The OpenSSH baseline, or why it is missing.
 * @param log Progress lines.
 * @returns Rows, raw figures and notes.
 */
export async function measureLink(
  config: LinkConfig,
  ssh: OpenSsh | { missing: string },
  log: (line: string) => void,
): Promise<LinkResults> {
  const rows: Row[] = [];
  const sections: Record<string, unknown> = {};
  const notes: string[] = [];
  const sshOk = ssh instanceof OpenSsh ? ssh : undefined;
  const sshMissing = sshOk ? undefined : (ssh as { missing: string }).missing;
  // The bridge runs commands with the same shell sshd uses (the user's login
  // shell), so both sides start the same program for `true`.
  const shell = sshOk?.shell ?? "/bin/sh";

  const dirs = await makeTestDirs();
  const relay = await startRelayProcess(dirs);
  const direct = await startDirectServer();
  const forwarder = await BareForwarder.start();
  let bridge: Coder1Process | undefined;
  let echo: Coder1Process | undefined;
  const ide = ideClient(relay.url);
  try {
    await ide.createSession();
    const { code } = await ide.requestPairingCode();
    await ide.connect();
    bridge = startBridgeProcess(dirs, relay.url, { code, env: { SHELL: shell } });
    await approveBridge(ide, bridge);
    log("link: paired a bridge (first pairing with SAS and approval)");

    // Item 2: command latency.
    const latency = { coder1: [] as number[], ssh: [] as number[], fresh: [] as number[] };
    await _runTrue(ide); // Warm-up: the first spawn pays for caches.
    if (sshOk) await sshOk.run("true");
    for (let round = 0; round < config.rounds; round++) {
      const n = share(config.commands, config.rounds, round);
      for (let i = 0; i < n; i++) latency.coder1.push(await _runTrue(ide));
      if (sshOk) { for (let i = 0; i < n; i++) latency.ssh.push((await sshOk.run("true")).ms); }
      if (sshOk) {
        for (let i = 0; i < share(config.freshSsh, config.rounds, round); i++) {
          latency.fresh.push((await sshOk.run("true", { mux: false })).ms);
        }
      }
    }
    const lat = {
      coder1: summarize(latency.coder1),
      sshMux: latency.ssh.length ? summarize(latency.ssh) : null,
      sshFresh: latency.fresh.length ? summarize(latency.fresh) : null,
    };
    sections.commandLatency = { ...lat, shell, skipped: sshMissing };
    rows.push({
      id: "command-latency",
      item: 2,
      measure: "`true`: IDE → exit status (relay + bridge) vs `ssh` multiplexed",
      coder1: fmtMs(lat.coder1),
      baseline: lat.sshMux ? `OpenSSH, multiplexed: ${fmtMs(lat.sshMux)}` : `OpenSSH: skipped (${sshMissing})`,
      ratio: lat.sshMux ? ratio(lat.coder1.median, lat.sshMux.median) : null,
      target: "faster than OpenSSH (ratio < 1)",
      met: lat.sshMux ? lat.coder1.median < lat.sshMux.median : null,
      ...(lat.sshMux ? {} : { skipped: sshMissing }),
    });
    if (lat.sshFresh) {
      rows.push({
        id: "command-latency-fresh-ssh",
        item: 2,
        measure: "`true` vs `ssh` with a new connection each time (no ControlMaster)",
        coder1: fmtMs(lat.coder1),
        baseline: `OpenSSH, new connection: ${fmtMs(lat.sshFresh)}`,
        ratio: ratio(lat.coder1.median, lat.sshFresh.median),
        target: "none (context)",
        met: null,
      });
    }
    log(`link: command latency coder1 ${fmtMs(lat.coder1)}${lat.sshMux ? `, ssh ${fmtMs(lat.sshMux)}` : ""}`);

    // Item 3: throughput.
    const command = `head -c ${config.streamBytes} /dev/zero`;
    const tp = { coder1: [] as number[], ssh: [] as number[], sealed: [] as number[], plain: [] as number[] };
    // CPU per MiB of each process on the path: where the time goes.
    const cpu = {
      relay: [] as number[],
      bridge: [] as number[],
      ide: [] as number[],
      direct: [] as number[],
      ssh: [] as number[],
    };
    // The relay's hop against the bare forwarder: paced to the rate coder1 just had, and flat out.
    const hop = {
      paced: [] as ForwardRun[],
      unpaced: [] as ForwardRun[],
      matched: [] as ForwardRun[],
      frames: [] as number[],
      frameBytes: 0,
    };
    const mib = config.streamBytes / 2 ** 20;
    for (let run = 0; run < config.streamRuns; run++) {
      const pids = { relay: relay.child.pid, bridge: bridge.child.pid, ide: Deno.pid };
      const relayed0 = await _relayedToIde(relay.url);
      const before = { relay: cpuMs(pids.relay), bridge: cpuMs(pids.bridge), ide: cpuMs(pids.ide) };
      tp.coder1.push(await streamCoder1(ide, command, config.streamBytes));
      for (const k of ["relay", "bridge", "ide"] as const) cpu[k].push((cpuMs(pids[k]) - before[k]) / mib);
      const relayed1 = await _relayedToIde(relay.url);
      hop.frames.push(relayed1.frames - relayed0.frames);
      hop.frameBytes += relayed1.bytes - relayed0.bytes;
      if (sshOk) {
        // The same processes before and after: the command and its shell have exited by then.
        const s0 = cpuMsOf(sshOk.processIds());
        const r = await sshOk.run(command);
        const s1 = cpuMsOf([...s0.keys()]);
        if (r.bytes !== config.streamBytes) throw new Error(`ssh streamed ${r.bytes} bytes, not ${config.streamBytes}`);
        tp.ssh.push(r.bytes / MB / (r.ms / 1000));
        cpu.ssh.push([...s1].reduce((sum, [pid, ms]) => sum + ms - s0.get(pid)!, 0) / mib);
      }
      const d0 = cpuMs(direct.pid) + cpuMs(Deno.pid);
      tp.sealed.push(await _streamDirect(direct.port, config.streamBytes, true));
      cpu.direct.push((cpuMs(direct.pid) + cpuMs(Deno.pid) - d0) / mib);
      tp.plain.push(await _streamDirect(direct.port, config.streamBytes, false));
      hop.paced.push(await forwarder.stream(config.streamBytes, { mbps: tp.coder1.at(-1)! }));
      hop.unpaced.push(await forwarder.stream(config.streamBytes));
      // As many frames as the relay carried in this run (the bridge's frames are not all full).
      hop.matched.push(
        await forwarder.stream(config.streamBytes, {
          mbps: tp.coder1.at(-1)!,
          frameOutputBytes: config.streamBytes / hop.frames.at(-1)!,
        }),
      );
      log(`link: throughput run ${run + 1}/${config.streamRuns}: coder1 ${round(tp.coder1.at(-1)!, 0)} MB/s`);
    }
    const thr = {
      bytes: config.streamBytes,
      coder1: summarize(tp.coder1, 1),
      ssh: tp.ssh.length ? summarize(tp.ssh, 1) : null,
      directSealed: summarize(tp.sealed, 1),
      directPlain: summarize(tp.plain, 1),
    };
    const cpuPerMiB = {
      relay: summarize(cpu.relay, 2).median,
      bridge: summarize(cpu.bridge, 2).median,
      ide: summarize(cpu.ide, 2).median,
      directSealed: summarize(cpu.direct, 2).median,
      openssh: cpu.ssh.length ? summarize(cpu.ssh, 2).median : null,
    };
    sections.throughput = {
      ...thr,
      unit: "MB/s (10^6 bytes per second), median over runs",
      cpuMsPerMiB: cpuPerMiB,
      skipped: sshMissing,
    };
    const size = `${round(mib, 1)} MiB`;
    rows.push({
      id: "throughput-ssh",
      item: 3,
      measure: `Output throughput, ${size} streamed to the IDE vs \`ssh localhost\``,
      coder1: `${_num(thr.coder1.median)} MB/s`,
      baseline: thr.ssh ? `OpenSSH: ${_num(thr.ssh.median)} MB/s` : `OpenSSH: skipped (${sshMissing})`,
      ratio: thr.ssh ? ratio(thr.coder1.median, thr.ssh.median) : null,
      target: "≥ 150 MB/s and ≥ 0.5× OpenSSH",
      met: thr.ssh ? thr.coder1.median >= 150 && thr.coder1.median >= 0.5 * thr.ssh.median : null,
      ...(thr.ssh ? {} : { skipped: sshMissing }),
    });
    rows.push({
      id: "throughput-direct",
      item: 3,
      measure: `Output throughput, ${size} vs one direct WebSocket (sealed, no relay, no child process)`,
      coder1: `${_num(thr.coder1.median)} MB/s`,
      baseline: `direct WebSocket, sealed: ${_num(thr.directSealed.median)} MB/s; unsealed: ${
        _num(thr.directPlain.median)
      } MB/s`,
      ratio: ratio(thr.coder1.median, thr.directSealed.median),
      target: "≥ 150 MB/s",
      met: thr.coder1.median >= 150,
    });
    // The relay's hop beside its floor. The bridge's frames are not all full (it sends what the pipe has when
    // the relay is not waiting), so the ratio is taken against as many frames as the relay carried.
    const relayFrames = hop.frames.reduce((a, b) => a + b, 0);
    const relayHop = {
      relay: {
        cpuMsPerMiB: cpuPerMiB.relay,
        mbps: thr.coder1.median,
        framesPerRun: summarize(hop.frames, 0).median,
        meanFrameBytes: round(hop.frameBytes / relayFrames, 0),
      },
      sameFrames: _forwardSummary(hop.matched),
      fullFrames: _forwardSummary(hop.paced),
      fullFramesFlatOut: _forwardSummary(hop.unpaced),
    };
    sections.relayHop = {
      ...relayHop,
      unit: "CPU (user + system) in ms per MiB of command output, medians over runs; MB/s of output",
    };
    const { sameFrames, fullFrames, fullFramesFlatOut } = relayHop;
    rows.push({
      id: "relay-cpu-floor",
      item: 3,
      measure: "Relay CPU per MiB forwarded vs a bare Deno.serve WebSocket forwarder (same frames, same rate)",
      coder1: `relay: ${cpuPerMiB.relay} ms/MiB at ${_num(thr.coder1.median)} MB/s, ${relayHop.relay.framesPerRun} ` +
        `frames to the IDE per run (${_bytes(relayHop.relay.meanFrameBytes)} on average)`,
      baseline: `bare forwarder, paced to the same rate: ${sameFrames.cpuMsPerMiB} ms/MiB in as many frames ` +
        `(${sameFrames.frames}); ${fullFrames.cpuMsPerMiB} ms/MiB in full frames (${fullFrames.frames} of ` +
        `${_bytes(fullFrames.frameBytes)}); flat out in full frames: ${fullFramesFlatOut.cpuMsPerMiB} ms/MiB ` +
        `at ${_num(fullFramesFlatOut.mbps)} MB/s`,
      ratio: ratio(cpuPerMiB.relay, sameFrames.cpuMsPerMiB),
      target: "≤ 1.0 ms/MiB",
      met: cpuPerMiB.relay <= 1.0,
    });
    const total = round(cpuPerMiB.relay + cpuPerMiB.bridge + cpuPerMiB.ide, 2);
    rows.push({
      id: "throughput-cpu",
      item: 3,
      measure: "Where the time goes: CPU per MiB streamed, by process (not counting the command and its shell)",
      coder1: `${total} ms/MiB: bridge ${cpuPerMiB.bridge}, IDE client ${cpuPerMiB.ide}, relay ${cpuPerMiB.relay}`,
      baseline: `${
        cpuPerMiB.openssh === null ? "" : `OpenSSH (sshd + ssh master): ${cpuPerMiB.openssh} ms/MiB; `
      }direct WebSocket, sealed (server + client): ${cpuPerMiB.directSealed} ms/MiB`,
      ratio: cpuPerMiB.openssh ? ratio(total, cpuPerMiB.openssh) : ratio(total, cpuPerMiB.directSealed),
      target: "none (profile)",
      met: null,
    });

    // Item 7: a terminal on the real bridge (keystroke echo, `cat`), against `ssh -tt`.
    const terminal = await measureTerminal(
      ide,
      {
        keystrokes: config.keystrokes,
        catBytes: config.terminalBytes,
        catRuns: config.terminalRuns,
        rounds: config.rounds,
      },
      { ssh: sshOk, sshMissing, pids: { relay: relay.child.pid, bridge: bridge.child.pid }, log },
    );
    rows.push(...terminal.rows);
    Object.assign(sections, terminal.sections);
    notes.push(...terminal.notes);

    // Item 1: round trip, with the echo bridge in place of the real one.
    await bridge.stop();
    bridge = undefined;
    await _until(() => ide.state !== "ready", 10_000, "the IDE to see the bridge leave");
    echo = startEchoBridge(dirs.env, relay.url);
    await Promise.race([
      ide.waitForBridge(20_000),
      echo.status.then((s) => {
        throw new Error(`echo bridge exited (${s.code}): ${echo!.stderr.text}`);
      }),
    ]);
    log("link: echo bridge connected with the pinned keys");
    const rtt: Record<string, unknown>[] = [];
    for (const size of config.frameSizes) {
      const payload = crypto.getRandomValues(new Uint8Array(size));
      const samples = { coder1: [] as number[], sealed: [] as number[], plain: [] as number[] };
      const echoCmd = echoCommand(ide);
      const sealedClient = await DirectClient.connect(`ws://127.0.0.1:${direct.port}/echo?sealed=1`, true);
      const plainClient = await DirectClient.connect(`ws://127.0.0.1:${direct.port}/echo?sealed=0`, false);
      const warm = Math.min(50, config.roundTrips);
      for (let i = 0; i < warm; i++) {
        await echoCmd.roundTrip(payload);
        await sealedClient.roundTrip(payload);
        await plainClient.roundTrip(payload);
      }
      for (let round = 0; round < config.rounds; round++) {
        const n = share(config.roundTrips, config.rounds, round);
        for (let i = 0; i < n; i++) samples.coder1.push(await echoCmd.roundTrip(payload));
        for (let i = 0; i < n; i++) samples.sealed.push(await sealedClient.roundTrip(payload));
        for (let i = 0; i < n; i++) samples.plain.push(await plainClient.roundTrip(payload));
      }
      await echoCmd.close();
      sealedClient.close();
      plainClient.close();
      const s = {
        bytes: size,
        coder1: summarize(samples.coder1),
        directSealed: summarize(samples.sealed),
        directPlain: summarize(samples.plain),
      };
      rtt.push(s);
      const r = ratio(s.coder1.median, s.directSealed.median);
      rows.push({
        id: `round-trip-${size}`,
        item: 1,
        measure: `Round trip, ${_bytes(size)} frame: IDE → relay → bridge → relay → IDE vs direct WebSocket`,
        coder1: fmtMs(s.coder1),
        baseline: `direct, sealed: ${fmtMs(s.directSealed)}; unsealed: ${fmtMs(s.directPlain)}`,
        ratio: r,
        target: size === config.frameSizes[0] ? "≤ 2.5× direct (sealed)" : "none (context)",
        met: size === config.frameSizes[0] ? r <= 2.5 : null,
      });
      log(`link: round trip ${_bytes(size)} coder1 ${fmtMs(s.coder1)}, direct sealed ${fmtMs(s.directSealed)}`);
    }
    sections.roundTrip = rtt;

    // Item 7's floor: one byte after a pause like a typed key's (a random wait below one keystroke interval), so
    // that every process on the path has gone idle, through the relay and the echo bridge (no PTY, no terminal),
    // beside the same byte over a direct WebSocket with no relay, sealed and not.
    {
      const key = new Uint8Array([0x78]);
      const paused = { coder1: [] as number[], sealed: [] as number[], plain: [] as number[] };
      const echoCmd = echoCommand(ide);
      const sealedClient = await DirectClient.connect(`ws://127.0.0.1:${direct.port}/echo?sealed=1`, true);
      const plainClient = await DirectClient.connect(`ws://127.0.0.1:${direct.port}/echo?sealed=0`, false);
      const pause = () => new Promise((r) => setTimeout(r, Math.random() * KEYSTROKE_INTERVAL_MS));
      for (let round = 0; round < config.rounds; round++) {
        const n = share(config.keystrokes, config.rounds, round);
        for (let i = 0; i < n; i++) paused.coder1.push(await pause().then(() => echoCmd.roundTrip(key)));
        for (let i = 0; i < n; i++) paused.sealed.push(await pause().then(() => sealedClient.roundTrip(key)));
        for (let i = 0; i < n; i++) paused.plain.push(await pause().then(() => plainClient.roundTrip(key)));
      }
      await echoCmd.close();
      sealedClient.close();
      plainClient.close();
      const s = {
        coder1: summarize(paused.coder1),
        directSealed: summarize(paused.sealed),
        directPlain: summarize(paused.plain),
      };
      sections.roundTripPaused = s;
      rows.push({
        id: "round-trip-paused",
        item: 7,
        measure:
          "Keystroke echo's floor: 1 B after a typing pause (random wait below 20 ms), IDE → relay → echo bridge → relay → IDE (no PTY, no terminal) vs a direct WebSocket (no relay)",
        coder1: fmtMs(s.coder1),
        baseline: `direct, sealed: ${fmtMs(s.directSealed)}; unsealed: ${fmtMs(s.directPlain)}`,
        ratio: ratio(s.coder1.median, s.directSealed.median),
        target: "none (context for the keystroke echo)",
        met: null,
      });
      log(`link: 1 B after a pause coder1 ${fmtMs(s.coder1)}, direct sealed ${fmtMs(s.directSealed)}`);
    }
    notes.push(
      "Round trip: the bridge is bench/echo_bridge.ts, the real bridge link and command manager with an in-memory " +
        "process that echoes stdin to stdout (no child process). The baseline is an npm:ws client talking to a " +
        "Deno.serve WebSocket server in another process with no relay, which runs the same end-to-end handshake and " +
        "opens and re-seals every frame with the same AES-256-GCM session as the bridge (sealed); the unsealed figure is " +
        "the bare floor.",
      `Command latency and throughput run through a real \`coder1 bridge start\` with SHELL=${shell} (the user's login ` +
        "shell, which sshd uses too; sshd's sessions get SHLVL=1 so that bash skips ~/.bashrc, as the bridge's " +
        "non-interactive shell does). OpenSSH is Debian's, default ciphers, a throwaway sshd on 127.0.0.1 with its own " +
        "host key and one client key.",
      "Relay CPU per MiB: the relay's CPU time (user + system, from /proc/PID/stat, 10 ms ticks) over each coder1 " +
        "throughput run, per MiB of output. Its baseline is bench/bare_forwarder.ts, a Deno.serve process that " +
        "receives each binary WebSocket message on one socket, stamps bytes 4-7 in place and sends it on another, " +
        "and nothing else: the cost of one WebSocket hop on this machine, which the relay cannot go below. After " +
        "each coder1 run it carries the same output in sealed `cmd.stdout` frames from an npm:ws sender that masks " +
        "with zeros, as the bridge does on loopback, to an npm:ws receiver, with at most the stream window (4 MiB) " +
        "in flight, three times: paced to the rate that run had, in as many frames as the relay carried in it (read " +
        "from the relay's /metrics: the bridge joins output into frames of up to " +
        `${OUTPUT_CHUNK_BYTES / 1024} KiB only while output is waiting), which the ratio uses; paced, in full ` +
        "frames; and flat out in full frames. CPU per MiB grows as the rate falls or frames shrink: each wake-up " +
        "and each message costs the same for less data.",
      "Throughput: MB/s is 10^6 bytes per second, from the IDE's `run()` to its exit status (coder1), from spawning " +
        "`ssh` to its exit (OpenSSH, stdout read by the bench), from opening the socket to the last frame (direct).",
    );
  } finally {
    ide.close();
    await echo?.stop();
    await bridge?.stop();
    await relay.stop();
    await direct.stop();
    await forwarder.stop();
    await dirs.cleanup();
  }
  return { rows, sections, notes };
}

/** Runs `true` and returns ms from `run()` to the exit status. */
async function _runTrue(ide: IdeClient): Promise<number> {
  const t0 = performance.now();
  const result = await ide.run("true").exited;
  const ms = performance.now() - t0;
  if (result.code !== 0) throw new Error(`true exited with ${result.code ?? result.signal}`);
  return ms;
}

/** Streams `command`'s output to the IDE; returns MB/s. */
export async function streamCoder1(ide: IdeClient, command: string, bytes: number): Promise<number> {
  let got = 0;
  const t0 = performance.now();
  const result = await ide.run(command, { onStdout: (b) => void (got += b.byteLength) }).exited;
  const ms = performance.now() - t0;
  if (result.code !== 0 || got !== bytes) throw new Error(`stream: exit ${result.code}, ${got} of ${bytes} bytes`);
  return got / MB / (ms / 1000);
}

/** Medians of runs through the bare forwarder. */
function _forwardSummary(
  runs: ForwardRun[],
): { frames: number; frameBytes: number; mbps: number; cpuMsPerMiB: number } {
  return {
    frames: summarize(runs.map((r) => r.frames), 0).median,
    frameBytes: summarize(runs.map((r) => r.frameBytes), 0).median,
    mbps: summarize(runs.map((r) => r.mbps), 1).median,
    cpuMsPerMiB: summarize(runs.map((r) => r.cpuMsPerMiB), 2).median,
  };
}

/** Frames and bytes the relay has forwarded to IDE sockets so far, from its `/metrics`. */
async function _relayedToIde(relayUrl: string): Promise<{ frames: number; bytes: number }> {
  const response = await fetch(`${relayUrl}/metrics`);
  if (!response.ok) throw new Error(`Cannot read the relay's metrics: HTTP ${response.status}`);
  const text = await response.text();
  const read = (name: string) => {
    const m = new RegExp(`^${name}\\{direction="bridge_to_ide"\\} (\\d+)$`, "m").exec(text);
    if (!m) throw new Error(`Cannot read the relay's metrics: no ${name}`);
    return Number(m[1]);
  };
  return { frames: read("coder1_frames_relayed_total"), bytes: read("coder1_bytes_relayed_total") };
}

/** Receives `bytes` from the direct server; returns MB/s. */
async function _streamDirect(port: number, bytes: number, sealed: boolean): Promise<number> {
  const t0 = performance.now();
  const client = await DirectClient.connect(`ws://127.0.0.1:${port}/stream?bytes=${bytes}&sealed=${+sealed}`, sealed);
  const r = await client.receive(t0);
  client.close();
  if (r.bytes !== bytes) throw new Error(`direct stream: ${r.bytes} of ${bytes} bytes`);
  return r.bytes / MB / (r.ms / 1000);
}

/** A long-running echo command on the echo bridge, timed one frame at a time. */
export function echoCommand(
  ide: IdeClient,
): { roundTrip(payload: Uint8Array): Promise<number>; close(): Promise<void> } {
  let waiting: ((b: Uint8Array) => void) | undefined;
  const cmd = ide.run("echo", { onStdout: (b) => waiting?.(b) });
  return {
    async roundTrip(payload) {
      const back = new Promise<Uint8Array>((resolve) => (waiting = resolve));
      const t0 = performance.now();
      cmd.write(payload);
      const got = await Promise.race([back, cmd.exited.then(() => new Uint8Array(0))]);
      const ms = performance.now() - t0;
      if (got.byteLength !== payload.byteLength) throw new Error("Cannot measure round trip: echo has another size");
      return ms;
    },
    async close() {
      cmd.closeStdin();
      await cmd.exited;
    },
  };
}

/**
 * Starts bench/echo_bridge.ts with the bridge role's permission flags: it reuses the pairing a real bridge stored in
 * `env`'s config dir for `relayUrl`.
 */
export function startEchoBridge(env: Record<string, string>, relayUrl: string): Coder1Process {
  const args = ["bridge", "start", "--relay", relayUrl];
  const { role, scope } = roleFor(args, { env: (n) => env[n] ?? Deno.env.get(n), cwd: ROOT });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...permissionFlags(role, scope), `${ROOT}/bench/echo_bridge.ts`, "--relay", relayUrl],
    cwd: ROOT,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new OutputWatcher(child.stdout);
  const stderr = new OutputWatcher(child.stderr);
  const status = child.status.then(async (s) => {
    await Promise.all([stdout.done, stderr.done]);
    return s;
  });
  return {
    child,
    stdout,
    stderr,
    status,
    write: () => Promise.resolve(),
    async stop(signal: Deno.Signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch {
        // Already exited.
      }
      return await status;
    },
  };
}

/** Starts bench/direct_server.ts (the no-relay baseline) and waits until it listens. */
export async function startDirectServer(): Promise<{ port: number; pid: number; stop(): Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net=127.0.0.1", "--no-prompt", `${ROOT}/bench/direct_server.ts`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = new OutputWatcher(child.stdout);
  const err = new OutputWatcher(child.stderr);
  const m = await Promise.race([
    out.waitFor(/listening on (\d+)/),
    child.status.then((s) => {
      throw new Error(`direct server exited (${s.code}): ${err.text}`);
    }),
  ]);
  return {
    port: Number(m[1]),
    pid: child.pid,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already exited.
      }
      await child.status;
      await Promise.all([out.done, err.done]);
    },
  };
}

async function _until(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** This round's share of `total` samples spread over `rounds`. */
export function share(total: number, rounds: number, round: number): number {
  return Math.floor((total * (round + 1)) / rounds) - Math.floor((total * round) / rounds);
}

function _num(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function _bytes(n: number): string {
  return n >= 1024 ? `${round(n / 1024, 1)} KiB` : `${n} B`;
}
