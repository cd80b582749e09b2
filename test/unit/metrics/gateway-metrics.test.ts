import { describe, expect, it } from 'vitest';
import { GatewayMetrics } from '../../../src/metrics/gateway-metrics.js';

/** The value of one sample line in the exposition text, or undefined when absent. */
function sample(text: string, line: string): number | undefined {
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found === undefined ? undefined : Number(found.slice(line.length + 1));
}

describe('GatewayMetrics hot-path counters (plain numbers, flushed on scrape)', () => {
  it('counts store operations by tier and result, once each across scrapes', async () => {
    const m = new GatewayMetrics({ defaultMetrics: false });
    for (let i = 0; i < 3; i++) m.countStoreOperation('memory', 'hit');
    m.countStoreOperation('redis', 'miss');
    let text = (await m.render()).body;
    expect(sample(text, 'crowdgate_store_operations_total{tier="memory",result="hit"}')).toBe(3);
    expect(sample(text, 'crowdgate_store_operations_total{tier="redis",result="miss"}')).toBe(1);
    m.countStoreOperation('memory', 'hit');
    text = (await m.render()).body;
    expect(sample(text, 'crowdgate_store_operations_total{tier="memory",result="hit"}')).toBe(4);
    expect(sample(text, 'crowdgate_store_operations_total{tier="redis",result="miss"}')).toBe(1);
  });

  it('counts requests by site, route, state and status class, once each across scrapes', async () => {
    const m = new GatewayMetrics({ defaultMetrics: false });
    m.observeRequest('blog', 'default', 'hit', '2xx', 0.001);
    m.observeRequest('blog', 'default', 'hit', '2xx', 0.002);
    const line = 'crowdgate_requests_total{site="blog",route="default",state="hit",status_class="2xx"}';
    expect(sample((await m.render()).body, line)).toBe(2);
    m.observeRequest('blog', 'default', 'hit', '2xx', 0.001);
    expect(sample((await m.render()).body, line)).toBe(3);
  });

  it('hands out request rows a caller may keep: counts through a row are scraped, and rows die when the table starts over', async () => {
    const m = new GatewayMetrics({ defaultMetrics: false });
    const row = m.requestRow('blog', 'default', 'hit', '2xx');
    expect(m.requestRow('blog', 'default', 'hit', '2xx')).toBe(row);
    expect(row.statusClass).toBe('2xx');
    m.observeRow(row, 0.001);
    m.observeRequest('blog', 'default', 'hit', '2xx', 0.001);
    const line = 'crowdgate_requests_total{site="blog",route="default",state="hit",status_class="2xx"}';
    let text = (await m.render()).body;
    expect(sample(text, line)).toBe(2);
    expect(sample(text, 'crowdgate_request_duration_seconds_count{site="blog",state="hit"}')).toBe(2);
    for (let i = 0; i < 10_000; i++) m.observeRequest('blog', `r${i}`, 'hit', '2xx', 0.001); // past the bound
    expect(row.live).toBe(false);
    const fresh = m.requestRow('blog', 'default', 'hit', '2xx');
    expect(fresh).not.toBe(row);
    m.observeRow(fresh, 0.001);
    text = (await m.render()).body;
    expect(sample(text, line)).toBe(3); // nothing counted before the restart was lost
  });
});


describe('GatewayMetrics starting values', () => {
  it('starts at generation 1 with no reload refused, and with both connection-refusal series at 0', async () => {
    const text = (await new GatewayMetrics({ defaultMetrics: false }).render()).body;
    expect(sample(text, 'crowdgate_config_generation')).toBe(1);
    expect(sample(text, 'crowdgate_config_last_reload_success')).toBe(1);
    expect(sample(text, 'crowdgate_client_connections_refused_total{reason="max_connections"}')).toBe(0);
    expect(sample(text, 'crowdgate_client_connections_refused_total{reason="per_client"}')).toBe(0);
  });

  it('has the rare events\' series at 0 from the start, so increase() counts the first one (a refused reload, a PURGE)', async () => {
    const text = (await new GatewayMetrics({ defaultMetrics: false }).render()).body;
    expect(sample(text, 'crowdgate_config_reloads_total{result="failure"}')).toBe(0);
    expect(sample(text, 'crowdgate_config_reloads_total{result="success"}')).toBe(0);
    expect(sample(text, 'crowdgate_purges_total{kind="url",mode="soft"}')).toBe(0);
    expect(sample(text, 'crowdgate_purges_total{kind="prefix",mode="hard"}')).toBe(0);
    expect(sample(text, 'crowdgate_purged_entries_total{mode="soft"}')).toBe(0);
  });
});
