/**
 * Request ids: a random per-process prefix and a counter; unique, cheap, and sortable per
 * process. A client's own `X-Request-Id` (letters, digits, `._:-`, up to 128 characters) is
 * kept as its request's id; anything else gets one made here.
 */
import { randomUUID } from 'node:crypto';

const ID_PREFIX = randomUUID().slice(0, 8);
let idCounter = 0;

/** A new id made by the gateway. */
export function nextRequestId(): string {
  return `${ID_PREFIX}-${(++idCounter).toString(36)}`;
}

const REQUEST_ID_RE = /^[A-Za-z0-9._:\-]{1,128}$/;

/** The request's id: the client's `X-Request-Id` when it is a valid one, else a new one. */
export function requestIdOf(incoming: string | string[] | undefined): string {
  return typeof incoming === 'string' && REQUEST_ID_RE.test(incoming) ? incoming : nextRequestId();
}
