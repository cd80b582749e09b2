/**
 * The response head of a cache hit, written without Node's per-request header processing.
 *
 * `res.writeHead(status, headers)` validates every name and value and inspects each one for
 * special meaning (Connection, Content-Length, Date, …) on every response. For a stored entry
 * those headers never change, so this module validates them once per entry into a ready
 * `name: value\r\n` block, and per request only appends the few headers that differ (Age,
 * Cache-Status, X-Request-Id) and the connection-management lines Node would add. Measured side
 * by side on a 1 KiB hit, the head then costs about 3 µs less (README, Benchmarks).
 *
 * It hands the head to Node through OutgoingMessage's `_header` field — the same field
 * `writeHead` fills — so the body, keep-alive handling, pipelining, 'finish' and 'close' stay
 * Node's own. That field and the few flags next to it are internal: `RAW_HEAD_SUPPORTED` checks
 * their shape once at startup on a real ServerResponse, and every caller falls back to
 * `writeHead` when it is false, when a header set beforehand through the public API is one it
 * does not reproduce (the drain path's `Connection: close`; plain fields such as HTTPS's
 * Strict-Transport-Security are written first, where writeHead puts them), or when an entry
 * holds a header this writer does not reproduce byte for byte. HTTP/2 responses never use it.
 * A test compares both writers' bytes on the wire.
 *
 * Owns the head's bytes for entries; respond.ts decides what is sent.
 */
import { IncomingMessage, ServerResponse, STATUS_CODES } from 'node:http';
import { Socket } from 'node:net';

/** The OutgoingMessage internals this writer reads and sets (Node 18–24 keep these names). */
interface RawFields {
  _header: string | null;
  _headerSent: boolean;
  _hasBody: boolean;
  _last: boolean;
  _contentLength: number | null;
  _removedConnection: boolean;
  _defaultKeepAlive: boolean;
  _keepAliveTimeout?: number;
  _maxRequestsPerSocket?: number;
  _expect_continue?: boolean;
  _sent100?: boolean;
  shouldKeepAlive: boolean;
  maxRequestsOnConnectionReached?: boolean;
  chunkedEncoding: boolean;
}

/** Node's symbol for headers set with setHeader(); found by description on a probe response. */
let outHeadersSymbol: symbol | undefined;

function probeSupport(): boolean {
  try {
    const req = new IncomingMessage(new Socket());
    const res = new ServerResponse(req) as unknown as RawFields & Record<symbol, unknown>;
    outHeadersSymbol = Object.getOwnPropertySymbols(res).find((s) => s.description === 'kOutHeaders');
    return (
      outHeadersSymbol !== undefined &&
      res[outHeadersSymbol] === null &&
      res._header === null &&
      res._headerSent === false &&
      res._hasBody === true &&
      res._last === false &&
      res._removedConnection === false &&
      res._defaultKeepAlive === true &&
      res.chunkedEncoding === false &&
      typeof res.shouldKeepAlive === 'boolean' &&
      typeof (res as unknown as { _send?: unknown })._send === 'function'
    );
  } catch {
    return false;
  }
}

/** Whether this Node's OutgoingMessage has the fields the raw writer relies on. */
export const RAW_HEAD_SUPPORTED: boolean = probeSupport();

/** Names whose presence changes what Node writes around them: such entries use writeHead. */
const SPECIAL_NAMES: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'trailer',
  'expect',
  'content-length',
]);

const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Printable ASCII and HTAB only: stricter than Node (no obs-text), so the bytes are unambiguous. */
const VALUE_RE = /^[\t\x20-\x7e]*$/;

/** The static part of an entry's head, validated once. */
export interface HeadBlock {
  /** `name: value\r\n` lines, in the order given. */
  readonly lines: string;
  /** Whether the lines include Date (otherwise the writer adds one, as Node would). */
  readonly hasDate: boolean;
  /** The Content-Length value, when the lines carry one. */
  readonly contentLength: number | null;
  /** The lower-cased names in the lines (a field set beforehand with the same name leaves the head to writeHead). */
  readonly names: ReadonlySet<string>;
}

/**
 * Validates a flat [name, value, …] header list and renders it as header lines; undefined when
 * any name or value is one the raw writer leaves to writeHead (invalid, non-ASCII, or special).
 */
export function makeHeadBlock(flat: ReadonlyArray<string | number | readonly string[]>): HeadBlock | undefined {
  let lines = '';
  let hasDate = false;
  let contentLength: number | null = null;
  const names = new Set<string>();
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i];
    const value = flat[i + 1];
    if (typeof name !== 'string' || !TOKEN_RE.test(name)) return undefined;
    const lower = name.toLowerCase();
    if (SPECIAL_NAMES.has(lower) && !(lower === 'content-length' && typeof value === 'number')) return undefined;
    names.add(lower);
    if (lower === 'date') hasDate = true;
    if (lower === 'content-length') contentLength = value as number;
    const values = Array.isArray(value) ? value : [value];
    if (values.length === 0) return undefined;
    if (values.length > 1 && lower === 'cookie') return undefined; // Node joins these
    for (const v of values) {
      const text = typeof v === 'number' ? String(v) : v;
      if (typeof text !== 'string' || !VALUE_RE.test(text)) return undefined;
      lines += `${name}: ${text}\r\n`;
    }
  }
  return { lines, hasDate, contentLength, names };
}

/**
 * Fields set with setHeader() before the head, as writeHead would write them (first, in the
 * order set); undefined when one must be left to writeHead: a special name, Date, a name the
 * entry also sends (writeHead would let the entry's win), an array or a value out of VALUE_RE.
 */
/** The fields callers pass in `perRequest` (respond.ts): a field set beforehand under one of these names is left to writeHead. */
const PER_REQUEST_NAMES: ReadonlySet<string> = new Set(['age', 'cache-status', 'x-request-id']);

function presetLines(out: Record<string, [string, unknown]>, block: HeadBlock): string | undefined {
  let lines = '';
  for (const lower in out) {
    const [name, value] = out[lower]!;
    if (SPECIAL_NAMES.has(lower) || PER_REQUEST_NAMES.has(lower) || lower === 'date' || block.names.has(lower)) return undefined;
    if (typeof value !== 'string' || !TOKEN_RE.test(name) || !VALUE_RE.test(value)) return undefined;
    lines += `${name}: ${value}\r\n`;
  }
  return lines;
}

/** `HTTP/1.1 <status> <reason>\r\n`, rendered once per status; undefined for an unknown one. */
const statusLines = new Map<number, string>();
function statusLineOf(status: number): string | undefined {
  let line = statusLines.get(status);
  if (line === undefined) {
    const message = STATUS_CODES[status];
    if (message === undefined) return undefined;
    statusLines.set(status, (line = `HTTP/1.1 ${status} ${message}\r\n`));
  }
  return line;
}

/** The keep-alive lines as Node writes them, for the last timeout and max seen (they rarely change). */
let keepAliveFor = { timeoutMs: -1, max: -1, lines: '' };
function keepAliveLines(timeoutMs: number, max: number): string {
  if (timeoutMs !== keepAliveFor.timeoutMs || max !== keepAliveFor.max) {
    let lines = 'Connection: keep-alive\r\n';
    if (timeoutMs) lines += `Keep-Alive: timeout=${Math.floor(timeoutMs / 1000)}${max > 0 ? `, max=${max}` : ''}\r\n`;
    keepAliveFor = { timeoutMs, max, lines };
  }
  return keepAliveFor.lines;
}

let cachedDateSecond = -1;
let cachedDate = '';
/** IMF-fixdate for `nowMs`, rendered once per second. */
function httpDate(nowMs: number): string {
  const second = Math.floor(nowMs / 1000);
  if (second !== cachedDateSecond) {
    cachedDateSecond = second;
    cachedDate = new Date(second * 1000).toUTCString();
  }
  return cachedDate;
}

/**
 * Sets the response head from a block plus per-request lines (each `name: value\r\n`, built
 * from values the caller guarantees are valid), as writeHead + _storeHeader would. Returns
 * false, having changed nothing, when the caller must use writeHead instead.
 */
export function setRawHead(res: ServerResponse, status: number, block: HeadBlock, perRequest: string): boolean {
  // HTTP/2 answers (node:http2's compatibility response) are not HTTP/1.1 bytes on a socket.
  if (!RAW_HEAD_SUPPORTED || !(res instanceof ServerResponse)) return false;
  const r = res as unknown as RawFields & Record<symbol, unknown>;
  if (r._header || r._removedConnection) return false;
  const preset = r[outHeadersSymbol!] as Record<string, [string, unknown]> | null;
  const presetText = preset ? presetLines(preset, block) : '';
  if (presetText === undefined) return false;
  const statusLine = statusLineOf(status);
  if (statusLine === undefined) return false;

  // The rest mirrors writeHead and _storeHeader for a head that carries Content-Length.
  res.statusCode = status;
  res.statusMessage = STATUS_CODES[status]!;
  if (status === 204 || status === 304 || (status >= 100 && status <= 199)) r._hasBody = false;
  if (r._expect_continue && !r._sent100) r.shouldKeepAlive = false;
  let head = statusLine + presetText + block.lines + perRequest;
  if (!block.hasDate) head += `Date: ${httpDate(Date.now())}\r\n`;
  if (!r.shouldKeepAlive) {
    r._last = true;
    head += 'Connection: close\r\n';
  } else if (r.maxRequestsOnConnectionReached) {
    head += 'Connection: close\r\n';
  } else {
    head += keepAliveLines(r._keepAliveTimeout && r._defaultKeepAlive ? r._keepAliveTimeout : 0, ~~(r._maxRequestsPerSocket ?? 0));
  }
  r._contentLength = block.contentLength;
  r._header = head + '\r\n';
  r._headerSent = false;
  return true;
}
