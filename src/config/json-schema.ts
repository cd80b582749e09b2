/**
 * The JSON Schema for config/gateway.yaml, generated from the zod schema so editors
 * (yaml-language-server, VS Code) can complete and check the file as it is typed.
 *
 * Owns the generation and its stable text form. It does not define the shape (schema.ts);
 * `npm run schema` writes the result to config/gateway.schema.json and a unit test fails when
 * the committed file is stale.
 */
import { z } from 'zod';
import { gatewayConfigSchema } from './schema.js';

export const JSON_SCHEMA_ID = 'urn:crowdgate:config:gateway';

/** Formats zod emits that are not JSON Schema formats; the `pattern` next to them carries the rule. */
const NON_STANDARD_FORMATS = new Set(['starts_with', 'ends_with', 'includes']);

export type JsonSchema = { [key: string]: unknown };

/**
 * The schema of what a user may WRITE (`io: 'input'`): keys with defaults are optional and
 * show their default.
 */
export function makeConfigJsonSchema(): JsonSchema {
  const generated = z.toJSONSchema(gatewayConfigSchema, { io: 'input' }) as JsonSchema;
  const { $schema, ...rest } = generated;
  return stripNonStandardFormats({
    $schema,
    $id: JSON_SCHEMA_ID,
    title: 'crowdgate gateway configuration',
    description:
      'config/gateway.yaml. Generated from src/config/schema.ts by `npm run schema`; do not edit by hand.',
    ...rest,
  }) as JsonSchema;
}

/** The exact text of config/gateway.schema.json: 2-space indent, trailing newline. */
export function renderConfigJsonSchema(): string {
  return `${JSON.stringify(makeConfigJsonSchema(), null, 2)}\n`;
}

function stripNonStandardFormats(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(stripNonStandardFormats);
  if (node === null || typeof node !== 'object') return node;
  const out: JsonSchema = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === 'format' && typeof v === 'string' && NON_STANDARD_FORMATS.has(v)) continue;
    out[k] = stripNonStandardFormats(v);
  }
  return out;
}
