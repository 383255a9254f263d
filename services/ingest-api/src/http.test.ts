import { describe, expect, it } from "vitest";
import { addressOf } from "./http.ts";

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
