const CONTENT_TYPE = "application/vnd.schemaregistry.v1+json";

export type CompatibilityLevel =
  | "NONE"
  | "BACKWARD"
  | "BACKWARD_TRANSITIVE"
  | "FORWARD"
  | "FORWARD_TRANSITIVE"
  | "FULL"
  | "FULL_TRANSITIVE";

export interface RegisteredSchema {
  subject: string;
  version: number;
  id: number;
  schema: Record<string, unknown>;
}

/** The subject a topic's value schema is registered under (Confluent's TopicNameStrategy). */
export function valueSubject(topic: string): string {
  return `${topic}-value`;
}

export class SchemaRegistryError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "SchemaRegistryError";
  }
}

/**
 * A small client of the Confluent-compatible registry API (Apicurio serves it at `/apis/ccompat/v7`), for JSON
 * Schemas. `baseUrl` is SCHEMA_REGISTRY_URL.
 */
export class SchemaRegistryClient {
  private readonly baseUrl: string;

  constructor(
    baseUrl: string,
    private readonly options: { timeoutMs?: number } = {},
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
  }

  private async request(method: string, path: string, body?: unknown): Promise<Response> {
    try {
      return await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: { "content-type": CONTENT_TYPE, accept: CONTENT_TYPE },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.options.timeoutMs ?? 10_000),
      });
    } catch (error) {
      throw new SchemaRegistryError(0, `schema registry unreachable at ${this.baseUrl}: ${String(error)}`);
    }
  }

  private async json<T>(res: Response, what: string): Promise<T> {
    if (!res.ok) throw new SchemaRegistryError(res.status, `${what}: ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  }

  /** Registers `schema` under `subject` (a no-op returning the same id when that content is already there). */
  async register(subject: string, schema: object): Promise<number> {
    const res = await this.request("POST", `/subjects/${encodeURIComponent(subject)}/versions`, {
      schema: JSON.stringify(schema),
      schemaType: "JSON",
    });
    return (await this.json<{ id: number }>(res, `register ${subject}`)).id;
  }

  /** The id of `schema` when exactly this content is registered under `subject`, else undefined. */
  async lookup(subject: string, schema: object): Promise<number | undefined> {
    const res = await this.request("POST", `/subjects/${encodeURIComponent(subject)}`, {
      schema: JSON.stringify(schema),
      schemaType: "JSON",
    });
    if (res.status === 404) return undefined;
    return (await this.json<{ id: number }>(res, `lookup ${subject}`)).id;
  }

  async latest(subject: string): Promise<RegisteredSchema | undefined> {
    const res = await this.request("GET", `/subjects/${encodeURIComponent(subject)}/versions/latest`);
    if (res.status === 404) return undefined;
    const body = await this.json<{ subject: string; version: number; id: number; schema: string }>(
      res,
      `latest ${subject}`,
    );
    return { ...body, schema: JSON.parse(body.schema) as Record<string, unknown> };
  }

  async schemaById(id: number): Promise<Record<string, unknown>> {
    const res = await this.request("GET", `/schemas/ids/${id}`);
    const body = await this.json<{ schema: string }>(res, `schema ${id}`);
    return JSON.parse(body.schema) as Record<string, unknown>;
  }

  async setCompatibility(subject: string, level: CompatibilityLevel): Promise<void> {
    const res = await this.request("PUT", `/config/${encodeURIComponent(subject)}`, { compatibility: level });
    await this.json(res, `set compatibility of ${subject}`);
  }

  /** The subject's own compatibility level, or undefined when it has none (the global default applies). */
  async compatibility(subject: string): Promise<CompatibilityLevel | undefined> {
    const res = await this.request("GET", `/config/${encodeURIComponent(subject)}`);
    if (res.status === 404) return undefined;
    return (await this.json<{ compatibilityLevel: CompatibilityLevel }>(res, `compatibility of ${subject}`))
      .compatibilityLevel;
  }

  /**
   * Asks the registry whether `schema` may follow the latest version of `subject` under the subject's
   * compatibility level. Undefined when the subject has no version yet (anything may be registered).
   */
  async checkCompatibility(
    subject: string,
    schema: object,
  ): Promise<{ compatible: boolean; messages: string[] } | undefined> {
    const res = await this.request(
      "POST",
      `/compatibility/subjects/${encodeURIComponent(subject)}/versions/latest?verbose=true`,
      { schema: JSON.stringify(schema), schemaType: "JSON" },
    );
    if (res.status === 404) return undefined;
    const body = await this.json<{ is_compatible: boolean; messages?: string[] }>(
      res,
      `compatibility check of ${subject}`,
    );
    return { compatible: body.is_compatible, messages: body.messages ?? [] };
  }

  /** Deletes a subject for good (soft delete, then permanent), for tests and clean-ups. */
  async deleteSubject(subject: string): Promise<void> {
    const path = `/subjects/${encodeURIComponent(subject)}`;
    await this.request("DELETE", path);
    await this.request("DELETE", `${path}?permanent=true`);
  }
}
