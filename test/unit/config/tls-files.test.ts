/**
 * Certificate files named by `sites[].tls` are checked when the config is loaded (and so at
 * --check-config and at every reload): each problem is an error at the key that names the
 * file, `file:line:col path: message`; an expired certificate is only a warning.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { formatConfigError, parseConfigText } from '../../../src/config/load.js';
import { makeTestCa, type TestCa } from '../../helpers/tls-certs.js';

let ca: TestCa;
let good: { certFile: string; keyFile: string };
let other: { certFile: string; keyFile: string };

beforeAll(async () => {
  ca = await makeTestCa();
  good = ca.write('good', await ca.leaf(['a.test']));
  other = ca.write('other', await ca.leaf(['b.test']));
});

function yaml(certFile: string, keyFile: string): string {
  return [
    'tls:',
    '  port: 8443',
    'sites:',
    '  - name: a',
    '    hosts: [a.test]',
    '    origins: [{ url: "http://127.0.0.1:3000" }]',
    '    tls:',
    `      certFile: ${JSON.stringify(certFile)}`,
    `      keyFile: ${JSON.stringify(keyFile)}`,
    '',
  ].join('\n');
}

const errorsOf = (text: string, file = join(ca.dir, 'gw.yaml')) => {
  const r = parseConfigText(text, file);
  return r.ok ? [] : r.errors.map(formatConfigError);
};

describe('certificate files in the config', () => {
  it('accepts a readable matching pair and resolves relative paths against the config file\'s directory', () => {
    const r = parseConfigText(yaml('good.crt', 'good.key'), join(ca.dir, 'gw.yaml'));
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.config.sites[0]!.tls).toEqual(good);
  });

  it('refuses a cipher list OpenSSL cannot use at the key, with line and column', () => {
    const file = join(ca.dir, 'gw.yaml');
    const text = yaml(good.certFile, good.keyFile).replace('  port: 8443\n', '  port: 8443\n  ciphers: NOT-A-CIPHER\n');
    expect(errorsOf(text, file)).toEqual([`${file}:3:12 tls.ciphers: OpenSSL knows no cipher in this list (check it with \`openssl ciphers -v LIST\`)`]);
  });

  it('points a missing file at the key naming it, with line and column', () => {
    const file = join(ca.dir, 'gw.yaml');
    expect(errorsOf(yaml(join(ca.dir, 'missing.crt'), good.keyFile), file)).toEqual([
      `${file}:8:17 sites[0].tls.certFile: cannot read ${join(ca.dir, 'missing.crt')}: file not found`,
    ]);
    expect(errorsOf(yaml(good.certFile, join(ca.dir, 'missing.key')), file)).toEqual([
      `${file}:9:16 sites[0].tls.keyFile: cannot read ${join(ca.dir, 'missing.key')}: file not found`,
    ]);
  });

  it('refuses a file that is not PEM, and a key that belongs to another certificate', () => {
    const junk = join(ca.dir, 'junk.pem');
    writeFileSync(junk, 'hello\n');
    expect(errorsOf(yaml(junk, good.keyFile))).toEqual([expect.stringMatching(/:8:17 sites\[0\]\.tls\.certFile: .*holds no PEM certificate/)]);
    expect(errorsOf(yaml(good.certFile, junk))).toEqual([expect.stringMatching(/:9:16 sites\[0\]\.tls\.keyFile: .*holds no PEM private key/)]);
    expect(errorsOf(yaml(good.certFile, other.keyFile))).toEqual([expect.stringMatching(/:9:16 sites\[0\]\.tls\.keyFile: .*is not the key of the certificate in .*good\.crt \(CN=a\.test\)/)]);
  });

  it('warns, but accepts, an expired certificate', async () => {
    const expired = ca.write('expired', await ca.leaf(['a.test'], { notBefore: new Date(Date.now() - 10 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) }));
    const r = parseConfigText(yaml(expired.certFile, expired.keyFile), join(ca.dir, 'gw.yaml'));
    expect(r.ok).toBe(true);
    expect(r.ok && r.warnings?.map(formatConfigError)).toEqual([expect.stringMatching(/:8:17 sites\[0\]\.tls\.certFile: .*the certificate expired on/)]);
  });

  it('crowdgate --check-config prints the error with file:line:col and exits 1', () => {
    const file = join(ca.dir, 'check.yaml');
    writeFileSync(file, yaml('good.crt', 'nope.key'));
    const r = spawnSync(process.execPath, ['dist/main.js', '--check-config', file], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`${file}:9:16 sites[0].tls.keyFile: cannot read ${join(ca.dir, 'nope.key')}: file not found`);
    writeFileSync(file, yaml('good.crt', 'good.key'));
    expect(spawnSync(process.execPath, ['dist/main.js', '--check-config', file], { encoding: 'utf8' }).status).toBe(0);
  });
});
