import { randomUUID } from "node:crypto";
import { stackEnv } from "@crm/config";
import {
  createKafka,
  type KafkaCredentials,
  type KafkaPrincipal,
  kafkaCredentials,
  TOPICS,
} from "@crm/kafka";
import { describe, expect, it } from "vitest";

// Guarantee 9.7 on the broker: every client authenticates, and each principal may do only its own job (SPEC 11).
describe("Kafka authentication and ACLs", () => {
  const brokers = (stackEnv().KAFKA_BROKERS ?? "").split(",");
  const credentials = (principal: KafkaPrincipal): KafkaCredentials => {
    const found = kafkaCredentials(stackEnv(), principal);
    if (!found) throw new Error(`no KAFKA_* credentials for ${principal} in the stack's env`);
    return found;
  };
  const client = (credentials: KafkaCredentials | null) =>
    createKafka({ brokers, clientId: `auth-test-${randomUUID().slice(0, 8)}`, credentials });

  /** "denied" for an authorization error, whichever way kafkajs reports it; any other error as its text. */
  const outcomeOf = (error: unknown): string => {
    // A principal with no group ACL gets GROUP_AUTHORIZATION_FAILED from FindCoordinator, which kafkajs reports
    // as a coordinator it cannot find.
    if ((error as Error).name === "KafkaJSGroupCoordinatorNotFound") return "denied";
    const text = JSON.stringify(error, Object.getOwnPropertyNames(error as object)) ?? String(error);
    return /AUTHORIZATION_FAILED|not authorized/i.test(text) ? "denied" : text;
  };

  /** "denied" when a send as `principal` is refused for lack of an ACL, or "ok". */
  async function produceAs(principal: KafkaPrincipal, topic: string): Promise<string> {
    const producer = client(credentials(principal)).producer({ retry: { retries: 0 } });
    try {
      await producer.connect();
      await producer.send({ topic, acks: -1, messages: [{ key: "auth-test", value: "{}" }] });
      return "ok";
    } catch (error) {
      return outcomeOf(error);
    } finally {
      await producer.disconnect();
    }
  }

  /** "denied" when a read of `topic` as `principal` is refused, or "ok" once it is subscribed and fetching. */
  async function consumeAs(principal: KafkaPrincipal, topic: string): Promise<string> {
    const consumer = client(credentials(principal)).consumer({
      groupId: `auth-test-${randomUUID().slice(0, 8)}`,
      retry: { retries: 0 },
    });
    try {
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: false });
      const outcome = new Promise<string>((resolve) => {
        consumer.on(consumer.events.FETCH_START, () => resolve("ok"));
        consumer.on(consumer.events.CRASH, ({ payload }) => resolve(outcomeOf(payload.error)));
      });
      await consumer.run({ eachMessage: async () => {} });
      return await outcome;
    } catch (error) {
      return outcomeOf(error);
    } finally {
      await consumer.disconnect();
    }
  }

  it("refuses a client that does not authenticate, and one with a wrong password", async () => {
    const anonymous = client(null).admin({ retry: { retries: 0 } });
    await expect(anonymous.connect().then(() => anonymous.listTopics())).rejects.toThrow();
    await anonymous.disconnect();
    const wrong = client({ username: "ingest-api", password: "not-the-password" }).admin({
      retry: { retries: 0 },
    });
    await expect(wrong.connect()).rejects.toThrow(/SASL SCRAM SHA512 authentication failed/);
    await wrong.disconnect();
  });

  it("lets only ingest-api write events.raw.v1: the worker's principal cannot", async () => {
    expect(await produceAs("ingest-api", TOPICS.raw)).toBe("ok");
    expect(await produceAs("resolver-worker", TOPICS.raw)).toBe("denied");
    expect(await produceAs("consumer", TOPICS.raw)).toBe("denied");
  });

  it("keeps ingest-api from reading events.raw.v1 and from writing contact.updated.v1 or the DLQ", async () => {
    expect(await consumeAs("ingest-api", TOPICS.raw)).toBe("denied");
    expect(await produceAs("ingest-api", TOPICS.contactUpdated)).toBe("denied");
    expect(await produceAs("ingest-api", TOPICS.dlq)).toBe("denied");
  });

  it("lets the worker read events.raw.v1 and write events.dlq.v1, and nothing of Connect's", async () => {
    expect(await consumeAs("resolver-worker", TOPICS.raw)).toBe("ok");
    expect(await produceAs("resolver-worker", TOPICS.dlq)).toBe("ok");
    expect(await produceAs("resolver-worker", TOPICS.contactUpdated)).toBe("denied");
  });

  it("gives the consumer principal contact.updated.v1 to read and nothing else", async () => {
    expect(await consumeAs("consumer", TOPICS.contactUpdated)).toBe("ok");
    expect(await produceAs("consumer", TOPICS.contactUpdated)).toBe("denied");
    expect(await consumeAs("consumer", TOPICS.raw)).toBe("denied");
    expect(await consumeAs("consumer", TOPICS.dlq)).toBe("denied");
    expect(await consumeAs("consumer", "_connect-configs")).toBe("denied");
    const admin = client(credentials("consumer")).admin();
    await admin.connect();
    try {
      const created = admin.createTopics({ topics: [{ topic: `auth-test-${randomUUID()}` }] });
      expect(await created.then(() => "ok", outcomeOf)).toBe("denied");
    } finally {
      await admin.disconnect();
    }
  });
});
