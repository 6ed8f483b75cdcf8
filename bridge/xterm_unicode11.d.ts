/**
 * Types for npm:@xterm/addon-unicode11 as the bridge uses it, with
 * npm:@xterm/headless (bridge/terminal_screen.ts). Its own typings import the
 * browser terminal's, whose DOM types would leak into the bridge's type check
 * (see xterm_serialize.d.ts).
 *
 * @module
 */
import type { ITerminalAddon, Terminal } from "@xterm/headless";

/** Unicode 11 character widths (emoji and CJK take two cells), as the page's terminal uses. */
export declare class Unicode11Addon implements ITerminalAddon {
  constructor();
  /** Called by `Terminal.loadAddon`: registers the "11" width version. */
  activate(terminal: Terminal): void;
  /** Called when the terminal is disposed. */
  dispose(): void;
}

declare const _default: { Unicode11Addon: typeof Unicode11Addon };
export default _default;
