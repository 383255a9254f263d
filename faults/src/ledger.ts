/** The body of one `POST /v1/track`, identifiers already normalized (so the replay can use them verbatim). */
export interface TrackBody {
  type: string;
  contact: { external_id?: string; email?: string; phone?: string; name?: string };
  props: { req: number; run: string };
}

/** One HTTP attempt of a request: its status, or "network" when no response arrived (refused, reset, timeout). */
export interface Attempt {
  at: number;
  ms: number;
  status: number | "network";
}

/**
 * One logical request of the client. A keyed request is retried with the same key and body after 5xx, 409 or a
 * network error until it gets a 2xx (bounded); an unkeyed one is sent once, and a failure means "not accepted".
 */
export interface LedgerEntry {
  req: number;
  /** The fault phase in which the request was first sent. */
  phase: string;
  businessId: string;
  key?: string;
  body: TrackBody;
  attempts: Attempt[];
  /** ok: got a 2xx; rejected: a final 4xx; failed: unkeyed failure, or keyed retries exhausted. */
  outcome?: "ok" | "rejected" | "failed";
  eventId?: string;
  /** When the 2xx arrived. */
  ackAt?: number;
}

export const isAck = (entry: LedgerEntry): entry is LedgerEntry & { eventId: string; ackAt: number } =>
  entry.outcome === "ok" && entry.eventId !== undefined;

export const is2xx = (attempt: Attempt): boolean =>
  typeof attempt.status === "number" && attempt.status >= 200 && attempt.status < 300;
