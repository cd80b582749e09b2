/**
 * Reading a certificate chain and its key (node:crypto's X509Certificate): validity, serial, the
 * names it covers, and that the key belongs to the leaf. Used on everything loaded from disk or
 * Redis before it is served, so a corrupt or mismatched file is a logged reason to re-issue.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';

export interface CertificateFacts {
  notBefore: number;
  notAfter: number;
  /** Hex serial of the leaf, upper case as node:crypto reports it. */
  serial: string;
  /** DNS names of the leaf's subjectAltName, lower case. */
  names: string[];
  /** The leaf's issuer, one RDN a line. */
  issuer: string;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The PEM certificates of a chain, leaf first. */
export function splitChain(chainPem: string): string[] {
  return chainPem.match(PEM_CERT) ?? [];
}

/** Facts of the chain's leaf; throws a clear Error if the chain is empty or unreadable, or the key is not the leaf's. */
export function certificateFacts(chainPem: string, keyPem?: string): CertificateFacts {
  const [leafPem] = splitChain(chainPem);
  if (!leafPem) throw new Error('no PEM certificate found');
  const leaf = new X509Certificate(leafPem);
  if (keyPem !== undefined && !leaf.checkPrivateKey(createPrivateKey(keyPem))) throw new Error('the private key does not belong to the certificate');
  const names = (leaf.subjectAltName ?? '')
    .split(/,\s*/)
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4).toLowerCase());
  return {
    notBefore: Date.parse(leaf.validFrom),
    notAfter: Date.parse(leaf.validTo),
    serial: leaf.serialNumber,
    names,
    issuer: leaf.issuer,
  };
}

/** True when every hostname is one of `names` (exactly, or by a `*.` wildcard one label deep). */
export function coversAll(names: readonly string[], hostnames: readonly string[]): boolean {
  const set = new Set(names.map((n) => n.toLowerCase()));
  return hostnames.every((h) => {
    const host = h.toLowerCase();
    if (set.has(host)) return true;
    const dot = host.indexOf('.');
    return dot > 0 && set.has('*' + host.slice(dot));
  });
}
