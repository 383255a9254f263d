import { HttpError } from "@crm/errors";
import type { Caller } from "./auth.ts";

export interface AppVariables {
  requestId: string;
  caller: Caller;
}

/**
 * Reads a JSON body of at most `limit` bytes: 413 `payload_too_large` past it (without buffering more than
 * the limit), 400 `invalid_request` when it is not JSON.
 */
export async function readJsonBody(request: Request, limit: number): Promise<unknown> {
  const declared = Number(request.headers.get("content-length") ?? "NaN");
  if (declared > limit) throw tooLarge(limit);
  if (!request.body) throw new HttpError(400, "invalid_request", "request body is empty");
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw tooLarge(limit);
    }
    chunks.push(value);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, "invalid_request", "body is not valid JSON", {
      issues: [{ path: [], message: "expected a JSON object" }],
    });
  }
}

function tooLarge(limit: number): HttpError {
  return new HttpError(413, "payload_too_large", `body exceeds ${limit} bytes`);
}
