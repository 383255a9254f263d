# Kafka Connect as the native launcher runs it (infra/src/stack/jvm.ts): Apache Kafka's own Connect runtime with the
# Debezium PostgreSQL connector unpacked on plugin.path, at the versions of infra/java/pom.xml. docker-compose.yml
# passes them as build args; infra/src/compose.test.ts fails when they drift from the pom.
ARG KAFKA_VERSION
FROM apache/kafka:${KAFKA_VERSION}
ARG DEBEZIUM_VERSION
USER root
ADD https://repo1.maven.org/maven2/io/debezium/debezium-connector-postgres/${DEBEZIUM_VERSION}/debezium-connector-postgres-${DEBEZIUM_VERSION}-plugin.tar.gz /tmp/debezium-plugin.tar.gz
RUN mkdir -p /opt/connect-plugins \
 && tar -xzf /tmp/debezium-plugin.tar.gz -C /opt/connect-plugins \
 && rm /tmp/debezium-plugin.tar.gz \
 && chmod -R a+rX /opt/connect-plugins
COPY connect-distributed.properties /opt/kafka/config/crm-connect-distributed.properties
COPY --chmod=755 connect-start.sh /opt/kafka/bin/crm-connect-start.sh
USER appuser
EXPOSE 8083
CMD ["/opt/kafka/bin/crm-connect-start.sh"]
