import { randomUUID } from "node:crypto";
import { parseEnv } from "@crm/config";
import { ContactConsumer, kafkaCredentials } from "@crm/contact-consumer";
import { z } from "zod";
import { ContactCounter } from "./counter.ts";

const Env = z.object({
  // brokers, comma-separated
  KAFKA_BROKERS: z.string().min(1),
  // the read-only consumer principal (written by `stack up`); it may read contact.updated.v1 and nothing else
  KAFKA_CONSUMER_USERNAME: z.string().min(1).optional(),
  KAFKA_CONSUMER_PASSWORD: z.string().min(1).optional(),
  // print the counts this often
  COUNTER_PRINT_INTERVAL_MS: z.coerce.number().int().positive().default(5_000),
  // only this business (optional)
  COUNTER_BUSINESS_ID: z.string().uuid().optional(),
});

const env = parseEnv(Env);
const counter = new ContactCounter();
// The counts live in memory, so each start rebuilds them from the topic's beginning under a fresh group. A
// counter that keeps its state (a table) would use a fixed group id and a DedupeStore in the same database.
const consumer = new ContactConsumer({
  kafka: env.KAFKA_BROKERS.split(","),
  credentials: kafkaCredentials(env, "consumer") ?? null,
  groupId: `example-contact-counter-${randomUUID()}`,
  fromBeginning: true,
  onChange: (change) => {
    if (!env.COUNTER_BUSINESS_ID || change.businessId === env.COUNTER_BUSINESS_ID) counter.apply(change);
  },
});

await consumer.start();
console.log("[contact-counter] consuming contact.updated.v1; Ctrl-C to stop");
const timer = setInterval(() => {
  const counts = counter.snapshot();
  const { delivered, duplicates, invalid } = consumer.stats;
  console.log(JSON.stringify({ contacts_per_business: counts, delivered, duplicates, invalid }));
}, env.COUNTER_PRINT_INTERVAL_MS);

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, async () => {
    clearInterval(timer);
    await consumer.stop();
    process.exit(0);
  });
}
