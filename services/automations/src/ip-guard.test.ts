import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isPrivateAddress } from "./ip-guard.ts";

describe("SSRF guard", () => {
  it("refuses loopback, private, link-local, CGNAT, multicast and IPv6 forms embedding them", () => {
    for (const address of [
      "127.0.0.1",
      "127.255.0.9",
      "0.0.0.0",
      "10.0.0.1",
      "100.64.0.1",
      "172.16.0.1",
      "172.31.255.255",
      "192.168.0.1",
      "169.254.169.254",
      "224.0.0.1",
      "255.255.255.255",
      "::",
      "::1",
      "[::1]",
      "::ffff:127.0.0.1",
      "::ffff:7f00:1",
      "::ffff:a9fe:a9fe",
      "::127.0.0.1",
      "64:ff9b::7f00:1",
      "2002:c0a8:101::1",
      "fe80::1",
      "fe80::1%eth0",
      "fc00::1",
      "fd12:3456::1",
      "ff02::1",
      "2001:db8::1",
      "not-an-address",
    ]) {
      expect(isPrivateAddress(address), address).toBe(true);
    }
  });

  it("lets public addresses through", () => {
    for (const address of [
      "8.8.8.8",
      "1.1.1.1",
      "172.32.0.1",
      "::ffff:8.8.8.8",
      "2606:4700:4700::1111",
      "64:ff9b::808:808",
    ]) {
      expect(isPrivateAddress(address), address).toBe(false);
    }
  });

  it("an IPv4 address and its IPv4-mapped IPv6 forms always agree", () => {
    fc.assert(
      fc.property(fc.ipV4(), (v4) => {
        const [a, b, c, d] = v4.split(".").map(Number) as [number, number, number, number];
        const hex = `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
        expect(isPrivateAddress(`::ffff:${v4}`)).toBe(isPrivateAddress(v4));
        expect(isPrivateAddress(`::ffff:${hex}`)).toBe(isPrivateAddress(v4));
      }),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(fc.oneof(fc.ipV6(), fc.string({ unit: "binary" })), (text) => {
        expect(typeof isPrivateAddress(text)).toBe("boolean");
      }),
      { numRuns: 300 },
    );
  });
});
