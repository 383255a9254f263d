#!/bin/sh
# Generated from infra/src/stack/kafka-auth.ts (kafkaGrants) by composeKafkaInitScript; compose.test checks it.
set -eu
printf 'security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="%s";\n' "$KAFKA_ADMIN_PASSWORD" > /tmp/admin.properties
/opt/kafka/bin/kafka-topics.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --create --if-not-exists --topic events.raw.v1 --partitions 12 --replication-factor 1
/opt/kafka/bin/kafka-topics.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --create --if-not-exists --topic events.dlq.v1 --partitions 12 --replication-factor 1
/opt/kafka/bin/kafka-topics.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --create --if-not-exists --topic contact.updated.v1 --partitions 12 --replication-factor 1
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:ingest-api --operation Write --operation Describe --topic 'events.raw.v1' --resource-pattern-type prefixed
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:ingest-api --operation IdempotentWrite --cluster
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:resolver-worker --operation Read --operation Describe --topic 'events.raw.v1' --resource-pattern-type prefixed
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:resolver-worker --operation Write --operation Describe --topic 'events.dlq.v1' --resource-pattern-type prefixed
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:resolver-worker --operation Read --operation Describe --group '*'
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:resolver-worker --operation IdempotentWrite --cluster
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:connect --operation All --topic '_connect-' --resource-pattern-type prefixed
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:connect --operation All --topic '_crm-connect' --resource-pattern-type prefixed
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:connect --operation All --topic '_crm-connect' --resource-pattern-type prefixed
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:connect --operation All --topic '__debezium-heartbeat' --resource-pattern-type prefixed
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:connect --operation Write --operation Describe --operation Create --operation DescribeConfigs --topic 'contact.updated.v1' --resource-pattern-type prefixed
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:connect --operation Write --operation Describe --operation Create --operation DescribeConfigs --topic 'test.contact.updated.' --resource-pattern-type prefixed
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:connect --operation Write --operation Describe --operation Create --operation DescribeConfigs --topic 'crm.' --resource-pattern-type prefixed
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:connect --operation Write --operation Describe --operation Create --operation DescribeConfigs --topic 'crmtest' --resource-pattern-type prefixed
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:connect --operation Read --operation Describe --group 'crm-connect' --resource-pattern-type prefixed
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:connect --operation Read --operation Describe --group 'crm-connect'
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:connect --operation IdempotentWrite --cluster
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:connect --operation Describe --operation DescribeConfigs --cluster
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:consumer --operation Read --operation Describe --topic 'contact.updated.v1'
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --allow-principal User:consumer --operation Read --operation Describe --group '*'
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --deny-principal User:consumer --operation Read --operation Describe --group 'resolver-worker' --resource-pattern-type prefixed
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --deny-principal User:consumer --operation Read --operation Describe --group 'crm-connect' --resource-pattern-type prefixed
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:29092 --command-config /tmp/admin.properties --add --deny-principal User:consumer --operation Read --operation Describe --group 'crm-connect'
