/**
 * Reading a site's certificate files (a PEM chain and its key) and checking them the way the
 * loader and the live reloader both need: readable, PEM, the key belongs to the leaf
 * certificate, and a TLS context can be built from them. Expiry is a warning, never an error
 * (an expired certificate still serves better than none, and a renewal may be on its way).
 *
 * Owns the checks and their wording. It does not choose certificates (certificates.ts) or
 * watch files (site-certificates.ts).
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { whyUnreadable } from '../config/unreadable.js';

/** A certificate and key as PEM text, checked. */
export interface CertificateMaterial {
  readonly cert: string;
  readonly key: string;
  /** The leaf's subject and SAN, for logs. */
  readonly subject: string;
  readonly altNames: string | undefined;
  /** The leaf's notAfter, ms since the epoch. */
  readonly notAfter: number;
}

export type MaterialField = 'certFile' | 'keyFile';

export interface MaterialProblem {
  /** The config key whose file is at fault. */
  readonly field: MaterialField;
  readonly message: string;
}

export type MaterialResult =
  | { ok: true; material: CertificateMaterial; warnings: string[] }
  | { ok: false; problems: MaterialProblem[] };

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/;
const PEM_KEY = /-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----[\s\S]+?-----END \1-----/;

function readText(file: string): { text: string } | { error: string } {
  try {
    return { text: readFileSync(file, 'utf8') };
  } catch (err) {
    return { error: `cannot read ${file}: ${whyUnreadable(err)}` };
  }
}

/** Reads and checks one certificate and key pair; `now` (ms) decides the expiry warnings. */
export function readCertificateFiles(certFile: string, keyFile: string, now: number = Date.now()): MaterialResult {
  const problems: MaterialProblem[] = [];
  const certText = readText(certFile);
  const keyText = readText(keyFile);
  if ('error' in certText) problems.push({ field: 'certFile', message: certText.error });
  if ('error' in keyText) problems.push({ field: 'keyFile', message: keyText.error });
  if ('error' in certText || 'error' in keyText) return { ok: false, problems };
  return checkMaterial(certText.text, keyText.text, certFile, keyFile, now);
}

/** The same checks on PEM text already in memory (an ACME manager installs certificates this way). */
export function checkMaterial(cert: string, key: string, certFile = 'the certificate', keyFile = 'the key', now: number = Date.now()): MaterialResult {
  const problems: MaterialProblem[] = [];
  let leaf: X509Certificate | undefined;
  if (!PEM_CERT.test(cert)) problems.push({ field: 'certFile', message: `${certFile} holds no PEM certificate (-----BEGIN CERTIFICATE-----)` });
  else {
    try {
      leaf = new X509Certificate(PEM_CERT.exec(cert)![0]);
    } catch (err) {
      problems.push({ field: 'certFile', message: `${certFile}: the first certificate cannot be parsed: ${(err as Error).message}` });
    }
  }
  let privateKey: ReturnType<typeof createPrivateKey> | undefined;
  const keyPem = PEM_KEY.exec(key);
  if (!keyPem) problems.push({ field: 'keyFile', message: `${keyFile} holds no PEM private key (-----BEGIN PRIVATE KEY-----)` });
  else if (keyPem[1] === 'ENCRYPTED PRIVATE KEY') problems.push({ field: 'keyFile', message: `${keyFile}: the key is encrypted; give an unencrypted key` });
  else {
    try {
      privateKey = createPrivateKey(keyPem[0]);
    } catch (err) {
      problems.push({ field: 'keyFile', message: `${keyFile}: the private key cannot be parsed: ${(err as Error).message}` });
    }
  }
  if (leaf && privateKey && !leaf.checkPrivateKey(privateKey)) {
    problems.push({ field: 'keyFile', message: `${keyFile} is not the key of the certificate in ${certFile} (${leaf.subject.replace(/\n/g, ', ')})` });
  }
  if (problems.length > 0 || !leaf) return { ok: false, problems };
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    return { ok: false, problems: [{ field: 'certFile', message: `${certFile}: OpenSSL refuses the pair: ${(err as Error).message}` }] };
  }
  const notAfter = Date.parse(leaf.validTo);
  const notBefore = Date.parse(leaf.validFrom);
  const warnings: string[] = [];
  if (Number.isFinite(notAfter) && notAfter <= now) warnings.push(`${certFile}: the certificate expired on ${leaf.validTo}`);
  if (Number.isFinite(notBefore) && notBefore > now) warnings.push(`${certFile}: the certificate is not valid before ${leaf.validFrom}`);
  return {
    ok: true,
    material: { cert, key, subject: leaf.subject.replace(/\n/g, ', '), altNames: leaf.subjectAltName, notAfter },
    warnings,
  };
}
