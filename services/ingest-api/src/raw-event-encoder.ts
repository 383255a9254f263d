import { encodeFramedJson, TOPICS } from "@crm/kafka";
import { type SchemaRegistryClient, valueSubject } from "@crm/schema-registry";
import { type RawEventV1, TOPIC_SCHEMAS } from "@crm/schemas";

/**
 * Encodes events.raw.v1 values as JSON with schema-registry framing (SPEC 5): magic byte + the id of
 * `events.raw.v1-value` + JSON. Until the id is known (registry down at start) values go out as plain JSON, which
 * consumers decode too; the id is then looked up again in the background, so the API never waits on the registry.
 */
export class RawEventEncoder {
  private schemaId: number | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly registry: SchemaRegistryClient | undefined,
    private readonly onError: (error: unknown) => void = () => {},
    private readonly retryMs = 10_000,
  ) {}

  /** The schema id values are framed with, once known. */
  get id(): number | undefined {
    return this.schemaId;
  }

  /** Looks the schema up (registering it when absent); on failure keeps retrying in the background. */
  async start(): Promise<void> {
    if (!this.registry || (await this.resolve())) return;
    this.timer = setInterval(() => {
      void this.resolve().then((done) => done && clearInterval(this.timer));
    }, this.retryMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  encode = (event: RawEventV1): Buffer | string =>
    this.schemaId === undefined ? JSON.stringify(event) : encodeFramedJson(this.schemaId, event);

  private async resolve(): Promise<boolean> {
    if (!this.registry) return false;
    const subject = valueSubject(TOPICS.raw);
    const schema = TOPIC_SCHEMAS[TOPICS.raw];
    try {
      this.schemaId =
        (await this.registry.lookup(subject, schema)) ?? (await this.registry.register(subject, schema));
      return true;
    } catch (error) {
      this.onError(error);
      return false;
    }
  }
}
