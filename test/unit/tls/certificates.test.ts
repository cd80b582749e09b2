import { createServer, connect, type TLSSocket } from 'node:tls';
import { beforeAll, describe, expect, it } from 'vitest';
import { Certificates } from '../../../src/tls/certificates.js';
import { INTERMEDIATE_CIPHERS } from '../../../src/config/schema.js';
import { makeTestCa, type TestCa, type TestLeaf } from '../../helpers/tls-certs.js';

const OPTS = { minVersion: 'TLSv1.2' as const, ciphers: INTERMEDIATE_CIPHERS };

describe('Certificates (SNI selection)', () => {
  let ca: TestCa;
  const leaf: Record<string, TestLeaf> = {};
  beforeAll(async () => {
    ca = await makeTestCa();
    leaf.exact = await ca.leaf(['shop.example']);
    leaf.wild = await ca.leaf(['*.example']);
    leaf.deep = await ca.leaf(['*.cdn.example']);
    leaf.all = await ca.leaf(['fallback.example']);
  });

  function store(sites: Array<[string, string[]]>, withCert: string[]): Certificates {
    const c = new Certificates(OPTS);
    c.configure(sites.map(([name, hosts]) => ({ name, hosts })));
    for (const name of withCert) c.set(name, leaf[name]!);
    return c;
  }

  it('matches exact names, then the longest wildcard, then the "*" site; case and trailing dot do not matter', () => {
    const c = store(
      [
        ['exact', ['shop.example']],
        ['wild', ['*.example']],
        ['deep', ['*.cdn.example']],
        ['all', ['*']],
      ],
      ['exact', 'wild', 'deep', 'all'],
    );
    expect(c.siteFor('shop.example')).toBe('exact');
    expect(c.siteFor('SHOP.Example.')).toBe('exact');
    expect(c.siteFor('blog.example')).toBe('wild');
    expect(c.siteFor('img.cdn.example')).toBe('deep');
    expect(c.siteFor('other.org')).toBe('all');
    expect(c.siteFor(undefined)).toBe('all');
    expect(c.siteFor('')).toBe('all');
    expect(c.defaultSite).toBe('all');
    expect(c.contextFor('blog.example')).toBe(c.contextFor('x.example'));
    expect(c.contextFor('blog.example')).not.toBe(c.contextFor('shop.example'));
    expect(c.contextFor('nobody.org')).toBe(c.contextFor(undefined));
  });

  it('without a "*" site the first configured site with a certificate is the default; a name whose site has none gets it too', () => {
    const c = store(
      [
        ['nocert', ['plain.example']],
        ['wild', ['*.example']],
        ['exact', ['shop.example']],
      ],
      ['exact', 'wild'],
    );
    expect(c.defaultSite).toBe('wild');
    expect(c.siteFor('plain.example')).toBe('wild'); // via the wildcard, not the certificate-less exact site
    expect(c.siteFor('garbage name!')).toBe('wild');
    expect(new Certificates(OPTS).contextFor('shop.example')).toBeUndefined();
  });

  it('refuses a pair OpenSSL cannot use and keeps the old certificate; delete withdraws one; onChange fires', () => {
    const c = store([['exact', ['shop.example']], ['wild', ['*.example']]], ['exact', 'wild']);
    let changes = 0;
    c.onChange(() => changes++);
    const before = c.contextFor('shop.example');
    expect(() => c.set('exact', { cert: leaf.exact!.cert, key: leaf.wild!.key })).toThrow();
    expect(() => c.set('exact', { cert: 'garbage', key: 'garbage' })).toThrow();
    expect(c.contextFor('shop.example')).toBe(before);
    expect(changes).toBe(0);
    c.delete('exact');
    expect(changes).toBe(1);
    expect(c.has('exact')).toBe(false);
    expect(c.siteFor('shop.example')).toBe('wild');
  });

  it('refuses TLS settings OpenSSL cannot use, changing nothing: the old contexts serve and later certificates still install', () => {
    const c = store([['exact', ['shop.example']], ['wild', ['*.example']]], ['exact']);
    const before = c.contextFor('shop.example');
    const sites = [{ name: 'exact', hosts: ['shop.example'] }, { name: 'wild', hosts: ['*.example'] }];
    expect(() => c.configure(sites, { minVersion: 'TLSv1.2', ciphers: 'NOT-A-CIPHER' })).toThrow();
    expect(c.contextFor('shop.example')).toBe(before);
    // A renewal after the refused settings installs with the settings in force.
    c.set('wild', leaf.wild!);
    expect(c.siteFor('www.example')).toBe('wild');
  });

  it('serves the chosen certificate in a real handshake, and keeps ticket keys across set() (resumption after a renewal)', async () => {
    const c = store([['exact', ['shop.example']], ['all', ['*']]], ['exact', 'all']);
    const server = createServer({ ...c.defaultSecureOptions(), SNICallback: (name, cb) => cb(null, c.contextFor(name)) });
    c.onChange(() => server.setSecureContext(c.defaultSecureOptions()));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const hello = (servername: string | undefined, session?: Buffer) =>
      new Promise<{ serial: string; reused: boolean; session?: Buffer }>((resolve, reject) => {
        let ticket: Buffer | undefined;
        const s: TLSSocket = connect({ host: '127.0.0.1', port, ca: ca.ca, servername, session, checkServerIdentity: () => undefined });
        s.on('session', (t) => (ticket = t));
        s.on('error', reject);
        s.on('secureConnect', () => {
          const facts = { serial: s.getPeerCertificate().serialNumber, reused: s.isSessionReused() };
          setTimeout(() => {
            s.end();
            resolve({ ...facts, session: ticket });
          }, 30);
        });
      });
    try {
      expect((await hello('shop.example')).serial).toBe(leaf.exact!.serial);
      expect((await hello(undefined)).serial).toBe(leaf.all!.serial);
      const first = await hello('shop.example');
      const renewed = await ca.leaf(['shop.example']);
      c.set('exact', renewed);
      const again = await hello('shop.example', first.session);
      expect(again.reused).toBe(true);
      expect((await hello('shop.example')).serial).toBe(renewed.serial);
    } finally {
      server.close();
    }
  });
});
