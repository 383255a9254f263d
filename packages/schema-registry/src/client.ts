import { COMPATIBILITY, SchemaRegistry, SchemaType } from "@kafkajs/confluent-schema-registry";
import { TimeoutMiddleware } from "mappersmith/middleware";
import { newAjv } from "./validate.ts";

const CONTENT_TYPE = "application/vnd.schemaregistry.v1+json";

export type CompatibilityLevel = `${COMPATIBILITY}`;

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
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "SchemaRegistryError";
  }
}

/** The library's errors carry an HTTP status (`ResponseError`) or only a name; ours always say what failed. */
function registryError(what: string, error: unknown): SchemaRegistryError {
  const status = (error as { status?: unknown }).status;
  return new SchemaRegistryError(typeof status === "number" ? status : 0, `${what}: ${String(error)}`, {
    cause: error,
  });
}

/**
 * The client of the Confluent-compatible registry API (Apicurio serves it at `/apis/ccompat/v7`), for JSON Schemas.
 * `baseUrl` is SCHEMA_REGISTRY_URL.
 *
 * Registration and lookups go through @kafkajs/confluent-schema-registry (`serdes`, also the way to encode and
 * decode with a registered schema). The library has no call for what `checkTopicSchema` and the tests need besides:
 * the registry's own compatibility verdict, a subject's compatibility level, a version's schema text, deleting a
 * subject; those few are plain requests here.
 */
export class SchemaRegistryClient {
  /**
   * The library's client: `encode(id, value)` validates against the schema registered under `id` and frames it,
   * `decode(bytes)` reads the frame, fetches the writer's schema by id (cached) and validates against it.
   */
  readonly serdes: SchemaRegistry;
  private readonly baseUrl: string;
  private readonly timeoutMs: number;

  constructor(baseUrl: string, options: { timeoutMs?: number } = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.serdes = new SchemaRegistry(
      { host: this.baseUrl, clientId: "crm", middlewares: [TimeoutMiddleware(this.timeoutMs)] },
      {
        [SchemaType.JSON]: {
          // The library compiles with `new Ajv()` unless given one: that knows no formats ("uuid" fails to
          // compile), and one shared instance refuses the second compile of a schema with the same $id (the
          // library compiles on every register(), and two versions of a subject share their $id). So: our
          // validator's settings, a fresh instance per schema.
          ajvInstance: {
            compile: (schema: object) => newAjv().compile(schema),
            addSchema: () => {
              throw new Error("schema references are not used by schemas/");
            },
          },
        },
      },
    );
  }

  /**
   * Registers `schema` under `subject` (a no-op returning the same id when that content is already there). A new
   * subject gets BACKWARD; the library refuses a subject whose own level is another one.
   */
  async register(subject: string, schema: object): Promise<number> {
    try {
      const registered = await this.serdes.register(
        { type: SchemaType.JSON, schema: JSON.stringify(schema) },
        { subject, compatibility: COMPATIBILITY.BACKWARD },
      );
      return registered.id;
    } catch (error) {
      throw registryError(`register ${subject}`, error);
    }
  }

  /** The id of `schema` when exactly this content is registered under `subject`, else undefined. */
  async lookup(subject: string, schema: object): Promise<number | undefined> {
    try {
      return await this.serdes.getRegistryIdBySchema(subject, {
        type: SchemaType.JSON,
        schema: JSON.stringify(schema),
      });
    } catch (error) {
      // The library turns the registry's 404 (no such subject or content) into its base error class, and any
      // other failure into a ResponseError with the status.
      if ((error as Error).name === "ConfluentSchemaRegistryError") return undefined;
      throw registryError(`lookup ${subject}`, error);
    }
  }

  private async request(method: string, path: string, body?: unknown): Promise<Response> {
    try {
      return await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: { "content-type": CONTENT_TYPE, accept: CONTENT_TYPE },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (error) {
      throw new SchemaRegistryError(0, `schema registry unreachable at ${this.baseUrl}: ${String(error)}`);
    }
  }

  private async json<T>(res: Response, what: string): Promise<T> {
    if (!res.ok) throw new SchemaRegistryError(res.status, `${what}: ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  }

  /** The latest version of `subject` with its schema text (the library returns only its id). */
  async latest(subject: string): Promise<RegisteredSchema | undefined> {
    const res = await this.request("GET", `/subjects/${encodeURIComponent(subject)}/versions/latest`);
    if (res.status === 404) return undefined;
    const body = await this.json<{ subject: string; version: number; id: number; schema: string }>(
      res,
      `latest ${subject}`,
    );
    return { ...body, schema: JSON.parse(body.schema) as Record<string, unknown> };
  }

  /** The schema text registered under `id` (the library's getSchema returns it compiled, not as written). */
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
