import { describe, expect, it } from 'vitest';
import { CACHED_METHODS, HOP_BY_HOP, RETRYABLE_METHODS, SAFE_METHODS, connectionListedNames, isHopByHop } from '../../../src/http/facts.js';

describe('HTTP facts', () => {
  it('reads the names a Connection header lists, lower-cased, from one or several field lines', () => {
    expect(connectionListedNames(undefined)).toEqual([]);
    expect(connectionListedNames('')).toEqual([]);
    expect(connectionListedNames('close, X-Hop ,, Keep-Alive')).toEqual(['close', 'x-hop', 'keep-alive']);
    expect(connectionListedNames(['Upgrade', 'x-a, x-b'])).toEqual(['upgrade', 'x-a', 'x-b']);
    // The common single values (answered without splitting) read the same.
    for (const v of ['keep-alive', 'Keep-Alive', 'KEEP-ALIVE']) expect(connectionListedNames(v)).toEqual(['keep-alive']);
    for (const v of ['close', 'Close', ' close ']) expect(connectionListedNames(v)).toEqual(['close']);
    // Never the fields that frame the message or name its target.
    expect(connectionListedNames('keep-alive, Content-Length, HOST, x-a')).toEqual(['keep-alive', 'x-a']);
  });

  it('calls the RFC 9110 §7.6.1 fields, HTTP2-Settings and what Connection lists hop-by-hop, and nothing else', () => {
    for (const name of ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'http2-settings'])
      expect(HOP_BY_HOP.has(name), name).toBe(true);
    expect(isHopByHop('x-hop', new Set(['x-hop']))).toBe(true);
    expect(isHopByHop('proxy-status', new Set())).toBe(false); // RFC 9209: end to end
    expect(isHopByHop('cache-control', new Set())).toBe(false);
  });

  it('keeps the method sets apart: cached ⊂ retryable ⊂ safe', () => {
    expect([...CACHED_METHODS]).toEqual(['GET', 'HEAD']);
    for (const m of CACHED_METHODS) expect(RETRYABLE_METHODS.has(m)).toBe(true);
    for (const m of RETRYABLE_METHODS) expect(SAFE_METHODS.has(m)).toBe(true);
    expect(SAFE_METHODS.has('POST')).toBe(false);
    expect(RETRYABLE_METHODS.has('PUT')).toBe(false); // idempotent, but its body may be gone
  });
});
