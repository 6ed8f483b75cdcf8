/**
 * One error type for everything that must reach a peer: it carries the HTTP
 * status and/or the WebSocket close code the failure maps to.
 *
 * @module
 */
import type { CloseCodeValue } from "./protocol.ts";

/** Options for {@linkcode Coder1Error}. */
export interface Coder1ErrorOptions {
  /** HTTP status for responses (default 500). */
  status?: number;
  /** WebSocket close code for sockets (default 4400). */
  closeCode?: CloseCodeValue;
  /** Seconds after which a retry may succeed (sets Retry-After). */
  retryAfterSeconds?: number;
  /** A stable machine-readable reason, e.g. `rate-limited`. */
  reason?: string;
}

/**
 * An error that knows how it is reported to a peer.
 *
 * @example
 * ```ts
 * import { Coder1Error } from "./errors.ts";
 * const err = new Coder1Error("Cannot issue code: rate limit", { status: 429 });
 * console.log(err.status); // 429
 * ```
 */
export class Coder1Error extends Error {
  /** HTTP status. */
  readonly status: number;
  /** WebSocket close code. */
  readonly closeCode: CloseCodeValue;
  /** Seconds until a retry may succeed. */
  readonly retryAfterSeconds?: number;
  /** Stable reason string. */
  readonly reason: string;

  /**
   * @param message What went wrong, shaped "Cannot <action>: <state>".
   * @param options Status, close code, retry hint and reason.
   */
  constructor(message: string, options: Coder1ErrorOptions = {}) {
    super(message);
    this.name = "Coder1Error";
    this.status = options.status ?? 500;
    this.closeCode = options.closeCode ?? 4400;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.reason = options.reason ?? "error";
  }
}

/**
 * Turns any error into a JSON HTTP response; unknown errors become a 500
 * without their message (it might carry something private).
 *
 * @param error The thrown value.
 * @returns A response with `{"error": reason, "message": text}`.
 */
export function errorResponse(error: unknown): Response {
  if (error instanceof Coder1Error) {
    const headers = new Headers({ "content-type": "application/json" });
    if (error.retryAfterSeconds !== undefined) {
      headers.set("retry-after", String(error.retryAfterSeconds));
    }
    return new Response(
      JSON.stringify({
        error: error.reason,
        message: error.message,
        ...(error.retryAfterSeconds !== undefined ? { retryAfter: error.retryAfterSeconds } : {}),
      }),
      { status: error.status, headers },
    );
  }
  return Response.json({ error: "internal", message: "Internal error" }, { status: 500 });
}

/**
 * Closes a socket with the close code an error maps to. Close reasons are
 * limited to 123 bytes by the WebSocket spec, so long messages are cut.
 *
 * @param socket The socket to close.
 * @param error The reason.
 */
export function closeWithError(
  socket: { close(code?: number, reason?: string): void },
  error: unknown,
): void {
  const code = error instanceof Coder1Error ? error.closeCode : 1011;
  const message = error instanceof Coder1Error ? error.message : "internal error";
  try {
    socket.close(code, truncateUtf8(message, 123));
  } catch {
    // Already closed.
  }
}

/** Cuts a string to at most `max` UTF-8 bytes without splitting a character. */
export function truncateUtf8(text: string, max: number): string {
  const encoder = new TextEncoder();
  if (encoder.encode(text).byteLength <= max) return text;
  let out = "";
  for (const ch of text) {
    if (encoder.encode(out + ch).byteLength > max) break;
    out += ch;
  }
  return out;
}
