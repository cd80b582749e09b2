import { describe, expect, it } from 'vitest';
import { asksForOtherThanAPage, isDataFormat, isNavigation, speaksForStored } from '../../../src/cache/accept.js';
import { normaliseVaryValue } from '../../../src/cache/cache-key.js';

/** An Accept as a fill sends it (lower case, ordered by weight). */
const sent = (accept: string) => normaliseVaryValue('accept', accept)!;

const CHROME = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7';
const FIREFOX = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

describe('Accept as a negotiator reads it', () => {
  it("takes browsers' navigations for pages", () => {
    for (const a of [CHROME, FIREFOX, 'text/html', 'TEXT/HTML ; q=1.0, */* ; q=0.5', 'text/html;q=0.9, */*;q=0.8']) {
      expect(isNavigation(sent(a)), a).toBe(true);
      expect(asksForOtherThanAPage(sent(a)), a).toBe(false);
    }
  });

  it('takes no Accept and the wildcard alone for neither a navigation nor a request for something else', () => {
    for (const a of [undefined, '', '*/*']) {
      expect(isNavigation(a === undefined ? a : sent(a))).toBe(false);
      expect(asksForOtherThanAPage(a === undefined ? a : sent(a))).toBe(false);
    }
  });

  it('reads an Accept whose weights are not qvalues, or whose first member has parameters, as asking for something else (attacker trial)', () => {
    for (const a of [
      'text/html;q=-1, text/plain',
      'text/html;q=1e-9, text/plain',
      'text/html, application/xml;q=1e1',
      'text/html, text/plain;q=2',
      'text/html;q=abc, text/plain',
      'text/html;q=0.0001, text/plain',
      'text/html;level=1, text/plain',
      'text/html;charset=utf-8, text/plain',
      'application/json, text/plain, */*',
      'text/css,*/*;q=0.1',
      'text/html, text/vnd.wap.wml',
    ]) {
      expect(asksForOtherThanAPage(sent(a)), a).toBe(true);
      expect(isNavigation(sent(a)), a).toBe(false);
    }
  });

  it('tells data formats from pages, scripts and images', () => {
    expect(isDataFormat({ 'content-type': 'application/json; charset=utf-8' })).toBe(true);
    expect(isDataFormat({ 'content-type': 'application/rss+xml' })).toBe(true);
    expect(isDataFormat({ 'content-type': 'application/xhtml+xml' })).toBe(false);
    expect(isDataFormat({ 'content-type': 'image/svg+xml' })).toBe(false);
    expect(isDataFormat({ 'content-type': 'text/html' })).toBe(false);
    expect(isDataFormat({})).toBe(false);
  });
});

describe('speaksForStored: a 304 to a request with this Accept may be merged into the copy', () => {
  const html = { 'content-type': 'text/html; charset=utf-8' };
  const css = { 'content-type': 'text/css' };
  const png = { 'content-type': 'image/png' };

  it("for a page: a browser's navigation, not another format, the wildcard or no Accept", () => {
    expect(speaksForStored(sent(CHROME), html)).toBe(true);
    expect(speaksForStored(sent(FIREFOX), html)).toBe(true);
    for (const a of ['text/csv', 'application/json', 'application/json, text/plain, */*', '*/*', 'text/*', 'text/html;level=1, text/plain', 'text/html;q=-1, text/plain', 'text/html, application/json;q=0.9']) {
      expect(speaksForStored(sent(a), html), a).toBe(false);
    }
    expect(speaksForStored(undefined, html)).toBe(false);
  });

  it("for a data format or plain text: its own type first, the wildcard alone or no Accept; not a navigation, another format, or the wildcard beside a named type (review)", () => {
    const json = { 'content-type': 'application/json' };
    for (const a of ['application/json', 'application/json, text/plain, */*', '*/*']) expect(speaksForStored(sent(a), json), a).toBe(true);
    expect(speaksForStored(undefined, json)).toBe(true);
    for (const a of [CHROME, 'text/csv', '*/*, text/csv', '*/*, application/json;q=0.1', 'application/json;q=2, text/csv', 'application/json;v=2']) expect(speaksForStored(sent(a), json), a).toBe(false);
    const plain = { 'content-type': 'text/plain; charset=utf-8' };
    expect(speaksForStored(sent('text/plain'), plain)).toBe(true);
    expect(speaksForStored(sent('text/csv'), plain)).toBe(false);
  });

  it('for a script, a style, an image or a download: whatever its clients send (an image\'s Accept names another image type first)', () => {
    expect(speaksForStored(sent('image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8'), png)).toBe(true);
    expect(speaksForStored(sent('text/css,*/*;q=0.1'), css)).toBe(true);
    expect(speaksForStored(undefined, css)).toBe(true);
    expect(speaksForStored(sent('text/html'), css)).toBe(true);
    expect(speaksForStored(sent(CHROME), { 'content-type': 'application/x-gzip' })).toBe(true);
  });

  it('for a copy without a Content-Type: any', () => {
    expect(speaksForStored(sent('text/csv'), {})).toBe(true);
  });
});
