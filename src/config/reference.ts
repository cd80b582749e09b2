/**
 * The README's configuration reference, generated from the schema: one Markdown table row per
 * key, with its type, default, description and whether a reload applies it live.
 *
 * Owns the walk over the JSON Schema (json-schema.ts) and the table text, and the splice into
 * a document between the config-reference markers. It does not write files (the CLI in
 * scripts/gen-config-reference.mjs does) or define any key (schema.ts).
 */
import { RESTART_KEYS } from './schema.js';
import { makeConfigJsonSchema, type JsonSchema } from './json-schema.js';

export const REFERENCE_START = '<!-- config-reference:start -->';
export const REFERENCE_END = '<!-- config-reference:end -->';

export interface ReferenceRow {
  /** `sites[].routes[].cache.ttlFloorSeconds` */
  path: string;
  type: string;
  /** JSON text of the default, `required`, or `—` (optional, no default). */
  defaultText: string;
  description: string;
  applies: 'live' | 'restart';
  /** A section (object or list of objects) whose keys follow as their own rows. */
  isSection: boolean;
}

/** Every key in schema order, depth first; sections precede their keys. */
export function listConfigKeys(schema: JsonSchema = makeConfigJsonSchema()): ReferenceRow[] {
  const rows: ReferenceRow[] = [];
  walkObject(schema, '', rows, false);
  return rows;
}

/** The Markdown block that goes between the markers (markers not included). */
export function renderConfigReference(schema: JsonSchema = makeConfigJsonSchema()): string {
  const lines = [
    '<!-- Generated from src/config/schema.ts by `npm run config-reference`; do not edit by hand. -->',
    '',
    'Keys marked **restart** are read at startup only; a reload (file change or SIGHUP) applies every other key',
    'to new requests while requests in flight finish on the config they started with.',
    '',
    '| key | type | default | applies | description |',
    '|---|---|---|---|---|',
  ];
  for (const row of listConfigKeys(schema)) {
    const key = row.isSection ? `**\`${row.path}\`**` : `\`${row.path}\``;
    // A section's `{}` default only says "its keys have defaults"; the keys' rows say which.
    const defaultCell =
      row.isSection && row.defaultText === '{}'
        ? ''
        : row.defaultText === '—' || row.defaultText === 'required'
          ? row.defaultText
          : `\`${row.defaultText}\``;
    // A live section may still hold restart keys (admin.host), so only a restart section says so.
    const applies = row.applies === 'restart' ? '**restart**' : row.isSection ? '' : 'live';
    lines.push(`| ${key} | ${cell(row.type)} | ${cell(defaultCell)} | ${applies} | ${cell(row.description)} |`);
  }
  return `${lines.join('\n')}\n`;
}

/** Replaces the text between the markers in `document`; throws when the markers are missing. */
export function spliceConfigReference(document: string, reference: string = renderConfigReference()): string {
  const start = document.indexOf(REFERENCE_START);
  const end = document.indexOf(REFERENCE_END);
  if (start === -1 || end === -1 || end < start) {
    throw new Error(`markers not found: put ${REFERENCE_START} and ${REFERENCE_END} on their own lines`);
  }
  return `${document.slice(0, start + REFERENCE_START.length)}\n${reference}${document.slice(end)}`;
}

// ---------------------------------------------------------------------------------------------

function walkObject(node: JsonSchema, prefix: string, rows: ReferenceRow[], parentRestart: boolean): void {
  const properties = (node.properties ?? {}) as Record<string, JsonSchema>;
  const required = new Set((node.required ?? []) as string[]);
  for (const [name, prop] of Object.entries(properties)) {
    const path = prefix === '' ? name : `${prefix}.${name}`;
    const description = typeof prop.description === 'string' ? prop.description : '';
    const applies = parentRestart || needsRestart(path, description) ? 'restart' : 'live';
    const defaultText =
      'default' in prop ? JSON.stringify(prop.default) : required.has(name) ? 'required' : '—';
    const items = prop.items as JsonSchema | undefined;
    if (isObjectWithKeys(prop)) {
      rows.push({ path, type: 'object', defaultText, description, applies, isSection: true });
      walkObject(prop, path, rows, applies === 'restart');
    } else if (prop.type === 'array' && items && isObjectWithKeys(items)) {
      rows.push({ path: `${path}[]`, type: 'list of objects', defaultText, description, applies, isSection: true });
      walkObject(items, `${path}[]`, rows, applies === 'restart');
    } else {
      rows.push({ path, type: typeText(prop), defaultText, description, applies, isSection: false });
    }
  }
}

function isObjectWithKeys(s: JsonSchema): boolean {
  return s.type === 'object' && typeof s.properties === 'object' && s.properties !== null;
}

/**
 * Restart-only when the key (or an ancestor) is in RESTART_KEYS, or its description says
 * "(restart)". Paths compare without list markers: `redis.sentinels[].host` is under `redis`.
 */
function needsRestart(path: string, description: string): boolean {
  const plain = path.replaceAll('[]', '');
  return (
    /\(restart\b/.test(description) ||
    RESTART_KEYS.some((key) => plain === key || plain.startsWith(`${key}.`))
  );
}

function typeText(s: JsonSchema): string {
  if (Array.isArray(s.enum)) return s.enum.map((v) => JSON.stringify(v)).join(' | ');
  if (s.type === 'array') {
    const items = (s.items ?? {}) as JsonSchema;
    return `list of ${typeText(items)}`;
  }
  if (s.type === 'object' && typeof s.additionalProperties === 'object' && s.additionalProperties !== null) {
    return `map of ${typeText(s.additionalProperties as JsonSchema)}`;
  }
  const base = typeof s.type === 'string' ? s.type : 'any';
  return `${base}${rangeText(s)}`;
}

/** ` 1024..1048576`, ` ≥ 1`, ` > 0`, ` ≥ 16 chars` — only the bounds that are set. */
function rangeText(s: JsonSchema): string {
  const lo = typeof s.minimum === 'number' ? s.minimum : undefined;
  const hi = typeof s.maximum === 'number' && s.maximum < Number.MAX_SAFE_INTEGER ? s.maximum : undefined;
  const exLo = typeof s.exclusiveMinimum === 'number' ? s.exclusiveMinimum : undefined;
  if (lo !== undefined && hi !== undefined) return ` ${lo}..${hi}`;
  if (exLo !== undefined && hi !== undefined) return ` >${exLo}..${hi}`;
  if (lo !== undefined) return ` ≥ ${lo}`;
  if (exLo !== undefined) return ` > ${exLo}`;
  if (hi !== undefined) return ` ≤ ${hi}`;
  if (typeof s.minLength === 'number') return ` ≥ ${s.minLength} chars`;
  return '';
}

function cell(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ');
}
