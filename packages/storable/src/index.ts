/**
 * One rule for the HTTP edge and the worker (SPEC 9.5): what the API accepts, the worker can store. Postgres
 * refuses NUL in text and jsonb, jsonb refuses lone surrogates, timestamptz refuses year 0, and JSON.parse turns
 * 1e400 into Infinity (which JSON.stringify silently writes as null). Every check here walks iteratively, so no
 * input, however deep, can overflow the stack of the process that checks it.
 */

export interface StorableIssue {
  path: string[];
  message: string;
}

/** Containers (objects and arrays) nested in `props` (SPEC 4; issue 11 asks for a limit "for example 32"). */
export const MAX_PROPS_DEPTH = 32;

/** Earliest `occurred_at` accepted: nothing a CRM records happened before 1900, and Postgres has no year 0. */
export const EARLIEST_TIMESTAMP_MS = Date.UTC(1900, 0, 1);

// Cc is exactly C0, DEL and C1; tab, line feed and carriage return are told apart from the rest.
const CONTROL = /\p{Cc}/u;
const CONTROL_BUT_WHITESPACE = /[^\P{Cc}\t\n\r]/u;

/**
 * Why `text` cannot be stored, or undefined when it can: not well-formed UTF-16 (a lone surrogate), NUL, or
 * another C0/C1 control character. Tab, newline and carriage return pass only with `allowWhitespace` (free text
 * in props); names, types, identifiers and keys never hold them.
 */
export function textProblem(text: string, allowWhitespace = false): string | undefined {
  if (!text.isWellFormed()) return "is not well-formed Unicode (lone surrogate)";
  if (text.includes("\u0000")) return "contains a NUL character";
  const control = (allowWhitespace ? CONTROL_BUT_WHITESPACE : CONTROL).exec(text);
  if (control) {
    return `contains the control character U+${control[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}`;
  }
  return undefined;
}

export interface JsonCheckOptions {
  /** Path of `value` itself in the issues reported. */
  path?: string[];
  /** Containers allowed below `value` (`value` itself, when a container, is level 1). */
  maxDepth?: number;
  /** Tab/newline allowed in string values (never in keys). */
  allowWhitespace?: boolean;
  /** Stop after this many issues. */
  maxIssues?: number;
}

interface Pending {
  value: unknown;
  path: string[];
  depth: number;
}

/**
 * Every problem that would stop `value` (parsed JSON) from being stored as jsonb and read back the same: bad
 * strings or keys (see textProblem), non-finite numbers, a `__proto__` key (a JavaScript object parser drops it, so
 * the event would silently lose it), nesting deeper than `maxDepth`. Iterative: depth costs heap, never stack.
 */
export function jsonIssues(value: unknown, options: JsonCheckOptions = {}): StorableIssue[] {
  const maxDepth = options.maxDepth ?? MAX_PROPS_DEPTH;
  const maxIssues = options.maxIssues ?? 20;
  const issues: StorableIssue[] = [];
  const stack: Pending[] = [{ value, path: options.path ?? [], depth: 0 }];
  while (stack.length > 0 && issues.length < maxIssues) {
    const { value: node, path, depth } = stack.pop()!;
    if (typeof node === "string") {
      const problem = textProblem(node, options.allowWhitespace);
      if (problem) issues.push({ path, message: `string ${problem}` });
    } else if (typeof node === "number") {
      if (!Number.isFinite(node)) issues.push({ path, message: "number is out of range" });
    } else if (node !== null && typeof node === "object") {
      if (depth + 1 > maxDepth) {
        issues.push({ path, message: `nested deeper than ${maxDepth} levels` });
        continue;
      }
      if (Array.isArray(node)) {
        for (let i = node.length - 1; i >= 0; i--) {
          stack.push({ value: node[i], path: [...path, String(i)], depth: depth + 1 });
        }
        continue;
      }
      for (const key of Object.keys(node)) {
        const problem = key === "__proto__" ? "is reserved" : textProblem(key);
        if (problem) {
          issues.push({ path: [...path, key], message: `key ${problem}` });
          continue;
        }
        stack.push({ value: (node as Record<string, unknown>)[key], path: [...path, key], depth: depth + 1 });
      }
    }
  }
  return issues;
}

/**
 * Why an ISO 8601 timestamp cannot be stored as it means, or undefined: unparseable, before 1900, or more than
 * `maxFutureMs` ahead of `now`.
 */
export function timestampProblem(
  text: string,
  maxFutureMs: number | undefined,
  now = Date.now(),
): string | undefined {
  const at = Date.parse(text);
  if (Number.isNaN(at)) return "is not a valid date-time";
  if (at < EARLIEST_TIMESTAMP_MS) return "must not be before 1900-01-01T00:00:00Z";
  if (maxFutureMs !== undefined && at > now + maxFutureMs) {
    return `must not be more than ${Math.round(maxFutureMs / 3_600_000)} h in the future`;
  }
  return undefined;
}

/** Traits of one event (`contact.traits`, issue 15): at most this many keys... */
export const MAX_TRAITS_KEYS = 200;
/** ...and this many bytes as compact JSON (JSON.stringify). */
export const MAX_TRAITS_BYTES = 16 * 1024;

/**
 * Why an event's `contact.traits` is over its bounds, or undefined. The key count is in the published schema too
 * (maxProperties); the byte size only here, as JSON Schema cannot express it.
 */
export function traitsProblem(traits: Record<string, unknown>): string | undefined {
  if (Object.keys(traits).length > MAX_TRAITS_KEYS) return `must have at most ${MAX_TRAITS_KEYS} keys`;
  if (Buffer.byteLength(JSON.stringify(traits)) > MAX_TRAITS_BYTES) {
    return `must be at most ${MAX_TRAITS_BYTES} bytes as JSON`;
  }
  return undefined;
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === "object" && !Array.isArray(value);

/**
 * The storable check of an event body (an API track body, a batch item, or an events.raw.v1 value): tab and
 * newline only in the string values of `props` and `contact.traits` (free data, at most MAX_PROPS_DEPTH levels),
 * and nothing else deeper than a few levels. Run before schema validation, so no validator or hash ever walks a
 * hostile depth.
 */
export function eventIssues(body: unknown, path: string[] = []): StorableIssue[] {
  if (!isObject(body)) return [];
  const issues: StorableIssue[] = [];
  for (const [key, value] of Object.entries(body)) {
    const at = [...path, key];
    if (key === "props") {
      issues.push(...jsonIssues(value, { path: at, allowWhitespace: true }));
    } else if (key === "contact" && isObject(value) && "traits" in value) {
      const { traits, ...identifiers } = value;
      issues.push(...jsonIssues({ [key]: identifiers }, { path, maxDepth: 4 }));
      issues.push(...jsonIssues(traits, { path: [...at, "traits"], allowWhitespace: true }));
    } else {
      issues.push(...jsonIssues({ [key]: value }, { path, maxDepth: 4 }));
    }
  }
  return issues;
}
