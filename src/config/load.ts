/**
 * YAML text -> validated, deep-frozen GatewayConfig, or every error found, each located as
 * `file:line:col path: message` so an editor can jump to it.
 *
 * Owns: reading the file, YAML parsing (syntax errors, duplicate keys, tabs, unresolved
 * aliases), `${ENV_NAME}` substitution, mapping each zod issue back to the YAML node it is
 * about, and freezing the result. It does not own the shape or defaults (schema.ts), nor hold
 * or swap the live config (source.ts, reloader.ts).
 *
 * Where an error points:
 * - unknown key            -> the key itself, one error per unknown key (with a "did you mean")
 * - missing required key   -> the map that should hold it (or its nearest existing ancestor)
 * - wrong type / bad value -> the value
 * - YAML syntax            -> where the parser stopped (then nothing else is checked)
 * - unknown YAML tag       -> the tag; the schema check still runs
 * - unreadable or missing file, empty file -> line 1, col 1
 * Lines and columns are 1-based.
 *
 * Environment substitution: `${NAME}` inside any string value (whole or embedded, in plain or
 * quoted scalars) is replaced by the variable's value; `$${` writes a literal `${`. An unset
 * variable is an error at that value. Substitution yields a string; a value that is one whole
 * `${NAME}` where the schema wants a number or a boolean is read as one when its text is
 * (`port: ${PORT}`), so a secret that looks like a number stays a string where a string is
 * wanted. Keys are never substituted. Top-level keys starting with `x-` are ignored (a place for
 * anchors), and YAML merge keys (`<<: *anchor`) apply.
 */
import { readFileSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import {
  type Alias,
  LineCounter,
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  parseDocument,
  type Document,
  type Node as YamlNode,
  type Pair,
  type Scalar,
} from 'yaml';
import type { z } from 'zod';
import { certificateFilesOf, gatewayConfigSchema, type GatewayConfig } from './schema.js';
import { acmeHostnames } from '../tls/acme/hostnames.js';
import { readCertificateFiles } from '../tls/material.js';
import { whyUnreadable } from './unreadable.js';
import { readHostEntry } from '../server/site-router.js';
import { keyKeepsParam } from '../cache/cache-key.js';
import { FILL_ALWAYS } from '../http/facts.js';

export interface ConfigError {
  file: string;
  /** 1-based. */
  line: number;
  /** 1-based. */
  col: number;
  /** Dotted path with indices, e.g. `sites[0].routes[1].cache.ttlFloorSeconds`; `(root)` for the root. */
  path: string;
  message: string;
}

/** `warnings` (e.g. an expired certificate) never refuse a config; --check-config prints them. */
export type LoadResult = { ok: true; config: GatewayConfig; warnings?: ConfigError[] } | { ok: false; errors: ConfigError[] };

export interface ParseOptions {
  /** Variables for `${NAME}` substitution; defaults to process.env. */
  env?: Readonly<Record<string, string | undefined>>;
  /** `false`: do not read the files the config names (certificates); their paths are still resolved. */
  checkFiles?: boolean;
}

type PathSegment = string | number;

/** `file:line:col path: message` — the one format for logs, CLI output and tests. */
export function formatConfigError(e: ConfigError): string {
  return `${e.file}:${e.line}:${e.col} ${e.path}: ${e.message}`;
}

/** Reads and validates a config file. Never throws: an unreadable file is a ConfigError. */
export async function loadConfigFile(file: string, options: ParseOptions = {}): Promise<LoadResult> {
  let text: string;
  try {
    // Parsing runs on the event loop that serves requests: a 50 MB file (a paste gone wrong, a
    // log written into it) held every request for 3.5 s during a reload. A config is a few KB.
    const size = (await stat(file)).size;
    if (size > MAX_CONFIG_BYTES)
      return {
        ok: false,
        errors: [{ file, line: 1, col: 1, path: '(root)', message: `config file is ${size} bytes; the most read is ${MAX_CONFIG_BYTES} (1 MiB)` }],
      };
    text = await readFile(file, 'utf8');
  } catch (err) {
    return { ok: false, errors: [{ file, line: 1, col: 1, path: '(root)', message: `cannot read config: ${whyUnreadable(err)}` }] };
  }
  return parseConfigText(text, file, options);
}

/** The largest config file read (see loadConfigFile). */
export const MAX_CONFIG_BYTES = 1024 * 1024;

/** Parses and validates YAML text; `file` only labels the errors. */
export function parseConfigText(text: string, file: string, options: ParseOptions = {}): LoadResult {
  const env = options.env ?? process.env;
  const lineCounter = new LineCounter();
  // `merge`: YAML merge keys (`<<: *defaults`), which operators write to share a block.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, merge: true });
  const at = (offset: number | undefined): { line: number; col: number } =>
    offset === undefined ? { line: 1, col: 1 } : lineCounter.linePos(offset);

  const errors: ConfigError[] = [];
  const lines = text.split('\n');
  const hinted = new Set<number>();
  for (const e of [...doc.errors, ...doc.warnings]) {
    const where = at(e.pos[0]);
    // `{ port: ${PORT} }`: in a flow collection `{` opens a map, and the parser's own messages
    // (several per line) do not say so. One error per such line, with what to write.
    if (doc.errors.includes(e as never) && /[{[][^\n]*[\s,:[{]\$\{/.test(lines[where.line - 1] ?? '')) {
      if (hinted.has(where.line)) continue;
      hinted.add(where.line);
      errors.push({ file, ...where, path: '(root)', message: 'a ${NAME} inside { } or [ ] must be quoted ("${NAME}"), or written in block style on its own line' });
      continue;
    }
    errors.push({ file, ...where, path: '(root)', message: yamlMessage(e.code, e.message) });
  }
  // What follows such a line is the parser lost, not more mistakes: only the hints and what came before.
  if (hinted.size > 0) {
    const first = Math.min(...hinted);
    const kept = errors.filter((e) => e.line < first || (hinted.has(e.line) && e.message.startsWith('a ${NAME}')));
    errors.length = 0;
    errors.push(...kept);
  }
  if (doc.errors.length === 0 && doc.contents === null) {
    errors.push({
      file,
      line: 1,
      col: 1,
      path: '(root)',
      message: 'config is empty; it needs at least `sites` (see config/gateway.yaml)',
    });
  }
  // A syntax error leaves the tree unreliable, so stop; warnings (unknown tags) let the schema
  // check go on and report the rest.
  if (doc.errors.length > 0 || doc.contents === null) return { ok: false, errors: sortErrors(errors) };

  // An unresolved alias makes toJS throw, so it stops here; everything else goes on to the
  // schema so that one run reports every error.
  const aliasErrors = checkAliases(doc, file, at);
  if (aliasErrors.length > 0) return { ok: false, errors: sortErrors([...errors, ...aliasErrors]) };
  const whole = new Set<Scalar>();
  const envErrors = substituteEnv(doc, file, env, at, whole);
  errors.push(...envErrors);
  // A value whose variable is unset has already been reported; its schema error would repeat it.
  const reported = new Set(envErrors.map((e) => e.path));

  let raw: unknown;
  try {
    // maxAliasCount bounds alias expansion ("billion laughs"): a config has no need for more.
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    errors.push({ file, line: 1, col: 1, path: '(root)', message: (err as Error).message });
    return { ok: false, errors: sortErrors(errors) };
  }
  dropExtensionKeys(raw);
  errors.push(...reservedKeyErrors(raw, doc, file, at));
  let parsed = gatewayConfigSchema.safeParse(raw, { reportInput: true });
  // A value that is a whole `${NAME}` is a string; where the schema wants a number or a boolean
  // and the variable's text is one (`port: ${PORT}`), it is read as such, and checked again.
  if (!parsed.success && whole.size > 0 && typeSubstituted(parsed.error.issues, doc, whole)) {
    raw = doc.toJS({ maxAliasCount: 100 });
    dropExtensionKeys(raw);
    parsed = gatewayConfigSchema.safeParse(raw, { reportInput: true });
  }
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      errors.push(...issueToErrors(issue, doc, file, at).filter((e) => !reported.has(e.path)));
    }
  }
  if (errors.length > 0) return { ok: false, errors: sortErrors(errors) };
  if (!parsed.success) throw new Error('unreachable: schema failed without issues');
  const warnings: ConfigError[] = [
    ...acmeHostWarnings(parsed.data, doc, file, at),
    ...unmatchableHostWarnings(parsed.data, doc, file, at),
    ...duplicateHostWarnings(parsed.data, doc, file, at),
    ...unsentQueryMatchWarnings(parsed.data, doc, file, at),
    ...alwaysSentDropWarnings(parsed.data, doc, file, at),
  ];
  resolveFilePaths(parsed.data, dirname(resolve(file)));
  if (options.checkFiles !== false) errors.push(...checkCertificateFiles(parsed.data, doc, file, at, warnings));
  if (errors.length > 0) return { ok: false, errors: sortErrors(errors) };
  return warnings.length > 0 ? { ok: true, config: deepFreeze(parsed.data), warnings } : { ok: true, config: deepFreeze(parsed.data) };
}

/** File paths relative to the config file's directory become absolute (the process may run elsewhere): certificates, ACME storage and CA bundle. */
function resolveFilePaths(config: GatewayConfig, base: string): void {
  const absolute = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  for (const site of config.sites) {
    const tls = site.tls as { certFile?: string; keyFile?: string } | undefined;
    if (!tls) continue;
    if (tls.certFile !== undefined) tls.certFile = absolute(tls.certFile);
    if (tls.keyFile !== undefined) tls.keyFile = absolute(tls.keyFile);
  }
  const acme = config.acme as { storageDir: string; caBundleFile?: string };
  acme.storageDir = absolute(acme.storageDir);
  if (acme.caBundleFile !== undefined) acme.caBundleFile = absolute(acme.caBundleFile);
}

/**
 * Each site's certificate and key files, read and checked as the HTTPS listener will use them
 * (tls/material.ts): an unreadable file, no PEM, a key that is not the certificate's is an
 * error at the key that names the file; an expired certificate is a warning. `acme.caBundleFile`
 * must hold a PEM certificate.
 */
function checkCertificateFiles(config: GatewayConfig, doc: Document, file: string, at: At, warnings: ConfigError[]): ConfigError[] {
  const errors: ConfigError[] = [];
  const where = (path: PathSegment[]) => ({ file, ...at(offsetOf(locate(doc, path))), path: formatPath(path) });
  config.sites.forEach((site, i) => {
    const files = certificateFilesOf(site);
    if (!files) return;
    const result = readCertificateFiles(files.certFile, files.keyFile);
    if (!result.ok) for (const p of result.problems) errors.push({ ...where(['sites', i, 'tls', p.field]), message: p.message });
    else for (const w of result.warnings) warnings.push({ ...where(['sites', i, 'tls', 'certFile']), message: w });
  });
  const bundle = config.acme.caBundleFile;
  if (bundle !== undefined) {
    const problem = checkCaBundle(bundle);
    if (problem) errors.push({ ...where(['acme', 'caBundleFile']), message: problem });
  }
  return errors;
}

/** Why a CA bundle file cannot be used, or undefined when it holds at least one PEM certificate. */
function checkCaBundle(bundle: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(bundle, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return `cannot read ${bundle}: ${code === 'ENOENT' ? 'file not found' : code === 'EACCES' ? 'permission denied' : (err as Error).message}`;
  }
  if (!/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.test(text)) return `${bundle} holds no PEM certificate`;
  return undefined;
}

/**
 * A host listed by two sites: the first site wins and the second's claim is dead (nginx warns
 * "conflicting server name ... ignored"). A warning at the second listing.
 */
function duplicateHostWarnings(config: GatewayConfig, doc: Document, file: string, at: At): ConfigError[] {
  const warnings: ConfigError[] = [];
  const owner = new Map<string, string>();
  config.sites.forEach((site, i) => {
    site.hosts.forEach((host, j) => {
      const entry = readHostEntry(host);
      if (entry === undefined) return; // unmatchableHostWarnings'
      const name = entry.kind === 'exact' ? entry.host : entry.kind === 'wildcard' ? `*${entry.suffix}` : '*';
      const first = owner.get(name);
      if (first === undefined) owner.set(name, site.name);
      else if (first !== site.name) {
        const path = ['sites', i, 'hosts', j];
        warnings.push({
          file,
          ...at(offsetOf(locate(doc, path))),
          path: formatPath(path),
          message: `${JSON.stringify(host)} is also listed by site "${first}", which comes first and gets its requests: this listing never matches`,
        });
      }
    });
  });
  return warnings;
}

/**
 * A key `__proto__` anywhere: the schema passes over it unseen (a route's `match.query` lost
 * the condition, and the route matched more than written). An error at it.
 */
function reservedKeyErrors(raw: unknown, doc: Document, file: string, at: At): ConfigError[] {
  const errors: ConfigError[] = [];
  const walk = (value: unknown, path: (string | number)[]) => {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, [...path, i]));
    else if (value !== null && typeof value === 'object') {
      for (const key of Object.keys(value)) {
        if (key === '__proto__')
          errors.push({ file, ...at(offsetOf(locate(doc, path))), path: formatPath([...path, key]), message: '"__proto__" cannot be a key (a name JavaScript objects reserve)' });
        else walk((value as Record<string, unknown>)[key], [...path, key]);
      }
    }
  };
  walk(raw, []);
  return errors;
}

/**
 * A cached route matched by a query parameter its key leaves out (`query: none`, not kept, a
 * tracking parameter): its fills send the origin the key's query, without that parameter, so
 * the origin answers another page than the one the route was chosen for. A warning at it.
 */
function unsentQueryMatchWarnings(config: GatewayConfig, doc: Document, file: string, at: At): ConfigError[] {
  const warnings: ConfigError[] = [];
  config.sites.forEach((site, i) => {
    site.routes.forEach((route, j) => {
      if (!route.cache.enabled || route.match.query === undefined) return;
      for (const name of Object.keys(route.match.query)) {
        if (keyKeepsParam(name, route.cache.key)) continue;
        const path = ['sites', i, 'routes', j, 'match', 'query', name];
        warnings.push({
          file,
          ...at(offsetOf(locate(doc, path))),
          path: formatPath(path),
          message: `this route's cache key leaves out the parameter "${name}" (cache.key.query, params or dropTracking), so its fills never send it to the origin: keep it in the key, or set cache.enabled: false`,
        });
      }
    });
  });
  return warnings;
}

/**
 * A `fillHeaders.drop` entry every fill sends all the same (User-Agent, Accept*, Host): a
 * warning at it. An operator whose gitweb snapshots were stored per browser dropped
 * User-Agent, and nothing said it did nothing (new-user trial).
 */
function alwaysSentDropWarnings(config: GatewayConfig, doc: Document, file: string, at: At): ConfigError[] {
  const warnings: ConfigError[] = [];
  config.sites.forEach((site, i) => {
    site.fillHeaders.drop.forEach((name, j) => {
      if (!FILL_ALWAYS.has(name.toLowerCase())) return;
      const path = ['sites', i, 'fillHeaders', 'drop', j];
      warnings.push({
        file,
        ...at(offsetOf(locate(doc, path))),
        path: formatPath(path),
        message: `${name} is sent on every fill whatever this list says (the variants of the cache key read it): dropping it does nothing`,
      });
    });
  });
  return warnings;
}

/**
 * A `hosts` entry no Host can match (a scheme, a path, a space: `https://docs.example.com`):
 * a warning at it (nginx warns of a server name's "suspicious symbols"). Not an error, so a
 * config that loaded before still loads; the rest of the site's names still serve.
 */
function unmatchableHostWarnings(config: GatewayConfig, doc: Document, file: string, at: At): ConfigError[] {
  const warnings: ConfigError[] = [];
  config.sites.forEach((site, i) => {
    site.hosts.forEach((host, j) => {
      if (readHostEntry(host) !== undefined) return;
      const path = ['sites', i, 'hosts', j];
      warnings.push({
        file,
        ...at(offsetOf(locate(doc, path))),
        path: formatPath(path),
        message: `${JSON.stringify(host)} is not a host name, "*.name" or "*": no request matches it (write the name alone, without scheme or path, e.g. "docs.example.com")`,
      });
    });
  });
  return warnings;
}

/** Hosts of a `tls.acme` site that its certificate leaves out ("*", wildcards, IP addresses): warnings at each. */
function acmeHostWarnings(config: GatewayConfig, doc: Document, file: string, at: At): ConfigError[] {
  const warnings: ConfigError[] = [];
  config.sites.forEach((site, i) => {
    if (site.tls?.acme !== true) return;
    for (const skipped of acmeHostnames(site.hosts).skipped) {
      const path = ['sites', i, 'hosts', skipped.index];
      warnings.push({
        file,
        ...at(offsetOf(locate(doc, path))),
        path: formatPath(path),
        message: `${JSON.stringify(skipped.host)} is left out of the ACME certificate: ${skipped.reason}; HTTPS clients using it get a certificate that does not name it`,
      });
    }
  });
  return warnings;
}

/** Freezes every nested object and array in place and returns the same value. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** `sites[0].routes[1].cache.ttlFloorSeconds`; keys that are not simple words are quoted. */
export function formatPath(path: readonly PathSegment[]): string {
  if (path.length === 0) return '(root)';
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z0-9_-]+$/.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

type At = (offset: number | undefined) => { line: number; col: number };

function sortErrors(errors: ConfigError[]): ConfigError[] {
  return errors.sort((a, b) => a.line - b.line || a.col - b.col);
}

function yamlMessage(code: string, message: string): string {
  // The library's text suggests an API call; a config author needs the fact.
  if (code === 'MULTIPLE_DOCS') return 'contains more than one YAML document (`---`); use one';
  if (code === 'DUPLICATE_KEY') return 'duplicate key: map keys must be unique';
  return message;
}

/** Calls `fn` for every scalar or alias in value position (never keys), with its path. */
function walkValues(
  node: unknown,
  path: PathSegment[],
  fn: (node: Scalar | Alias, path: readonly PathSegment[]) => void,
): void {
  if (isMap(node)) {
    for (const pair of node.items) {
      const key = keyText(pair.key);
      walkValues(pair.value, [...path, key ?? '?'], fn);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => walkValues(item, [...path, i], fn));
  } else if (isScalar(node) || isAlias(node)) {
    fn(node, path);
  }
}

function checkAliases(doc: Document, file: string, at: At): ConfigError[] {
  const errors: ConfigError[] = [];
  walkValues(doc.contents, [], (node, path) => {
    if (isAlias(node) && node.resolve(doc) === undefined) {
      errors.push({
        file,
        ...at(node.range?.[0]),
        path: formatPath(path),
        message: `unknown alias *${node.source} (define &${node.source} before using it)`,
      });
    }
  });
  return errors;
}

/** `$${` (an escaped literal) or `${NAME}`. */
const ENV_REF = /\$\$\{|\$\{([^}]*)\}/g;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Replaces `${NAME}` in string values (never keys) in place; returns the failures. Scalars
 * whose whole value was one reference go in `whole` (typeSubstituted may read them as numbers).
 */
function substituteEnv(
  doc: Document,
  file: string,
  env: Readonly<Record<string, string | undefined>>,
  at: At,
  whole: Set<Scalar>,
): ConfigError[] {
  const errors: ConfigError[] = [];
  walkValues(doc.contents, [], (node, path) => {
    if (!isScalar(node) || typeof node.value !== 'string' || !node.value.includes('$')) return;
    const where = { file, ...at(node.range?.[0]), path: formatPath(path) };
    const before = errors.length;
    if (/^\$\{[^}]*\}$/.test(node.value.trim())) whole.add(node);
    node.value = node.value.replace(ENV_REF, (match: string, name: string | undefined) => {
      if (match === '$${') return '${';
      const trimmed = (name ?? '').trim();
      if (!ENV_NAME.test(trimmed)) {
        errors.push({ ...where, message: `"\${${name}}" is not a valid environment variable name` });
        return match;
      }
      const value = env[trimmed];
      if (value === undefined) {
        errors.push({ ...where, message: `environment variable ${trimmed} is not set` });
        return match;
      }
      return value;
    });
    if (errors.length > before) whole.delete(node);
  });
  return errors;
}

/**
 * For each issue "expected number (or boolean), got a string" at a scalar that was a whole
 * `${NAME}`, types the scalar when its text is a number (or true/false); true when any was.
 */
function typeSubstituted(issues: readonly z.core.$ZodIssue[], doc: Document, whole: ReadonlySet<Scalar>): boolean {
  let typed = false;
  for (const issue of issues) {
    if (issue.code !== 'invalid_type' || typeof issue.input !== 'string') continue;
    const { node } = locate(doc, issue.path as PathSegment[]);
    if (!isScalar(node) || !whole.has(node) || typeof node.value !== 'string') continue;
    const text = node.value.trim();
    if (issue.expected === 'number' && /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) {
      node.value = Number(text);
      typed = true;
    } else if (issue.expected === 'boolean' && /^(true|false)$/i.test(text)) {
      node.value = text.toLowerCase() === 'true';
      typed = true;
    }
  }
  return typed;
}

/**
 * Top-level keys starting with `x-` are the file's own (Compose's convention): a place for
 * anchors to merge elsewhere (`x-origin: &origin {...}`), dropped before the schema check.
 */
function dropExtensionKeys(raw: unknown): void {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return;
  for (const key of Object.keys(raw)) if (key.startsWith('x-')) delete (raw as Record<string, unknown>)[key];
}

interface Located {
  /** The deepest node that exists along the path. */
  node: YamlNode | null;
  /** The pair whose value is `node`, when `node` is a map value. */
  pair: Pair | null;
  /** How many path segments were found in the document. */
  depth: number;
}

/** Follows a zod issue path through the YAML document as far as it exists. */
function locate(doc: Document, path: readonly PathSegment[]): Located {
  let node: YamlNode | null = deref(doc, doc.contents as YamlNode | null);
  let pair: Pair | null = null;
  let depth = 0;
  for (const seg of path) {
    if (isMap(node)) {
      const found = node.items.find((p) => isPair(p) && keyText(p.key) === String(seg));
      if (!found) break;
      pair = found as Pair;
      node = deref(doc, (found.value as YamlNode | null) ?? null);
      if (node === null) {
        // `key:` with no value: point at the key.
        depth++;
        break;
      }
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg] as YamlNode | undefined;
      if (item === undefined) break;
      pair = null;
      node = deref(doc, item);
    } else break;
    depth++;
  }
  return { node, pair, depth };
}

function deref(doc: Document, node: YamlNode | null): YamlNode | null {
  if (node && isAlias(node)) return ((node as Alias).resolve(doc) as YamlNode | undefined) ?? node;
  return node;
}

function keyText(key: unknown): string | undefined {
  if (isScalar(key)) return String(key.value);
  if (typeof key === 'string' || typeof key === 'number') return String(key);
  return undefined;
}

function offsetOf(located: Located): number | undefined {
  if (located.node?.range) return located.node.range[0];
  const key = located.pair?.key as YamlNode | undefined;
  return key?.range?.[0] ?? undefined;
}

function issueToErrors(issue: z.core.$ZodIssue, doc: Document, file: string, at: At): ConfigError[] {
  const path = issue.path.filter((s): s is PathSegment => typeof s !== 'symbol');

  if (issue.code === 'unrecognized_keys') {
    const parent = locate(doc, path);
    return issue.keys.map((key) => {
      const pair =
        isMap(parent.node) && parent.depth === path.length
          ? (parent.node.items.find((p) => isPair(p) && keyText(p.key) === key) as Pair | undefined)
          : undefined;
      const keyNode = pair?.key as YamlNode | undefined;
      const hint = suggestKey(key, knownKeysAt(path));
      return {
        file,
        ...at(keyNode?.range?.[0] ?? offsetOf(parent)),
        path: formatPath([...path, key]),
        message: `unknown key "${key}"${hint ? ` (did you mean "${hint}"?)` : ''}`,
      };
    });
  }

  const located = locate(doc, path);
  const isMissing = located.depth < path.length;
  let message = issue.message;
  if (issue.code === 'invalid_type') {
    if (issue.input === undefined && isMissing && located.depth === path.length - 1) {
      message = `missing required key "${String(path[path.length - 1])}"`;
    } else if (issue.input === undefined && isMissing) {
      message = `missing ${issue.expected} (the enclosing ${formatPath(path.slice(0, located.depth + 1))} is not set)`;
    } else {
      message = `expected ${issue.expected}, got ${describeValue(issue.input)}`;
    }
  } else if (issue.code === 'too_small' && issue.origin === 'array') {
    message = `needs at least ${String(issue.minimum)} item${issue.minimum === 1 ? '' : 's'}`;
  } else if (issue.code === 'invalid_key') {
    // A record key is wrong: point at the key, not its value.
    const keyNode = located.pair?.key as YamlNode | undefined;
    const inner = issue.issues.map((i) => i.message).join('; ');
    return [{ file, ...at(keyNode?.range?.[0] ?? offsetOf(located)), path: formatPath(path), message: `invalid key: ${inner}` }];
  }
  return [{ file, ...at(offsetOf(located)), path: formatPath(path), message }];
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a map';
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  return `${typeof v} ${String(v)}`;
}

// --- "did you mean": the keys the schema allows at a path --------------------------------------

interface ZodDefLike {
  type: string;
  innerType?: ZodLike;
  in?: ZodLike;
  element?: ZodLike;
  valueType?: ZodLike;
  shape?: Record<string, ZodLike>;
}
interface ZodLike {
  _zod: { def: ZodDefLike };
}

function unwrap(s: ZodLike | undefined): ZodLike | undefined {
  let cur = s;
  for (let i = 0; cur && i < 16; i++) {
    const def = cur._zod.def;
    if (def.innerType) cur = def.innerType;
    else if (def.type === 'pipe' && def.in) cur = def.in;
    else return cur;
  }
  return cur;
}

/** Keys an object schema at `path` accepts; empty when the path is not an object. */
export function knownKeysAt(path: readonly PathSegment[]): string[] {
  let s = unwrap(gatewayConfigSchema as unknown as ZodLike);
  for (const seg of path) {
    const def = s?._zod.def;
    if (!def) return [];
    if (def.type === 'object' && def.shape && typeof seg === 'string') s = unwrap(def.shape[seg]);
    else if (def.type === 'array') s = unwrap(def.element);
    else if (def.type === 'record') s = unwrap(def.valueType);
    else return [];
  }
  const def = s?._zod.def;
  return def?.type === 'object' && def.shape ? Object.keys(def.shape) : [];
}

function suggestKey(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = editDistance(key.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  // Suggest only near misses: at most 2 edits, and fewer than a third of the key's length.
  return best !== undefined && bestDistance <= Math.min(2, Math.ceil(key.length / 3)) ? best : undefined;
}

/** Levenshtein distance (insert, delete, substitute each cost 1). */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + cost);
    }
    prev = cur;
  }
  return prev[b.length]!;
}
