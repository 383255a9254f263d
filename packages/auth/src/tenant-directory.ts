import type { Pool } from "@crm/db";
import { DependencyUnavailableError } from "@crm/errors";

export interface BusinessAccess {
  businessId: string;
  plan: string;
  defaultCountry: string;
}

/** Who may write for which business. Answers may be cached for at most 30 s (SPEC 4). */
export interface TenantDirectory {
  businessesOfUser(userId: string): Promise<BusinessAccess[]>;
  businessOfKey(keyHash: string): Promise<(BusinessAccess & { keyId: string }) | undefined>;
}

interface Row {
  business_id: string;
  plan: string;
  default_country: string;
}

const toAccess = (row: Row): BusinessAccess => ({
  businessId: row.business_id,
  plan: row.plan,
  defaultCountry: row.default_country,
});

/**
 * Reads memberships through the definer functions of migration 002 (the service role cannot read other
 * tenants' rows) and caches each answer for `ttlMs`, so a removed team member loses access within that window.
 *
 * A key hash that matched no key is remembered apart, for `unknownKeyTtlMs` (a few seconds) and at most
 * `maxUnknownKeys` entries: a client repeating a bad key costs one lookup per window, a flood of random keys
 * cannot push the known keys out of their cache, and a key created meanwhile works at most `unknownKeyTtlMs`
 * after its creation even if someone presented it before.
 */
export class PgTenantDirectory implements TenantDirectory {
  private readonly users = new Map<string, { at: number; value: Promise<BusinessAccess[]> }>();
  private readonly keys = new Map<
    string,
    { at: number; value: Promise<(BusinessAccess & { keyId: string }) | undefined> }
  >();
  // key hash -> when it was found unknown, oldest first
  private readonly unknownKeys = new Map<string, number>();

  private readonly now: () => number;
  private readonly unknownKeyTtlMs: number;
  private readonly maxUnknownKeys: number;

  constructor(
    private readonly pool: Pool,
    private readonly ttlMs = 30_000,
    options: { unknownKeyTtlMs?: number; maxUnknownKeys?: number; now?: () => number } = {},
  ) {
    this.unknownKeyTtlMs = options.unknownKeyTtlMs ?? 5_000;
    this.maxUnknownKeys = options.maxUnknownKeys ?? 10_000;
    this.now = options.now ?? (() => Date.now());
  }

  businessesOfUser(userId: string): Promise<BusinessAccess[]> {
    return this.cached(this.users, userId, async () => {
      const result = await this.query<Row>(
        "SELECT business_id, plan, default_country FROM app.user_businesses($1)",
        [userId],
      );
      return result.map(toAccess);
    });
  }

  businessOfKey(keyHash: string) {
    const unknownSince = this.unknownKeys.get(keyHash);
    if (unknownSince !== undefined) {
      if (this.now() - unknownSince < this.unknownKeyTtlMs) return Promise.resolve(undefined);
      this.unknownKeys.delete(keyHash);
    }
    return this.cached(this.keys, keyHash, async () => {
      const [row] = await this.query<Row & { key_id: string }>(
        "SELECT key_id, business_id, plan, default_country FROM app.ingest_key_business($1)",
        [keyHash],
      );
      if (row) return { ...toAccess(row), keyId: row.key_id };
      this.keys.delete(keyHash);
      this.rememberUnknown(keyHash);
      return undefined;
    });
  }

  private rememberUnknown(keyHash: string): void {
    if (this.unknownKeys.size >= this.maxUnknownKeys) {
      this.unknownKeys.delete(this.unknownKeys.keys().next().value as string);
    }
    this.unknownKeys.set(keyHash, this.now());
  }

  private cached<T>(
    map: Map<string, { at: number; value: Promise<T> }>,
    key: string,
    load: () => Promise<T>,
  ) {
    const hit = map.get(key);
    if (hit && this.now() - hit.at < this.ttlMs) return hit.value;
    const value = load();
    map.set(key, { at: this.now(), value });
    // A failed lookup must not be cached.
    value.catch(() => map.delete(key));
    if (map.size > 100_000) map.delete(map.keys().next().value as string);
    return value;
  }

  private async query<R>(sql: string, params: unknown[]): Promise<R[]> {
    try {
      return (await this.pool.query(sql, params)).rows as R[];
    } catch (error) {
      throw new DependencyUnavailableError("postgres", "tenant lookup failed", { cause: error });
    }
  }
}
