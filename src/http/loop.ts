/**
 * Request loops: an origin URL that points back at the gateway (its own listener, or a load
 * balancer in front of the fleet). Every request the gateway sends to an origin carries
 * `CDN-Loop` (RFC 8586) with an id of this process and site and a mark of its target
 * (`crowdgate-<id>; t=<mark>`); a request that arrives carrying its own site's id for its own
 * target came back unchanged, and is answered `508 origin_loop` at once rather than sent round
 * again. One whose target differs passes: an app that sends `/legacy/` on to the site's public
 * name as `/new/` with the headers it was given (nginx's proxy_pass passes CDN-Loop on) is a
 * chain, not a loop (review). Only a third lap of the same site, whatever its targets, is a
 * loop too (an origin URL with a path prefix that points back: `/x`, `/base/x`, `/base/base/x`).
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

/** The mark of a request target (its normalised path and query), keyed by the same secret. */
function targetMarkOf(target: string): string {
  return createHmac('sha256', SECRET).update(target).digest('hex').slice(0, 8);
}

/** Our member for `site` and `target`: `crowdgate-<id>; t=<mark>`. */
export function loopMemberOf(site: string, target: string): string {
  return `${loopIdOf(site)}; t=${targetMarkOf(target)}`;
}

/** The CDN-Loop value to send on: what the client's request had, then our member. */
export function appendLoopMember(existing: string | string[] | number | undefined, site: string, target: string): string {
  const prior = Array.isArray(existing) ? existing.join(', ') : existing === undefined ? '' : String(existing).trim();
  const own = loopMemberOf(site, target);
  return prior ? `${prior}, ${own}` : own;
}

/**
 * The CDN-Loop value a shared fill sends: the crowdgate members the request already carried
 * (it came from another site of this gateway, or from another instance through a balancer, or
 * round once already: a loop through them still comes back with the first one's), the last
 * LOOP_IDS_KEPT of them, then this site's. Nothing else of the client's field: a fill is
 * shared, and a value a client wrote is not in the key (a member is a fixed form of hex
 * digits, so a client's own look-alike puts nothing of its choosing in a page but those).
 */
export function fillLoopValue(existing: string | string[] | undefined, site: string, target: string): string {
  const own = loopMemberOf(site, target);
  if (existing === undefined) return own;
  const kept: string[] = [];
  for (const member of (Array.isArray(existing) ? existing.join(',') : existing).split(',')) {
    const m = MEMBER_FORM.exec(member.trim());
    if (m !== null) kept.push(m[2] === undefined ? m[1]! : `${m[1]}; t=${m[2]}`);
  }
  // The last ones: the hops nearest are at the end, after anything a client put first (eight
  // look-alikes first would otherwise have pushed out the laps' own members: review).
  return [...kept.slice(-LOOP_IDS_KEPT), own].join(', ');
}

/** A member as loopMemberOf makes it, in any process: group 1 the id, group 2 the mark. */
const MEMBER_FORM = /^(crowdgate-[0-9a-f]{14})\s*(?:;\s*t=([0-9a-f]{8}))?$/;
/** The most crowdgate members a fill passes on. */
const LOOP_IDS_KEPT = 8;
/** A site's id this many times in a request is a loop whatever the targets. */
const LAPS_MAX = 3;

/**
 * The crowdgate ids a CDN-Loop value carries (its members of crowdgate's form): the gateways it
 * came through, this one for another site or other instances. A fill does not wait on another
 * instance's fill of the same page held by one of them (fill.ts fillAcrossInstances):
 * instances whose origin URL is the balancer in front of them sent a page's fill from one to
 * the other, which waited on the first one's lock until its 504, and the loop was never seen
 * (review).
 */
export function loopIdsIn(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const text = Array.isArray(value) ? value.join(',') : value;
  if (!text.includes('crowdgate-')) return [];
  const out: string[] = [];
  for (const member of text.split(',')) {
    const id = MEMBER_FORM.exec(member.trim())?.[1];
    if (id !== undefined) out.push(id);
  }
  return out;
}

/**
 * Whether a request came back to this gateway for `site`: its CDN-Loop carries this process's
 * id for the site with the mark of `target` (the request's own normalised target), or carries
 * that id LAPS_MAX times. Each member is `cdn-id *( ";" parameter )`, members separated by
 * commas (a list split over several field lines arrives joined).
 */
export function cameBack(value: string | string[] | undefined, site: string, target: string): boolean {
  if (value === undefined) return false;
  const text = Array.isArray(value) ? value.join(',') : value;
  const id = loopIdOf(site);
  if (!text.includes(id)) return false;
  const mark = targetMarkOf(target);
  let laps = 0;
  for (const member of text.split(',')) {
    const m = MEMBER_FORM.exec(member.trim());
    if (m === null || m[1] !== id) continue;
    if (m[2] === mark || ++laps >= LAPS_MAX) return true;
  }
  return false;
}
