import { describe, expect, it } from 'vitest';
import { appendLoopMember, cameBack, fillLoopValue, loopIdOf, loopIdsIn, loopMemberOf } from '../../../src/http/loop.js';

describe('CDN-Loop members (RFC 8586)', () => {
  it('gives each site an id of its own, the same every time, a token no client can guess, and marks the target', () => {
    const blog = loopIdOf('blog');
    expect(blog).toMatch(/^crowdgate-[0-9a-f]{14}$/);
    expect(loopIdOf('blog')).toBe(blog);
    expect(loopIdOf('wiki')).not.toBe(blog);
    expect(loopMemberOf('blog', '/a')).toMatch(new RegExp(`^${blog}; t=[0-9a-f]{8}$`));
    expect(loopMemberOf('blog', '/a')).not.toBe(loopMemberOf('blog', '/b'));
  });

  it('knows a request that carries its own member for its own target as one that came back, wherever it stands in the list', () => {
    const own = loopMemberOf('blog', '/page?x=1');
    expect(cameBack(own, 'blog', '/page?x=1')).toBe(true);
    expect(cameBack(`cdn.example; v=1, ${own}`, 'blog', '/page?x=1')).toBe(true);
    expect(cameBack(` ${own.replace('; ', ' ;')} ,other`, 'blog', '/page?x=1')).toBe(true);
    expect(cameBack(['cdn.example', own], 'blog', '/page?x=1')).toBe(true); // several field lines
  });

  it('passes the same site for another target (an app that sends /legacy/ on as /new/: a chain), until its third lap', () => {
    const legacy = loopMemberOf('blog', '/legacy/x');
    expect(cameBack(legacy, 'blog', '/new/x')).toBe(false);
    expect(cameBack(`${legacy}, ${loopMemberOf('blog', '/new/x')}`, 'blog', '/base/new/x')).toBe(false);
    // A prefix that points back: /x, /base/x, /base/base/x...
    expect(cameBack(`${loopMemberOf('blog', '/x')}, ${loopMemberOf('blog', '/base/x')}, ${loopMemberOf('blog', '/base/base/x')}`, 'blog', '/base/base/base/x')).toBe(true);
  });

  it('passes a request naming another site, another CDN, a look-alike, or nothing', () => {
    const own = loopMemberOf('blog', '/');
    expect(cameBack(undefined, 'blog', '/')).toBe(false);
    expect(cameBack(loopMemberOf('wiki', '/'), 'blog', '/')).toBe(false); // a chain through another site is no loop
    expect(cameBack('crowdgate', 'blog', '/')).toBe(false);
    expect(cameBack(`x${own}`, 'blog', '/')).toBe(false);
    expect(cameBack(`${loopIdOf('blog')}x; t=00000000`, 'blog', '/')).toBe(false);
    expect(cameBack(`cdn; note="${own}"`, 'blog', '/')).toBe(false); // inside a parameter, not a cdn-id
  });

  it('reads the crowdgate ids a request came through (another instance or site), for fills that must not wait on one of them', () => {
    expect(loopIdsIn(undefined)).toEqual([]);
    expect(loopIdsIn('cdn.example; v=1')).toEqual([]);
    expect(loopIdsIn('crowdgate')).toEqual([]);
    expect(loopIdsIn('crowdgate-0123456789abcd; t=89abcdef')).toEqual(['crowdgate-0123456789abcd']);
    expect(loopIdsIn(['cdn.example', loopMemberOf('wiki', '/')])).toEqual([loopIdOf('wiki')]);
    expect(loopIdsIn(`cdn; note="${loopIdOf('wiki')}"`)).toEqual([]); // inside a parameter, not a cdn-id
  });

  it('appends its member to what a passed-through request carried', () => {
    const own = loopMemberOf('blog', '/f');
    expect(appendLoopMember(undefined, 'blog', '/f')).toBe(own);
    expect(appendLoopMember('cdn.example; v=1', 'blog', '/f')).toBe(`cdn.example; v=1, ${own}`);
    expect(appendLoopMember(['a', 'b'], 'blog', '/f')).toBe(`a, b, ${own}`);
  });

  it("sends on a shared fill only crowdgate members besides its own: none of the client's text", () => {
    const own = loopMemberOf('blog', '/p');
    const wiki = loopMemberOf('wiki', '/p');
    const elsewhere = 'crowdgate-0123456789abcd; t=89abcdef'; // another instance's, through a balancer
    expect(fillLoopValue(undefined, 'blog', '/p')).toBe(own);
    expect(fillLoopValue('evil.example; <script>, crowdgate-<b>x</b>, crowdgate-0123456789ABCD, crowdgate-0123456789abcd; t=<i>', 'blog', '/p')).toBe(own);
    // A loop through two sites (wiki's fill came to blog), or two instances: their members go on,
    // so the request is known where it started.
    expect(fillLoopValue(`evil, ${wiki}, ${elsewhere}`, 'blog', '/p')).toBe(`${wiki}, ${elsewhere}, ${own}`);
    expect(cameBack(fillLoopValue(wiki, 'blog', '/p'), 'wiki', '/p')).toBe(true);
    // A client's flood of look-alikes passes on 8 of them, not the field.
    const many = Array.from({ length: 50 }, (_, i) => `crowdgate-${String(i).padStart(14, '0')}`).join(', ');
    expect(fillLoopValue(many, 'blog', '/p').split(', ')).toHaveLength(9);
    // ... the last eight: look-alikes a client put first never push out the laps' own members.
    const lap1 = loopMemberOf('blog', '/x');
    const lap2 = fillLoopValue(`${many}, ${lap1}`, 'blog', '/base/x');
    expect(lap2.endsWith(`${lap1}, ${loopMemberOf('blog', '/base/x')}`)).toBe(true);
    expect(cameBack(fillLoopValue(lap2, 'blog', '/base/base/x'), 'blog', '/base/base/base/x')).toBe(true);
  });
});
