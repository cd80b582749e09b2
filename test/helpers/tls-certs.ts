/**
 * Real certificates for TLS tests, made in the test with @peculiar/x509 on Node's WebCrypto:
 * one test CA per call of makeTestCa(), and leaf certificates it signs (ECDSA P-256, SAN DNS
 * names), written as PEM files in a temp directory so the gateway reads them as it would a
 * certbot or ACME output. Clients trust `ca.pem` and verify names for real.
 */
import { webcrypto } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;

export interface TestLeaf {
  /** PEM chain: the leaf, then the CA. */
  cert: string;
  key: string;
  /** Hex serial: tells two certificates for the same name apart. */
  serial: string;
}

export interface TestCa {
  dir: string;
  /** The CA certificate, PEM: what clients trust. */
  ca: string;
  /** A leaf for these DNS names; `notAfter` / `notBefore` to make an expired or future one. */
  leaf(names: string[], opts?: { notBefore?: Date; notAfter?: Date; cn?: string }): Promise<TestLeaf>;
  /** The leaf's files under `dir` as `${name}.crt` and `${name}.key`; returns their paths. */
  write(name: string, leaf: TestLeaf): { certFile: string; keyFile: string };
}

async function pemKey(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY') + '\n';
}

let serialCounter = 1;
function nextSerial(): string {
  // A leading 1: positive, no leading zero, so it reads back the same from a peer certificate.
  return `1${Date.now().toString(16).padStart(11, '0')}${(serialCounter++).toString(16).padStart(4, '0')}`.toUpperCase();
}

export async function makeTestCa(): Promise<TestCa> {
  const dir = mkdtempSync(join(tmpdir(), 'crowdgate-tls-'));
  const caKeys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
  const caCert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: nextSerial(),
    name: 'CN=crowdgate test CA',
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + 30 * DAY),
    keys: caKeys,
    signingAlgorithm: ALG,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true)],
  });
  const ca = caCert.toString('pem') + '\n';
  return {
    dir,
    ca,
    async leaf(names, opts = {}) {
      const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
      const serial = nextSerial();
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: serial,
        subject: `CN=${opts.cn ?? names[0]}`,
        issuer: caCert.subject,
        notBefore: opts.notBefore ?? new Date(Date.now() - DAY),
        notAfter: opts.notAfter ?? new Date(Date.now() + 7 * DAY),
        publicKey: keys.publicKey,
        signingKey: caKeys.privateKey,
        signingAlgorithm: ALG,
        extensions: [
          new x509.SubjectAlternativeNameExtension(names.map((value) => ({ type: 'dns' as const, value }))),
          new x509.BasicConstraintsExtension(false),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        ],
      });
      return { cert: cert.toString('pem') + '\n' + ca, key: await pemKey(keys.privateKey), serial };
    },
    write(name, leaf) {
      const certFile = join(dir, `${name}.crt`);
      const keyFile = join(dir, `${name}.key`);
      writeFileSync(certFile, leaf.cert);
      writeFileSync(keyFile, leaf.key);
      return { certFile, keyFile };
    },
  };
}
