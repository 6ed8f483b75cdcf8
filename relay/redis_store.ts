/**
 * The state store shared by several relay instances: {@linkcode RelayStore}
 * on one Redis server (npm `redis` v5), one command connection and one
 * subscriber connection for events.
 *
 * Key layout (every key starts with the prefix, default `coder1:`):
 *
 * | Key                   | Type                         | Expires                                 | What                                        |
 * | --------------------- | ---------------------------- | --------------------------------------- | ------------------------------------------- |
 * | `code:<code>`         | string, JSON `CodeEntry`     | at the code's expiry (PX)               | a live pairing code                         |
 * | `scode:<sid>`         | string, JSON `{code, expiresAt}` | `SESSION_CODE_KEEP_MS` after the code's expiry | a session's current code (a pointer) |
 * | `rate:<key>`          | sorted set, score = ms       | one window after its last event         | one rate window                             |
 * | `revoked:<jti>`       | string `1`                   | the token's expiry + `KEEP_SLACK_MS`    | a revoked token id                          |
 * | `cred:<bridgeId>`     | string, JSON `CredentialRecord` | the token's expiry + `KEEP_SLACK_MS` | a credential line                           |
 * | `creds:<sid>`         | sorted set of bridge ids, score = issuedAt | its longest line's expiry | a session's lines, for the list           |
 * | `lease:<sid>`         | hash `instance`, `epoch`, `exp` | `exp` + `LEASE_KEEP_MS`              | which instance is the session's home        |
 * | `presence:<bridgeId>` | string, the instance id      | the presence TTL (PX)                   | the line has an open connection somewhere   |
 * | `events` (channel)    | pub/sub, JSON `RelayEvent`   |                                         | revocations, to every instance              |
 *
 * Atomicity: a code is taken with GETDEL, or with a Lua script that checks
 * the address and deletes in one step (`takeCodeFrom`), so a code is redeemed
 * once across all instances. A rate window is one Lua script (trim, count,
 * add) timed by Redis's `TIME`: the `now` arguments of `hit`, `claimLease`,
 * `renewLease`, `takeOverLease`, `lease`, `setPresence` and `isPresent` are
 * ignored, Redis's clock decides, so the hosts' clocks do not have to agree.
 * `putCredential` with `expectJti` is a Lua compare-and-set on the line's
 * `jti`; leases are Lua compare-and-set on `instance` and `epoch`, and a lease
 * that lapses keeps its hash (with `exp` in the past) for `LEASE_KEEP_MS`, so
 * the next holder's epoch still grows. Expiries given as absolute times by
 * the relay (token and code expiries) become relative TTLs from the relay's
 * clock, with slack where keeping longer is harmless.
 *
 * Failures: no offline queue and a short connect and command timeout, so
 * when Redis is down every call throws at once a {@linkcode Coder1Error}
 * (503, `state-store-unavailable`): pairing and logins fail closed with a
 * clear answer. The client reconnects in the background with backoff, and
 * calls work again when Redis is back; scripts are re-sent when a restarted
 * Redis does not know them. `ping()` never throws.
 *
 * One Redis server (or a primary with replicas), not Redis Cluster: the
 * credential script touches two keys that a cluster may place apart.
 *
 * If Redis loses its data (a restart with persistence off): live pairing
 * codes, rate windows, leases (sessions re-home on their next connection,
 * epochs start again at 1) and presence are gone, which costs a new code or
 * a reconnect at worst. Revocations and credential lines are gone too: a
 * revoked token that has not expired (bridge tokens live 30 days) is accepted
 * again and starts a new line, and the page's bridge list starts empty. Run
 * Redis with persistence (`appendonly yes`) where that matters. Events are
 * not stored: an instance whose subscriber connection is down when a line is
 * revoked does not close that line's connection (reconnects are refused).
 *
 * @module
 */
import { createHash } from "node:crypto";
import { createClient, ErrorReply } from "redis";
import { type Clock, systemClock } from "../shared/clock.ts";
import { Coder1Error } from "../shared/errors.ts";
import { CloseCode } from "../shared/protocol.ts";
import { type CredentialRecord, MAX_LISTED_CREDENTIALS, type RevokeReason } from "./credential_ledger.ts";
import type { Logger } from "./logger.ts";
import type { CodeEntry, Lease, RateResult, RelayEvent, RelayStore } from "./store.ts";

/** Key prefix when none is given. */
export const DEFAULT_REDIS_PREFIX = "coder1:";
/** A command that got no answer in this long fails (503): Redis paused or the network gone. */
const COMMAND_TIMEOUT_MS = 1_000;
/** `ping()` answers false after this long. */
const PING_TIMEOUT_MS = 500;
/** A connection attempt gives up after this long (then retries with backoff). */
const CONNECT_TIMEOUT_MS = 1_000;
/** First and longest pause between reconnection attempts. */
const RECONNECT_MIN_MS = 50;
const RECONNECT_MAX_MS = 2_000;
/** Revocations and credential lines are kept this much past their token's expiry (clock skew between hosts). */
const KEEP_SLACK_MS = 60 * 60_000;
/** A session's code pointer is kept this long past the code's expiry (a stale pointer is harmless). */
const SESSION_CODE_KEEP_MS = 10 * 60_000;
/** A lapsed or released lease keeps its epoch this long (like MemoryStore's sweep). */
const LEASE_KEEP_MS = 10 * 60_000;
/** Longest bridge id accepted in an event (ids are UUIDs). */
const MAX_EVENT_ID_LENGTH = 128;
const REVOKE_REASONS: ReadonlySet<string> = new Set<RevokeReason>(["user", "logout", "reuse", "replaced"]);

/** Redis's clock, in ms, inside a script. */
const LUA_NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/** KEYS[1] code; ARGV[1] address. The code's entry if it was issued to that address (then deleted). */
const TAKE_FROM = `local v = redis.call('GET', KEYS[1])
if not v then return false end
local ok, e = pcall(cjson.decode, v)
if ok and type(e) == 'table' and e.address == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return v
end
return false`;

/** KEYS[1] code; ARGV[1] session id. Deletes the code if it belongs to that session. */
const DELETE_CODE = `local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ok, e = pcall(cjson.decode, v)
if ok and type(e) == 'table' and e.sessionId == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`;

/** KEYS[1] window; ARGV limit, window ms. {1, 0} counted, or {0, retry ms}. */
const HIT = `${LUA_NOW}
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local retry = tonumber(oldest[2]) + window - now
  if retry < 1 then retry = 1 end
  return {0, retry}
end
redis.call('ZADD', KEYS[1], now, t[1] .. '.' .. t[2] .. '.' .. n)
redis.call('PEXPIRE', KEYS[1], window)
return {1, 0}`;

/**
 * KEYS[1] line, KEYS[2] session's set; ARGV json, check ('1'/'0'), expected
 * jti, issuedAt, bridge id, ttl ms. 1 stored, 0 refused (the line holds another jti).
 */
const PUT_CREDENTIAL = `if ARGV[2] == '1' then
  local cur = redis.call('GET', KEYS[1])
  if cur then
    local ok, r = pcall(cjson.decode, cur)
    if not ok or type(r) ~= 'table' or r.jti ~= ARGV[3] then return 0 end
  end
end
local ttl = tonumber(ARGV[6])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1`;

/** Writes the lease hash and returns it (shared tail of the lease scripts). */
const LUA_SET_LEASE = `local function setLease(instance, epoch, ttl, keep)
  local exp = now + ttl
  redis.call('HSET', KEYS[1], 'instance', instance, 'epoch', epoch, 'exp', exp)
  redis.call('PEXPIRE', KEYS[1], ttl + keep)
  return {instance, epoch, exp}
end
local cur = redis.call('HMGET', KEYS[1], 'instance', 'epoch', 'exp')
local holder, epoch, exp = cur[1], tonumber(cur[2]), tonumber(cur[3]) or 0`;

/** KEYS[1] lease; ARGV instance, ttl, keep. The lease as it stands (the caller's or the live holder's). */
const CLAIM_LEASE = `${LUA_NOW}
${LUA_SET_LEASE}
if holder and exp > now and holder ~= ARGV[1] then return {holder, epoch, exp} end
if holder == ARGV[1] and exp > now then return setLease(ARGV[1], epoch, tonumber(ARGV[2]), tonumber(ARGV[3])) end
return setLease(ARGV[1], (epoch or 0) + 1, tonumber(ARGV[2]), tonumber(ARGV[3]))`;

/** KEYS[1] lease; ARGV instance, epoch, ttl, keep. 1 renewed, 0 not held by it at that epoch. */
const RENEW_LEASE = `${LUA_NOW}
${LUA_SET_LEASE}
if holder ~= ARGV[1] or epoch ~= tonumber(ARGV[2]) then return 0 end
setLease(ARGV[1], epoch, tonumber(ARGV[3]), tonumber(ARGV[4]))
return 1`;

/** KEYS[1] lease; ARGV instance, stale epoch, ttl, keep. The new lease, or nil when the epoch moved on. */
const TAKE_OVER_LEASE = `${LUA_NOW}
${LUA_SET_LEASE}
if epoch and epoch ~= tonumber(ARGV[2]) then return false end
return setLease(ARGV[1], tonumber(ARGV[2]) + 1, tonumber(ARGV[3]), tonumber(ARGV[4]))`;

/** KEYS[1] lease; ARGV instance, epoch. Lapses the lease now (the hash and its epoch stay). */
const RELEASE_LEASE = `local cur = redis.call('HMGET', KEYS[1], 'instance', 'epoch')
if cur[1] == ARGV[1] and tonumber(cur[2]) == tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], 'exp', 0) end
return 0`;

/** KEYS[1] lease. The lease while it is live, else nil. */
const READ_LEASE = `${LUA_NOW}
local cur = redis.call('HMGET', KEYS[1], 'instance', 'epoch', 'exp')
if cur[1] and (tonumber(cur[3]) or 0) > now then return {cur[1], tonumber(cur[2]), tonumber(cur[3])} end
return false`;

/** KEYS[1] presence; ARGV[1] instance. Deletes the key if that instance set it. */
const CLEAR_PRESENCE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/** Options for {@linkcode RedisStore}. */
export interface RedisStoreOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://...` for TLS. */
  url: string;
  /** Prepended to every key and to the events channel (default {@linkcode DEFAULT_REDIS_PREFIX}). */
  prefix?: string;
  /** The relay's clock, for turning absolute expiries into TTLs (default: the system clock). */
  clock?: Clock;
  /** Where connection losses and recoveries are logged (once per change). */
  log?: Logger;
  /** Milliseconds before an unanswered command fails (default 1,000). */
  commandTimeoutMs?: number;
}

type Client = ReturnType<typeof createClient>;
type Reply = string | number | null | Reply[];

/**
 * {@linkcode RelayStore} on Redis. Construct it with {@linkcode RedisStore.connect}.
 *
 * @example
 * ```ts ignore
 * import { RedisStore } from "./redis_store.ts";
 * const store = await RedisStore.connect({ url: "redis://127.0.0.1:6379" });
 * console.log(await store.ping());
 * await store.close();
 * ```
 */
export class RedisStore implements RelayStore {
  readonly shared = true;
  #client: Client;
  #subscriber: Client;
  #prefix: string;
  #clock: Clock;
  #log?: Logger;
  #timeoutMs: number;
  #listeners = new Set<(event: RelayEvent) => void>();
  #scripts = new Map<string, string>();
  #up = false;
  #downLogged = false;
  #subscribed = false;
  #closed = false;

  private constructor(options: RedisStoreOptions) {
    this.#prefix = options.prefix ?? DEFAULT_REDIS_PREFIX;
    this.#clock = options.clock ?? systemClock;
    this.#log = options.log;
    this.#timeoutMs = options.commandTimeoutMs ?? COMMAND_TIMEOUT_MS;
    const clientOptions = {
      url: options.url,
      // Fail at once while disconnected instead of queueing until Redis returns.
      disableOfflineQueue: true,
      // Redis Enterprise's maintenance notices (RESP3 only) read env vars the relay may not read.
      maintNotifications: "disabled" as const,
      socket: {
        connectTimeout: CONNECT_TIMEOUT_MS,
        reconnectStrategy: (retries: number) => Math.min(RECONNECT_MIN_MS * 2 ** retries, RECONNECT_MAX_MS),
      },
    };
    this.#client = createClient(clientOptions);
    this.#subscriber = createClient(clientOptions);
    // Without an error listener the client's EventEmitter throws; the state changes are logged instead.
    this.#client.on("error", (error: Error) => this.#down(error));
    this.#client.on("ready", () => this.#ready());
    this.#subscriber.on("error", () => {});
    this.#subscriber.on("ready", () => this.#subscribe());
  }

  /**
   * Creates the store and starts connecting. Resolves once both connections
   * are up, or after `waitMs` with Redis unreachable (calls then throw 503
   * until it answers; the connections keep retrying in the background).
   *
   * @param options Where Redis is, the key prefix, the clock and logger.
   * @param waitMs How long to wait for the first connection (default 2,000).
   * @returns The store.
   */
  static async connect(options: RedisStoreOptions, waitMs = 2_000): Promise<RedisStore> {
    const store = new RedisStore(options);
    const connected = Promise.all([
      store.#client.connect().catch(() => {}),
      store.#subscriber.connect().catch(() => {}),
    ]);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([connected, new Promise((resolve) => timer = setTimeout(resolve, waitMs))]);
    clearTimeout(timer);
    if (!store.#up) store.#down(new Error(`no answer within ${waitMs} ms`));
    return store;
  }

  async putCode(code: string, entry: CodeEntry, now: number): Promise<boolean> {
    const ttl = Math.max(1, Math.ceil(entry.expiresAt - now));
    const reply = await this.#run(["SET", this.#key("code", code), JSON.stringify(entry), "NX", "PX", String(ttl)]);
    return reply === "OK";
  }

  async takeCode(code: string): Promise<CodeEntry | undefined> {
    return _codeEntry(await this.#run(["GETDEL", this.#key("code", code)]));
  }

  async takeCodeFrom(code: string, address: string): Promise<CodeEntry | undefined> {
    return _codeEntry(await this.#eval(TAKE_FROM, [this.#key("code", code)], [address]));
  }

  async deleteCode(code: string, sessionId: string): Promise<void> {
    await this.#eval(DELETE_CODE, [this.#key("code", code)], [sessionId]);
  }

  async sessionCode(sessionId: string): Promise<string | undefined> {
    return _sessionCode(await this.#run(["GET", this.#key("scode", sessionId)]))?.code;
  }

  async liveSessionCode(sessionId: string, now: number): Promise<{ code: string; expiresAt: number } | undefined> {
    const current = _sessionCode(await this.#run(["GET", this.#key("scode", sessionId)]));
    if (!current) return undefined;
    const entry = _codeEntry(await this.#run(["GET", this.#key("code", current.code)]));
    return entry?.sessionId === sessionId && entry.expiresAt > now
      ? { code: current.code, expiresAt: entry.expiresAt }
      : undefined;
  }

  async setSessionCode(sessionId: string, code: string, expiresAt: number): Promise<void> {
    const ttl = Math.max(0, expiresAt - this.#clock.now()) + SESSION_CODE_KEEP_MS;
    await this.#run(["SET", this.#key("scode", sessionId), JSON.stringify({ code, expiresAt }), "PX", String(ttl)]);
  }

  /** Counts against a window timed by Redis's clock (`now` is ignored). */
  async hit(key: string, limit: number, windowMs: number, _now: number): Promise<RateResult> {
    const reply = await this.#eval(HIT, [this.#key("rate", key)], [String(limit), String(Math.ceil(windowMs))]);
    const [allowed, retry] = Array.isArray(reply) ? reply : [];
    return { allowed: allowed === 1, retryAfterMs: Number(retry) || 0 };
  }

  async revoke(jti: string, expiresAt: number): Promise<void> {
    const ttl = this.#keepTtl(expiresAt);
    await this.#run(["SET", this.#key("revoked", jti), "1", "PX", String(ttl)]);
  }

  async isRevoked(jti: string): Promise<boolean> {
    return await this.#run(["EXISTS", this.#key("revoked", jti)]) === 1;
  }

  /** Nothing to do: every key carries its own expiry. */
  sweep(_now: number): Promise<void> {
    return Promise.resolve();
  }

  async getCredential(bridgeId: string): Promise<CredentialRecord | undefined> {
    return _credential(await this.#run(["GET", this.#key("cred", bridgeId)]));
  }

  async putCredential(record: CredentialRecord, expectJti?: string): Promise<boolean> {
    const reply = await this.#eval(
      PUT_CREDENTIAL,
      [this.#key("cred", record.bridgeId), this.#key("creds", record.sid)],
      [
        JSON.stringify(record),
        expectJti === undefined ? "0" : "1",
        expectJti ?? "",
        String(record.issuedAt),
        record.bridgeId,
        String(this.#keepTtl(record.expiresAt)),
      ],
    );
    return reply === 1;
  }

  async listCredentials(sid: string): Promise<CredentialRecord[]> {
    const setKey = this.#key("creds", sid);
    const lines: CredentialRecord[] = [];
    // Lines that expired leave their id in the set: skipped here and removed.
    for (let start = 0; lines.length < MAX_LISTED_CREDENTIALS;) {
      const ids = await this.#run(["ZREVRANGE", setKey, String(start), String(start + MAX_LISTED_CREDENTIALS - 1)]);
      if (!Array.isArray(ids) || ids.length === 0) break;
      const values = await this.#run(["MGET", ...ids.map((id) => this.#key("cred", String(id)))]);
      const gone: string[] = [];
      ids.forEach((id, i) => {
        const record = _credential(Array.isArray(values) ? values[i] : null);
        if (record?.sid === sid) {
          if (lines.length < MAX_LISTED_CREDENTIALS) lines.push(record);
        } else gone.push(String(id));
      });
      if (gone.length > 0) await this.#run(["ZREM", setKey, ...gone]);
      start += ids.length - gone.length;
      if (ids.length < MAX_LISTED_CREDENTIALS) break;
    }
    return lines;
  }

  /** Lease times are Redis's clock (`now` is ignored). */
  async claimLease(sid: string, instance: string, ttlMs: number, _now: number): Promise<Lease> {
    const reply = await this.#eval(CLAIM_LEASE, [this.#key("lease", sid)], [
      instance,
      String(Math.ceil(ttlMs)),
      String(LEASE_KEEP_MS),
    ]);
    const lease = _lease(reply);
    if (!lease) throw _unavailable(new Error("unexpected reply to a lease claim"));
    return lease;
  }

  async renewLease(sid: string, instance: string, epoch: number, ttlMs: number, _now: number): Promise<boolean> {
    const reply = await this.#eval(RENEW_LEASE, [this.#key("lease", sid)], [
      instance,
      String(epoch),
      String(Math.ceil(ttlMs)),
      String(LEASE_KEEP_MS),
    ]);
    return reply === 1;
  }

  async takeOverLease(
    sid: string,
    instance: string,
    staleEpoch: number,
    ttlMs: number,
    _now: number,
  ): Promise<Lease | undefined> {
    const reply = await this.#eval(TAKE_OVER_LEASE, [this.#key("lease", sid)], [
      instance,
      String(staleEpoch),
      String(Math.ceil(ttlMs)),
      String(LEASE_KEEP_MS),
    ]);
    return _lease(reply);
  }

  async releaseLease(sid: string, instance: string, epoch: number): Promise<void> {
    await this.#eval(RELEASE_LEASE, [this.#key("lease", sid)], [instance, String(epoch)]);
  }

  async lease(sid: string, _now: number): Promise<Lease | undefined> {
    return _lease(await this.#eval(READ_LEASE, [this.#key("lease", sid)], []));
  }

  async setPresence(bridgeId: string, instance: string, ttlMs: number, _now: number): Promise<void> {
    await this.#run(["SET", this.#key("presence", bridgeId), instance, "PX", String(Math.max(1, Math.ceil(ttlMs)))]);
  }

  async clearPresence(bridgeId: string, instance: string): Promise<void> {
    await this.#eval(CLEAR_PRESENCE, [this.#key("presence", bridgeId)], [instance]);
  }

  async isPresent(bridgeId: string, _now: number): Promise<boolean> {
    return await this.#run(["EXISTS", this.#key("presence", bridgeId)]) === 1;
  }

  /** Publishes on the events channel; this instance's listeners hear it back from Redis like every other's. */
  async publish(event: RelayEvent): Promise<void> {
    await this.#run(["PUBLISH", `${this.#prefix}events`, JSON.stringify(event)]);
  }

  subscribe(listener: (event: RelayEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async ping(): Promise<boolean> {
    try {
      return await this.#run(["PING"], PING_TIMEOUT_MS) === "PONG";
    } catch {
      return false;
    }
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    this.#listeners.clear();
    // destroy(), not close(): close() waits for pending replies, forever when Redis is paused.
    for (const client of [this.#client, this.#subscriber]) if (client.isOpen) client.destroy();
    return Promise.resolve();
  }

  #key(kind: string, id: string): string {
    return `${this.#prefix}${kind}:${id}`;
  }

  /** A TTL from the relay's clock to `expiresAt`, plus slack for hosts whose clocks differ. */
  #keepTtl(expiresAt: number): number {
    return Math.max(0, Math.ceil(expiresAt - this.#clock.now())) + KEEP_SLACK_MS;
  }

  /** Runs one command; any failure but a Redis error reply becomes the 503. */
  async #run(args: string[], timeoutMs = this.#timeoutMs): Promise<Reply> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        this.#client.sendCommand<Reply>(args),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (error) {
      // NOSCRIPT goes back to #eval, which sends the script's text; any other refusal
      // (LOADING, READONLY, OOM, MISCONF...) means the store cannot serve now.
      if (error instanceof ErrorReply && error.message.startsWith("NOSCRIPT")) throw error;
      throw _unavailable(error);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Runs a Lua script by its SHA-1, sending its text when Redis does not know it (first use, or after a restart). */
  async #eval(script: string, keys: string[], args: string[]): Promise<Reply> {
    let sha = this.#scripts.get(script);
    if (!sha) this.#scripts.set(script, sha = createHash("sha1").update(script).digest("hex"));
    const rest = [String(keys.length), ...keys, ...args];
    try {
      return await this.#run(["EVALSHA", sha, ...rest]);
    } catch (error) {
      if (!(error instanceof ErrorReply && error.message.startsWith("NOSCRIPT"))) throw error;
      return await this.#run(["EVAL", script, ...rest]);
    }
  }

  #ready(): void {
    if (!this.#up) this.#log?.info("store.up", { store: "redis" });
    this.#up = true;
  }

  #down(error: Error): void {
    if (this.#up || !this.#downLogged) this.#log?.warn("store.down", { store: "redis", error: error.message });
    this.#downLogged = true;
    this.#up = false;
  }

  /** Subscribes once; the client subscribes again by itself after a reconnect. */
  #subscribe(): void {
    if (this.#subscribed || this.#closed) return;
    this.#subscribed = true;
    this.#subscriber.subscribe(`${this.#prefix}events`, (message: string) => this.#deliver(message)).catch(() => {
      // Lost the connection meanwhile: try again on the next `ready`.
      this.#subscribed = false;
    });
  }

  #deliver(message: string): void {
    const event = _event(message);
    if (!event) return;
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch (error) {
        this.#log?.error("store.event_listener", { error: String(error) });
      }
    }
  }
}

/** The error every call throws while Redis does not answer. */
function _unavailable(cause: unknown): Coder1Error {
  const detail = cause instanceof Error ? cause.message : String(cause);
  const state = cause instanceof ErrorReply ? "refused the command" : "is unreachable";
  return new Coder1Error(`Cannot continue: the relay's Redis ${state} (${detail}); retry shortly`, {
    status: 503,
    // Sockets: "going away, reconnect later" (bridges are answered with the HTTP status at the upgrade).
    closeCode: CloseCode.GoingAway,
    retryAfterSeconds: 1,
    reason: "state-store-unavailable",
  });
}

function _json(reply: Reply | undefined): Record<string, unknown> | undefined {
  if (typeof reply !== "string") return undefined;
  try {
    const value = JSON.parse(reply);
    return typeof value === "object" && value !== null && !Array.isArray(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

function _codeEntry(reply: Reply): CodeEntry | undefined {
  const v = _json(reply);
  if (typeof v?.sessionId !== "string" || typeof v.expiresAt !== "number") return undefined;
  const entry: CodeEntry = { sessionId: v.sessionId, expiresAt: v.expiresAt };
  if (typeof v.address === "string") entry.address = v.address;
  return entry;
}

function _sessionCode(reply: Reply): { code: string; expiresAt: number } | undefined {
  const v = _json(reply);
  return typeof v?.code === "string" && typeof v.expiresAt === "number"
    ? { code: v.code, expiresAt: v.expiresAt }
    : undefined;
}

function _credential(reply: Reply): CredentialRecord | undefined {
  const v = _json(reply);
  if (typeof v?.bridgeId !== "string" || typeof v.sid !== "string" || typeof v.jti !== "string") return undefined;
  return v as unknown as CredentialRecord;
}

function _lease(reply: Reply): Lease | undefined {
  if (!Array.isArray(reply) || reply.length !== 3 || typeof reply[0] !== "string") return undefined;
  return { instance: reply[0], epoch: Number(reply[1]), expiresAt: Number(reply[2]) };
}

/** A received event, or undefined for anything malformed (ignored). */
function _event(message: string): RelayEvent | undefined {
  const v = _json(message);
  if (
    v?.kind === "revoked" && typeof v.bridgeId === "string" && v.bridgeId.length > 0 &&
    v.bridgeId.length <= MAX_EVENT_ID_LENGTH && typeof v.reason === "string" && REVOKE_REASONS.has(v.reason)
  ) {
    return { kind: "revoked", bridgeId: v.bridgeId, reason: v.reason as RevokeReason };
  }
  return undefined;
}
