/**
 * The command lines that start a bridge, as the relay's banner and the web
 * page show them: `coder1 bridge start --relay URL` for whoever has the
 * `coder1` command (a release binary, or `deno task install` from a
 * checkout), and the same through `npx` from a checkout for whoever has not.
 *
 * @module
 */

/** Runs the Deno release coder1 is built and tested with, from npm (Node.js and npm are all it needs). */
export const DENO_FROM_NPM = "npx -y deno@2.9.6";

/** The ways to start a bridge against one relay. */
export interface BridgeStartCommands {
  /** With the `coder1` command on the PATH. */
  installed: string;
  /** From a coder1 checkout, without installing anything. */
  fromCheckout: string;
  /** From a checkout: puts `coder1` on the PATH (once). */
  install: string;
}

/**
 * The bridge start command lines for `relayUrl`.
 *
 * @param relayUrl The relay's public URL, e.g. `https://relay.example`.
 * @returns The command for each way of having coder1.
 *
 * @example
 * ```ts
 * import { bridgeStartCommands } from "./bridge_command.ts";
 * console.log(bridgeStartCommands("http://127.0.0.1:8787").installed); // coder1 bridge start --relay http://127.0.0.1:8787
 * ```
 */
export function bridgeStartCommands(relayUrl: string): BridgeStartCommands {
  return {
    installed: `coder1 bridge start --relay ${relayUrl}`,
    fromCheckout: `${DENO_FROM_NPM} task coder1 bridge start --relay ${relayUrl}`,
    install: `${DENO_FROM_NPM} task install`,
  };
}
