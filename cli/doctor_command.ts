/**
 * `coder1 doctor`: resolves the relay and CA file the way the bridge does,
 * runs the checks of bridge/doctor.ts as the bridge's role, and prints them
 * (or `--json`). Exit 0 when no check failed, 1 otherwise.
 *
 * @module
 */
import { CredentialStore } from "../bridge/credentials.ts";
import { formatDoctor, runDoctor } from "../bridge/doctor.ts";
import { resolveRelay } from "../bridge/relay_choice.ts";
import type { RelayUrl } from "../shared/relay_url.ts";
import type { FlagValues } from "./args.ts";
import { defaultConfigDir } from "./paths.ts";
import { dropUnusedPermissions } from "./permissions.ts";
import { DOCTOR } from "./specs.ts";

/**
 * Runs `coder1 doctor`.
 *
 * @param flags Parsed {@linkcode DOCTOR} flags.
 * @returns The exit code.
 */
export async function doctor(flags: FlagValues): Promise<number> {
  await dropUnusedPermissions("bridge");
  const configDir = defaultConfigDir();
  // A bad relay URL or CA file is one of the things doctor reports, not a usage error.
  let relay: RelayUrl | undefined;
  let relayError: string | undefined;
  try {
    const lastRelay = await _lastRelay(configDir);
    const store = { lastRelay: () => Promise.resolve(lastRelay) } as unknown as CredentialStore;
    relay = (await resolveRelay({ ...flags, "ca-file": undefined }, store, DOCTOR)).relay;
  } catch (error) {
    relayError = (error as Error).message;
  }
  const caFile = flags["ca-file"] as string | undefined;
  let ca: string | undefined;
  let caError: string | undefined;
  if (caFile !== undefined) {
    try {
      ca = await Deno.readTextFile(caFile);
      if (!ca.includes("-----BEGIN CERTIFICATE-----")) caError = `--ca-file ${caFile} holds no PEM certificate`;
    } catch (error) {
      caError = `cannot read --ca-file ${caFile}: ${(error as Error).message}`;
    }
  }
  const report = await runDoctor({ relay, relayError, ca, caFile, caError, configDir });
  console.log(flags.json ? JSON.stringify(report, null, 2) : formatDoctor(report));
  return report.ok ? 0 : 1;
}

/** The relay paired with last, if credentials.json can be read (the config check reports it otherwise). */
async function _lastRelay(configDir: string): Promise<string | undefined> {
  return await new CredentialStore(configDir).lastRelay().catch(() => undefined);
}
