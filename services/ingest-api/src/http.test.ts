import { HttpError } from "@crm/errors";
import { describe, expect, it } from "vitest";
import { addressOf, readJsonBody } from "./http.ts";

describe("addressOf (the key of per-address limits)", () => {
  it("is the socket's peer unless proxies are trusted, whatever X-Forwarded-For says", () => {
    expect(addressOf("192.0.2.10", undefined, 0)).toBe("192.0.2.10");
    expect(addressOf("192.0.2.10", "203.0.113.7", 0)).toBe("192.0.2.10");
    expect(addressOf(undefined, undefined, 0)).toBeUndefined();
  });

  it("behind N trusted proxies, is the Nth X-Forwarded-For entry from the right", () => {
    // the client wrote "1.1.1.1" itself; the one proxy appended the address it saw
    expect(addressOf("10.0.0.2", "1.1.1.1, 203.0.113.7", 1)).toBe("203.0.113.7");
    expect(addressOf("10.0.0.2", "1.1.1.1, 203.0.113.7, 10.0.0.1", 2)).toBe("203.0.113.7");
    // fewer entries than hops: the farthest one there is
    expect(addressOf("10.0.0.2", "203.0.113.7", 3)).toBe("203.0.113.7");
    // no header (a request that bypassed the proxy), or an entry that is not an address: the peer
    expect(addressOf("10.0.0.2", undefined, 1)).toBe("10.0.0.2");
    expect(addressOf("10.0.0.2", "1.1.1.1, unknown", 1)).toBe("10.0.0.2");
  });

  it("counts IPv6 per /64 and IPv4-mapped IPv6 as IPv4", () => {
    expect(addressOf("2001:db8:1:2:aaaa::1", undefined, 0)).toBe("2001:db8:1:2::/64");
    expect(addressOf("2001:db8:1:2:bbbb:cccc:dddd:eeee", undefined, 0)).toBe("2001:db8:1:2::/64");
    expect(addressOf("2001:db8::1", undefined, 0)).toBe("2001:db8:0:0::/64");
    expect(addressOf("::1", undefined, 0)).toBe("0:0:0:0::/64");
    expect(addressOf("::ffff:192.0.2.10", undefined, 0)).toBe("192.0.2.10");
    expect(addressOf("10.0.0.2", "2001:0db8:0001:0002::9", 1)).toBe("2001:db8:1:2::/64");
  });
});

describe("readJsonBody deadline", () => {
  it("answers 408 request_timeout, closing the connection, when the body has not arrived by the deadline", async () => {
    // a body whose first bytes arrive and then nothing
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"type":'));
      },
    });
    const request = new Request("http://api.test/v1/track", { method: "POST", body: stream, duplex: "half" });
    const started = Date.now();
    const error = await readJsonBody({ stream: request, deadline: started + 200 }, 1_000).catch((e) => e);
    expect(error).toBeInstanceOf(HttpError);
    expect(error).toMatchObject({ status: 408, code: "request_timeout" });
    expect((error as HttpError).details.headers).toEqual({ Connection: "close" });
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it("reads a body that arrives in time", async () => {
    const request = new Request("http://api.test/v1/track", { method: "POST", body: '{"type":"x"}' });
    expect(await readJsonBody({ stream: request, deadline: Date.now() + 1_000 }, 1_000)).toEqual({
      type: "x",
    });
  });
});
