#!/bin/bash
# The native launcher's Connect worker (startConnect in infra/src/stack/jvm.ts): SASL for the worker and the clients
# it makes for connectors, the REST API behind Basic auth, the Debezium password through EnvVarConfigProvider.
set -euo pipefail
config=/tmp/connect-distributed.properties
cp /opt/kafka/config/crm-connect-distributed.properties "$config"
jaas="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"connect\" password=\"$KAFKA_CONNECT_PASSWORD\";"
for prefix in "" producer. consumer. admin.; do
  printf '%ssecurity.protocol=SASL_PLAINTEXT\n%ssasl.mechanism=SCRAM-SHA-512\n%ssasl.jaas.config=%s\n' \
    "$prefix" "$prefix" "$prefix" "$jaas" >> "$config"
done
printf 'connect-admin: %s\n' "$CONNECT_PASSWORD" > /tmp/rest-users.properties
chmod 600 /tmp/rest-users.properties "$config"
printf 'KafkaConnect {\n  org.apache.kafka.connect.rest.basic.auth.extension.PropertyFileLoginModule required\n  file="/tmp/rest-users.properties";\n};\n' > /tmp/rest-jaas.conf
unset KAFKA_CONNECT_PASSWORD CONNECT_PASSWORD
export KAFKA_OPTS="-Djava.security.auth.login.config=/tmp/rest-jaas.conf"
exec /opt/kafka/bin/connect-distributed.sh "$config"
