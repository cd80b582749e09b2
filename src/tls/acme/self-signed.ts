/**
 * The temporary certificate a site is served until ACME issues the real one: self-signed, for
 * the site's names, short-lived, and saying what it is in its subject, so a browser warning names
 * the reason ("crowdgate temporary certificate, ACME pending").
 */
import { randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

export const TEMPORARY_SUBJECT = 'crowdgate temporary certificate (ACME pending)';

/** How long a temporary certificate is valid; another is made if ACME has not succeeded by then. */
export const TEMPORARY_LIFETIME_MS = 7 * 86_400_000;

export interface PemPair {
  /** PEM certificate (chain for issued certificates). */
  cert: string;
  /** PEM PKCS#8 private key. */
  key: string;
  notBefore: number;
  notAfter: number;
}

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/** A self-signed ECDSA P-256 certificate for `hostnames`, valid from `now` (a minute back, for skew) for `lifetimeMs`. */
export async function createTemporaryCertificate(hostnames: readonly string[], now: number, lifetimeMs = TEMPORARY_LIFETIME_MS): Promise<PemPair> {
  if (hostnames.length === 0) throw new Error('a temporary certificate needs at least one hostname');
  // @peculiar/x509 is typed against the DOM's Crypto; node's webcrypto is that API.
  const crypto = webcrypto as unknown as Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[1] & typeof webcrypto;
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  // Whole seconds: X.509 times have no milliseconds.
  const notBefore = Math.floor((now - 60_000) / 1000) * 1000;
  const notAfter = Math.floor((now + lifetimeMs) / 1000) * 1000;
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: '01' + randomBytes(15).toString('hex'),
      name: `CN=${TEMPORARY_SUBJECT}, O=crowdgate`,
      notBefore: new Date(notBefore),
      notAfter: new Date(notAfter),
      signingAlgorithm: ALG,
      keys: keys as unknown as x509.X509CertificateCreateSelfSignedParams['keys'],
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension(hostnames.map((h) => ({ type: 'dns' as const, value: h }))),
      ],
    },
    crypto,
  );
  const key = pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  return { cert: cert.toString('pem') + '\n', key, notBefore, notAfter };
}
