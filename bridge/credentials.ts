/**
 * The bridge's stored credentials: one session JWT per relay URL, plus the
 * relay it last paired with, in `<config dir>/credentials.json` (dir 0700,
 * file 0600, replaced atomically). Tokens are never printed or logged.
 *
 * @module
 */

/** What the bridge keeps for one relay. */
export interface RelayCredential {
  /** The session JWT. */
  token: string;
  /** The bridge id the relay assigned. */
  bridgeId: string;
  /** Token expiry (ms since the epoch). */
  expiresAt: number;
  /** When this pairing happened (ms since the epoch). */
  pairedAt: number;
  /**
   * The IDE identity key (raw Ed25519, base64url) the user approved for this
   * pairing; later connections accept only this IDE. Absent until approval.
   */
  pinnedIde?: string;
  /**
   * The session's routing key from `auth.ok`: sent as `?r=` on `/ws/bridge` so
   * that a load balancer in front of several relay instances places this
   * bridge with its IDE. Absent in files from before it, and for relays that
   * send none: the bridge connects without it.
   */
  routingKey?: string;
}

/** A token to revoke at a relay that could not be reached when it was dropped (`--pair`, a refused pairing). */
export interface PendingRevocation {
  /** The relay (its normalised http URL). */
  relay: string;
  /** The token to revoke. */
  token: string;
  /** When it was dropped (ms since the epoch). */
  since: number;
}

/** Why the relay stopped accepting this machine's token, kept for `coder1 bridge status`. */
export interface RevocationNote {
  /** When the bridge learnt it (ms since the epoch). */
  at: number;
  /** What the relay said. */
  reason: string;
}

interface CredentialFile {
  version: 1;
  lastRelay?: string;
  relays: Record<string, RelayCredential>;
  /** Tokens still to revoke, retried at each start and logout. */
  pending?: PendingRevocation[];
  /** Per relay: why the last token was refused. */
  notes?: Record<string, RevocationNote>;
}

/**
 * Reads and writes credentials.json.
 *
 * @example
 * ```ts ignore
 * import { CredentialStore } from "./credentials.ts";
 * const store = new CredentialStore(`${Deno.env.get("HOME")}/.config/coder1`);
 * console.log(await store.lastRelay());
 * ```
 */
export class CredentialStore {
  /** The config directory. */
  readonly dir: string;
  /** The credentials file. */
  readonly file: string;

  /** @param dir The config directory (created on first write). */
  constructor(dir: string) {
    this.dir = dir;
    this.file = `${dir}/credentials.json`;
  }

  /** The credential for `relay` (its normalised http URL), if any. */
  async get(relay: string): Promise<RelayCredential | undefined> {
    return (await this.#read()).relays[relay];
  }

  /** The relay paired with most recently, if any. */
  async lastRelay(): Promise<string | undefined> {
    return (await this.#read()).lastRelay;
  }

  /** Stores the credential for `relay` and makes it the last relay. */
  async put(relay: string, credential: RelayCredential): Promise<void> {
    const data = await this.#read();
    data.relays[relay] = credential;
    data.lastRelay = relay;
    delete data.notes?.[relay];
    await this.#write(data);
  }

  /**
   * Replaces the token of `relay`'s credential with its rotated successor
   * (atomically: the file is replaced in one rename), keeping the pin.
   *
   * @param routingKey The routing key the same `auth.ok` brought (absent: the stored one stays).
   * @returns False when the stored credential is not `bridgeId`'s (nothing written).
   */
  async rotate(
    relay: string,
    bridgeId: string,
    token: string,
    expiresAt: number,
    routingKey?: string,
  ): Promise<boolean> {
    const data = await this.#read();
    const credential = data.relays[relay];
    if (credential?.bridgeId !== bridgeId) return false;
    credential.token = token;
    credential.expiresAt = expiresAt;
    if (routingKey !== undefined) credential.routingKey = routingKey;
    await this.#write(data);
    return true;
  }

  /** Remembers a token to revoke at `relay` later. */
  async addPending(relay: string, token: string, since: number): Promise<void> {
    const data = await this.#read();
    (data.pending ??= []).push({ relay, token, since });
    await this.#write(data);
  }

  /** The tokens still to revoke at `relay`. */
  async pending(relay: string): Promise<PendingRevocation[]> {
    return ((await this.#read()).pending ?? []).filter((p) => p.relay === relay);
  }

  /** Forgets a pending revocation (done, or the relay no longer accepts the token anyway). */
  async donePending(token: string): Promise<void> {
    const data = await this.#read();
    data.pending = (data.pending ?? []).filter((p) => p.token !== token);
    await this.#write(data);
  }

  /** Keeps why `relay` refused this machine's token. */
  async setNote(relay: string, note: RevocationNote): Promise<void> {
    const data = await this.#read();
    (data.notes ??= {})[relay] = note;
    await this.#write(data);
  }

  /** Why `relay` last refused this machine's token, if it did. */
  async note(relay: string): Promise<RevocationNote | undefined> {
    return (await this.#read()).notes?.[relay];
  }

  /** Pins the approved IDE identity key (base64url) on the credential for `relay`. */
  async pin(relay: string, ideIdentity: string): Promise<void> {
    const data = await this.#read();
    const credential = data.relays[relay];
    if (!credential) throw new Error(`Cannot pin the IDE key: no credential for ${relay}`);
    credential.pinnedIde = ideIdentity;
    await this.#write(data);
  }

  /** Deletes the credential for `relay`; returns whether there was one. */
  async delete(relay: string): Promise<boolean> {
    const data = await this.#read();
    if (!(relay in data.relays)) return false;
    delete data.relays[relay];
    await this.#write(data);
    return true;
  }

  async #read(): Promise<CredentialFile> {
    let text: string;
    try {
      text = await Deno.readTextFile(this.file);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return { version: 1, relays: {} };
      throw error;
    }
    try {
      const data = JSON.parse(text) as CredentialFile;
      if (typeof data.relays !== "object" || data.relays === null) throw new Error("no relays");
      return data;
    } catch {
      throw new Error(`Cannot read ${this.file}: not a coder1 credentials file (move it away to start over)`);
    }
  }

  async #write(data: CredentialFile): Promise<void> {
    await Deno.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.${crypto.randomUUID()}.tmp`;
    try {
      await Deno.writeTextFile(tmp, JSON.stringify(data, null, 2) + "\n", { mode: 0o600, createNew: true });
      await Deno.rename(tmp, this.file);
    } catch (error) {
      await Deno.remove(tmp).catch(() => {});
      throw error;
    }
    // Tighten a file someone loosened; mode on create is subject to umask anyway.
    if (Deno.build.os !== "windows") await Deno.chmod(this.file, 0o600);
  }
}
