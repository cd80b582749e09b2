/**
 * Request loops: an origin URL that points back at the gateway (its own listener, or a load
 * balancer in front of the fleet). Every request the gateway sends to an origin carries
 * `CDN-Loop` (RFC 8586) with an id of this process and site; a request that arrives carrying
 * its own site's id from this process came back, and is answered `508 origin_loop` at once
 * rather than sent round again.
 *
 * Why: an operator who sets `sites[].origins[].url` to the gateway's own port (her app and
 * crowdgate both default to 8080) got a cache fill collapsed onto itself and a `504` after
 * 15 s, and a POST or a logged-in page a `503 overloaded` once its laps held the permits, with
 * log lines about origin timeouts and load (tried on the build before). nginx sends such a
 * request round until its connections run out; Envoy's CDN-Loop filter refuses it.
 *
 * The id is keyed by a secret drawn at start (HMAC), so no client can send one, and a client's
 * `CDN-Loop` naming other ids is passed on (a pass-through appends ours, RFC 8586 §2; a shared
 * fill sends only crowdgate ids). It is per site: one site whose origin is another site of the
 * same gateway (by Host) is a chain, not a loop; two sites sending to each other are, and come
 * back with the first one's id. Owns the ids and the check; where they are sent is
 * server/headers.ts, server/fill-headers.ts and origin/pool.ts (probes).
 */
import { createHmac, randomBytes } from 'node:crypto';

/** The request field (RFC 8586). */
export const LOOP_FIELD = 'cdn-loop';

const SECRET = randomBytes(16);
/** Ids by site name; sites are few (one per configured site, across reloads). */
const ids = new Map<string, string>();
const IDS_MAX = 1024;

/** This process's CDN-Loop id for `site` (a pseudonym, RFC 8586 §2: a token, 24 characters). */
export function loopIdOf(site: string): string {
  let id = ids.get(site);
  if (id === undefined) {
    id = 'crowdgate-' + createHmac('sha256', SECRET).update(site).digest('hex').slice(0, 14);
    if (ids.size >= IDS_MAX) ids.clear();
    ids.set(site, id);
  }
  return id;
}

/** The CDN-Loop value to send on: what the client's request had, then our id. */
export function appendLoopId(existing: string | string[] | number | undefined, site: string): string {
  const prior = Array.isArray(existing) ? existing.join(', ') : existing === undefined ? '' : String(existing).trim();
  const id = loopIdOf(site);
  return prior ? `${prior}, ${id}` : id;
}

/**
 * The CDN-Loop value a shared fill sends: the crowdgate ids the request already carried (it
 * came from another site of this gateway, or from another instance through a balancer: a
 * loop through them still comes back with the first one's id), at most LOOP_IDS_KEPT, then
 * this site's. Nothing else of the client's field: a fill is shared, and a value a client
 * wrote is not in the key (an id is a fixed form of hex digits, so a client's own look-alike
 * puts nothing of its choosing in a page but those).
 */
export function fillLoopValue(existing: string | string[] | undefined, site: string): string {
  const mine = loopIdOf(site);
  if (existing === undefined) return mine;
  const kept: string[] = [];
  for (const member of (Array.isArray(existing) ? existing.join(',') : existing).split(',')) {
    const id = cdnIdOf(member);
    if (ID_FORM.test(id) && id !== mine && !kept.includes(id)) kept.push(id);
    if (kept.length === LOOP_IDS_KEPT) break;
  }
  kept.push(mine);
  return kept.join(', ');
}

/** What loopIdOf makes, in any process. */
const ID_FORM = /^crowdgate-[0-9a-f]{14}$/;
/** The most ids of other sites or instances a fill passes on (a loop needs one). */
const LOOP_IDS_KEPT = 8;

/** A CDN-Loop member's cdn-id: the text before its first parameter, trimmed. */
function cdnIdOf(member: string): string {
  const semi = member.indexOf(';');
  return (semi === -1 ? member : member.slice(0, semi)).trim();
}

/**
 * Whether a request's CDN-Loop names this process's id for `site`: it left this gateway for
 * that site's origin and came back. Each member is `cdn-id *( ";" parameter )`, members
 * separated by commas (a list split over several field lines arrives joined).
 */
export function cameBack(value: string | string[] | undefined, site: string): boolean {
  if (value === undefined) return false;
  const text = Array.isArray(value) ? value.join(',') : value;
  const id = loopIdOf(site);
  if (!text.includes(id)) return false;
  for (const member of text.split(',')) if (cdnIdOf(member) === id) return true;
  return false;
}
