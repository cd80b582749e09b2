import { describe, expect, it } from 'vitest';
import zlib from 'node:zlib';
import { MAX_SCANNED_INPUTS, SEARCH_BUDGET_BYTES, normalise, reflectedInputs, repeatsAddress, textsOf, valueForLog, varyingAlsoOn, type Finding } from '../../../src/cache/reflection.js';

const MAX = 1 << 20;

describe('reflectedInputs', () => {
  it('finds a value in the body or in a response header, and nothing else', async () => {
    const body = Buffer.from('<a href="//evil.example/x">home</a>');
    const inputs = [
      ['x-host', 'evil.example'],
      ['x-next', '/after-login'],
      ['x-quiet', 'not-in-the-page'],
    ] as const;
    expect(await reflectedInputs(inputs, { location: '/after-login?x=1' }, body, MAX)).toEqual(['x-host', 'x-next']);
    expect(await reflectedInputs([['x-quiet', 'not-in-the-page']], {}, body, MAX)).toEqual([]);
  });

  it('finds a header\'s name of the client\'s choosing as the origin lists it, whatever its value (attacker trial: a defacement in names of one-character headers)', async () => {
    const inputs = [['x-this-site-was-defaced-visit-evil-example-com', '1'], ['x-call-support-now', '1']] as const;
    // getallheaders() in Title-Case, a JSON of the names as sent, PHP's $_SERVER.
    for (const body of ['X-This-Site-Was-Defaced-Visit-Evil-Example-Com: 1\nX-Call-Support-Now: 1', '{"x-this-site-was-defaced-visit-evil-example-com":"1","x-call-support-now":"1"}', "'HTTP_X_THIS_SITE_WAS_DEFACED_VISIT_EVIL_EXAMPLE_COM' => '1', 'HTTP_X_CALL_SUPPORT_NOW' => '1'"])
      expect(await reflectedInputs(inputs, {}, Buffer.from(body), MAX), body).toEqual(['x-call-support-now', 'x-this-site-was-defaced-visit-evil-example-com']);
    expect(await reflectedInputs(inputs, { 'x-echo': 'x-call-support-now' }, Buffer.from('<p>page</p>'), MAX)).toEqual(['x-call-support-now']);
    expect(await reflectedInputs(inputs, {}, Buffer.from('<p>call support now</p>'), MAX)).toEqual([]);
    // A name that starts like a CDN's but is not one of its own (review: `CF-` was skipped whole).
    expect(await reflectedInputs([['cf-this-site-was-defaced', '1'], ['cf-ray', '8abc']], {}, Buffer.from('cf-this-site-was-defaced: 1, cf-ray: 8abc'), MAX)).toEqual(['cf-ray', 'cf-this-site-was-defaced']);
    expect(await reflectedInputs([['cf-ray', '1']], {}, Buffer.from('cf-ray'), MAX)).toEqual([]);
    // A name of one- and two-letter words (review).
    const spelled = 'ha-ck-ed-by-ev-il-vi-si-t-ev-il-co-m';
    expect(await reflectedInputs([[spelled, '1']], {}, Buffer.from('<pre>Host: example\nHa-Ck-Ed-By-Ev-Il-Vi-Si-T-Ev-Il-Co-M: 1\n</pre>'), MAX)).toEqual([spelled]);
    expect(await reflectedInputs([[spelled, '1']], {}, Buffer.from('<p>ha ck ed</p>'), MAX)).toEqual([]);
    // A body that cannot be decoded counts the headers whose values are looked for, not one looked for by its name alone (the conformance suite's Req-Num: 1), unless its raw bytes hold the name.
    expect(await reflectedInputs([['req-num', '1'], ['x-anything', 'abcdef']], { 'content-encoding': 'made-up' }, Buffer.from('???'), MAX)).toEqual(['x-anything']);
    expect(await reflectedInputs([['x-call-support-now', '1']], { 'content-encoding': 'made-up' }, Buffer.from('X-Call-Support-Now: 1'), MAX)).toEqual(['x-call-support-now']);
    // Standard names are no text of the client's: a page that says "origin" or "upgrade-insecure-requests" repeats nothing.
    expect(await reflectedInputs([['origin', 'x'], ['upgrade-insecure-requests', '1']], {}, Buffer.from('<meta content="upgrade-insecure-requests"> origin'), MAX)).toEqual([]);
  });

  it('does not look for a header\'s name where the answer lists header names (WordPress\'s REST answers allow X-WP-Nonce: new-user trial); its value still, and the name elsewhere', async () => {
    const rest = {
      'access-control-allow-headers': 'Authorization, X-WP-Nonce, Content-Disposition, Content-MD5, Content-Type',
      'access-control-expose-headers': 'X-WP-Total, X-WP-TotalPages, Link',
      vary: 'Origin, X-WP-Nonce',
      'content-type': 'application/json; charset=UTF-8',
    };
    const json = Buffer.from('[{"id":1,"title":{"rendered":"Hello world!"}}]');
    expect(await reflectedInputs([['x-wp-nonce', 'dc56af0c06']], rest, json, MAX)).toEqual([]);
    expect(await reflectedInputs([['x-wp-total', '1']], rest, json, MAX)).toEqual([]);
    // Unreadable body: the name alone is looked for in the other headers and the raw bytes.
    expect(await reflectedInputs([['x-wp-nonce', '1']], { ...rest, 'content-encoding': 'made-up' }, Buffer.from('???'), MAX)).toEqual([]);
    // The value, in a list of names too; the name in another header or the body.
    expect(await reflectedInputs([['x-wp-nonce', 'dc56af0c06']], { ...rest, 'access-control-allow-headers': 'dc56af0c06' }, json, MAX)).toEqual(['x-wp-nonce']);
    expect(await reflectedInputs([['x-wp-nonce', '1']], { ...rest, 'x-debug': 'x-wp-nonce' }, json, MAX)).toEqual(['x-wp-nonce']);
    expect(await reflectedInputs([['x-wp-nonce', '1']], rest, Buffer.from('{"X-WP-Nonce":"1"}'), MAX)).toEqual(['x-wp-nonce']);
  });

  it('says how each input counted: its value or its name found, unsearched, or a User-Agent with markup', async () => {
    const how = new Map<string, Finding>();
    const inputs = [
      ['x-host', 'evil.example'],
      ['x-call-support-now', '1'],
      ['user-agent', 'Evil <b>'],
      ['x-quiet', 'not-in-the-page'],
    ] as const;
    const page = Buffer.from('<a href="//evil.example/x">X-Call-Support-Now: 1</a>');
    expect(await reflectedInputs(inputs, {}, page, MAX, how)).toEqual(['user-agent', 'x-call-support-now', 'x-host']);
    expect(Object.fromEntries(how)).toEqual({ 'x-host': 'value', 'x-call-support-now': 'name', 'user-agent': 'markup' });
    // Base64 of the value is the value; a body that cannot be read leaves the values unsearched.
    how.clear();
    expect(await reflectedInputs([['x-token', 'abcdefghijkl']], {}, Buffer.from(`{"h":"${Buffer.from('abcdefghijkl').toString('base64')}"}`), MAX, how)).toEqual(['x-token']);
    expect(Object.fromEntries(how)).toEqual({ 'x-token': 'value' });
    how.clear();
    expect(await reflectedInputs([['x-anything', 'abcdef'], ['x-call-support-now', '1']], { 'content-encoding': 'made-up' }, Buffer.from('X-Call-Support-Now'), MAX, how)).toEqual(['x-anything', 'x-call-support-now']);
    expect(Object.fromEntries(how)).toEqual({ 'x-anything': 'unsearched', 'x-call-support-now': 'name' });
    // Past MAX_SCANNED_INPUTS of their own choosing: unsearched.
    how.clear();
    const many = Array.from({ length: MAX_SCANNED_INPUTS + 1 }, (_, i) => [`x-h${i}`, `value-${i}`] as const);
    expect(await reflectedInputs(many, {}, Buffer.from('<p>page</p>'), MAX, how)).toHaveLength(MAX_SCANNED_INPUTS + 1);
    expect(new Set(how.values())).toEqual(new Set(['unsearched']));
  });

  it('shows a browser header\'s value in the log, cut at 64 characters, and any other header\'s length only (it may be a token: X-WP-Nonce)', () => {
    expect(valueForLog('user-agent', 'node')).toBe('node');
    expect(valueForLog('accept-language', 'en-x-evil')).toBe('en-x-evil');
    expect(valueForLog('user-agent', 'M'.repeat(100))).toBe(`${'M'.repeat(64)}…`);
    expect(valueForLog('x-wp-nonce', 'dc56af0c06')).toBe('(10 characters)');
    expect(valueForLog('x-api-version', '2')).toBe('(1 character)');
  });

  it('finds the value lowercased, percent-, form-, HTML- and JSON-encoded', async () => {
    const value = 'Evil "One" <b>&co';
    for (const form of [value.toLowerCase(), encodeURIComponent(value), 'Evil &quot;One&quot; &lt;b&gt;&amp;co', JSON.stringify(value)]) {
      expect(await reflectedInputs([['x-a', value]], {}, Buffer.from(`page ${form} end`), MAX), form).toEqual(['x-a']);
    }
    expect(await reflectedInputs([['x-a', 'evil example']], {}, Buffer.from('q=evil+example'), MAX)).toEqual(['x-a']);
  });

  it('finds the spellings frameworks use: parts, case, spaces, decoding, HTML, JS and JSON escapes of any kind', async () => {
    const cases: [string, string][] = [
      ['evil.example, x', '<script src="//evil.example/a.js">'], // the first member, as an origin splits it
      ['https://evil.example/x.js; junk', '<script src="https://evil.example/x.js">'], // the first ';' part
      ['evil.example', '//EVIL.EXAMPLE/'],
      ['evil   .example', 'evil .example'],
      ['%3Csvg%20onload%3D1%3E', '<svg onload=1>'],
      ["evil.example/'x", "src='https://evil.example/&#039;x'"],
      ['say "hi"', 'say &#34;hi&#34;'],
      ['evil.example/x', 'https:\\/\\/evil.example\\/x'],
      // Go encoding/json, Rails to_json, Django json_script.
      ['https://evil.example/x.js?a=1&b=2', '{"u":"https://evil.example/x.js?a=1\\u0026b=2"}'],
      ['</script><script>alert(1)</script>', '{"u":"\\u003C/script\\u003E\\u003Cscript\\u003Ealert(1)\\u003C/script\\u003E"}'],
      // Mustache / Handlebars, Go html/template, XML.
      ['https://evil.example/a=b', 'https:&#x2F;&#x2F;evil.example&#x2F;a&#x3D;b'],
      ['a+b=evil.example', 'a&#43;b=evil.example'],
      ["it's evil.example", 'it&apos;s evil.example'],
      // A partial escaper that leaves quotes alone.
      ["<img src=x onerror='alert(1)'>", "&lt;img src=x onerror='alert(1)'&gt;"],
      // Python json.dumps (ASCII only); lowercased, then escaped.
      ['caf\u00e9 evil.example', 'caf\\u00e9 evil.example'],
      ['HTTPS://EVIL.EXAMPLE/?a=1&b=2', 'https://evil.example/?a=1&amp;b=2'],
    ];
    for (const [value, page] of cases) expect(await reflectedInputs([['x-a', value]], {}, Buffer.from(page), MAX), `${value} in ${page}`).toEqual(['x-a']);
    expect(normalise('A&amp;B\\u003c%3E+c')).toBe('a&b<> c');
  });

  it('finds a value with bytes past ASCII copied as the raw bytes Node read as latin1', async () => {
    const value = Buffer.from('<svg/onload=alert(1)>\xe9', 'latin1').toString('latin1');
    const page = Buffer.concat([Buffer.from('<p>'), Buffer.from(value, 'latin1'), Buffer.from('</p>')]);
    expect(await reflectedInputs([['x-a', value]], {}, page, MAX)).toEqual(['x-a']);
  });

  it('does not take a browser\'s Accept* for a reflection: well-formed members alone, */*, the answer\'s own Content-Type', async () => {
    const page = Buffer.from('<html lang="en-US"><meta http-equiv="Content-Type" content="text/html"><style>a*/*b{}</style>');
    const headers = { 'content-type': 'text/html; charset=utf-8', 'content-language': 'en-US' };
    const browser = [
      ['accept', 'text/html,application/xhtml+xml,*/*;q=0.8'],
      ['accept-language', 'en-US,en;q=0.9'],
      ['user-agent', 'Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0'],
    ] as const;
    expect(await reflectedInputs(browser, headers, page, MAX)).toEqual([]);
    expect(await reflectedInputs([['accept', '*/*'], ['accept', 'text/html']], headers, page, MAX)).toEqual([]);
    expect(await reflectedInputs([['accept-language', 'en-US']], headers, Buffer.from('<p>hello</p>'), MAX)).toEqual([]);
    // A member no browser sends is looked for on its own, parameters included.
    const xss = 'xx"><script>alert(1)</script>';
    expect(await reflectedInputs([['accept-language', `${xss},en`]], headers, Buffer.from(`<html lang="${xss}">`), MAX)).toEqual(['accept-language']);
    expect(textsOf('accept', 'text/html;x=<script>alert(1)</script>')).toContain('x=<script>alert(1)</script>');
    expect(textsOf('accept-language', 'en;q="<svg/onload=alert(1)>"')).toContain('q="<svg/onload=alert(1)>"');
    expect(textsOf('accept-charset', "x'+alert`1`+'")).toContain("x'+alert`1`+'");
    expect(textsOf('accept', 'text/html,application/xhtml+xml;q=0.9,*/*;q=0.8')).toEqual([]);
    // A header named like a property of every object is looked for like any (it threw: attacker trial).
    expect(textsOf('constructor', 'xyzzy123')).toEqual(['xyzzy123']);
    expect(textsOf('__proto__', 'abc, def')).toEqual(['abc, def', 'abc', 'def']);
  });

  it('takes as a browser\'s only what Chrome, Firefox and Safari send, on a page that repeats it', async () => {
    // Real values (navigation, image, style, script, media, fetch; Chrome 124, Firefox 115/128,
    // Safari 17), in a page that names them all: none is looked for, none splits the page.
    const accepts = [
      'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7',
      'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8',
      'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8',
      'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
      'image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5',
      'video/webm,video/ogg,video/*;q=0.9,application/ogg;q=0.7,audio/*;q=0.6,*/*;q=0.5',
      'application/font-woff2;q=1.0,application/font-woff;q=0.9,*/*;q=0.8',
      'image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5',
      'text/css,*/*;q=0.1',
      'application/json, text/plain, */*',
      'application/json, text/javascript, */*; q=0.01',
      'text/event-stream',
      '*/*',
    ];
    const languages = ['en-US,en;q=0.9', 'en-US,en;q=0.5', 'de,en-US;q=0.7,en;q=0.3', 'en-GB,en;q=0.9', 'es-419,es;q=0.9', 'zh-Hans-CN,zh-CN;q=0.9,zh;q=0.8', 'fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7', '*'];
    const charsets = ['ISO-8859-1,utf-8;q=0.7,*;q=0.3', 'windows-1251,utf-8;q=0.7,*;q=0.7', 'utf-8'];
    for (const [name, values] of [['accept', accepts], ['accept-language', languages], ['accept-charset', charsets]] as const) {
      for (const value of values) expect(textsOf(name, value), `${name}: ${value}`).toEqual([]);
    }
    const page = Buffer.from(`<html lang="en-US"><meta charset="ISO-8859-1"><p>${[...accepts, ...languages, ...charsets].join('<br>')}</p>`);
    const headers = { 'content-type': 'text/html; charset=utf-8', 'content-language': 'en-US' };
    for (const [a, l, c] of [[0, 0, 0], [3, 2, 1], [7, 5, 2]] as const) {
      const inputs = [['accept', accepts[a]!], ['accept-language', languages[l]!], ['accept-charset', charsets[c]!]] as const;
      expect(await reflectedInputs(inputs, headers, page, MAX), inputs.join(' ')).toEqual([]);
    }
  });

  it('looks for Accept* values shaped loosely like a browser\'s: any type, any parameter, private use, host names', async () => {
    const planted: [string, string, string][] = [
      ['accept-language', 'en-x-pwned-by-attacker-evil-com', '<html lang="en-x-pwned-by-attacker-evil-com">'],
      ['accept-language', 'en-US-evilcom', '<html lang="en-US-evilcom">'], // a BCP 47 variant
      ['accept-language', 'en-a-bbbbbbbb', '<html lang="en-a-bbbbbbbb">'], // an extension
      ['accept', 'evil.example.com/attackerpath;token=planted123', '<p>evil.example.com/attackerpath;token=planted123</p>'],
      ['accept', 'text/html;token=planted123', '<a href="?token=planted123">'],
      ['accept', 'application/vnd.evil-example-com+json', '<p>application/vnd.evil-example-com+json</p>'],
      ['accept', 'text/html;q=0.9;v=evilcom', '<p>v=evilcom</p>'],
      ['accept', 'text/html;charset=evil.example.com', '<p>You asked for text/html;charset=evil.example.com</p>'],
      ['accept-charset', 'evil.example.com:1337', '<script src="//evil.example.com:1337/x.js">'],
      ['accept-charset', 'utf-8;q=0.9;evil=planted', '<p>evil=planted</p>'],
    ];
    for (const [name, value, page] of planted) {
      expect(await reflectedInputs([[name, value]], { 'content-type': 'text/html' }, Buffer.from(page), MAX), `${name}: ${value}`).toEqual([name]);
    }
  });

  it('finds a value base64- or base64url-encoded, alone or inside a JSON of all headers, at any alignment', async () => {
    const value = '<script src=//evil.example/x.js?a=1></script>';
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    const b64url = (s: string) => Buffer.from(s).toString('base64url');
    // Some alignment of the value has a `+` or `/`, so base64url spells it otherwise.
    expect(['', 'a', 'ab'].some((p) => b64(p + value).replace(/=+$/, '') !== b64url(p + value))).toBe(true);
    for (const before of ['', 'a', 'ab']) {
      for (const after of ['', 'x', 'xy']) {
        for (const encode of [b64, b64url]) {
          const page = `<div data-v="${encode(before + value + after)}"></div>`;
          expect(await reflectedInputs([['x-a', value]], {}, Buffer.from(page), MAX), page).toEqual(['x-a']);
        }
      }
    }
    // A JSON of all the headers (quotes in the value escaped), base64-encoded; as PHP writes it
    // in JSON (`\/`); in a URL (percent-encoded); in a response header.
    const evil = '<img src=x onerror="alert(1)">';
    const all = b64(JSON.stringify({ host: 'a.example', 'x-evil': evil, accept: '*/*' }));
    expect(await reflectedInputs([['x-evil', evil]], {}, Buffer.from(`<script>var h = JSON.parse(atob("${all}"));</script>`), MAX)).toEqual(['x-evil']);
    const slashy = b64(`a${value}`);
    expect(slashy).toContain('/'); // in the value's core: `L3guanM/YT0x`
    expect(await reflectedInputs([['x-a', value]], {}, Buffer.from(JSON.stringify({ v: slashy }).replace(/\//g, '\\/')), MAX)).toEqual(['x-a']);
    expect(await reflectedInputs([['x-a', value]], {}, Buffer.from(`<a href="/go?v=${encodeURIComponent(slashy)}">`), MAX)).toEqual(['x-a']);
    expect(await reflectedInputs([['x-a', value]], { 'x-debug': b64(`x-a: ${value}`) }, Buffer.from('<p>hi</p>'), MAX)).toEqual(['x-a']);
    expect(await reflectedInputs([['user-agent', `Mozilla/5.0 (${value})`]], {}, Buffer.from(b64(`ua=Mozilla/5.0 (${value})`)), MAX)).toEqual(['user-agent']);
    // Not by chance: a browser's User-Agent and a custom value on a page full of other base64.
    const data = `<img src="data:image/png;base64,${Buffer.from(Array.from({ length: 30000 }, (_, i) => (i * 2654435761) >>> 24)).toString('base64')}">`;
    const chrome = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36';
    expect(await reflectedInputs([['user-agent', chrome], ['x-app-version', '4.12.1']], {}, Buffer.from(data), MAX)).toEqual([]);
  });

  it('searches a body that cannot hold markup (an image) only for raw copies of 8 bytes or more; its headers as any', async () => {
    const png = Buffer.from('\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR EVIL.EXAMPLE evil%2Eexample', 'latin1');
    // Other spellings are not looked for in binary data, nor are short values.
    expect(await reflectedInputs([['x-a', 'evil.example']], { 'content-type': 'image/png' }, png, MAX)).toEqual([]);
    expect(await reflectedInputs([['x-a', 'IHDR']], { 'content-type': 'image/png' }, png, MAX)).toEqual([]);
    expect(await reflectedInputs([['x-a', 'evil.example']], { 'content-type': 'image/png', link: '<//EVIL.EXAMPLE/>' }, png, MAX)).toEqual(['x-a']);
    expect(await reflectedInputs([['x-a', 'evil.example']], { 'content-type': 'image/svg+xml' }, png, MAX)).toEqual(['x-a']);
  });

  it('finds a raw copy of a value of 8 bytes or more in a binary body, decoded when compressed', async () => {
    const noise = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => ((i + seed) * 2654435761) >>> 24));
    const value = '<script>alert(1)</script>';
    const binary = Buffer.concat([noise(200_000, 1), Buffer.from(`headers: x-a=${value}`), noise(1000, 2)]);
    for (const type of ['application/octet-stream', 'image/png', 'application/pdf', 'font/woff2', 'video/mp4']) {
      expect(await reflectedInputs([['x-a', value]], { 'content-type': type }, binary, MAX), type).toEqual(['x-a']);
    }
    expect(await reflectedInputs([['x-a', value]], { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' }, zlib.gzipSync(binary), MAX)).toEqual(['x-a']);
    // A part of the value, and a value past ASCII copied as Node read it or as UTF-8.
    expect(await reflectedInputs([['x-a', `junk; ${value}`]], { 'content-type': 'image/png' }, binary, MAX)).toEqual(['x-a']);
    const accented = 'caf\u00e9.evil.example';
    for (const bytes of [Buffer.from(accented, 'latin1'), Buffer.from(accented, 'utf8')]) {
      expect(await reflectedInputs([['x-a', accented]], { 'content-type': 'image/png' }, Buffer.concat([noise(100, 3), bytes]), MAX)).toEqual(['x-a']);
    }
    // Seven bytes are not looked for; a browser's values are not found in binary noise.
    expect(await reflectedInputs([['x-a', 'abcdefg']], { 'content-type': 'image/png' }, Buffer.from('\x00abcdefg\x00', 'latin1'), MAX)).toEqual([]);
    const chrome = [
      ['user-agent', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36'],
      ['accept', 'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8'],
      ['accept-language', 'en-US,en;q=0.9'],
    ] as const;
    expect(await reflectedInputs(chrome, { 'content-type': 'image/png' }, noise(1 << 20, 4), MAX)).toEqual([]);
  });

  it('ignores values shorter than three characters (they match most pages by chance)', async () => {
    expect(await reflectedInputs([['req-num', '12']], { 'x-count': '12' }, Buffer.from('0123456789'), MAX)).toEqual([]);
    expect(await reflectedInputs([['x-v', '123']], {}, Buffer.from('0123456789'), MAX)).toEqual(['x-v']);
  });

  it('reads a body the origin compressed (gzip, br, deflate), small and large', async () => {
    const page = (n: number) => Buffer.from(`${'filler '.repeat(n)}<script src="//planted.example/x.js"></script>`);
    const input = [['x-cdn', 'planted.example']] as const;
    for (const [coding, encode] of [
      ['gzip', zlib.gzipSync],
      ['br', zlib.brotliCompressSync],
      ['deflate', zlib.deflateSync],
    ] as const) {
      for (const n of [1, 100_000]) {
        expect(await reflectedInputs(input, { 'content-encoding': coding }, encode(page(n)), MAX), `${coding} ${n}`).toEqual(['x-cdn']);
      }
    }
  });

  it('counts every input as repeated when the body cannot be read or there are too many inputs', async () => {
    const inputs = [['x-b', 'bbb'], ['x-a', 'aaa']] as const;
    const plain = Buffer.from('nothing here');
    expect(await reflectedInputs(inputs, { 'content-encoding': 'zstd' }, plain, MAX)).toEqual(['x-a', 'x-b']);
    expect(await reflectedInputs(inputs, { 'content-encoding': 'gzip' }, plain, MAX)).toEqual(['x-a', 'x-b']);
    // A compression bomb: more than the bound once decoded.
    expect(await reflectedInputs(inputs, { 'content-encoding': 'gzip' }, zlib.gzipSync(Buffer.alloc(4096)), 1024)).toEqual(['x-a', 'x-b']);
    const many = Array.from({ length: MAX_SCANNED_INPUTS + 1 }, (_, i) => [`x-h${i}`, `value-${i}`] as const);
    expect(await reflectedInputs(many, {}, plain, MAX)).toHaveLength(MAX_SCANNED_INPUTS + 1);
    expect(await reflectedInputs(many.slice(1), {}, plain, MAX)).toEqual([]);
    // User-Agent and Accept* are searched whatever the number of others, never assumed.
    const browser = [['user-agent', 'Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0'], ['accept', 'text/html']] as const;
    expect(await reflectedInputs([...many, ...browser], {}, plain, MAX)).toEqual(many.map(([n]) => n).sort());
    expect(await reflectedInputs([...many, ['user-agent', 'planted.example']], {}, Buffer.from('//planted.example/'), MAX)).toContain('user-agent');
  });

  it('stops searching at its budget: a header of thousands of parts against a large page counts as repeated, unsearched', async () => {
    // 3 000 four-letter parts, each starting with common letters: the attack that held the
    // event loop 10 s on a 2 MiB page, when every part was looked for three times.
    const f = 'etnoriu';
    const rare = 'QZXJKVWYqzxjkvwy';
    const parts: string[] = [];
    for (const w of f) for (const x of f) for (const y of rare) for (const z of rare) parts.push(w + x + y + z);
    const header = parts.slice(0, 3000).join(',');
    const page = Buffer.from('<p>' + 'lorem ipsum dolor sit amet, consectetur adipiscing elit. '.repeat(36_000) + '</p>'); // 2 MiB
    expect(page.length * 3000).toBeGreaterThan(SEARCH_BUDGET_BYTES);
    let turns = 0;
    const ticking = setInterval(() => turns++, 0);
    const found = await reflectedInputs([['x-a', header], ['x-quiet', 'not-in-the-page']], {}, page, 8 << 20);
    clearInterval(ticking);
    expect(found).toEqual(['x-a', 'x-quiet']);
    expect(turns).toBeGreaterThan(0); // the search gave the event loop turns as it went
    // Within the budget the same page is searched as before: an absent value is not repeated.
    expect(await reflectedInputs([['x-quiet', 'not-in-the-page']], {}, page, 8 << 20)).toEqual([]);
    expect(await reflectedInputs([['x-here', 'adipiscing']], {}, page, 8 << 20)).toEqual(['x-here']);
  });

  it("searches a browser's User-Agent and Accept-Language in a large answer too: a 7-14 MB download or page is not each browser's variant (new-user trial, gitweb snapshots)", async () => {
    const firefox = 'Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0';
    const browser = [['user-agent', firefox], ['accept-language', 'en-US,en;q=0.5']] as const;
    // A gzip tarball (random bytes) under its several names, and a large HTML page.
    const random = Buffer.alloc(14 << 20);
    for (let i = 0; i < random.length; i += 4) random.writeUInt32LE((Math.imul(i, 2654435761) ^ (i >>> 7)) >>> 0, i);
    for (const type of ['application/x-gzip', 'application/gzip', 'application/x-tar', 'application/zstd'])
      expect(await reflectedInputs(browser, { 'content-type': type }, random, 32 << 20), type).toEqual([]);
    const page = Buffer.from('<p>' + 'lorem ipsum dolor sit amet, Mozilla Gecko Firefox, consectetur adipiscing elit. '.repeat(95_000) + '</p>'); // 7.4 MB
    expect(page.length * 11).toBeGreaterThan(SEARCH_BUDGET_BYTES);
    const how = new Map<string, Finding>();
    expect(await reflectedInputs(browser, { 'content-type': 'text/html' }, page, 32 << 20, how)).toEqual([]);
    expect(how.size).toBe(0);
    // One that does repeat it is still found, at the end of the page.
    const echoing = Buffer.concat([page, Buffer.from(`<!-- ${firefox} -->`)]);
    expect(await reflectedInputs(browser, { 'content-type': 'text/html' }, echoing, 32 << 20, how)).toEqual(['user-agent']);
    expect(how.get('user-agent')).toBe('value');
  });

  it('reads no body where there is none (a 304 that names a Content-Encoding)', async () => {
    const inputs = [['user-agent', 'Mozilla/5.0 (X11)'], ['x-a', 'aaa']] as const;
    for (const coding of ['gzip', 'br', 'deflate']) expect(await reflectedInputs(inputs, { 'content-encoding': coding, etag: '"v1"' }, Buffer.alloc(0), 0), coding).toEqual([]);
  });

  it('does not split a browser\'s User-Agent, nor look for short texts without three letters or digits in a row', async () => {
    const page = Buffer.from('<a href="/setup-x64.exe">Win64 x64</a> u=0 v1.2.3 (a)');
    expect(await reflectedInputs([['user-agent', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36']], {}, page, MAX)).toEqual([]);
    expect(await reflectedInputs([['x-a', 'u=0']], {}, page, MAX)).toEqual([]);
    expect(await reflectedInputs([['x-v', '1.2.3']], {}, page, MAX)).toEqual([]);
  });

  it('looks for a host or a script without a run of three letters or digits, and for a User-Agent\'s parts that carry markup (attacker trial)', async () => {
    // A script host of short numbers, in a src attribute.
    const host = Buffer.from('<script src="//12.34.56.78/app.js"></script>');
    expect(await reflectedInputs([['x-asset-base', '//12.34.56.78']], {}, host, MAX)).toEqual(['x-asset-base']);
    // Script without a run of three, in a User-Agent an origin writes into a script, HTML-escaped.
    const js = `';[]["fi"+"lt"+"er"]["co"+"ns"+"tr"+"uc"+"to"+"r"]("al"+"er"+"t(do"+"cu"+"me"+"nt.do"+"ma"+"in)")();//`;
    const page = Buffer.from(`<script>var v='${js.replace(/"/g, '&quot;')}';</script>`);
    expect(await reflectedInputs([['user-agent', js]], {}, page, MAX)).toEqual(['user-agent']);
    // One part of a User-Agent, printed alone.
    const ua = 'Mozilla/5.0 (X11; <script src=//evil.example/x.js></script>; rv:128.0) Gecko';
    const part = Buffer.from('<p>Platform: <script src=//evil.example/x.js></script></p>');
    expect(await reflectedInputs([['user-agent', ua]], {}, part, MAX)).toEqual(['user-agent']);
    // A word of it, as a parser that takes the version after `Chrome/` prints it (review): a
    // User-Agent carrying markup is no browser's, and counts as repeated whatever is printed.
    const word = 'Mozilla/5.0 Chrome/<svg/onload=alert(1)> Safari/537.36';
    expect(await reflectedInputs([['user-agent', word]], {}, Buffer.from('<b>version <svg/onload=alert(1)></b>'), MAX)).toEqual(['user-agent']);
    // A host address the origin writes the `//` before (review).
    expect(await reflectedInputs([['x-cdn-host', '12.34.56.78']], {}, host, MAX)).toEqual(['x-cdn-host']);
  });
});

describe('repeatsAddress', () => {
  const body = (s: string) => Buffer.from(s);
  it.each([
    ['an address without a 3-digit part', '10.0.0.5', 'Your IP: 10.0.0.5.', true],
    ['at the start and the end', '93.84.12.45', '93.84.12.45', true],
    ['in a longer address (a link to the intranet host)', '192.168.1.2', '<a href="http://192.168.1.20/">home</a>', false],
    ['with a longer address before it', '10.0.0.5', 'at 110.0.0.5 today', false],
    ['followed by a port', '10.0.0.5', 'http://10.0.0.5:8080/', true],
    ['an IPv6 address', '2001:db8::5', 'you are 2001:db8::5 here', true],
    ['IPv6, colons percent-encoded in a URL', '2001:db8::5', '/whois?ip=2001%3Adb8%3A%3A5', true],
    ['IPv6, a longer one', '2001:db8::5', 'you are 2001:db8::55 here', false],
    ['not there', '10.0.0.5', 'nothing here', false],
  ])('%s', async (_n, address, text, expected) => {
    expect(await repeatsAddress(address, { 'content-type': 'text/html' }, body(text), 1 << 20)).toBe(expected);
  });

  it('looks in the headers, and in a compressed body decoded', async () => {
    expect(await repeatsAddress('10.0.0.5', { 'x-client': '10.0.0.5' }, Buffer.alloc(0), 0)).toBe(true);
    const gz = zlib.gzipSync(Buffer.from('<p>from 10.0.0.5</p>'));
    expect(await repeatsAddress('10.0.0.5', { 'content-encoding': 'gzip', 'content-type': 'text/html' }, gz, 1 << 20)).toBe(true);
  });
});

describe('varyingAlsoOn', () => {
  it('adds the names to the entry\'s Vary list and header, sorted and once', () => {
    const entry = { vary: ['accept-language'], headers: { vary: 'Accept-Language', 'content-type': 'text/html' } };
    const out = varyingAlsoOn(entry, ['x-b', 'accept-language', 'x-a']);
    expect(out.vary).toEqual(['accept-language', 'x-a', 'x-b']);
    expect(out.headers).toEqual({ vary: 'Accept-Language, x-b, x-a', 'content-type': 'text/html' });
    expect(entry.vary).toEqual(['accept-language']); // not changed in place
    expect(varyingAlsoOn({ vary: [], headers: {} }, ['x-a']).headers).toEqual({ vary: 'x-a' });
    expect(varyingAlsoOn(entry, [])).toBe(entry);
  });
});
