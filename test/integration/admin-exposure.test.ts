/**
 * The admin listener's exposure: an optional token for the status page, and a warning at start
 * when it listens beyond loopback without tokens.
 */
import { describe, expect, it } from 'vitest';
import { request } from 'undici';
import { siteFor } from '../helpers/gateway.js';
import { useFixtures } from '../helpers/fixtures.js';

const { origin, gateway } = useFixtures();
const TOKEN = 'status-token-of-16+chars';

describe('admin exposure', () => {
  it('admin.statusToken protects /status and /status.json; health, readiness and metrics stay open', async () => {
    const o = await origin();
    const g = await gateway({ admin: { statusToken: TOKEN }, sites: [siteFor([o.url])] });
    for (const path of ['/status', '/status.json']) {
      const refused = await request(`${g.adminUrl}${path}`);
      expect(refused.statusCode).toBe(401);
      expect(refused.headers['www-authenticate']).toBe('Bearer');
      await refused.body.text();
      const ok = await request(`${g.adminUrl}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(ok.statusCode).toBe(200);
      await ok.body.text();
      const wrong = await request(`${g.adminUrl}${path}`, { headers: { authorization: `Bearer ${TOKEN}x` } });
      expect(wrong.statusCode).toBe(401);
      await wrong.body.text();
    }
    for (const path of ['/healthz', '/readyz', '/metrics']) {
      const open = await request(`${g.adminUrl}${path}`);
      expect(open.statusCode).not.toBe(401);
      await open.body.text();
    }
    // /readyz tells a probe every member's state; the origin's address only to the bearer.
    const openText = await (await request(`${g.adminUrl}/readyz`)).body.text();
    const readyOpen = JSON.parse(openText) as { sites: Array<{ state: string; origins: Array<Record<string, unknown>> }> };
    expect(readyOpen.sites[0]!.state).toBe('up');
    expect(readyOpen.sites[0]!.origins[0]!.healthy).toBe(true);
    expect(readyOpen.sites[0]!.origins[0]!.name).toBe('origin-1');
    // Nowhere in it: not as url, nor as the name an unnamed member gets (its host:port).
    expect(openText).not.toContain(new URL(o.url).host);
    const readyAuth = await request(`${g.adminUrl}/readyz`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(JSON.stringify(await readyAuth.body.json())).toContain(new URL(o.url).host);
  });

  it('on loopback, answers only IP addresses, localhost, this machine and admin.allowedHosts as Host: a rebinding page gets 421 (attacker trial)', async () => {
    const o = await origin();
    const g = await gateway({ admin: { allowedHosts: ['gw.internal'] }, sites: [siteFor([o.url])] });
    const port = new URL(g.adminUrl).port;
    for (const path of ['/status.json', '/metrics', '/readyz']) {
      const rebound = await request(`${g.adminUrl}${path}`, { headers: { host: `rebind.attacker.example:${port}` } });
      expect(rebound.statusCode).toBe(421);
      expect(await rebound.body.text()).toContain('admin.allowedHosts');
    }
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `gw.internal:${port}`, `GW.Internal.:${port}`]) {
      const ok = await request(`${g.adminUrl}/status.json`, { headers: { host } });
      expect(ok.statusCode, host).toBe(200);
      await ok.body.text();
    }
    // Beyond loopback any name is answered (a scraper may use any; the tokens guard it).
    const exposed = await gateway({ admin: { host: '0.0.0.0', port: 0, statusToken: TOKEN, purgeToken: TOKEN }, sites: [siteFor([o.url])] });
    const far = await request(`http://127.0.0.1:${new URL(exposed.adminUrl).port}/metrics`, { headers: { host: 'crowdgate.prod.example:9091' } });
    expect(far.statusCode).toBe(200);
    await far.body.text();
  });

  it('warns at start when the admin listener is on a non-loopback address without tokens, and not on loopback', async () => {
    const o = await origin();
    const exposed = await gateway({ admin: { host: '0.0.0.0', port: 0 }, sites: [siteFor([o.url])] });
    expect(exposed.logs.some((l) => l.level === 40 && String(l.msg).includes('admin listener on a non-loopback address'))).toBe(true);
    const quiet = await gateway({ sites: [siteFor([o.url])] });
    expect(quiet.logs.some((l) => String(l.msg).includes('admin listener on a non-loopback address'))).toBe(false);
  });
});
