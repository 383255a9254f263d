import type { ContactChange } from "@crm/contact-consumer";

/**
 * Live contacts per business, from contact.updated.v1: a `created` change adds one, a `merged_away` change
 * (the contact was merged into another) or an `erased` one (issue 18: the live contact was erased; those in its
 * merged_from were taken off by their merged_away already) removes one; `updated` and `merged` leave the count
 * alone. It relies on
 * the consumer kit handing each change over once: a replayed `created` would otherwise count twice.
 */
export class ContactCounter {
  private readonly counts = new Map<string, number>();

  apply(change: ContactChange): void {
    const kind = change.value.change;
    const delta = kind === "created" ? 1 : kind === "merged_away" || kind === "erased" ? -1 : 0;
    if (delta !== 0) this.counts.set(change.businessId, (this.counts.get(change.businessId) ?? 0) + delta);
  }

  count(businessId: string): number {
    return this.counts.get(businessId) ?? 0;
  }

  /** Every business seen, with its count. */
  snapshot(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }
}
