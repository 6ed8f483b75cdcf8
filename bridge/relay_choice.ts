/**
 * Which relay a bridge command talks to: `--relay`, else `$CODER1_RELAY_URL`,
 * else the relay it last paired with, else http://127.0.0.1:8787. Plain
 * http/ws is refused unless the host is loopback; `--ca-file` adds a trusted
 * CA for self-hosted relays.
 *
 * @module
 */
import { type CommandSpec, type FlagValues, UsageError } from "../cli/args.ts";
import { DEFAULT_RELAY_URL } from "../shared/protocol.ts";
import { parseRelayUrl, type RelayUrl } from "../shared/relay_url.ts";
import type { CredentialStore } from "./credentials.ts";

/**
 * Resolves the relay URL and CA for a bridge command.
 *
 * @param flags The command's flags (`relay`, `ca-file`).
 * @param store Where the last relay is remembered.
 * @param spec The command (for usage errors).
 * @returns The relay and the CA PEM, if any.
 */
export async function resolveRelay(
  flags: FlagValues,
  store: CredentialStore,
  spec: CommandSpec,
): Promise<{ relay: RelayUrl; ca?: string }> {
  const raw = (flags.relay as string | undefined) ?? Deno.env.get("CODER1_RELAY_URL") ?? (await store.lastRelay()) ??
    DEFAULT_RELAY_URL;
  let relay: RelayUrl;
  try {
    relay = parseRelayUrl(raw);
  } catch (error) {
    throw new UsageError((error as Error).message, spec);
  }
  if (!relay.secure && !relay.loopback) {
    throw new UsageError(
      `refusing unencrypted ${raw}: use https:// or wss:// (plain http/ws is only for loopback)`,
      spec,
    );
  }
  let ca: string | undefined;
  if (typeof flags["ca-file"] === "string") {
    try {
      ca = await Deno.readTextFile(flags["ca-file"]);
    } catch (error) {
      throw new UsageError(`cannot read --ca-file ${flags["ca-file"]}: ${(error as Error).message}`, spec);
    }
    if (!ca.includes("-----BEGIN CERTIFICATE-----")) {
      throw new UsageError(`--ca-file ${flags["ca-file"]} holds no PEM certificate`, spec);
    }
  }
  return { relay, ca };
}

/**
 * A fetch bound to the relay's trust settings.
 *
 * @param ca Extra CA PEM.
 * @returns A fetch function.
 */
export function relayFetch(ca?: string): typeof fetch {
  if (!ca) return fetch;
  const client = Deno.createHttpClient({ caCerts: [ca] });
  return (input, init) => fetch(input, { ...init, client } as RequestInit & { client: Deno.HttpClient });
}
