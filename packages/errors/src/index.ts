/** An error that maps to one HTTP response in the shape of SPEC section 4. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: { issues?: unknown[]; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = "HttpError";
  }
}

/** A dependency (Kafka, Postgres) is down or slow: retrying later can help. */
export class DependencyUnavailableError extends Error {
  constructor(
    readonly dependency: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "DependencyUnavailableError";
  }
}

/** The input itself is bad: retrying the same input can never help. */
export class NonRetriableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NonRetriableError";
  }
}

/** The message of any thrown value, for logs that must not fail themselves. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The line a management CLI prints when a command is refused (the API's error, an unknown business, a body that
 * is not JSON), or undefined when the error is a failure to report as one.
 */
export function cliRefusal(error: unknown, businessId: string): string | undefined {
  if (error instanceof HttpError) return `refused: ${error.code}: ${error.message}`;
  if ((error as { code?: unknown } | null)?.code === "23503") return `refused: no business ${businessId}`;
  if (error instanceof SyntaxError) return `refused: not JSON: ${error.message}`;
  return undefined;
}
