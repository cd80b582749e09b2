import { describe, expect, it } from 'vitest';
import { compileGlobs, copyEndToEnd, dispositionFirst, setForwardedHeaders, stripHopByHop } from '../../../src/server/headers.js';

describe('hop-by-hop headers (RFC 9110 §7.6.1)', () => {
  it('removes the fixed set and every name listed in Connection', () => {
    const h: Record<string, unknown> = {
      connection: 'keep-alive, X-Secret',
      'keep-alive': 'timeout=5',
      'x-secret': '1',
      te: 'trailers',
      upgrade: 'h2c',
      'proxy-authorization': 'Basic x',
      'transfer-encoding': 'chunked',
      'x-keep': 'yes',
    };
    stripHopByHop(h, new Set(['transfer-encoding']));
    expect(h).toEqual({ 'transfer-encoding': 'chunked', 'x-keep': 'yes' });
  });

  it('copies only end-to-end response headers', () => {
    expect(copyEndToEnd({ connection: 'close, x-a', 'x-a': '1', 'content-type': 'text/plain', 'transfer-encoding': 'chunked' })).toEqual({
      'content-type': 'text/plain',
    });
  });
});

describe('X-Forwarded-* and Via (RFC 9110 §7.6.3)', () => {
  it.each([
    ['untrusted peer replaces the chain', false, { 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https', host: 'a.test' }, '10.0.0.2', 'http', 'a.test'],
    ['trusted peer appends to the chain', true, { 'x-forwarded-for': '1.1.1.1', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'b.test', host: 'a.test' }, '1.1.1.1, 10.0.0.2', 'https', 'b.test'],
  ])('%s', (_n, trusted, incoming, xff, proto, host) => {
    const out: Record<string, string | string[] | number | undefined> = {};
    setForwardedHeaders(out, incoming, { peerAddress: '10.0.0.2', peerTrusted: trusted });
    expect(out['x-forwarded-for']).toBe(xff);
    expect(out['x-forwarded-proto']).toBe(proto);
    expect(out['x-forwarded-host']).toBe(host);
    expect(out['via']).toBe('1.1 crowdgate');
  });
});

describe('globs', () => {
  it('matches glob patterns case-insensitively', () => {
    const m = compileGlobs(['*session*', 'wordpress_logged_in_*', 'sid']);
    expect(['PHPSESSION', 'my_session_id', 'wordpress_logged_in_abc', 'SID'].every(m)).toBe(true);
    expect(['_ga', 'sidebar', 'wordpress'].some(m)).toBe(false);
  });
  it('answers as the regular expression the glob reads as, for every pattern and name over a small alphabet', () => {
    const words = (alphabet: string, max: number): string[] => {
      const out = [''];
      for (let n = 1, layer = ['']; n <= max; n++) out.push(...(layer = layer.flatMap((w) => [...alphabet].map((c) => w + c))));
      return out;
    };
    const names = words('aAb.', 5);
    for (const pattern of words('ab*.', 5)) {
      const re = new RegExp(`^${pattern.split('*').map((p) => p.replace(/\./g, '\\.')).join('.*')}$`, 'i');
      const m = compileGlobs([pattern]);
      for (const name of names) if (m(name) !== re.test(name)) expect({ pattern, name, glob: m(name) }).toEqual({ pattern, name, glob: re.test(name) });
    }
  });
  it('matches a client-chosen name in linear time: as a regular expression, *a*a*a*b took 48 s against 1 000 characters', () => {
    const m = compileGlobs(['*a*a*a*b', '*x*y*z*']);
    // 700 characters: about 11 s as a regular expression, past the test's 5 s timeout.
    expect(m('a'.repeat(700))).toBe(false);
    expect(m(`${'a'.repeat(700)}b`)).toBe(true);
  });
});

describe('dispositionFirst', () => {
  it('puts Content-Disposition ahead of every field (Node re-encodes one written after Content-Length), keeping the rest in order', () => {
    const head = { 'content-length': 3, 'content-type': 'application/pdf', 'content-disposition': 'attachment; filename="rÃ©sumÃ©.pdf"' };
    const out = dispositionFirst(head);
    expect(Object.keys(out)).toEqual(['content-disposition', 'content-length', 'content-type']);
    expect(out).toEqual(head);
    const plain = { 'content-length': 3 };
    expect(dispositionFirst(plain)).toBe(plain); // nothing to move: the same object
  });
});
