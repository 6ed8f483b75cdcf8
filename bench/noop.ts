/**
 * An empty module: `deno run bench/noop.ts` is the floor that start-up
 * figures are compared with (Deno's own start, no coder1 code).
 *
 * @module
 */
export {};
