import { describe, expect, it } from 'vitest';
import { HotKeys, withoutQueryValues } from '../../../src/admin/hot-keys.js';

describe('HotKeys', () => {
  it('counts per site and path, with how each request was answered', () => {
    const h = new HotKeys(10);
    for (let i = 0; i < 3; i++) h.note('blog', '/a', 'hit');
    h.note('blog', '/a', 'miss');
    h.note('shop', '/a', 'hit'); // same path, other site: its own row
    h.note('blog', '/b', 'stale');
    const [first, ...rest] = h.top(10);
    expect(first).toEqual({ site: 'blog', path: '/a', count: 4, states: { hit: 3, miss: 1 } });
    expect(rest).toHaveLength(2); // equal counts: in no particular order
    expect(rest).toContainEqual({ site: 'shop', path: '/a', count: 1, states: { hit: 1 } });
    expect(rest).toContainEqual({ site: 'blog', path: '/b', count: 1, states: { stale: 1 } });
    expect(h.top(1)).toHaveLength(1);
  });

  it('stays within its capacity under a flood of distinct paths, keeping the hot ones', () => {
    const h = new HotKeys(5);
    for (let i = 0; i < 50; i++) h.note('blog', '/hot', 'hit');
    for (let i = 0; i < 1000; i++) h.note('blog', `/random/${i}`, 'miss');
    const rows = h.top(100);
    expect(rows).toHaveLength(5);
    expect(rows[0]).toMatchObject({ path: '/hot', count: 50 });
  });

  it('halves counts on decay and forgets rows that reach zero', () => {
    const h = new HotKeys(10);
    for (let i = 0; i < 4; i++) h.note('blog', '/a', 'hit');
    h.note('blog', '/b', 'hit');
    h.decay();
    expect(h.top(10)).toEqual([{ site: 'blog', path: '/a', count: 2, states: { hit: 2 } }]);
    h.decay();
    h.decay();
    expect(h.top(10)).toEqual([]);
    // Forgotten rows free their capacity.
    for (let i = 0; i < 10; i++) h.note('blog', `/p${i}`, 'hit');
    expect(h.top(100)).toHaveLength(10);
  });

  it('keeps long paths to 200 characters in the table', () => {
    const h = new HotKeys(2);
    h.note('blog', `/${'x'.repeat(500)}`, 'hit');
    expect(h.top(1)[0]!.path).toHaveLength(200);
  });

  it('hands out rows a caller may keep while live: counts land in the table, and a row that left it says so', () => {
    const h = new HotKeys(2);
    const a = h.rowFor('blog', '/a');
    expect(h.rowFor('blog', '/a')).toBe(a);
    h.noteRow(a, 'hit');
    h.noteRow(a, 'hit');
    expect(h.top(10)).toEqual([{ site: 'blog', path: '/a', count: 2, states: { hit: 2 } }]);
    h.decay();
    h.decay(); // 2 -> 1 -> 0: forgotten
    expect(a.live).toBe(false);
    expect(h.top(10)).toEqual([]);
    const b = h.rowFor('blog', '/b');
    h.note('blog', '/c', 'hit');
    h.note('blog', '/c', 'hit');
    h.note('blog', '/d', 'miss'); // full: evicts the coldest, /b
    expect(b.live).toBe(false);
    expect(h.rowFor('blog', '/c').live).toBe(true);
  });
  it('leaves the query values of an answer not from a shared copy out: they may carry one user\'s token', () => {
    const h = new HotKeys(10);
    h.note('blog', '/account?sso_ticket=TICKET999&tab=1', 'bypass');
    h.note('blog', '/wp-login.php?action=rp&key=SECRETKEY123', 'pass');
    h.note('blog', '/index.php?title=Main_Page', 'hit');
    h.note('blog', '/index.php?title=Other', 'miss');
    expect(h.top(10).map((r) => r.path).sort()).toEqual([
      '/account?sso_ticket=…&tab=…',
      '/index.php?title=Main_Page',
      '/index.php?title=Other',
      '/wp-login.php?action=rp&key=…',
    ]);
    expect(withoutQueryValues('/a?flag&x=')).toBe('/a?flag&x=…');
    expect(withoutQueryValues('/plain')).toBe('/plain');
  });
  it('keeps the values that name a page (a crowd on a page nothing may store is told apart), never a token\'s or a search\'s', () => {
    expect(withoutQueryValues('/doku.php?id=garage:page07&do=edit&sectok=abc123')).toBe('/doku.php?id=garage:page07&do=edit&sectok=…');
    expect(withoutQueryValues('/index.php?title=Main_Page&action=history&token=x')).toBe('/index.php?title=Main_Page&action=history&token=…');
    expect(withoutQueryValues('/?p=42&s=my+secret+search&key=K')).toBe('/?p=42&s=…&key=…');
    // The same names carry secrets elsewhere (review): a token-like or long value, or a
    // numbering parameter that is not a number, is left out.
    expect(withoutQueryValues('/download.php?id=8f14e45fceea167a5a36dedd4bea2543')).toBe('/download.php?id=…');
    expect(withoutQueryValues('/unsubscribe?ID=a1b2c3d4e5f6&email=x')).toBe('/unsubscribe?ID=…&email=…');
    expect(withoutQueryValues('/login.php?user=bob&p=hunter2')).toBe('/login.php?user=…&p=…');
    expect(withoutQueryValues(`/doku.php?id=${'long_page_name_'.repeat(8)}`)).toBe('/doku.php?id=…');
    expect(withoutQueryValues('/doku.php?id=wiki:some_long_page_name_here')).toBe('/doku.php?id=wiki:some_long_page_name_here');
  });
});
