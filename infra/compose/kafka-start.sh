#!/bin/bash
# Kafka as the native launcher runs it (kafkaProperties and brokerAuthProperties in infra/src/stack/jvm.ts and
# kafka-auth.ts): SCRAM-SHA-512 on every client listener and between brokers, PLAIN on the controller listener,
# StandardAuthorizer with nothing allowed without an ACL, and the SCRAM users written at format time.
set -euo pipefail
config=/tmp/server.properties
scram() { echo "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"broker\" password=\"$KAFKA_BROKER_PASSWORD\";"; }
cat > "$config" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=kafka:9093
listeners=HOST://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093,INTERNAL://0.0.0.0:29092
advertised.listeners=HOST://127.0.0.1:9092,INTERNAL://kafka:29092
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=HOST:SASL_PLAINTEXT,INTERNAL:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.host.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.host.scram-sha-512.sasl.jaas.config=$(scram)
listener.name.internal.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.internal.scram-sha-512.sasl.jaas.config=$(scram)
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="$KAFKA_BROKER_PASSWORD" user_broker="$KAFKA_BROKER_PASSWORD";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:broker;User:admin
log.dirs=/var/lib/kafka/data
num.partitions=12
auto.create.topics.enable=false
default.replication.factor=1
min.insync.replicas=1
unclean.leader.election.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  /opt/kafka/bin/kafka-storage.sh format --standalone -t "$(/opt/kafka/bin/kafka-storage.sh random-uuid)" -c "$config" \
    --add-scram "SCRAM-SHA-512=[name=broker,password=$KAFKA_BROKER_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$KAFKA_ADMIN_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=ingest-api,password=$KAFKA_INGEST_API_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=resolver-worker,password=$KAFKA_RESOLVER_WORKER_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=connect,password=$KAFKA_CONNECT_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=consumer,password=$KAFKA_CONSUMER_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=segments,password=$KAFKA_SEGMENTS_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=automations,password=$KAFKA_AUTOMATIONS_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=console,password=$KAFKA_CONSOLE_PASSWORD]"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$config"
