import { parseEnv } from "@crm/config";
import { z } from "zod";
import { connectorSpec, connectorStatus, registerConnector, slotHealth } from "./connector.ts";

const Env = z.object({
  // Kafka Connect REST endpoint
  CONNECT_URL: z.string().url(),
  // Debezium's replication role (REPLICATION, reads the outbox publication)
  DEBEZIUM_DATABASE_URL: z.string().url(),
  // superuser, to read pg_replication_slots
  DATABASE_ADMIN_URL: z.string().url(),
});

async function main(): Promise<void> {
  const env = parseEnv(Env);
  const command = process.argv[2] ?? "status";
  const spec = connectorSpec(env.DEBEZIUM_DATABASE_URL);
  if (command === "register") {
    await registerConnector(env.CONNECT_URL, spec, { log: (line) => console.log(`[connector] ${line}`) });
    console.log(`[connector] ${spec.name} RUNNING`);
  } else if (command === "status") {
    const status = await connectorStatus(env.CONNECT_URL, spec.name);
    const slot = await slotHealth(env.DATABASE_ADMIN_URL);
    console.log(
      JSON.stringify(
        {
          connector: status ? status.connector.state : "NOT REGISTERED",
          tasks: status?.tasks.map((t) => t.state) ?? [],
          slot: slot ?? "no slot yet",
        },
        null,
        2,
      ),
    );
  } else {
    console.error("usage: npm run connector -- register|status");
    process.exitCode = 2;
  }
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (error) => {
    console.error(`[connector] ${(error as Error).message}`);
    process.exit(1);
  },
);
