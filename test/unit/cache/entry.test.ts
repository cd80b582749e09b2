import { describe, expect, it } from 'vitest';
import { isDeclaredShared } from '../../../src/cache/entry.js';

describe('isDeclaredShared', () => {
  it.each([
    [{ 'cache-control': 'public, max-age=60' }, true],
    [{ 'cache-control': 's-maxage=18000, must-revalidate, max-age=0' }, true],
    [{ 'cache-control': 'public' }, true],
    [{ expires: 'Thu, 01 Jan 2099 00:00:00 GMT' }, true],
    [{ 'cdn-cache-control': 'max-age=60' }, true],
    [{}, false], // a lifetime only from the route (defaultTtlSeconds)
    [{ etag: '"v1"', 'last-modified': 'Thu, 01 Jan 2015 00:00:00 GMT' }, false], // a heuristic lifetime
    [{ 'cache-control': 'must-revalidate' }, false],
    [{ 'cache-control': 'no-transform, x-max-age-ish' }, false],
  ])('%j: %s', (headers, shared) => {
    expect(isDeclaredShared({ headers })).toBe(shared);
  });
});
