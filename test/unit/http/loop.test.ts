import { describe, expect, it } from 'vitest';
import { appendLoopId, cameBack, fillLoopValue, loopIdOf } from '../../../src/http/loop.js';

describe('CDN-Loop ids (RFC 8586)', () => {
  it('gives each site an id of its own, the same every time, a token no client can guess', () => {
    const blog = loopIdOf('blog');
    expect(blog).toMatch(/^crowdgate-[0-9a-f]{14}$/);
    expect(loopIdOf('blog')).toBe(blog);
    expect(loopIdOf('wiki')).not.toBe(blog);
  });

  it('knows a request that carries its own site id as one that came back, wherever it stands in the list', () => {
    const id = loopIdOf('blog');
    expect(cameBack(id, 'blog')).toBe(true);
    expect(cameBack(`cdn.example; v=1, ${id}`, 'blog')).toBe(true);
    expect(cameBack(` ${id} ; hop=2 ,other`, 'blog')).toBe(true);
    expect(cameBack(['cdn.example', id], 'blog')).toBe(true); // several field lines
  });

  it('passes a request naming another site, another CDN, a look-alike, or nothing', () => {
    const id = loopIdOf('blog');
    expect(cameBack(undefined, 'blog')).toBe(false);
    expect(cameBack(loopIdOf('wiki'), 'blog')).toBe(false); // a chain through another site is no loop
    expect(cameBack('crowdgate', 'blog')).toBe(false);
    expect(cameBack(`${id}x`, 'blog')).toBe(false);
    expect(cameBack(`x${id}`, 'blog')).toBe(false);
    expect(cameBack(`cdn; note="${id}"`, 'blog')).toBe(false); // inside a parameter, not a cdn-id
  });

  it('appends its id to what a passed-through request carried', () => {
    const id = loopIdOf('blog');
    expect(appendLoopId(undefined, 'blog')).toBe(id);
    expect(appendLoopId('cdn.example; v=1', 'blog')).toBe(`cdn.example; v=1, ${id}`);
    expect(appendLoopId(['a', 'b'], 'blog')).toBe(`a, b, ${id}`);
  });

  it("sends on a shared fill only crowdgate ids besides its own: none of the client's text", () => {
    const blog = loopIdOf('blog');
    const wiki = loopIdOf('wiki');
    const elsewhere = 'crowdgate-0123456789abcd'; // another instance's, through a balancer
    expect(fillLoopValue(undefined, 'blog')).toBe(blog);
    expect(fillLoopValue('evil.example; <script>, crowdgate-<b>x</b>, crowdgate-0123456789ABCD', 'blog')).toBe(blog);
    // A loop through two sites (wiki's fill came to blog), or two instances: their ids go on,
    // once each, so the request is known where it started.
    expect(fillLoopValue(`evil, ${wiki}; x=1, ${elsewhere}, ${wiki}`, 'blog')).toBe(`${wiki}, ${elsewhere}, ${blog}`);
    expect(cameBack(fillLoopValue(wiki, 'blog'), 'wiki')).toBe(true);
    expect(fillLoopValue(blog, 'blog')).toBe(blog);
    // A client's flood of look-alikes passes on 8 of them, not the field.
    const many = Array.from({ length: 50 }, (_, i) => `crowdgate-${String(i).padStart(14, '0')}`).join(', ');
    expect(fillLoopValue(many, 'blog').split(', ')).toHaveLength(9);
  });
});
