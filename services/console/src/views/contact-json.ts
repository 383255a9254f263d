import type { ContactStory } from "../contact-story.ts";
import { maskDeep, maskValue } from "../mask.ts";

/** Which PII kinds a response shows in clear (after a recorded reveal); everything else is masked. */
export type Reveal = ReadonlySet<string>;

export function revealOf(field: "email" | "phone" | "name" | "all" | undefined): Reveal {
  if (field === undefined) return new Set();
  return new Set(field === "all" ? ["email", "phone", "name"] : [field]);
}

/** A value of PII kind `kind`, masked unless revealed. */
export function shown(reveal: Reveal, kind: string, value: string | null): string | null {
  if (value === null) return null;
  return reveal.has(kind) ? value : maskValue(kind, value);
}

/** The card as JSON, with the same masking as the page. */
export function storyJson(story: ContactStory, reveal: Reveal) {
  const { contact } = story;
  const deep = (value: unknown) => (reveal.size === 3 ? value : maskDeep(value));
  return {
    contact: {
      ...contact,
      email: shown(reveal, "email", contact.email),
      phone: shown(reveal, "phone", contact.phone),
      name: shown(reveal, "name", contact.name),
      traits: deep(contact.traits),
    },
    identities: story.identities.map((i) => ({ ...i, value: shown(reveal, i.type, i.value) })),
    merges: story.merges,
    conflicts: story.conflicts.map((c) => ({ ...c, value: shown(reveal, c.type, c.value) })),
    events: story.events.map((e) => ({ ...e, props: deep(e.props) })),
    related: story.related.map((r) => ({ table: r.table, rows: r.rows.map((row) => deep(row)) })),
    revealed: [...reveal],
  };
}
