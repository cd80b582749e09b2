/** Automatic HTTPS certificates (ACME, RFC 8555): the manager and what it hands out. See README "Automatic HTTPS (ACME)". */
export { AcmeManager, type AcmeManagerOptions, type InstalledCertificate, type SiteStatus } from './manager.js';
export { DEFAULT_BACKOFF, DEFAULT_RENEW_BEFORE_MS, backoffDelay, renewalTime, type BackoffPolicy } from './renewal.js';
export { TEMPORARY_SUBJECT } from './self-signed.js';
