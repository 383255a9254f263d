import { type MembershipChange, MembershipConsumer } from "@crm/contact-consumer";
import { createKafka, TOPICS } from "@crm/kafka";
import { poll } from "@crm/process";
import { consumerGroupAtTopicEnd } from "@crm/testing";

const NAME = "High value (demo)";
const HIGH_VALUE = {
  event: {
    type: "purchase",
    window: { last_days: 30 },
    measure: "sum",
    property: "amount",
    op: ">",
    value: 10,
  },
};

/**
 * `npm start`'s segments step (issue 16): defines "High value (demo)" (sum of purchase amounts over 10 in 30 days)
 * through the management API once, then sends two purchases of a new contact (8, then 7) and shows the contact
 * entering the segment on segment.membership.v1 after the second, and the segment's member_count.
 */
export async function runSegmentsDemo(
  env: Record<string, string>,
  say: (line: string) => void,
  ownerToken: string,
): Promise<void> {
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${env.INGEST_URL}${path}`, {
      method,
      headers: { authorization: `Bearer ${ownerToken}`, "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const listed = await api("GET", "/v1/manage/segments");
  const segments = (listed.body.segments ?? []) as { id: string; name: string }[];
  let segmentId = segments.find((s) => s.name === NAME)?.id;
  if (segmentId) say(`segments: "${NAME}" exists (${segmentId.slice(0, 8)})`);
  else {
    const created = await api("POST", "/v1/manage/segments", { name: NAME, definition: HIGH_VALUE });
    segmentId = (created.body.segment as { id: string }).id;
    say(
      `segments: POST /v1/manage/segments "${NAME}": HTTP ${created.status}, ${JSON.stringify(HIGH_VALUE)}`,
    );
  }

  const brokers = env.KAFKA_BROKERS!.split(",");
  const groupId = await consumerGroupAtTopicEnd(brokers, TOPICS.segmentMembership, "demo-segments");
  const seen: MembershipChange[] = [];
  const reader = new MembershipConsumer({
    kafka: brokers,
    groupId,
    onChange: (change) => {
      if (change.value.segment_id === segmentId) seen.push(change);
    },
  });
  await reader.start();
  try {
    const email = `bob.${Date.now().toString(36)}@example.com`;
    for (const amount of [8, 7]) {
      const res = await api("POST", "/v1/track", { type: "purchase", contact: { email }, props: { amount } });
      say(`segments: purchase of ${amount} by ${email}: HTTP ${res.status}`);
    }
    const [entered] = await poll(
      "the contact entering the segment on segment.membership.v1",
      async () => (seen.length > 0 ? seen : undefined),
      { timeoutMs: 120_000 },
    );
    const v = entered!.value;
    say(
      `     -> ${entered!.type} ${v.contact_id.slice(0, 8)} into "${NAME}" v${v.segment_version} (cause ${v.cause}, at ${v.at})`,
    );
    const got = await api("GET", `/v1/manage/segments/${segmentId}`);
    say(
      `segments: GET /v1/manage/segments/${segmentId.slice(0, 8)}...: member_count ${(got.body.segment as { member_count: number }).member_count}`,
    );
  } finally {
    await reader.stop();
    const admin = createKafka({ brokers, clientId: "demo" }).admin();
    await admin.connect();
    await admin.deleteGroups([groupId]).catch(() => {});
    await admin.disconnect();
  }
}
