/**
 * Runs coder1 from source with exactly the permission flags the role gets
 * (cli/permissions.ts), scoped to the paths the command line names. Used by
 * `deno task relay`, `deno task coder1` and the `coder1` command that
 * `deno task install` (tools/install.ts) puts on the PATH.
 *
 * @module
 */
import { permissionFlags, roleFor } from "../cli/permissions.ts";

const main = new URL("../main.ts", import.meta.url).pathname;
// coder1's own deno.json (npm imports, lock file), whatever directory the user is in.
const config = new URL("../deno.json", import.meta.url).pathname;
const { role, scope } = roleFor(Deno.args, { env: (n) => Deno.env.get(n), cwd: Deno.cwd() });
const child = new Deno.Command(Deno.execPath(), {
  args: ["run", "--config", config, ...permissionFlags(role, scope), main, ...Deno.args],
  stdin: "inherit",
  stdout: "inherit",
  stderr: "inherit",
}).spawn();
// The terminal sends Ctrl-C to the whole process group; the child handles it.
// A SIGTERM aimed at this launcher is passed on.
Deno.addSignalListener("SIGINT", () => {});
Deno.addSignalListener("SIGTERM", () => child.kill("SIGTERM"));
const status = await child.status;
Deno.exit(status.signal ? 128 + (status.signal === "SIGINT" ? 2 : 15) : status.code);
