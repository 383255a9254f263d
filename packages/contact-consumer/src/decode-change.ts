import type { ContactUpdatedV1 } from "@crm/schemas";
import { type DecodedOutboxChange, type OutboxChange, outboxDecoder } from "./decode-outbox.ts";

/** One contact change as handed to the callback (type: `contact.created`, `.updated`, `.merged`, ...). */
export type ContactChange = OutboxChange<ContactUpdatedV1>;

export type DecodedChange = DecodedOutboxChange<ContactUpdatedV1>;

/** Decodes and validates one `contact.updated.v1` message; never throws. */
export const decodeContactChange = outboxDecoder<ContactUpdatedV1>("contact.updated.v1", "contact");
