import type { SegmentMembershipV1 } from "@crm/schemas";
import { type DecodedOutboxChange, type OutboxChange, outboxDecoder } from "./decode-outbox.ts";

/** One entry into or exit from a segment, as handed to the callback (type: `segment.entered` or `.exited`). */
export type MembershipChange = OutboxChange<SegmentMembershipV1>;

export type DecodedMembership = DecodedOutboxChange<SegmentMembershipV1>;

/** Decodes and validates one `segment.membership.v1` message; never throws. */
export const decodeMembershipChange = outboxDecoder<SegmentMembershipV1>("segment.membership.v1", "segment");
