/**
 * The ACME keys: the top-level `acme` section and `sites[].tls.acme`. What a minimal ACME site
 * gets by default, and each refusal as `file:line:col path: message` (the loader is what
 * --check-config and every reload run, so a refused file never replaces the running config).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { formatConfigError, parseConfigText } from '../../../src/config/load.js';
import { LETS_ENCRYPT_DIRECTORY, certificateFilesOf } from '../../../src/config/schema.js';
import { acmeHostnames } from '../../../src/tls/acme/hostnames.js';

const dir = mkdtempSync(join(tmpdir(), 'crowdgate-acme-config-'));
const file = join(dir, 'gw.yaml');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** An ACME site; `siteTls` and `top` are spliced in as YAML lines. */
function yaml(opts: { top?: string[]; hosts?: string; siteTls?: string[]; name?: string; tlsPort?: boolean } = {}): string {
  return [
    ...(opts.tlsPort === false ? [] : ['tls:', '  port: 8443']),
    ...(opts.top ?? []),
    'sites:',
    `  - name: ${opts.name ?? 'shop'}`,
    `    hosts: ${opts.hosts ?? '[shop.example.com, www.shop.example.com]'}`,
    '    origins: [{ url: "http://127.0.0.1:3000" }]',
    '    tls:',
    ...(opts.siteTls ?? ['      acme: true']),
    '',
  ].join('\n');
}

const errorsOf = (text: string) => {
  const r = parseConfigText(text, file, { env: {} });
  return r.ok ? [] : r.errors.map(formatConfigError);
};

describe('acme: the defaults of a minimal ACME site', () => {
  it('needs no acme section: Let\'s Encrypt production, crowdgate-acme beside the config file, 30 days', () => {
    const r = parseConfigText(yaml(), file, { env: {} });
    if (!r.ok) throw new Error(r.errors.map(formatConfigError).join('\n'));
    expect(r.warnings).toBeUndefined();
    expect(r.config.acme).toEqual({
      directoryUrl: LETS_ENCRYPT_DIRECTORY,
      storageDir: join(dir, 'crowdgate-acme'),
      renewBeforeDays: 30,
      checkIntervalMs: 600_000,
      requestTimeoutMs: 30_000,
      backoff: { initialMs: 60_000, maxMs: 21_600_000, jitter: 0.5 },
      lockTtlMs: 600_000,
    });
    expect(r.config.sites[0]!.tls).toEqual({ acme: true });
    expect(certificateFilesOf(r.config.sites[0]!)).toBeUndefined();
  });

  it('resolves storageDir and caBundleFile against the config file\'s directory, keeps absolute ones', () => {
    writeFileSync(join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
    const r = parseConfigText(yaml({ top: ['acme:', '  storageDir: state/acme', '  caBundleFile: ca.pem', '  email: ops@example.com'] }), file, { env: {} });
    if (!r.ok) throw new Error(r.errors.map(formatConfigError).join('\n'));
    expect(r.config.acme.storageDir).toBe(join(dir, 'state/acme'));
    expect(r.config.acme.caBundleFile).toBe(join(dir, 'ca.pem'));
    expect(r.config.acme.email).toBe('ops@example.com');
    const abs = parseConfigText(yaml({ top: ['acme:', '  storageDir: /var/lib/crowdgate/acme'] }), file, { env: {} });
    expect(abs.ok && abs.config.acme.storageDir).toBe('/var/lib/crowdgate/acme');
  });

  it('leaves "*" and wildcard hosts out of the certificate, with a warning at each', () => {
    const r = parseConfigText(yaml({ hosts: '["shop.example.com", "*.shop.example.com", "*"]' }), file, { env: {} });
    if (!r.ok) throw new Error(r.errors.map(formatConfigError).join('\n'));
    expect(r.warnings?.map(formatConfigError)).toEqual([
      expect.stringMatching(new RegExp(`^${file}:5:33 sites\\[0\\]\\.hosts\\[1\\]: "\\*\\.shop\\.example\\.com" is left out of the ACME certificate: a wildcard name needs the DNS-01 challenge`)),
      expect.stringMatching(new RegExp(`^${file}:5:55 sites\\[0\\]\\.hosts\\[2\\]: "\\*" is left out of the ACME certificate`)),
    ]);
  });

  it('a site with certificate files still loads them (certificateFilesOf)', () => {
    const r = parseConfigText(yaml({ siteTls: ['      certFile: a.crt', '      keyFile: a.key'] }), file, { env: {}, checkFiles: false });
    if (!r.ok) throw new Error(r.errors.map(formatConfigError).join('\n'));
    expect(certificateFilesOf(r.config.sites[0]!)).toEqual({ certFile: join(dir, 'a.crt'), keyFile: join(dir, 'a.key') });
  });
});

describe('acme: refused configs, each at the key at fault', () => {
  it('acme: true beside certFile/keyFile', () => {
    expect(errorsOf(yaml({ siteTls: ['      acme: true', '      certFile: a.crt', '      keyFile: a.key'] }))).toEqual([
      `${file}:8:13 sites[0].tls.acme: acme: true and certFile/keyFile are mutually exclusive: keep one way of getting this site's certificate`,
    ]);
  });

  it('acme: true without the HTTPS listener', () => {
    expect(errorsOf(yaml({ tlsPort: false }))).toEqual([`${file}:6:13 sites[0].tls.acme: needs the HTTPS listener: set tls.port (e.g. 443)`]);
  });

  it('acme: true with no host a certificate can name', () => {
    expect(errorsOf(yaml({ hosts: '["*", "*.example.com", "127.0.0.1"]' }))).toEqual([
      `${file}:5:12 sites[0].hosts: tls.acme needs at least one concrete host name: "*", "*.wildcard" names and IP addresses cannot be validated over HTTP-01`,
    ]);
  });

  it('a host that is not a DNS name', () => {
    expect(errorsOf(yaml({ hosts: '["shop.example.com", "bad_name.example.com"]' }))).toEqual([
      `${file}:5:33 sites[0].hosts[1]: "bad_name.example.com" is not a DNS name a CA can issue a certificate for (tls.acme)`,
    ]);
  });

  it('a site name that cannot name its storage directory', () => {
    expect(errorsOf(yaml({ name: '_shop' }))).toEqual([
      `${file}:4:11 sites[0].name: an ACME site's name names its storage directory: start it with a letter or digit, no ".."`,
    ]);
  });

  it('tls with neither files nor acme, and a certificate without its key', () => {
    expect(errorsOf(yaml({ siteTls: ['      acme: false'] }))).toEqual([`${file}:8:7 sites[0].tls: needs certFile and keyFile, or acme: true`]);
    expect(errorsOf(yaml({ siteTls: ['      certFile: a.crt'] }))).toEqual([
      `${file}:8:7 sites[0].tls.keyFile: missing required key "keyFile" (certFile needs its private key)`,
    ]);
  });

  it('a directory URL that is not https, an e-mail that is not one, a backoff that starts above its cap', () => {
    expect(
      errorsOf(yaml({ top: ['acme:', '  directoryUrl: http://ca.example/dir', '  email: "mailto:ops"', '  backoff: { initialMs: 5000, maxMs: 1000 }'] })),
    ).toEqual([
      `${file}:4:17 acme.directoryUrl: must be an https:// URL (RFC 8555 §6.1)`,
      `${file}:5:10 acme.email: must be an e-mail address, e.g. ops@example.com`,
      `${file}:6:25 acme.backoff.initialMs: must not exceed backoff.maxMs`,
    ]);
  });

  it('a CA bundle that cannot be read or holds no certificate', () => {
    expect(errorsOf(yaml({ top: ['acme:', '  caBundleFile: missing.pem'] }))).toEqual([
      `${file}:4:17 acme.caBundleFile: cannot read ${join(dir, 'missing.pem')}: file not found`,
    ]);
    writeFileSync(join(dir, 'junk.pem'), 'not a certificate\n');
    expect(errorsOf(yaml({ top: ['acme:', '  caBundleFile: junk.pem'] }))).toEqual([`${file}:4:17 acme.caBundleFile: ${join(dir, 'junk.pem')} holds no PEM certificate`]);
  });

  it('an unknown key in the acme section gets a suggestion', () => {
    expect(errorsOf(yaml({ top: ['acme:', '  renewBeforeDay: 10'] }))).toEqual([`${file}:4:3 acme.renewBeforeDay: unknown key "renewBeforeDay" (did you mean "renewBeforeDays"?)`]);
  });

  it('crowdgate --check-config prints the error and exits 1, prints the warning and exits 0', () => {
    const check = join(dir, 'check.yaml');
    writeFileSync(check, yaml({ siteTls: ['      acme: true', '      certFile: a.crt', '      keyFile: a.key'] }));
    const bad = spawnSync(process.execPath, ['dist/main.js', '--check-config', check], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain(`${check}:8:13 sites[0].tls.acme: acme: true and certFile/keyFile are mutually exclusive`);
    writeFileSync(check, yaml({ hosts: '["shop.example.com", "*"]' }));
    const ok = spawnSync(process.execPath, ['dist/main.js', '--check-config', check], { encoding: 'utf8' });
    expect(ok.status).toBe(0);
    expect(ok.stderr).toContain(`${check}:5:33 sites[0].hosts[1]: "*" is left out of the ACME certificate`);
    expect(ok.stderr).toContain('(warning)');
  });
});

describe('acmeHostnames', () => {
  it('keeps concrete names (lower case, once, no trailing dot); skips "*", wildcards and IP literals; flags the rest', () => {
    expect(acmeHostnames(['Shop.Example.com.', 'shop.example.com', '*', '*.example.com', '10.0.0.1', '[::1]', 'a b', 'x.test'])).toEqual({
      names: ['shop.example.com', 'x.test'],
      skipped: [
        { index: 2, host: '*', reason: expect.stringContaining('catch-all') },
        { index: 3, host: '*.example.com', reason: expect.stringContaining('DNS-01') },
        { index: 4, host: '10.0.0.1', reason: expect.stringContaining('IP address') },
        { index: 5, host: '[::1]', reason: expect.stringContaining('IP address') },
      ],
      invalid: [{ index: 6, host: 'a b', reason: expect.stringContaining('not a DNS name') }],
    });
  });
});
