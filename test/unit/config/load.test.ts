import { mkdtempSync, writeFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import {
  formatConfigError,
  formatPath,
  loadConfigFile,
  MAX_CONFIG_BYTES,
  parseConfigText,
  type ConfigError,
  type LoadResult,
} from '../../../src/config/load.js';
import { listConfigKeys } from '../../../src/config/reference.js';

const MINIMAL = `listen: { host: 0.0.0.0, port: 8080 }
admin: { host: 127.0.0.1, port: 9091 }
sites:
  - name: blog
    hosts: ["blog.example.com", "*"]
    origins:
      - url: http://127.0.0.1:3000
`;

function errorsOf(r: LoadResult): ConfigError[] {
  if (r.ok) throw new Error('expected the config to be refused');
  return r.errors;
}

/** Value at a reference path like `sites[].origins[].weight`, taking element 0 of each list. */
function valueAtRowPath(config: unknown, path: string): { found: boolean; value?: unknown } {
  let v: unknown = config;
  for (const part of path.split('.')) {
    const isList = part.endsWith('[]');
    const key = isList ? part.slice(0, -2) : part;
    if (v === null || typeof v !== 'object' || !(key in v)) return { found: false };
    v = (v as Record<string, unknown>)[key];
    if (isList) {
      if (!Array.isArray(v) || v.length === 0) return { found: false };
      v = v[0];
    }
  }
  return { found: true, value: v };
}

describe('parseConfigText: the minimal config', () => {
  const result = parseConfigText(MINIMAL, 'gateway.yaml', { env: {} });

  test('validates', () => {
    expect(result.ok ? [] : result.errors.map(formatConfigError)).toEqual([]);
  });

  test('fills every default the schema declares for keys the file leaves out', () => {
    if (!result.ok) throw new Error('minimal config refused');
    const checked: string[] = [];
    for (const row of listConfigKeys()) {
      if (row.isSection || row.defaultText === '—' || row.defaultText === 'required') continue;
      const at = valueAtRowPath(result.config, row.path);
      if (!at.found) continue; // inside a list the file leaves empty (routes, priorities)
      if (row.path === 'acme.storageDir') {
        // A path: resolved against the config file's directory like every file the config names.
        expect(at.value).toBe(resolve(JSON.parse(row.defaultText) as string));
        checked.push(row.path);
        continue;
      }
      expect({ path: row.path, value: at.value }).toEqual({ path: row.path, value: JSON.parse(row.defaultText) });
      checked.push(row.path);
    }
    // The walk must really reach nested defaults inside the site and its origin.
    expect(checked).toContain('cache.collapse.maxWaiters');
    expect(checked).toContain('sites[].healthCheck.intervalMs');
    expect(checked).toContain('sites[].origins[].weight');
  });

  test('keeps the values the file gives', () => {
    if (!result.ok) throw new Error('minimal config refused');
    expect(result.config.sites[0]?.hosts).toEqual(['blog.example.com', '*']);
    expect(result.config.sites[0]?.origins[0]?.url).toBe('http://127.0.0.1:3000');
    expect(result.config.admin.port).toBe(9091);
    expect(result.config.redis).toBeUndefined();
  });

  test('returns a deep-frozen config', () => {
    if (!result.ok) throw new Error('minimal config refused');
    const c = result.config;
    for (const obj of [c, c.listen, c.sites, c.sites[0], c.sites[0]?.origins[0], c.cache.collapse, c.trustedProxies]) {
      expect(Object.isFrozen(obj)).toBe(true);
    }
    expect(() => {
      (c.listen as { port: number }).port = 1;
    }).toThrow(TypeError);
  });
});

interface Expected {
  line: number;
  col: number;
  path: string;
  message: RegExp;
}

const site = (extra = '') => `sites:
  - name: blog
    hosts: ["*"]
    origins:
      - url: http://127.0.0.1:3000
${extra}`;

const errorCases: Array<{ name: string; text: string; env?: Record<string, string>; expected: Expected[] }> = [
  {
    name: 'a typo in a key points at that key and suggests the right one',
    text: MINIMAL.replace('origins:', 'orgins:'),
    expected: [
      { line: 4, col: 5, path: 'sites[0].origins', message: /^missing required key "origins"$/ },
      { line: 6, col: 5, path: 'sites[0].orgins', message: /^unknown key "orgins" \(did you mean "origins"\?\)$/ },
    ],
  },
  {
    name: 'each unknown key in one map is its own error at the key',
    text: `listen: { host: 0.0.0.0, prot: 1, hots: x }\n${site()}`,
    expected: [
      { line: 1, col: 26, path: 'listen.prot', message: /unknown key "prot" \(did you mean "port"\?\)/ },
      { line: 1, col: 35, path: 'listen.hots', message: /unknown key "hots" \(did you mean "host"\?\)/ },
    ],
  },
  {
    name: 'an unknown key far from any known one gets no suggestion',
    text: `${site()}colour: blue\n`,
    expected: [{ line: 6, col: 1, path: 'colour', message: /^unknown key "colour"$/ }],
  },
  {
    name: 'a wrong type points at the value',
    text: `listen:\n  port: "80x"\n${site()}`,
    expected: [{ line: 2, col: 9, path: 'listen.port', message: /^expected number, got string "80x"$/ }],
  },
  {
    name: 'a trustedProxies entry that is not an address or CIDR is refused (it threw in the middle of applying a reload)',
    text: `trustedProxies: [127.0.0.1, localhost, 10.0.0.0/33]\n${site()}`,
    expected: [
      { line: 1, col: 29, path: 'trustedProxies[1]', message: /must be an IP address or CIDR/ },
      { line: 1, col: 40, path: 'trustedProxies[2]', message: /must be an IP address or CIDR/ },
    ],
  },
  {
    name: 'a duration past the longest timer Node can set is refused (it fired after 1 ms)',
    text: site('    timeouts: { responseHeadersMs: 2592000000 }\n    healthCheck: { intervalMs: 2147483648 }\n'),
    expected: [
      { line: 6, col: 36, path: 'sites[0].timeouts.responseHeadersMs', message: /at most 2147483647 ms/ },
      { line: 7, col: 32, path: 'sites[0].healthCheck.intervalMs', message: /at most 2147483647 ms/ },
    ],
  },
  {
    name: 'an out-of-range value points at the value',
    text: site('    routes:\n      - name: r\n        cache: { ttlFloorSeconds: -5 }\n'),
    expected: [{ line: 8, col: 35, path: 'sites[0].routes[0].cache.ttlFloorSeconds', message: />=0/ }],
  },
  {
    name: 'several errors are reported together, in file order',
    text: `log: { level: loud }
limits:
  maxHeaderBytes: 10
sites:
  - name: "bad name!"
    hosts: []
    origins:
      - url: ftp://x
`,
    expected: [
      { line: 1, col: 15, path: 'log.level', message: /fatal/ },
      { line: 3, col: 19, path: 'limits.maxHeaderBytes', message: />=1024/ },
      { line: 5, col: 11, path: 'sites[0].name', message: /letters, digits/ },
      { line: 6, col: 12, path: 'sites[0].hosts', message: /^needs at least 1 item$/ },
      { line: 8, col: 14, path: 'sites[0].origins[0].url', message: /http:\/\/ or https:\/\// },
    ],
  },
  {
    name: 'an origin url without a scheme is an error at the url, not a crash',
    text: 'sites:\n  - name: blog\n    hosts: ["*"]\n    origins:\n      - url: 127.0.0.1:3000\n',
    expected: [
      { line: 5, col: 14, path: 'sites[0].origins[0].url', message: /^Invalid URL$/ },
      { line: 5, col: 14, path: 'sites[0].origins[0].url', message: /http:\/\/ or https:\/\// },
    ],
  },
  {
    name: 'an origin url cut mid-address (`http://127`, a half-written file) is an error, not 0.0.0.127 (config-edit trial)',
    text: 'sites:\n  - name: blog\n    hosts: ["*"]\n    origins:\n      - url: http://127\n      - url: http://0x7f.1:3000\n      - url: http://127.0.0.1:3001\n',
    expected: [
      { line: 5, col: 14, path: 'sites[0].origins[0].url', message: /IPv4 address in full/ },
      { line: 6, col: 14, path: 'sites[0].origins[1].url', message: /IPv4 address in full/ },
    ],
  },
  {
    name: 'a missing required list is reported at the map that should hold it',
    text: 'sites:\n  - name: blog\n    hosts: ["*"]\n',
    expected: [{ line: 2, col: 5, path: 'sites[0].origins', message: /^missing required key "origins"$/ }],
  },
  {
    name: 'a duplicate site name points at the second name',
    text: `${site()}  - name: blog\n    hosts: [b.example]\n    origins: [{ url: "http://127.0.0.1:3001" }]\n`,
    expected: [{ line: 6, col: 11, path: 'sites[1].name', message: /^duplicate site name "blog"$/ }],
  },
  {
    name: 'a bad record key points at the key, not its value',
    text: site('    routes:\n      - name: r\n        cache:\n          negativeTtlSeconds: { "4x4": 10 }\n'),
    expected: [
      { line: 9, col: 33, path: 'sites[0].routes[0].cache.negativeTtlSeconds.4x4', message: /^invalid key: must be an HTTP status code$/ },
    ],
  },
  {
    name: 'a YAML syntax error is reported where the parser stopped',
    text: 'sites:\n  - name: blog\n    hosts: [a, b\n    origins: []\n',
    expected: [{ line: 4, col: 5, path: '(root)', message: /Flow sequence/ }],
  },
  {
    name: 'a duplicate YAML key is an error at the second key',
    text: `listen:\n  port: 1\n  port: 2\n${site()}`,
    expected: [{ line: 3, col: 3, path: '(root)', message: /^duplicate key/ }],
  },
  {
    name: 'a tab used as indentation is an error',
    text: `listen:\n\tport: 1\n${site()}`,
    expected: [{ line: 2, col: 1, path: '(root)', message: /Tabs/ }],
  },
  {
    name: 'more than one YAML document is an error',
    text: `${site()}---\nlog: {}\n`,
    expected: [{ line: 6, col: 1, path: '(root)', message: /more than one YAML document/ }],
  },
  {
    name: 'an alias to an undefined anchor is an error at the alias',
    text: `listen: *nowhere\n${site()}`,
    expected: [{ line: 1, col: 9, path: 'listen', message: /^unknown alias \*nowhere/ }],
  },
  {
    name: 'an unknown YAML tag is an error, and the schema check still runs',
    text: `log: { level: !loud info }\nlisten: { port: "x" }\n${site()}`,
    expected: [
      { line: 1, col: 15, path: '(root)', message: /Unresolved tag: !loud/ },
      { line: 2, col: 17, path: 'listen.port', message: /^expected number, got string "x"$/ },
    ],
  },
  {
    name: 'alias expansion beyond the bound is refused, not expanded',
    text: `x: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\ny: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nz: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nw: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n${site()}`,
    expected: [{ line: 1, col: 1, path: '(root)', message: /[Aa]lias/ }],
  },
  {
    name: 'an empty file says what it needs',
    text: '',
    expected: [{ line: 1, col: 1, path: '(root)', message: /empty.*sites/ }],
  },
  {
    name: 'a file of comments only counts as empty',
    text: '# nothing here\n\n',
    expected: [{ line: 1, col: 1, path: '(root)', message: /empty/ }],
  },
  {
    name: 'a list at the top level is a wrong type at the root',
    text: '- a\n',
    expected: [{ line: 1, col: 1, path: '(root)', message: /^expected object, got a list$/ }],
  },
  {
    name: 'an unset environment variable is an error at that value, next to schema errors',
    text: `admin:\n  purgeToken: "\${NOT_SET_TOKEN}"\nlog: { level: loud }\n${site()}`,
    env: {},
    expected: [
      { line: 2, col: 15, path: 'admin.purgeToken', message: /^environment variable NOT_SET_TOKEN is not set$/ },
      { line: 3, col: 15, path: 'log.level', message: /fatal/ },
    ],
  },
  {
    name: 'an invalid variable name is an error at that value',
    text: `admin:\n  purgeToken: "\${1BAD}-0123456789abcdef"\n${site()}`,
    env: {},
    expected: [{ line: 2, col: 15, path: 'admin.purgeToken', message: /not a valid environment variable name/ }],
  },
  {
    name: 'compression: a media type that is not one, a brotli quality out of range',
    text: `compression:
  types: [text/html, "image png"]
  passThrough: { gzipLevel: 0 }
${site()}`,
    expected: [
      { line: 2, col: 22, path: 'compression.types[1]', message: /must be a media type: type\/subtype, type\/\* or type\/\*\+suffix/ },
      { line: 3, col: 29, path: 'compression.passThrough.gzipLevel', message: />=1/ },
    ],
  },
];

describe('parseConfigText: refused configs', () => {
  test.each(errorCases)('$name', ({ text, env, expected }) => {
    const errors = errorsOf(parseConfigText(text, 'conf/gw.yaml', { env: env ?? {} }));
    expect(errors.map((e) => ({ line: e.line, col: e.col, path: e.path, message: e.message }))).toEqual(
      expected.map((e) => ({ ...e, message: expect.stringMatching(e.message) })),
    );
    for (const e of errors) expect(e.file).toBe('conf/gw.yaml');
  });
});

describe('parseConfigText: environment substitution', () => {
  const env = { TOKEN: 'abcdefghijklmnopqrstuvwxyz', HOST: 'origin.internal', PORT: '3000', FLAG: 'false', DIGITS: '12345678901234567890' };
  const cases: Array<{ name: string; value: string; path: (r: LoadResult) => unknown; expected: unknown }> = [
    {
      name: 'a whole value is replaced',
      value: 'admin:\n  purgeToken: ${TOKEN}\n',
      path: (r) => (r.ok ? r.config.admin.purgeToken : undefined),
      expected: env.TOKEN,
    },
    {
      name: 'references embedded in a longer string are replaced',
      value: '',
      path: (r) => (r.ok ? r.config.sites[0]?.origins[0]?.url : undefined),
      expected: 'http://origin.internal:3000',
    },
    {
      name: '$${ writes a literal ${',
      value: 'admin:\n  purgeToken: "$${TOKEN}-literal-text"\n',
      path: (r) => (r.ok ? r.config.admin.purgeToken : undefined),
      expected: '${TOKEN}-literal-text',
    },
    {
      name: 'a whole reference is read as a number where the schema wants one (port: ${PORT})',
      value: 'listen:\n  port: ${PORT}\nreload: { debounceMs: "${PORT}" }\n',
      path: (r) => (r.ok ? [r.config.listen.port, r.config.reload.debounceMs] : r.errors.map((e) => e.message)),
      expected: [3000, 3000],
    },
    {
      name: 'and as a boolean where the schema wants one',
      value: 'log:\n  access: ${FLAG}\n',
      path: (r) => (r.ok ? r.config.log.access : r.errors.map((e) => e.message)),
      expected: false,
    },
    {
      name: 'a number-like secret stays a string where a string is wanted',
      value: 'admin:\n  purgeToken: ${DIGITS}\n',
      path: (r) => (r.ok ? r.config.admin.purgeToken : r.errors.map((e) => e.message)),
      expected: '12345678901234567890',
    },
    {
      name: 'text that is not a number is still refused as one',
      value: 'reload:\n  debounceMs: ${HOST}\n',
      path: (r) => (r.ok ? 'accepted' : r.errors.map((e) => `${e.path}: ${e.message}`)),
      expected: ['reload.debounceMs: expected number, got string "origin.internal"'],
    },
    {
      name: 'a reference embedded in text is never read as a number',
      value: 'reload:\n  debounceMs: ${PORT}0\n',
      path: (r) => (r.ok ? 'accepted' : r.errors.map((e) => e.path)),
      expected: ['reload.debounceMs'],
    },
  ];
  test.each(cases)('$name', ({ value, path, expected }) => {
    const text = `${value}sites:\n  - name: s\n    hosts: ["*"]\n    origins: [{ url: "http://\${HOST}:\${PORT}" }]\n`;
    expect(path(parseConfigText(text, 'g.yaml', { env }))).toEqual(expected);
  });

  test('a reference inside a flow collection, unquoted, gets one error saying to quote it', () => {
    const errors = errorsOf(parseConfigText(`listen: { port: \${PORT} }\n${site()}`, 'g.yaml', { env }));
    expect(errors.map((e) => [e.line, e.message])).toEqual([[1, expect.stringMatching(/must be quoted \("\$\{NAME\}"\)/)]]);
  });

  test('keys are never substituted', () => {
    const errors = errorsOf(parseConfigText(`\${HOST}: 1\n${site()}`, 'g.yaml', { env }));
    expect(errors.map((e) => e.path)).toEqual(['["${HOST}"]']);
  });

  test('process.env is the default source', () => {
    const name = `CROWDGATE_TEST_${process.pid}`;
    process.env[name] = 'from-process-env-0123456789';
    try {
      const r = parseConfigText(`admin: { purgeToken: "\${${name}}" }\n${site()}`, 'g.yaml');
      expect(r.ok && r.config.admin.purgeToken).toBe('from-process-env-0123456789');
    } finally {
      delete process.env[name];
    }
  });
});

describe('parseConfigText: merge keys and x- blocks', () => {
  test('an anchor under a top-level x- key merges into members with <<, and x- keys are not config', () => {
    const text = [
      'x-member: &member { url: "http://127.0.0.1:3001", weight: 2 }',
      'sites:',
      '  - name: s',
      '    hosts: ["*"]',
      '    origins:',
      '      - <<: *member',
      '      - <<: *member',
      '        url: "http://127.0.0.1:3002"',
      '',
    ].join('\n');
    const r = parseConfigText(text, 'g.yaml', { env: {} });
    expect(r.ok ? r.config.sites[0]!.origins.map((o) => [o.url, o.weight]) : errorsOf(r)).toEqual([
      ['http://127.0.0.1:3001', 2],
      ['http://127.0.0.1:3002', 2],
    ]);
  });

  test('another unknown top-level key is still refused', () => {
    expect(errorsOf(parseConfigText(`y-member: 1\n${site()}`, 'g.yaml', { env: {} })).map((e) => e.message)).toEqual([expect.stringMatching(/unknown key "y-member"/)]);
  });
});

describe('loadConfigFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'crowdgate-load-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('reads and validates a file, labelling errors with its path', async () => {
    const file = join(dir, 'typo.yaml');
    writeFileSync(file, MINIMAL.replace('origins:', 'orgins:'));
    const errors = errorsOf(await loadConfigFile(file, { env: {} }));
    expect(errors.map(formatConfigError)).toContain(
      `${file}:6:5 sites[0].orgins: unknown key "orgins" (did you mean "origins"?)`,
    );
  });

  test('loads a valid file', async () => {
    const file = join(dir, 'ok.yaml');
    writeFileSync(file, MINIMAL);
    const r = await loadConfigFile(file, { env: {} });
    expect(r.ok && r.config.sites[0]?.name).toBe('blog');
  });

  test.each([
    { name: 'a missing file', file: join(dir, 'nope.yaml'), message: 'cannot read config: file not found' },
    { name: 'a directory', file: dir, message: 'cannot read config: is a directory, not a file' },
  ])('$name is one error at 1:1', async ({ file, message }) => {
    expect(errorsOf(await loadConfigFile(file))).toEqual([{ file, line: 1, col: 1, path: '(root)', message }]);
  });

  test('a file past MAX_CONFIG_BYTES is refused without being read or parsed (a valid config with 1 MiB of comments appended)', async () => {
    const file = join(dir, 'huge.yaml');
    writeFileSync(file, MINIMAL + '#'.repeat(MAX_CONFIG_BYTES) + '\n');
    const size = statSync(file).size;
    expect(errorsOf(await loadConfigFile(file, { env: {} }))).toEqual([
      { file, line: 1, col: 1, path: '(root)', message: `config file is ${size} bytes; the most read is ${MAX_CONFIG_BYTES} (1 MiB)` },
    ]);
    writeFileSync(file, MINIMAL + '#'.repeat(1000) + '\n'); // a comment of ordinary size is fine
    expect((await loadConfigFile(file, { env: {} })).ok).toBe(true);
  });
});

describe('formatting', () => {
  test('formatConfigError is file:line:col path: message', () => {
    expect(
      formatConfigError({ file: 'config/gateway.yaml', line: 12, col: 7, path: 'sites[0].orgins', message: 'unknown key "orgins"' }),
    ).toBe('config/gateway.yaml:12:7 sites[0].orgins: unknown key "orgins"');
  });

  test.each([
    { path: [], expected: '(root)' },
    { path: ['sites', 0, 'routes', 1, 'cache', 'ttlFloorSeconds'], expected: 'sites[0].routes[1].cache.ttlFloorSeconds' },
    { path: ['cache', 'negativeTtlSeconds', '404'], expected: 'cache.negativeTtlSeconds.404' },
    { path: ['a', 'b c'], expected: 'a["b c"]' },
  ])('formatPath($path) is $expected', ({ path, expected }) => {
    expect(formatPath(path)).toBe(expected);
  });
});

describe('parseConfigText: warnings', () => {
  test('a host no request can match (a scheme or a path) is a warning at it; a port or trailing dot is not', () => {
    const text = ['sites:', '  - name: docs', '    hosts: ["docs.example.com:80", "docs.example.org.", "https://docs.example.net"]', '    origins: [{ url: "http://127.0.0.1:1" }]', ''].join('\n');
    const r = parseConfigText(text, 'gw.yaml', { env: {} });
    expect(r.ok).toBe(true);
    expect(r.ok && r.warnings?.map(formatConfigError)).toEqual([
      expect.stringMatching(/^gw\.yaml:3:57 sites\[0\]\.hosts\[2\]: "https:\/\/docs\.example\.net" is not a host name[^]*no request matches it/),
    ]);
  });
  test('a host listed by two sites is a warning at the second listing (the first site gets its requests)', () => {
    const text = [
      'sites:',
      '  - name: wiki',
      '    hosts: ["wiki.local"]',
      '    origins: [{ url: "http://127.0.0.1:1" }]',
      '  - name: docs',
      '    hosts: ["docs.local", "WIKI.local"]',
      '    origins: [{ url: "http://127.0.0.1:2" }]',
      '',
    ].join('\n');
    const r = parseConfigText(text, 'gw.yaml', { env: {} });
    expect(r.ok).toBe(true);
    expect(r.ok && r.warnings?.map(formatConfigError)).toEqual([
      expect.stringMatching(/^gw\.yaml:6:27 sites\[1\]\.hosts\[1\]: "WIKI\.local" is also listed by site "wiki", which comes first/),
    ]);
  });
  test('a cached route matched by a query parameter its key leaves out is a warning at it (its fills never send it); a never-cached one is not', () => {
    const text = [
      'sites:',
      '  - name: wiki',
      '    hosts: ["*"]',
      '    origins: [{ url: "http://127.0.0.1:1" }]',
      '    routes:',
      '      - name: special',
      '        match: { query: { title: "Special:*", utm_x: "*", q: "*" } }',
      '        cache: { key: { query: drop, params: [q] } }',
      '      - name: export',
      '        match: { query: { format: "*" } }',
      '        cache: { enabled: false, key: { query: none } }',
      '      - name: kept',
      '        match: { query: { page: "*" } }',
      '        cache: { key: { query: keep, params: [page] } }',
      '',
    ].join('\n');
    const r = parseConfigText(text, 'gw.yaml', { env: {} });
    expect(r.ok).toBe(true);
    expect(r.ok && r.warnings?.map(formatConfigError)).toEqual([
      expect.stringMatching(/^gw\.yaml:7:54 sites\[0\]\.routes\[0\]\.match\.query\.utm_x: this route's cache key leaves out the parameter "utm_x"/),
      expect.stringMatching(/^gw\.yaml:7:62 sites\[0\]\.routes\[0\]\.match\.query\.q: this route's cache key leaves out the parameter "q"/),
    ]);
  });
  test('a fillHeaders.drop entry every fill sends all the same (User-Agent, Accept*) is a warning at it (new-user trial: it did nothing, silently)', () => {
    const text = ['sites:', '  - name: s', '    hosts: ["*"]', '    origins: [{ url: "http://127.0.0.1:1" }]', '    fillHeaders: { drop: [X-Original-URL, User-Agent, accept-language] }', ''].join('\n');
    const r = parseConfigText(text, 'gw.yaml', { env: {} });
    expect(r.ok).toBe(true);
    expect(r.ok && r.warnings?.map(formatConfigError)).toEqual([
      expect.stringMatching(/^gw\.yaml:5:43 sites\[0\]\.fillHeaders\.drop\[1\]: User-Agent is sent on every fill whatever this list says/),
      expect.stringMatching(/^gw\.yaml:5:55 sites\[0\]\.fillHeaders\.drop\[2\]: accept-language is sent on every fill/),
    ]);
  });
  test('a query condition naming no parameter, or __proto__, is refused; another prototype name is a plain parameter', () => {
    const empty = ['sites:', '  - name: s', '    hosts: ["*"]', '    origins: [{ url: "http://127.0.0.1:1" }]', '    routes:', '      - { name: r, match: { query: {} } }', ''].join('\n');
    const r = parseConfigText(empty, 'gw.yaml', { env: {} });
    expect(r.ok).toBe(false);
    expect(!r.ok && r.errors.map(formatConfigError).join('\n')).toMatch(/match\.query.*lists no parameter/);
    const proto = parseConfigText(empty.replace('query: {}', 'query: { __proto__: "x", constructor: "*" }'), 'gw.yaml', { env: {} });
    expect(proto.ok).toBe(false); // refused, not dropped (the route matched without it)
    expect(!proto.ok && proto.errors.map(formatConfigError).join('\n')).toMatch(/match\.query\.__proto__: "__proto__" cannot be a key/);
    const p = parseConfigText(empty.replace('query: {}', 'query: { constructor: "*", hasOwnProperty: "1" }'), 'gw.yaml', { env: {} });
    expect(p.ok).toBe(true);
    expect(p.ok && Object.keys(p.config.sites[0]!.routes[0]!.match.query!).sort()).toEqual(['constructor', 'hasOwnProperty']);
  });
});
