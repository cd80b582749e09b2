import client from 'prom-client';
import { describe, expect, it } from 'vitest';
import { FastHistogram } from '../../../src/metrics/fast-histogram.js';
import { GatewayMetrics } from '../../../src/metrics/gateway-metrics.js';

describe('FastHistogram', () => {
  it('renders exactly what prom-client renders for the same observations', async () => {
    const buckets = [0.001, 0.01, 0.1, 1];
    const ours = new client.Registry();
    const theirs = new client.Registry();
    const fast = new FastHistogram('h_seconds', 'help', ['site', 'state'], buckets);
    ours.registerMetric(fast as unknown as client.Metric<string>);
    const reference = new client.Histogram({ name: 'h_seconds', help: 'help', labelNames: ['site', 'state'], buckets, registers: [theirs] });
    const samples: Array<[string, string, number]> = [
      ['a', 'hit', 0.0005],
      ['a', 'hit', 0.001], // on a bound: counts in that bucket (le is inclusive)
      ['a', 'miss', 0.5],
      ['b', 'hit', 7],
      ['a', 'hit', 0.05],
    ];
    for (const [site, state, v] of samples) {
      fast.observe(fast.seriesFor({ site, state }), v);
      reference.observe({ site, state }, v);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });
});

describe('GatewayMetrics.observeRequest', () => {
  it('shows every request in the scrape, counter and histogram alike', async () => {
    const m = new GatewayMetrics({ defaultMetrics: false });
    for (let i = 0; i < 3; i++) m.observeRequest('s', 'r', 'hit', '2xx', 0.002);
    m.observeRequest('s', 'r', 'miss', '2xx', 0.2);
    const first = await m.registry.metrics();
    expect(first).toContain('crowdgate_requests_total{site="s",route="r",state="hit",status_class="2xx"} 3');
    expect(first).toContain('crowdgate_request_duration_seconds_count{site="s",state="hit"} 3');
    m.observeRequest('s', 'r', 'hit', '2xx', 0.002);
    const second = await m.registry.metrics();
    expect(second).toContain('crowdgate_requests_total{site="s",route="r",state="hit",status_class="2xx"} 4');
    expect(second).toContain('crowdgate_request_duration_seconds_bucket{le="0.0025",site="s",state="hit"} 4');
  });
});
