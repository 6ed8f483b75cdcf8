/**
 * Pairing codes: 6 digits from a CSPRNG without modulo bias, unique among live
 * codes, single-use, expiring after {@linkcode CODE_TTL_MS}, bound to the
 * browser session that asked, rate-limited per session and per address. A new
 * code retires the session's previous one. Redemption is rate-limited per
 * address and across the relay (budgets in protocol.ts, reasoning in
 * docs/HTTP_API.md, the brute-force arithmetic in docs/RELIABILITY.md).
 *
 * @module
 */
import type { Clock } from "../shared/clock.ts";
import { Coder1Error } from "../shared/errors.ts";
import {
  CloseCode,
  CODE_DIGITS,
  CODE_RATE_WINDOW_MS,
  CODE_TTL_MS,
  CODES_PER_ADDRESS_PER_WINDOW,
  CODES_PER_SESSION_PER_WINDOW,
  REDEEM_GLOBAL_PER_WINDOW,
  REDEEM_PER_ADDRESS_PER_WINDOW,
  REDEEM_RATE_WINDOW_MS,
} from "../shared/protocol.ts";
import type { RelayMetrics } from "./metrics.ts";
import type { RelayStore } from "./store.ts";

/** Codes drawn for one issue before it gives up with 503 `no-free-code` (each draw may hit a live code). */
const MAX_CODE_DRAWS = 100;
/** A well-formed pairing code: exactly {@linkcode CODE_DIGITS} digits. */
const CODE_PATTERN = new RegExp(`^\\d{${CODE_DIGITS}}$`);

/** Fills a byte array with random bytes (crypto.getRandomValues by default). */
export type RandomSource = (bytes: Uint8Array) => void;

const CODE_SPACE = 10 ** CODE_DIGITS;
// Largest multiple of CODE_SPACE that fits in 32 bits: values at or above it
// are redrawn, so every code is exactly equally likely.
const UNBIASED_LIMIT = Math.floor(2 ** 32 / CODE_SPACE) * CODE_SPACE;

/**
 * Draws one uniformly distributed code with rejection sampling.
 *
 * @param random The random source.
 * @returns A string of {@linkcode CODE_DIGITS} digits.
 *
 * @example
 * ```ts
 * import { drawCode } from "./pairing.ts";
 * console.log(/^\d{6}$/.test(drawCode((b) => crypto.getRandomValues(b)))); // true
 * ```
 */
export function drawCode(random: RandomSource): string {
  const buf = new Uint8Array(4);
  for (;;) {
    random(buf);
    const n = new DataView(buf.buffer).getUint32(0);
    if (n < UNBIASED_LIMIT) return String(n % CODE_SPACE).padStart(CODE_DIGITS, "0");
  }
}

/** Issues and redeems pairing codes. */
export class Pairing {
  #store: RelayStore;
  #clock: Clock;
  #random: RandomSource;
  #metrics?: RelayMetrics;
  /** Expiry of each code issued here and not yet redeemed or retired (for the `expired` count). */
  #live = new Map<string, number>();

  /** @param deps Store, clock, random source and (optionally) metrics to count code events in. */
  constructor(deps: { store: RelayStore; clock: Clock; random: RandomSource; metrics?: RelayMetrics }) {
    this.#store = deps.store;
    this.#clock = deps.clock;
    this.#random = deps.random;
    this.#metrics = deps.metrics;
  }

  /**
   * Counts (in the metrics) the codes issued here whose time ran out unused,
   * and forgets them. The relay calls it on its sweep and before rendering
   * metrics.
   */
  countExpired(): void {
    const now = this.#clock.now();
    for (const [code, expiresAt] of this.#live) {
      if (expiresAt > now) continue;
      this.#live.delete(code);
      this.#metrics?.pairing("expired");
    }
  }

  /**
   * Gives `sessionId` its pairing code. One pairing is in flight per browser
   * session: while the session's code is live (not redeemed, retired or
   * expired) asking again returns that same code and expiry, so every tab of
   * the session shows one code, and costs nothing against the rate limits.
   * Otherwise, or with `replace` (the user asked for a new code), a new code
   * is drawn, counted against the limits, and the previous one is retired.
   *
   * @param sessionId The browser session.
   * @param address The client address (rate-limit unit).
   * @param options `replace`: retire a live code and issue a new one.
   * @returns The code, its expiry, and whether it is the live one given again.
   * @throws {Coder1Error} 429 with a Retry-After hint past a limit.
   */
  async issue(
    sessionId: string,
    address: string,
    options: { replace?: boolean } = {},
  ): Promise<{ code: string; expiresAt: number; reused: boolean }> {
    const now = this.#clock.now();
    if (!options.replace) {
      const live = await this.#store.liveSessionCode(sessionId, now);
      if (live) return { ...live, reused: true };
    }
    const bySession = await this.#store.hit(
      `code:s:${sessionId}`,
      CODES_PER_SESSION_PER_WINDOW,
      CODE_RATE_WINDOW_MS,
      now,
    );
    if (!bySession.allowed) {
      this.#metrics?.rateLimited("code_issue");
      throw _rateLimited(
        `Cannot issue pairing code: ${CODES_PER_SESSION_PER_WINDOW} codes a minute per session`,
        bySession.retryAfterMs,
      );
    }
    const byAddress = await this.#store.hit(
      `code:a:${address}`,
      CODES_PER_ADDRESS_PER_WINDOW,
      CODE_RATE_WINDOW_MS,
      now,
    );
    if (!byAddress.allowed) {
      this.#metrics?.rateLimited("code_issue");
      throw _rateLimited("Cannot issue pairing code: too many codes from this address", byAddress.retryAfterMs);
    }

    const previous = await this.#store.sessionCode(sessionId);
    if (previous !== undefined) {
      await this.#store.deleteCode(previous, sessionId);
      // A retired code that had run out unused counts as expired.
      const previousExpiry = this.#live.get(previous);
      this.#live.delete(previous);
      if (previousExpiry !== undefined && previousExpiry <= now) this.#metrics?.pairing("expired");
    }
    const expiresAt = now + CODE_TTL_MS;
    for (let attempt = 0; attempt < MAX_CODE_DRAWS; attempt++) {
      const code = drawCode(this.#random);
      if (await this.#store.putCode(code, { sessionId, expiresAt, address }, now)) {
        await this.#store.setSessionCode(sessionId, code, expiresAt);
        if (this.#metrics) {
          this.#live.set(code, expiresAt);
          this.#metrics.pairing("issued");
        }
        return { code, expiresAt, reused: false };
      }
    }
    // Only reachable with a broken random source or a code space nearly full.
    throw new Coder1Error("Cannot issue pairing code: no free code", { status: 503, reason: "no-free-code" });
  }

  /**
   * Redeems a code once. Counts the attempt against the per-address budget
   * before any lookup. A code issued to a browser at the same address (the
   * usual case: bridge and browser on one machine or network) is then
   * redeemed without touching the relay-wide budget, so a distributed flood
   * of guesses cannot lock such users out; this lookup matches only codes
   * issued to the caller's own address, so it tells a guesser nothing about
   * anyone else's. Every other attempt spends the relay-wide budget before
   * its lookup: that budget is what bounds guessing (docs/RELIABILITY.md,
   * "Brute-force bound").
   *
   * @returns The browser session the code was bound to.
   * @throws {Coder1Error} close 4429 past a budget, 4401 for a wrong, used or expired code.
   */
  async redeem(code: string, address: string): Promise<string> {
    const now = this.#clock.now();
    // Per address first: an address past its own budget spends none of the
    // relay-wide one, so a single client cannot block pairing for everyone.
    const byAddress = await this.#store.hit(
      `redeem:a:${address}`,
      REDEEM_PER_ADDRESS_PER_WINDOW,
      REDEEM_RATE_WINDOW_MS,
      now,
    );
    if (!byAddress.allowed) {
      this.#metrics?.rateLimited("code_redeem");
      throw _rateLimited("Cannot redeem pairing code: too many attempts from this address", byAddress.retryAfterMs);
    }
    const wellFormed = CODE_PATTERN.test(code);
    let entry = wellFormed ? await this.#store.takeCodeFrom(code, address) : undefined;
    if (!entry) {
      const global = await this.#store.hit("redeem:g", REDEEM_GLOBAL_PER_WINDOW, REDEEM_RATE_WINDOW_MS, now);
      if (!global.allowed) {
        this.#metrics?.rateLimited("code_redeem");
        throw _rateLimited("Cannot redeem pairing code: relay-wide attempt budget spent", global.retryAfterMs);
      }
      if (!wellFormed) throw this.#rejected();
      entry = await this.#store.takeCode(code);
    }
    if (entry) {
      this.#live.delete(code);
      if (entry.expiresAt <= now) this.#metrics?.pairing("expired");
    }
    if (!entry || entry.expiresAt <= now) throw this.#rejected();
    this.#metrics?.pairing("redeemed");
    return entry.sessionId;
  }

  #rejected(): Coder1Error {
    this.#metrics?.pairing("rejected");
    return _badCode();
  }
}

function _badCode(): Coder1Error {
  return new Coder1Error("Cannot pair: the code is wrong, expired or already used", {
    status: 401,
    closeCode: CloseCode.AuthFailed,
    reason: "bad-code",
  });
}

function _rateLimited(message: string, retryAfterMs: number): Coder1Error {
  const retryAfterSeconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
  return new Coder1Error(`${message}; retry in ${retryAfterSeconds}s`, {
    status: 429,
    closeCode: CloseCode.RateLimited,
    retryAfterSeconds,
    reason: "rate-limited",
  });
}
