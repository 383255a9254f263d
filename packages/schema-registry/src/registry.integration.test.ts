import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { repoRoot } from "@crm/config";
import { decodeFramedJson, encodeFramedJson } from "@crm/kafka";
import { TOPIC_SCHEMAS } from "@crm/schemas";
import { testEnv } from "@crm/testing";
import { afterAll, describe, expect, it } from "vitest";
import { SchemaRegistryClient, valueSubject } from "./client.ts";
import { checkTopicSchema, IncompatibleSchemaError, registerTopicSchema } from "./compatibility.ts";
import { topicValidator } from "./validate.ts";

const env = testEnv();
const client = new SchemaRegistryClient(env.registryUrl);
const scratch: string[] = [];

/** A topic name of our own, so changing its schema never touches the real subjects. */
function scratchTopic(): string {
  const topic = `test.contact.updated.${randomUUID().slice(0, 8)}`;
  scratch.push(valueSubject(topic));
  return topic;
}

type Editable = { required: string[]; properties: Record<string, unknown> };
const contactSchema = () => structuredClone(TOPIC_SCHEMAS["contact.updated.v1"]) as unknown as Editable;

afterAll(async () => {
  for (const subject of scratch) await client.deleteSubject(subject);
});

describe("schemas in the registry (Apicurio ccompat)", () => {
  it("registers every topic's schema under <topic>-value with BACKWARD, and registering again is a no-op", async () => {
    for (const topic of Object.keys(TOPIC_SCHEMAS)) {
      const first = await registerTopicSchema(client, topic);
      const second = await registerTopicSchema(client, topic);
      expect(second).toBe(first);
      expect(await client.compatibility(valueSubject(topic))).toBe("BACKWARD");
      expect(await client.schemaById(first)).toEqual(TOPIC_SCHEMAS[topic as keyof typeof TOPIC_SCHEMAS]);
    }
  });

  it("frames events.raw.v1 with the registered id, and a decoder resolves the id to the schema", async () => {
    const id = await registerTopicSchema(client, "events.raw.v1");
    const event = {
      event_id: randomUUID(),
      business_id: randomUUID(),
      type: "signup",
      contact: { email: "alice@example.com" },
      props: {},
      occurred_at: new Date().toISOString(),
      received_at: new Date().toISOString(),
      source: { kind: "user", id_hash: "0123456789abcdef" },
    };
    const decoded = decodeFramedJson(encodeFramedJson(id, event));
    expect(decoded).toEqual({ schemaId: id, value: event });
    const writerSchema = await client.schemaById(decoded.schemaId!);
    expect(writerSchema.title).toBe("events.raw.v1");
    expect(topicValidator("events.raw.v1")(decoded.value)).toMatchObject({ ok: true });
  });

  // What @kafkajs/confluent-schema-registry does against Apicurio's ccompat API, and where it stops: the evidence
  // for using it for registration and lookups and keeping decodeFramedJson for the readers of topics.
  it("the library registers a JSON Schema under BACKWARD and looks it up, through ccompat", async () => {
    const topic = scratchTopic();
    const subject = valueSubject(topic);
    const id = await client.register(subject, contactSchema());
    expect(await client.compatibility(subject)).toBe("BACKWARD"); // set by the library on a first registration
    expect(await client.register(subject, contactSchema())).toBe(id);
    expect(await client.lookup(subject, contactSchema())).toBe(id);
    expect(await client.serdes.getLatestSchemaId(subject)).toBe(id);
    expect(await client.lookup(subject, { ...contactSchema(), title: "never registered" })).toBeUndefined();
    expect(await client.lookup(valueSubject(scratchTopic()), contactSchema())).toBeUndefined();
    // Why removedGuarantees stays ours: the registry's BACKWARD lets a required field become optional.
    const optional = contactSchema();
    optional.required = optional.required.filter((f) => f !== "cause_event_id");
    expect(await client.checkCompatibility(subject, optional)).toMatchObject({ compatible: true });
  });

  it("the library's encode and decode are the frame of @crm/kafka, validated by the registered schema", async () => {
    const id = await registerTopicSchema(client, "events.raw.v1");
    const event = {
      event_id: randomUUID(),
      business_id: randomUUID(),
      type: "signup",
      contact: { email: "alice@example.com" },
      props: { plan: "pro" },
      occurred_at: new Date().toISOString(),
      received_at: new Date().toISOString(),
      source: { kind: "user", id_hash: "0123456789abcdef" },
    };
    // A fresh client: the schema is fetched by id, compiled with our Ajv (formats; the library's own has none).
    const serdes = new SchemaRegistryClient(env.registryUrl).serdes;
    expect(await serdes.encode(id, event)).toEqual(encodeFramedJson(id, event));
    expect(await serdes.decode(encodeFramedJson(id, event))).toEqual(event);
    await expect(serdes.encode(id, { ...event, event_id: "nope" })).rejects.toThrow(/invalid payload/);
    await expect(serdes.decode(encodeFramedJson(id, { ...event, type: 42 }))).rejects.toThrow(
      /invalid payload/,
    );
    // Where the readers of a topic cannot use it: plain JSON (ingest-api writes it while the registry is down) is
    // refused, and an unknown id costs a registry request and fails with the registry's 404.
    await expect(serdes.decode(Buffer.from(JSON.stringify(event)))).rejects.toThrow(/magic byte/);
    await expect(serdes.decode(encodeFramedJson(2_000_000_000, event))).rejects.toMatchObject({
      status: 404,
    });
  });

  it("the checked-in schemas are compatible with what is registered (the CI check)", () => {
    const result = spawnSync("npm", ["run", "-s", "schemas", "--", "check"], {
      cwd: repoRoot(),
      encoding: "utf8",
      env: process.env,
    });
    expect(result.stdout).toContain("contact.updated.v1-value: unchanged");
    expect(result.status, result.stdout + result.stderr).toBe(0);
  });

  it("refuses removing a required field, making it optional, or adding a required one", async () => {
    const topic = scratchTopic();
    const v1 = contactSchema();
    await registerTopicSchema(client, topic, v1);

    const removed = contactSchema();
    removed.required = removed.required.filter((f) => f !== "cause_event_id");
    delete removed.properties.cause_event_id;
    const removedCheck = await checkTopicSchema(client, topic, removed);
    expect(removedCheck.status).toBe("incompatible");
    expect(removedCheck.messages).toContain("cause_event_id: required field removed");
    await expect(registerTopicSchema(client, topic, removed)).rejects.toBeInstanceOf(IncompatibleSchemaError);

    const added = contactSchema();
    added.properties.region = { type: "string" };
    added.required.push("region");
    const addedCheck = await checkTopicSchema(client, topic, added);
    expect(addedCheck.status).toBe("incompatible");
    expect(addedCheck.messages[0]).toMatch(/registry refuses it under BACKWARD/);

    // Nothing refused was registered.
    expect((await client.latest(valueSubject(topic)))?.version).toBe(1);
  });

  it("accepts an optional field added, as version 2", async () => {
    const topic = scratchTopic();
    await registerTopicSchema(client, topic, contactSchema());
    const v2 = contactSchema();
    v2.properties.region = { type: "string" };
    expect((await checkTopicSchema(client, topic, v2)).status).toBe("compatible");
    const id = await registerTopicSchema(client, topic, v2);
    const latest = await client.latest(valueSubject(topic));
    expect(latest).toMatchObject({ version: 2, id });
  });
});
