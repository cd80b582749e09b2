import { describe, expect, it } from 'vitest';
import { TrustedProxies, unmapV4 } from '../../../src/server/client-address.js';

describe('TrustedProxies', () => {
  const trusted = new TrustedProxies(['127.0.0.1', '10.0.0.0/8', '::1']);
  it.each([
    ['untrusted peer: its X-Forwarded-For is ignored', '203.0.113.5', '1.2.3.4', '203.0.113.5'],
    ['trusted peer: the client is the rightmost untrusted hop', '10.1.2.3', '198.51.100.7', '198.51.100.7'],
    ['trusted chain is skipped from the right', '127.0.0.1', '198.51.100.7, 10.9.9.9', '198.51.100.7'],
    ['a spoofed left part does not win over the real hop', '10.1.1.1', '6.6.6.6, 198.51.100.7', '198.51.100.7'],
    // Garbage in the chain: the client cannot be read, and is never the trusted proxy itself
    // (PURGE allowed from `unknown` behind a local proxy).
    ['garbage in the chain: an unknown client, not the peer', '10.1.1.1', 'not-an-ip', 'unknown'],
    ['garbage right of a real address: unknown', '127.0.0.1', '203.0.113.5, unknown', 'unknown'],
    ['a hop with a port is its address', '127.0.0.1', '203.0.113.5:4711', '203.0.113.5'],
    ['empty list elements are ignored', '127.0.0.1', '203.0.113.5, ,', '203.0.113.5'],
    // A header naming no hop cannot be read either: never the trusted peer (PURGE allowed
    // through a local proxy with `X-Forwarded-For: ,`; attacker trial).
    ['a header of empty elements: unknown, not the peer', '127.0.0.1', ' , ', 'unknown'],
    ['an empty header: unknown, not the peer', '127.0.0.1', '', 'unknown'],
    ['an empty header from an untrusted peer: the peer', '203.0.113.5', '', '203.0.113.5'],
    ['an IPv6 hop in brackets, with a port', '127.0.0.1', '[2001:db8::1]:4711', '2001:db8::1'],
    ['an IPv6 hop in brackets', '127.0.0.1', '[2001:db8::7]', '2001:db8::7'],
    ['a trusted hop with a port is skipped', '127.0.0.1', '198.51.100.7, 10.0.0.9:8080', '198.51.100.7'],
    ['IPv4-mapped IPv6 peers are unmapped', '::ffff:203.0.113.5', undefined, '203.0.113.5'],
    ['no header: the peer', '10.0.0.1', undefined, '10.0.0.1'],
  ])('%s', (_name, peer, xff, expected) => {
    expect(trusted.resolveClient(peer, xff)).toBe(expected);
  });

  it('rejects entries that are not addresses', () => {
    expect(() => new TrustedProxies(['example.com'])).toThrow(/trustedProxies/);
  });

  it('trusts nobody when empty', () => {
    expect(new TrustedProxies([]).resolveClient('127.0.0.1', '1.1.1.1')).toBe('127.0.0.1');
  });

  it('unmaps only real IPv4-mapped addresses', () => {
    expect(unmapV4('::ffff:1.2.3.4')).toBe('1.2.3.4');
    expect(unmapV4('::ffff:zz')).toBe('::ffff:zz');
  });
});
