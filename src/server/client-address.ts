/**
 * Client address resolution behind trusted proxies. A peer in `trustedProxies` may tell us the
 * client through X-Forwarded-For; we walk that list from the right, skipping trusted hops, and
 * take the first untrusted address. Anyone else's X-Forwarded-For is ignored.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { BlockList, isIP } from 'node:net';

export class TrustedProxies {
  private readonly list = new BlockList();
  private readonly empty: boolean;

  constructor(entries: readonly string[]) {
    for (const raw of entries) {
      const entry = raw.trim();
      const [addr, bits] = entry.split('/');
      const family = isIP(addr ?? '');
      if (!addr || family === 0) throw new Error(`trustedProxies: "${raw}" is not an IP address or CIDR`);
      const type = family === 6 ? 'ipv6' : 'ipv4';
      if (bits !== undefined) this.list.addSubnet(addr, Number(bits), type);
      else this.list.addAddress(addr, type);
    }
    this.empty = entries.length === 0;
  }

  /** Answers per address, bounded (BlockList.check allocates; this runs on every request). */
  private readonly memo = new Map<string, boolean>();

  isTrusted(address: string): boolean {
    if (this.empty || !address) return false;
    const known = this.memo.get(address);
    if (known !== undefined) return known;
    const answer = this.check(address);
    if (this.memo.size >= 10_000) this.memo.clear();
    this.memo.set(address, answer);
    return answer;
  }

  private check(address: string): boolean {
    const plain = unmapV4(address);
    const family = isIP(plain);
    if (family === 0) return false;
    return this.list.check(plain, family === 6 ? 'ipv6' : 'ipv4');
  }

  /** The client address for a request that arrived from `peer` with this X-Forwarded-For. */
  resolveClient(peer: string, xff: string | string[] | undefined): string {
    const peerPlain = unmapV4(peer);
    if (xff === undefined || !this.isTrusted(peerPlain)) return peerPlain;
    // Empty list elements are ignored (RFC 9110 §5.6.1): `1.2.3.4,` is one hop.
    const hops = (Array.isArray(xff) ? xff.join(',') : xff)
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    // A header that names no hop (empty, `,`) cannot be read either: never the proxy itself
    // (a PURGE through a trusted proxy with `X-Forwarded-For: ,` was allowed; attacker trial).
    if (hops.length === 0) return UNKNOWN_CLIENT;
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = parseHop(hops[i]!);
      // Garbage in the chain (`unknown`, an obfuscated name): the client is past a trusted
      // proxy, but who it is cannot be read. Never the proxy's own address: that address is
      // trusted (PURGE from `unknown` behind a local proxy was allowed).
      if (hop === undefined) return UNKNOWN_CLIENT;
      if (!this.isTrusted(hop)) return hop;
    }
    return parseHop(hops[0] ?? '') ?? UNKNOWN_CLIENT;
  }
}

/**
 * The part of a trusted peer's X-Forwarded-For that can be vouched for: the client
 * (resolveClient's) and the trusted hops after it, as addresses, then the peer. What the
 * client wrote before its own address, and a hop that is not an address, are left out: a
 * shared fill must not carry them (`1.2.3.4"><script>…` to an origin that prints the first
 * entry). From an untrusted peer, the peer alone.
 */
export function vouchedForwardedFor(trusted: Pick<TrustedProxies, 'isTrusted'>, peer: string, xff: string | string[] | undefined): string {
  const peerPlain = unmapV4(peer);
  if (!xff || !trusted.isTrusted(peerPlain)) return peerPlain;
  const hops = (Array.isArray(xff) ? xff.join(',') : xff).split(',');
  const kept: string[] = [peerPlain];
  for (let i = hops.length - 1; i >= 0; i--) {
    if (hops[i]!.trim() === '') continue;
    const hop = parseHop(hops[i]!);
    if (hop === undefined) break;
    kept.unshift(hop);
    if (!trusted.isTrusted(hop)) break;
  }
  return kept.join(', ');
}

/** The client address when a trusted proxy's X-Forwarded-For names one that cannot be read. */
export const UNKNOWN_CLIENT = 'unknown';

/**
 * One X-Forwarded-For hop as an address: `1.2.3.4`, `1.2.3.4:4711`, `2001:db8::1`,
 * `[2001:db8::1]`, `[2001:db8::1]:4711` (some proxies append the port); undefined otherwise.
 */
function parseHop(raw: string): string | undefined {
  let hop = raw.trim();
  if (hop.startsWith('[')) {
    const end = hop.indexOf(']');
    if (end < 0) return undefined;
    const rest = hop.slice(end + 1);
    if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return undefined;
    hop = hop.slice(1, end);
  } else if (isIP(hop) === 0) {
    const m = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(hop);
    if (m) hop = m[1]!;
  }
  hop = unmapV4(hop);
  return isIP(hop) === 0 ? undefined : hop;
}

/** '::ffff:1.2.3.4' -> '1.2.3.4'. */
export function unmapV4(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

/**
 * Whom a per-client rate limit counts a request against: the value of the limit's `keyHeader`
 * when the request carries one (cut to 256 characters), else the client address.
 */
export function rateLimitClientKey(headers: IncomingHttpHeaders, header: string | undefined, clientAddress: string): string {
  if (header) {
    const v = headers[header.toLowerCase()];
    const s = Array.isArray(v) ? v[0] : v;
    if (s) return `h:${s.slice(0, 256)}`;
  }
  return clientAddress;
}
