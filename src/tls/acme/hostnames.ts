/**
 * Which of a site's `hosts` an ACME certificate can be issued for over HTTP-01. A CA validates
 * HTTP-01 by fetching `http://<name>/.well-known/acme-challenge/<token>`, so it can only prove
 * concrete DNS names: the catch-all `*` and `*.example.com` wildcards (DNS-01 only) and IP
 * literals are left out of the certificate (the site still serves them; the loader warns), and
 * a name that is not DNS syntax is an error. Pure: the config schema, the loader's warnings and
 * the wiring (tls/acme-sites.ts) all ask this one function.
 */
import { isIP } from 'node:net';

/** A DNS name a CA can issue for (lower case; `*.` allowed here, refused by the caller). */
export const ISSUABLE_NAME = /^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;

export interface AcmeHostnames {
  /** The names to put in the certificate, lower case, in config order, without repeats. */
  names: string[];
  /** Hosts left out, with their index in `hosts` and why. */
  skipped: Array<{ index: number; host: string; reason: string }>;
  /** Hosts that are not names at all, with their index in `hosts`. */
  invalid: Array<{ index: number; host: string; reason: string }>;
}

export function acmeHostnames(hosts: readonly string[]): AcmeHostnames {
  const out: AcmeHostnames = { names: [], skipped: [], invalid: [] };
  hosts.forEach((raw, index) => {
    const host = raw.trim().toLowerCase().replace(/\.$/, '');
    if (host === '*') out.skipped.push({ index, host: raw, reason: 'the catch-all "*" names no host a certificate can cover' });
    else if (host.startsWith('*.')) out.skipped.push({ index, host: raw, reason: 'a wildcard name needs the DNS-01 challenge; crowdgate answers HTTP-01 only' });
    else if (isIP(host.replace(/^\[|\]$/g, '')) !== 0) out.skipped.push({ index, host: raw, reason: 'an IP address is not validated over HTTP-01 here' });
    else if (!ISSUABLE_NAME.test(host) || host.length > 253) out.invalid.push({ index, host: raw, reason: 'is not a DNS name a CA can issue a certificate for' });
    else if (!out.names.includes(host)) out.names.push(host);
  });
  return out;
}
