import { describe, expect, it } from 'vitest';
import { formatCacheStatus, formatHitCacheStatus } from '../../../src/server/respond.js';

describe('Cache-Status (RFC 9211)', () => {
  it.each([
    ['fresh hit', { state: 'hit', ttlSeconds: 42 }, 'crowdgate; hit; ttl=42; detail="hit"'],
    ['miss stored', { state: 'miss', stored: true, fwdStatus: 200 }, 'crowdgate; fwd=uri-miss; fwd-status=200; stored; detail="miss"'],
    ['collapsed waiter', { state: 'miss', stored: true, collapsed: true, fwdStatus: 200 }, 'crowdgate; fwd=uri-miss; fwd-status=200; stored; collapsed; detail="miss"'],
    ['vary miss', { state: 'miss', missKind: 'vary-miss' }, 'crowdgate; fwd=vary-miss; detail="miss"'],
    ['revalidated', { state: 'revalidated', fwdStatus: 304, stored: true }, 'crowdgate; fwd=stale; fwd-status=304; stored; detail="revalidated"'],
    ['updating (SWR) is a hit with negative ttl', { state: 'updating', ttlSeconds: -3, detail: 'updating' }, 'crowdgate; hit; ttl=-3; detail="updating"'],
    ['stale after origin error', { state: 'stale', forwarded: true, ttlSeconds: -9, detail: 'stale-error' }, 'crowdgate; fwd=stale; ttl=-9; detail="stale-error"'],
    ['stale when shed (origin not contacted)', { state: 'stale', ttlSeconds: -1, detail: 'stale-shed' }, 'crowdgate; hit; ttl=-1; detail="stale-shed"'],
    ['bypass', { state: 'bypass', fwdStatus: 200 }, 'crowdgate; fwd=bypass; fwd-status=200; detail="bypass"'],
    ['request id in detail', { state: 'hit', requestId: 'abc-1' }, 'crowdgate; hit; detail="hit rid=abc-1"'],
  ] as const)('%s', (_n, facts, expected) => {
    expect(formatCacheStatus(facts)).toBe(expected);
  });
});

describe('formatHitCacheStatus (the memo hit path)', () => {
  it.each([0, 1, 42, 3599, -1, -7, 86_400 * 365, 2.9, -2.9])('ttl %s: byte for byte the general formatter', (ttl) => {
    for (const requestId of ['0a1b2c3d-1', '0a1b2c3d-zz9']) {
      expect(formatHitCacheStatus(ttl, requestId)).toBe(formatCacheStatus({ state: 'hit', ttlSeconds: ttl, requestId }));
    }
  });
});
