import { describe, expect, test } from 'vitest';
import pino from 'pino';
import { gatewayConfigSchema } from '../../../src/config/schema.js';
import { createPublicServer } from '../../../src/server/http-server.js';

const limitsOf = (limits: Record<string, unknown> = {}) =>
  gatewayConfigSchema.parse({ limits, sites: [{ name: 's', hosts: ['*'], origins: [{ url: 'http://127.0.0.1:1' }] }] }).limits;

describe('createPublicServer connection caps', () => {
  test('the defaults put no cap of our own on open connections (a keep-alive crowd is not refused)', () => {
    const server = createPublicServer({ limits: limitsOf(), logger: pino({ level: 'silent' }), onRequest() {}, onUpgrade() {} });
    expect(server.maxConnections).toBe(Infinity);
  });

  test('a configured cap applies, and a reload to 0 lifts it', () => {
    const server = createPublicServer({ limits: limitsOf({ maxConnections: 50 }), logger: pino({ level: 'silent' }), onRequest() {}, onUpgrade() {} });
    expect(server.maxConnections).toBe(50);
    server.applyLimits(limitsOf({ maxConnections: 0 }));
    expect(server.maxConnections).toBe(Infinity);
  });
});
