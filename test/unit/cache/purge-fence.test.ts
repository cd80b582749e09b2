import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../src/clock.js';
import { CLOCK_SKEW_MS, PurgeFence, RECENT_MS } from '../../../src/cache/purge-fence.js';
import { makeEntry } from '../../contract/cache-store.contract.js';

describe('PurgeFence', () => {
  it('gives a fill every purge made while it was away that covers its key: hard drops, soft invalidates', () => {
    const clock = new ManualClock(1_000_000);
    const fences = new PurgeFence(() => clock.now());
    const page = fences.begin('s|http|wiki.test|/Page');
    const other = fences.begin('s|http|wiki.test|/Other');
    fences.note({ kind: 'prefix', prefix: 's|http|wiki.test|/Page' }, 'soft', 1_000_100);
    const entry = makeEntry({ key: 's|http|wiki.test|/Page' });
    expect(fences.apply(page, entry)?.invalidatedAt).toBe(1_000_100);
    expect(fences.apply(other, makeEntry({ key: 's|http|wiki.test|/Other' }))?.invalidatedAt).toBeUndefined();
    fences.note({ kind: 'key', key: 's|http|wiki.test|/Page' }, 'hard', 1_000_200);
    expect(fences.apply(page, entry)).toBeUndefined();
    fences.end(page);
    fences.end(other);
    expect(fences.openCount).toBe(0);
  });

  it('a tag purge covers a fill whose entry carries the tag, known only when it is stored', () => {
    const fences = new PurgeFence(() => 0);
    const f = fences.begin('k');
    fences.note({ kind: 'tag', tag: 'product-7' }, 'hard', 10);
    expect(fences.apply(f, makeEntry({ key: 'k', tags: ['product-8'] }))).toBeDefined();
    expect(fences.apply(f, makeEntry({ key: 'k', tags: ['product-7'] }))).toBeUndefined();
  });

  it("leaves out the fill that made the purge (it clears the way for what it stores)", () => {
    const fences = new PurgeFence(() => 0);
    const own = fences.begin('k');
    const concurrent = fences.begin('k');
    fences.note({ kind: 'key', key: 'k' }, 'hard', 5, own);
    expect(fences.apply(own, makeEntry({ key: 'k' }))).toBeDefined();
    expect(fences.apply(concurrent, makeEntry({ key: 'k' }))).toBeUndefined();
  });

  it("names, for another instance's purge, the keys fills of ours stored under in the last RECENT_MS", () => {
    const clock = new ManualClock(0);
    const fences = new PurgeFence(() => clock.now());
    const stored = fences.begin('a/1');
    fences.apply(stored, makeEntry({ key: 'a/1' }));
    fences.end(stored);
    const failed = fences.begin('a/2'); // never stored: nothing to purge again
    fences.end(failed);
    clock.advance(RECENT_MS - 1);
    expect(fences.noteRemote({ kind: 'prefix', prefix: 'a/' }, 'hard', 0)).toEqual(['a/1']);
    expect(fences.noteRemote({ kind: 'prefix', prefix: 'b/' }, 'hard', 0)).toEqual([]);
    clock.advance(2);
    expect(fences.noteRemote({ kind: 'prefix', prefix: 'a/' }, 'hard', 0)).toEqual([]);
  });

  it("leaves out, for another instance's purge, a fill that began after it (beyond the clock skew allowed) and a tag it did not store", () => {
    const clock = new ManualClock(10_000);
    const fences = new PurgeFence(() => clock.now());
    const before = fences.begin('k/old');
    fences.apply(before, makeEntry({ key: 'k/old', tags: ['post-1'] }));
    clock.advance(CLOCK_SKEW_MS + 500);
    const after = fences.begin('k/new'); // began well after the purge made at 10 000: the page as it is now
    fences.apply(after, makeEntry({ key: 'k/new', tags: ['post-1'] }));
    fences.end(before);
    fences.end(after);
    expect(fences.noteRemote({ kind: 'prefix', prefix: 'k/' }, 'hard', 10_000)).toEqual(['k/old']);
    expect(fences.noteRemote({ kind: 'tag', tag: 'post-1' }, 'hard', 10_000)).toEqual(['k/old']);
    expect(fences.noteRemote({ kind: 'tag', tag: 'post-2' }, 'hard', 10_000)).toEqual([]);
  });
});
