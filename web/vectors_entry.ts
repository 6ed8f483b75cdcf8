/**
 * The known-answer vectors for the browser: the page (or a test) imports
 * /assets/vectors.js and calls `run()`; the same checker runs in Deno.
 *
 * @module
 */
import vectors from "../shared/e2e_vectors.json" with { type: "json" };
import { checkVectors, type E2eVectors, type VectorCheck } from "../shared/e2e_vectors_check.ts";

/** Runs every vector check with this browser's WebCrypto. */
export async function run(): Promise<VectorCheck[]> {
  return await checkVectors(vectors as unknown as E2eVectors);
}
