/**
 * Types for npm:@xterm/addon-serialize, as the bridge uses it: with
 * npm:@xterm/headless (bridge/terminal_screen.ts). The package's own typings
 * import those of @xterm/xterm, the browser terminal, whose DOM types would
 * then leak into the type check of everything the bridge imports (jose's
 * `CryptoKey` becomes the DOM's, for one).
 *
 * @module
 */
import type { ITerminalAddon, Terminal } from "@xterm/headless";

/** What to put in a serialization. */
export interface SerializeOptions {
  /** Lines of scrollback to include, from the newest (default: all). */
  scrollback?: number;
  /** Leave out the modes (cursor keys, bracketed paste, ...). */
  excludeModes?: boolean;
  /** Leave out the alternate screen. */
  excludeAltBuffer?: boolean;
}

/** Turns a terminal's buffers, modes and cursor into escape sequences that repaint them. */
export declare class SerializeAddon implements ITerminalAddon {
  constructor();
  /** Called by `Terminal.loadAddon`. */
  activate(terminal: Terminal): void;
  /** Called when the terminal is disposed. */
  dispose(): void;
  /** The escape sequences. */
  serialize(options?: SerializeOptions): string;
}

/** The CommonJS module object (Deno gives it as the default export). */
declare const addon: { SerializeAddon: typeof SerializeAddon };
export default addon;
