import { describe, expect, it } from 'vitest';
import { errors as undiciErrors } from 'undici';
import { originFailure } from '../../../src/server/stale.js';

describe('originFailure (what an origin failure is called, and where the operator looks)', () => {
  it('a body that stopped coming names idleMs; no answer in time names responseHeadersMs (failure-day trial)', () => {
    const body = originFailure('timeout', { https: false, error: new undiciErrors.BodyTimeoutError() });
    expect(body.code).toBe('origin_timeout');
    expect(body.detail).toMatch(/UND_ERR_BODY_TIMEOUT/);
    expect(body.detail).toMatch(/timeouts\.idleMs/);
    expect(body.detail).not.toMatch(/responseHeadersMs/);
    const head = originFailure('timeout', { https: false, error: new undiciErrors.HeadersTimeoutError() });
    expect(head.detail).toMatch(/timeouts\.responseHeadersMs/);
    // A connect timeout, as undici wraps it (the code on the cause): connectMs (review).
    const connect = originFailure('timeout', { https: false, error: Object.assign(new Error('fetch failed'), { cause: new undiciErrors.ConnectTimeoutError() }) });
    expect(connect.detail).toMatch(/UND_ERR_CONNECT_TIMEOUT/);
    expect(connect.detail).toMatch(/timeouts\.connectMs/);
  });

  it('never names the origin, and gives the certificate hint only for an https origin', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:3000'), { code: 'ECONNREFUSED' });
    expect(originFailure('connect_error', { https: false, error: refused }).detail).not.toMatch(/127\.0\.0\.1|NODE_EXTRA_CA_CERTS/);
    expect(originFailure('connect_error', { https: true, error: refused }).detail).toMatch(/NODE_EXTRA_CA_CERTS/);
  });
});
