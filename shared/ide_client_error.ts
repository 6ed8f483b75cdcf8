/**
 * The one error type of the IDE client (shared/ide_client.ts) and its parts:
 * an API call the relay refused, a socket that closed, or a command that
 * could not run or whose bridge was lost.
 *
 * @module
 */

/**
 * An API or socket failure, with the HTTP status or close code and a stable reason.
 *
 * @example
 * ```ts
 * import { IdeClientError } from "./ide_client_error.ts";
 * const error = new IdeClientError("Too many codes", { status: 429, reason: "rate-limited", retryAfter: 30 });
 * console.log(error.reason, error.retryAfter); // rate-limited 30
 * ```
 */
export class IdeClientError extends Error {
  /** HTTP status (API calls) or WebSocket close code (sockets); 0 for command failures. */
  readonly status: number;
  /** Stable reason, e.g. `rate-limited`, `bridge-lost`, `busy`. */
  readonly reason: string;
  /** For 429: seconds until a retry may succeed. */
  readonly retryAfter?: number;
  /**
   * @param message What happened.
   * @param details Status, reason and retry hint.
   */
  constructor(message: string, details: { status: number; reason: string; retryAfter?: number }) {
    super(message);
    this.name = "IdeClientError";
    this.status = details.status;
    this.reason = details.reason;
    this.retryAfter = details.retryAfter;
  }
}
