import { describe, expect, test } from 'vitest';
import {
  DELTA_SECONDS_MAX,
  formatHttpDate,
  parseAge,
  parseCacheControl,
  parseHttpDate,
  parseLastModified,
} from '../../../src/cache/cache-control.js';

/** Table-driven tests with each row's full name as the test name. */
function table<T extends { name: string }>(rows: readonly T[], run: (row: T) => void): void {
  for (const row of rows) test(row.name, () => run(row));
}

const SUN_1994 = Date.UTC(1994, 10, 6, 8, 49, 37);

describe('parseCacheControl', () => {
  table([
    { name: '§5.2 directive names are case-insensitive', value: 'Max-Age=60, PUBLIC', directive: 'max-age', seconds: 60 },
    { name: '§5.2 quoted-string delta-seconds is accepted (max-age="5")', value: 'max-age="5"', directive: 'max-age', seconds: 5 },
    { name: '§5.2.2.10 s-maxage parsed beside max-age', value: 'max-age=10, s-maxage=30', directive: 's-maxage', seconds: 30 },
    { name: '§4.2.1 duplicate directive with the same value is used', value: 'max-age=10, max-age=10', directive: 'max-age', seconds: 10 },
    { name: '§4.2.1 duplicate directive with different values reads as stale (0)', value: 'max-age=10, max-age=20', directive: 'max-age', seconds: 0 },
    { name: '§4.2.1 duplicates across field lines are compared too', value: ['max-age=10', 'max-age=99'], directive: 'max-age', seconds: 0 },
    { name: '§4.2.1 invalid (non-integer) max-age reads as stale (0)', value: 'max-age=abc', directive: 'max-age', seconds: 0 },
    { name: '§1.2.2 negative delta-seconds is invalid: stale (0)', value: 'max-age=-5', directive: 'max-age', seconds: 0 },
    { name: '§1.2.2 bare max-age is invalid: stale (0)', value: 'max-age', directive: 'max-age', seconds: 0 },
    { name: '§1.2.2 delta-seconds above 2^31 are capped', value: 'max-age=99999999999999', directive: 'max-age', seconds: DELTA_SECONDS_MAX },
    { name: '§5.2 absent directive is undefined', value: 'public', directive: 'max-age', seconds: undefined },
    { name: '§5.2 missing header has no directives', value: undefined, directive: 'max-age', seconds: undefined },
    { name: '§5.2 whitespace and empty members are tolerated', value: ' , max-age = 7 ,,', directive: 'max-age', seconds: 7 },
  ], ({ value, directive, seconds }) => {
    expect(parseCacheControl(value).deltaSeconds(directive)).toBe(seconds);
  });

  table([
    { name: '§5.2.2.4 bare no-cache has an empty field list', value: 'no-cache', directive: 'no-cache', fields: [] },
    { name: '§5.2.2.4 qualified no-cache lists field names, lowercased', value: 'no-cache="Set-Cookie, X-Foo"', directive: 'no-cache', fields: ['set-cookie', 'x-foo'] },
    { name: '§5.2.2.7 qualified private lists field names', value: 'private="x-user"', directive: 'private', fields: ['x-user'] },
    { name: '§5.2.2.7 token form private=x is accepted', value: 'private=x-user', directive: 'private', fields: ['x-user'] },
    { name: '§4.2.1 bare and qualified together read as bare (most restrictive)', value: 'no-cache="a", no-cache', directive: 'no-cache', fields: [] },
    { name: '§4.2.1 an empty quoted list reads as bare', value: 'private=""', directive: 'private', fields: [] },
    { name: '§5.2 a comma inside the quoted list does not split directives', value: 'no-cache="a, b", max-age=5', directive: 'no-cache', fields: ['a', 'b'] },
    { name: '§5.2 absent field-name directive is undefined', value: 'max-age=5', directive: 'private', fields: undefined },
  ], ({ value, directive, fields }) => {
    expect(parseCacheControl(value).fieldNames(directive)).toEqual(fields);
  });

  test('§5.2 directives after a quoted value with an escaped quote are still parsed', () => {
    const cc = parseCacheControl('ext="a\\"b, c", max-age=9');
    expect(cc.value('ext')).toBe('a"b, c');
    expect(cc.deltaSeconds('max-age')).toBe(9);
    expect(cc.malformed).toBe(false);
  });

  test('RFC 9213 §2.1 unparseable members are skipped and flagged malformed', () => {
    const cc = parseCacheControl('max-age=5 junk, =x, public');
    expect(cc.malformed).toBe(true);
    expect(cc.has('public')).toBe(true);
    expect(cc.has('max-age')).toBe(false);
  });

  test('a member that does not parse still keeps what it forbids (private; max-age=0 stayed public) and nothing it allows', () => {
    const semi = parseCacheControl('private; max-age=0');
    expect(semi.malformed).toBe(true);
    expect(semi.has('private')).toBe(true);
    expect(semi.has('max-age')).toBe(false);
    const spaced = parseCacheControl('private no-store');
    expect(spaced.has('private') && spaced.has('no-store')).toBe(true);
    expect(parseCacheControl('public, no-store no-cache').has('no-cache')).toBe(true);
    expect(parseCacheControl('"no-store"').has('no-store')).toBe(true);
    // must-revalidate is permissive for a request with Authorization (RFC 9111 §3.5): not taken.
    expect(parseCacheControl('max-age=60 must-revalidate').has('must-revalidate')).toBe(false);
    // Unqualified even where a valid member named it with field names (the stricter reading).
    expect(parseCacheControl('private="set-cookie", max-age=60 private').fieldNames('private')).toEqual([]);
    // The word must be whole: a longer token is not it.
    expect(parseCacheControl('x-private-ish junk').has('private')).toBe(false);
    // A directive the member names with a value (no-cache="a" junk) is kept bare: stricter.
    expect(parseCacheControl('no-cache="set-cookie" junk').isBare('no-cache')).toBe(true);
  });

  test('§5.2.1.2 bare max-stale is recognised as bare', () => {
    expect(parseCacheControl('max-stale').isBare('max-stale')).toBe(true);
    expect(parseCacheControl('max-stale=5').isBare('max-stale')).toBe(false);
  });
});

describe('parseHttpDate', () => {
  table([
    { name: 'RFC 9110 §5.6.7 IMF-fixdate', value: 'Sun, 06 Nov 1994 08:49:37 GMT', at: SUN_1994 },
    { name: 'RFC 9110 §5.6.7 obsolete rfc850-date', value: 'Sunday, 06-Nov-94 08:49:37 GMT', at: SUN_1994 },
    { name: 'RFC 9110 §5.6.7 obsolete asctime-date with space-padded day', value: 'Sun Nov  6 08:49:37 1994', at: SUN_1994 },
    { name: 'RFC 9110 §5.6.7 surrounding whitespace is ignored', value: '  Sun, 06 Nov 1994 08:49:37 GMT ', at: SUN_1994 },
    { name: 'RFC 9110 §5.6.7 repeated field uses the first line', value: ['Sun, 06 Nov 1994 08:49:37 GMT', 'x'], at: SUN_1994 },
    { name: 'RFC 9111 §5.3 "0" is not a date', value: '0', at: undefined },
    { name: 'RFC 9110 §5.6.7 garbage is not a date', value: 'tomorrow', at: undefined },
    { name: 'RFC 9110 §5.6.7 non-GMT zone is rejected', value: 'Sun, 06 Nov 1994 08:49:37 PST', at: undefined },
    { name: 'RFC 9110 §5.6.7 impossible day (31 Feb) is rejected', value: 'Mon, 31 Feb 1994 08:49:37 GMT', at: undefined },
    { name: 'RFC 9110 §5.6.7 hour 24 is rejected', value: 'Sun, 06 Nov 1994 24:00:00 GMT', at: undefined },
    { name: 'RFC 9110 §5.6.7 names are case-sensitive', value: 'sun, 06 nov 1994 08:49:37 gmt', at: undefined },
    { name: 'RFC 9110 §5.6.7 missing value', value: undefined, at: undefined },
  ], ({ value, at }) => {
    expect(parseHttpDate(value)).toBe(at);
  });

  test('RFC 9110 §5.6.7 a two-digit year more than 50 years ahead is taken from the past century', () => {
    const ref = Date.UTC(2030, 0, 1);
    expect(parseHttpDate('Friday, 01-Jan-99 00:00:00 GMT', ref)).toBe(Date.UTC(1999, 0, 1));
    expect(parseHttpDate('Saturday, 01-Jan-50 00:00:00 GMT', ref)).toBe(Date.UTC(2050, 0, 1));
    expect(parseHttpDate('Saturday, 01-Jan-50 00:00:00 GMT', Date.UTC(1990, 0, 1))).toBe(Date.UTC(1950, 0, 1));
  });

  test('RFC 9110 §5.6.7 formatHttpDate produces IMF-fixdate that parses back', () => {
    expect(formatHttpDate(SUN_1994)).toBe('Sun, 06 Nov 1994 08:49:37 GMT');
    expect(parseHttpDate(formatHttpDate(1_700_000_000_000))).toBe(1_700_000_000_000);
  });
});

describe('parseLastModified', () => {
  test('reads an IMF-fixdate whose zone is UTC under another name (gitweb: +0000), as well as every HTTP-date; never another zone', () => {
    expect(parseLastModified('Sun, 06 Nov 1994 08:49:37 GMT')).toBe(SUN_1994);
    expect(parseLastModified('Sunday, 06-Nov-94 08:49:37 GMT')).toBe(SUN_1994);
    for (const zone of ['+0000', '-0000', '+00:00', 'UTC', 'UT', 'Z']) expect(parseLastModified(`Sun, 06 Nov 1994 08:49:37 ${zone}`), zone).toBe(SUN_1994);
    for (const zone of ['+0100', 'PST', 'CET']) expect(parseLastModified(`Sun, 06 Nov 1994 08:49:37 ${zone}`), zone).toBeUndefined();
    // Expires and Date stay strict (the conformance suite: an Expires in UTC is expired).
    expect(parseHttpDate('Sun, 06 Nov 1994 08:49:37 UTC')).toBeUndefined();
  });
});

describe('parseAge', () => {
  table([
    { name: '§5.1 non-negative integer', value: '120', seconds: 120 },
    { name: '§5.1 list value uses the first member', value: '30, 60', seconds: 30 },
    { name: '§5.1 repeated field uses the first line', value: ['7', '9'], seconds: 7 },
    { name: '§5.1 garbage is ignored', value: 'old', seconds: undefined },
    { name: '§5.1 negative is ignored', value: '-3', seconds: undefined },
    { name: '§5.1 fractional is ignored', value: '1.5', seconds: undefined },
    { name: '§5.1 garbage first member is ignored even if a later one is valid', value: 'x, 5', seconds: undefined },
    { name: '§1.2.2 overflow is capped at 2^31', value: '999999999999', seconds: DELTA_SECONDS_MAX },
    { name: '§5.1 missing', value: undefined, seconds: undefined },
  ], ({ value, seconds }) => {
    expect(parseAge(value)).toBe(seconds);
  });
});
