/**
 * A browser session's routing key: what clients put in `?r=` on `/ws/ide` and
 * `/ws/bridge` so that a load balancer hashing it (deploy/nginx/cluster.conf,
 * `hash $arg_r consistent`) sends both ends of a session to the same relay
 * instance. It is derived from the session id, never the id itself: the id is
 * the secret inside the session cookie and bridge tokens, and URLs end up in
 * access logs. docs/OPERATIONS.md, "Running several relays".
 *
 * @module
 */
import { createHash } from "node:crypto";

/** Hex characters in a routing key (64 bits: plenty to spread sessions, nothing to learn the id from). */
export const ROUTING_KEY_HEX_CHARS = 16;

/** Domain separation: this hash of a session id is for placement and nothing else. */
const ROUTING_KEY_LABEL = "coder1-route\0";

/**
 * The routing key of a browser session: the first 16 hex characters of
 * SHA-256("coder1-route\0" + sid). Synchronous (node:crypto), so the hub can
 * put it in `auth.ok` without an await.
 *
 * @param sid The browser session id.
 * @returns 16 lower-case hex characters.
 *
 * @example
 * ```ts
 * import { routingKey } from "./routing_key.ts";
 * console.log(routingKey("some-session-id").length); // 16
 * ```
 */
export function routingKey(sid: string): string {
  return createHash("sha256").update(ROUTING_KEY_LABEL + sid, "utf8").digest("hex").slice(0, ROUTING_KEY_HEX_CHARS);
}
