/**
 * The live status page in a real Chromium (playwright-core, /usr/bin/chromium): a gateway and an
 * origin get traffic, the page at the admin listener's /status must draw it (chart points,
 * non-zero totals, the hot key we requested, the origin row), a screenshot goes to
 * artifacts/status-page.png, and at a phone viewport nothing overflows horizontally. With no
 * traffic the page says so instead of drawing nothing.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { siteFor, startGateway, type StartedGateway } from '../helpers/gateway.js';
import { startTestOrigin, type TestOrigin } from '../helpers/test-origin.js';
import { startRedisServer } from '../helpers/redis-server.js';

const CHROMIUM = '/usr/bin/chromium';
const ROOT = join(import.meta.dirname, '../..');
const ARTIFACTS = join(ROOT, 'artifacts');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Serves /status on the gateway's admin listener. Until admin-server.ts routes /status itself,
 * attach the page's interim handler (attachStatus) to the admin server.
 */
async function ensureStatusPage(g: StartedGateway): Promise<void> {
  const res = await request(`${g.adminUrl}/status`);
  const type = String(res.headers['content-type'] ?? '');
  await res.body.text();
  expect(res.statusCode).toBe(200);
  expect(type).toMatch(/^text\/html/);
}

async function get(url: string): Promise<number> {
  const res = await request(url);
  await res.body.text();
  return res.statusCode;
}

describe('status page in Chromium', () => {
  let context: BrowserContext;
  let userDataDir: string;
  let origin: TestOrigin;
  let busy: StartedGateway;
  let idle: StartedGateway;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium`);
    origin = await startTestOrigin({ name: 'main' });
    origin.route('/hot', { headers: { 'cache-control': 'public, max-age=60' }, body: 'hot page' });
    busy = await startGateway({ sites: [siteFor([origin.url])] });
    idle = await startGateway({ sites: [siteFor([origin.url])] });
    await ensureStatusPage(busy);
    await ensureStatusPage(idle);
    userDataDir = mkdtempSync(join(tmpdir(), 'crowdgate-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 1280, height: 900 },
    });
  }, 30_000);

  afterAll(async () => {
    await context?.close();
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
    await busy?.close();
    await idle?.close();
    await origin?.close();
  });

  /** Drives traffic over a few seconds (bounded): hits on /hot, misses on distinct URLs. */
  async function traffic(seconds: number): Promise<{ hot: number; other: number }> {
    let hot = 0;
    let other = 0;
    const until = Date.now() + seconds * 1000;
    for (let round = 0; round < 100 && Date.now() < until; round++) {
      const statuses = await Promise.all([
        ...Array.from({ length: 8 }, () => get(`${busy.url}/hot`)),
        get(`${busy.url}/other?round=${round}`),
      ]);
      expect(statuses.every((s) => s === 200)).toBe(true);
      hot += 8;
      other += 1;
      await sleep(100);
    }
    return { hot, other };
  }

  async function numberAttr(page: Page, selector: string, attr: string): Promise<number> {
    return Number((await page.locator(selector).getAttribute(attr)) ?? 'NaN');
  }

  it('draws the generated traffic: chart points, totals, the hot key and the origin', async () => {
    const page = await context.newPage();
    await page.goto(`${busy.adminUrl}/status`);
    const sent = await traffic(3.5);
    const total = sent.hot + sent.other;

    // The page polls; wait until it has caught up with everything we sent.
    // (Polled from the test: the page's CSP forbids the eval that page.waitForFunction would need.)
    await expect.poll(() => numberAttr(page, '#total-requests', 'data-value'), { timeout: 10_000 }).toBe(total);
    await expect.poll(() => numberAttr(page, '#chart-requests', 'data-points'), { timeout: 10_000 }).toBeGreaterThanOrEqual(3);
    expect(await numberAttr(page, '#chart-requests', 'data-max')).toBeGreaterThan(0);
    // Stacked areas for the states that had traffic, with a visible size.
    const hitArea = page.locator('#chart-requests polygon[data-series="hit"]');
    const box = await hitArea.boundingBox();
    expect(box?.width ?? 0).toBeGreaterThan(50);
    expect(box?.height ?? 0).toBeGreaterThan(5);
    await expect.poll(() => page.locator('#legend-requests [data-series="hit"]').count()).toBe(1);
    await expect.poll(() => page.locator('#legend-requests [data-series="miss"]').count()).toBe(1);

    // Hot keys: /hot first, with its count.
    const hotRow = page.locator('#hot-keys tbody tr[data-path="/hot"]');
    await expect.poll(() => hotRow.count()).toBe(1);
    expect(await page.locator('#hot-keys tbody tr').first().getAttribute('data-path')).toBe('/hot');
    expect(Number(await hotRow.locator('td.num').textContent())).toBe(sent.hot);
    expect(await page.locator('#hot-empty').isVisible()).toBe(false);

    // The origin: healthy, closed breaker, a limit drawn.
    const originRow = page.locator('#origins tbody tr').first();
    await expect.poll(() => originRow.locator('.badge').first().textContent()).toBe('up');
    expect(await originRow.locator('.badge').nth(1).textContent()).toBe('closed');
    expect(await numberAttr(page, '#chart-origin', 'data-series')).toBe(2);
    expect(await numberAttr(page, '#chart-origin', 'data-max')).toBeGreaterThan(0);
    expect(await page.locator('#conn').textContent()).toMatch(/^live/);

    mkdirSync(ARTIFACTS, { recursive: true });
    const file = join(ARTIFACTS, 'status-page.png');
    await page.screenshot({ path: file, fullPage: true });
    const png = readFileSync(file);
    expect(png.subarray(1, 4).toString('latin1')).toBe('PNG');
    // IHDR: width and height at bytes 16..24.
    expect(png.readUInt32BE(16)).toBe(1280);
    expect(png.readUInt32BE(20)).toBeGreaterThan(400);
    // A blank or single-colour page compresses to a few kB; charts, tables and text do not.
    expect(statSync(file).size).toBeGreaterThan(30_000);
    await page.close();
  }, 30_000);

  it('draws a stacked series\' outline only where it adds something: one error does not draw its colour along the whole stack (WordPress trial)', async () => {
    origin.route('/broken', { reset: true });
    const g = await startGateway({ sites: [siteFor([origin.url])] });
    try {
      await ensureStatusPage(g);
      const page = await context.newPage();
      await page.goto(`${g.adminUrl}/status`);
      expect(await get(`${g.url}/broken`)).toBe(502);
      const until = Date.now() + 4_000;
      for (let round = 0; round < 60 && Date.now() < until; round++) {
        await Promise.all(Array.from({ length: 5 }, () => get(`${g.url}/hot`)));
        await sleep(100);
      }
      await expect.poll(() => numberAttr(page, '#chart-requests', 'data-points'), { timeout: 10_000 }).toBeGreaterThanOrEqual(5);
      await expect.poll(() => page.locator('#chart-requests polygon[data-series="error"]').count(), { timeout: 10_000 }).toBe(1);
      const points = await page.locator('#chart-requests polyline[data-series="error"]').evaluateAll((lines) => lines.map((l) => (l.getAttribute('points') ?? '').split(' ').length));
      const all = await numberAttr(page, '#chart-requests', 'data-points');
      expect(points.length).toBeGreaterThan(0);
      for (const n of points) expect(n).toBeLessThanOrEqual(3);
      expect(all).toBeGreaterThan(3);
      await page.close();
    } finally {
      await g.close();
    }
  }, 30_000);

  it('fits a phone screen: nothing overflows horizontally at 390x844', async () => {
    const page = await context.newPage();
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${busy.adminUrl}/status`);
    await expect.poll(() => numberAttr(page, '#chart-requests', 'data-points'), { timeout: 10_000 }).toBeGreaterThanOrEqual(1);
    const overflow = (await page.evaluate(`(() => {
      const width = document.documentElement.clientWidth;
      const wide = [...document.querySelectorAll('body *')]
        .filter((el) => el.getBoundingClientRect().right > width + 0.5)
        .map((el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : ''));
      return { scrollWidth: document.documentElement.scrollWidth, width, wide };
    })()`)) as { scrollWidth: number; width: number; wide: string[] };
    expect(overflow.width).toBe(390);
    expect(overflow.wide).toEqual([]);
    expect(overflow.scrollWidth).toBeLessThanOrEqual(overflow.width);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'status-page-phone.png'), fullPage: true });
    await page.close();
  }, 20_000);

  it('says when the gateway itself is overloaded, and nothing when it is not (ops trial: the page drew stale answers with no reason)', async () => {
    let overloaded = true;
    const busy = await startGateway({ sites: [siteFor([origin.url])] }, { isOverloaded: () => overloaded });
    try {
      const page = await context.newPage();
      await page.goto(`${busy.adminUrl}/status`);
      await expect.poll(() => page.locator('#pressure-note').textContent(), { timeout: 10_000 }).toMatch(/^Gateway overloaded \(its own CPU or memory, not the origin\): event loop busy \d+ %/);
      expect(await page.locator('#pressure-note').getAttribute('class')).toBe('bad');
      overloaded = false;
      await expect.poll(() => page.locator('#pressure-note').isVisible(), { timeout: 10_000 }).toBe(false);
      await page.close();
    } finally {
      await busy.close();
    }
    const quiet = await context.newPage();
    await quiet.goto(`${idle.adminUrl}/status`);
    await expect.poll(() => quiet.locator('#conn').textContent(), { timeout: 10_000 }).toMatch(/^live/);
    expect(await quiet.locator('#pressure-note').isVisible()).toBe(false);
    await quiet.close();
  }, 30_000);

  it('says there is no traffic yet instead of drawing nothing', async () => {
    const page = await context.newPage();
    await page.goto(`${idle.adminUrl}/status`);
    await expect.poll(() => page.locator('#conn').textContent(), { timeout: 10_000 }).toMatch(/^live/);
    expect(await page.locator('#total-requests').textContent()).toBe('0');
    expect(await page.locator('#hot-empty').isVisible()).toBe(true);
    expect(await page.locator('#hot-empty').textContent()).toBe('No requests yet.');
    expect(await page.locator('#chart-requests text').allTextContents()).toEqual(
      expect.arrayContaining([expect.stringMatching(/collecting samples…|no requests in the window/)]),
    );
    await page.close();
  }, 20_000);

  it('shows the Redis tier: up, then skipped once Redis dies, with how fills across instances ended (multi-instance trial: the page said nothing about Redis)', async () => {
    const redis = await startRedisServer();
    const shared = await startGateway({ redis: { url: redis.url, breakerOpenMs: 200, commandTimeoutMs: 75 }, sites: [siteFor([origin.url])] });
    try {
      expect(await get(`${shared.url}/redis-page`)).toBe(200);
      const status = JSON.parse(await (await request(`${shared.adminUrl}/status.json`)).body.text()) as { redis?: { up: boolean; purgesPending: number; fills: Record<string, number> } };
      expect(status.redis).toEqual({ up: true, purgesPending: 0, fills: { locked: 1, filled: 0, timeout: 0, redis_down: 0, lap: 0 } });
      const page = await context.newPage();
      await page.goto(`${shared.adminUrl}/status`);
      await expect.poll(() => page.locator('#redis-note').textContent(), { timeout: 10_000 }).toMatch(/^Redis: shared tier up · fills since start: 1 fetched here/);
      await redis.kill();
      await expect.poll(() => page.locator('#redis-note').textContent(), { timeout: 10_000 }).toMatch(/^Redis: skipped \(memory only/);
      expect(await page.locator('#redis-note').getAttribute('class')).toBe('bad');
      await page.close();
      // Without Redis, no section at all.
      const plain = JSON.parse(await (await request(`${idle.adminUrl}/status.json`)).body.text()) as Record<string, unknown>;
      expect(plain.redis).toBeUndefined();
    } finally {
      await shared.close();
      await redis.stop();
    }
  }, 30_000);

  it('shows a refused config reload: when, how many errors, the first of them, and that the old config still runs', async () => {
    const edited = await startGateway({ sites: [siteFor([origin.url])] });
    try {
      const page = await context.newPage();
      await page.goto(`${edited.adminUrl}/status`);
      await expect.poll(() => page.locator('#conn').textContent(), { timeout: 10_000 }).toMatch(/^live/);
      expect(await page.locator('#config-note').isVisible()).toBe(false);
      writeFileSync(edited.configPath, readFileSync(edited.configPath, 'utf8').replace('hosts:', 'orgins: []\n    hosts:'));
      expect((await edited.gw.reload('manual'))?.ok).toBe(false);
      await expect.poll(() => page.locator('#config-note').isVisible(), { timeout: 10_000 }).toBe(true);
      const note = (await page.locator('#config-note').textContent()) ?? '';
      expect(note).toMatch(/Config reload refused at .* \(1 error\): still running generation 1\./);
      expect(await page.locator('#config-note li').allTextContents()).toEqual([expect.stringContaining(`${edited.configPath}:`)]);
      expect(await page.locator('#config-note li').first().textContent()).toContain('orgins');
      await page.close();
    } finally {
      await edited.close();
    }
  }, 20_000);
});
