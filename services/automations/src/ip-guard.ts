import { isIP } from "node:net";

// Addresses a tenant's webhook must never reach (SSRF): this host, its private networks, link-local (cloud
// metadata at 169.254.169.254), and the IPv6 forms that embed such an IPv4 address.

const V4_BLOCKED: [number, number][] = [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.0.2.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["198.51.100.0", 24],
  ["203.0.113.0", 24],
  ["224.0.0.0", 4],
  ["240.0.0.0", 4],
].map(([base, bits]) => [v4ToInt(base as string)!, bits as number]);

function v4ToInt(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part) || Number(part) > 255) return undefined;
    n = n * 256 + Number(part);
  }
  return n;
}

function v4Blocked(n: number): boolean {
  return V4_BLOCKED.some(
    ([base, bits]) => Math.floor(n / 2 ** (32 - bits)) === Math.floor(base / 2 ** (32 - bits)),
  );
}

/** The eight 16-bit groups of an IPv6 address (zone dropped, embedded dotted IPv4 allowed). */
function v6Groups(text: string): number[] | undefined {
  const address = text.split("%")[0]!;
  let head = address;
  const lastColon = address.lastIndexOf(":");
  if (address.slice(lastColon + 1).includes(".")) {
    const v4 = v4ToInt(address.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    head = `${address.slice(0, lastColon + 1)}${Math.floor(v4 / 65536).toString(16)}:${(v4 % 65536).toString(16)}`;
  }
  const halves = head.split("::");
  if (halves.length > 2) return undefined;
  const parse = (s: string) => (s === "" ? [] : s.split(":").map((g) => Number.parseInt(g, 16)));
  const left = parse(halves[0]!);
  const right = halves.length === 2 ? parse(halves[1]!) : [];
  const fill = 8 - left.length - right.length;
  if (fill < 0 || (halves.length === 1 && fill !== 0)) return undefined;
  const groups = [...left, ...new Array(fill).fill(0), ...right];
  return groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : undefined;
}

function v6Blocked(g: number[]): boolean {
  const zeros = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
  const embedded = () => g[6]! * 65536 + g[7]!;
  if (zeros(0, 8)) return true; // ::
  if (zeros(0, 7) && g[7] === 1) return true; // ::1
  if (zeros(0, 5) && g[5] === 0xffff) return v4Blocked(embedded()); // ::ffff:a.b.c.d (mapped)
  if (zeros(0, 6)) return true; // ::a.b.c.d (deprecated IPv4-compatible): never a real target
  if (g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6)) return v4Blocked(embedded()); // NAT64
  if (g[0] === 0x64 && g[1] === 0xff9b && g[2] === 1) return true; // local-use NAT64
  if (g[0] === 0x2002) return v4Blocked(g[1]! * 65536 + g[2]!); // 6to4
  if (g[0] === 0x2001 && g[1] === 0) return true; // Teredo (its IPv4 is obfuscated)
  if (g[0] === 0x2001 && g[1] === 0xdb8) return true; // documentation
  if (g[0] === 0x100 && zeros(1, 4)) return true; // discard
  if ((g[0]! & 0xffc0) === 0xfe80 || (g[0]! & 0xffc0) === 0xfec0) return true; // link-local, site-local
  if ((g[0]! & 0xfe00) === 0xfc00) return true; // unique local
  if ((g[0]! & 0xff00) === 0xff00) return true; // multicast
  return false;
}

/** True when `address` (an IP literal) is loopback, private, link-local or otherwise not a public target. */
export function isPrivateAddress(address: string): boolean {
  const bare = address.startsWith("[") && address.endsWith("]") ? address.slice(1, -1) : address;
  const family = isIP(bare.split("%")[0]!);
  if (family === 4) return v4Blocked(v4ToInt(bare)!);
  if (family === 6) {
    const groups = v6Groups(bare);
    return groups === undefined || v6Blocked(groups);
  }
  return true; // not an address at all: never a target
}
