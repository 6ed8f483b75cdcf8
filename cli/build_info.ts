/**
 * Build facts baked into release binaries. `deno task compile`
 * (tools/compile.ts) rewrites this file with the git commit and the build
 * date just before `deno compile` and puts it back afterwards; from source
 * both are undefined and `coder1 --version` asks git instead.
 *
 * @module
 */

/** The git commit the binary was built from. */
export const BUILD_COMMIT: string | undefined = undefined;
/** When the binary was built (ISO 8601, UTC). */
export const BUILD_DATE: string | undefined = undefined;
