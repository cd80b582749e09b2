/**
 * The Grafana dashboard and the Prometheus alert rules, checked without a running Prometheus:
 * `promtool check rules` and `promtool test rules` (the rule unit tests in
 * grafana/alerts/crowdgate.rules.test.yaml), and the dashboard's structure — stable uid, no
 * `__inputs`, a datasource variable, targets on every panel, and only metric names that exist
 * (src/metrics/names.ts, prom-client's default metrics, Prometheus's `up`).
 * test/integration/prometheus.test.ts runs the same expressions against a real Prometheus.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import client from 'prom-client';
import { parse } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { METRIC_LIST } from '../../../src/metrics/names.js';

const ROOT = join(import.meta.dirname, '../../..');
const DASHBOARD = join(ROOT, 'grafana/dashboards/crowdgate.json');
const RULES = join(ROOT, 'grafana/alerts/crowdgate.rules.yaml');
const RULE_TESTS = join(ROOT, 'grafana/alerts/crowdgate.rules.test.yaml');
const GRAFANA_README = join(ROOT, 'grafana/README.md');

/** Catalogue metrics deliberately left off the dashboard, with why; a new metric must be placed or listed. */
const NOT_ON_DASHBOARD: Record<string, string> = {
  crowdgate_fill_reflected_inputs_total: 'a finding about the origin, not a crowd signal: the log names the repeated headers and their values, once a minute',
  crowdgate_websocket_tunnels: 'only sites that tunnel WebSockets care; not a crowd signal',
  crowdgate_pressure_event_loop_utilization: 'the event-loop delay panel shows the same pressure',
  crowdgate_pressure_heap_used_ratio: 'the heap panel shows bytes',
  crowdgate_pressure_overloaded: 'visible as stale answers with reason "pressure" (Cache panel)',
  crowdgate_pressure_shedding: 'visible as sheds with reason "pressure"',
  crowdgate_draining: 'a shutdown lasts seconds; /readyz tells the load balancer',
  crowdgate_tls_certificate_loads_total: 'certificate reloads are rare events; the log says why one failed',
  crowdgate_tls_certificate_not_after_seconds: 'only for sites on the HTTPS listener; the CrowdgateCertificateExpiringSoon alert reads it, not a panel',
  crowdgate_acme_orders_total: 'a few orders per site every two months; the log and /status.json say why one failed',
  crowdgate_acme_temporary: 'only for tls.acme sites, and 1 for seconds unless ACME is failing: the CrowdgateAcmeTemporaryCertificate alert reads it, not a panel',
  crowdgate_acme_challenges_total: 'a handful of requests per order; for diagnosing a CA that cannot reach the plain listener',
  crowdgate_origin_saturated_seconds_total: 'the CrowdgateOriginLimiterSaturated alert reads it; the in-flight vs limit panel and the queue panel show the saturation itself',
  crowdgate_origin_limit_probes_total: 'how often the learned limit measures the origin at a quarter of itself: a diagnostic of the limit, not a crowd signal (the in-flight panel shows the dips)',
};

function findPromtool(): string {
  for (const dir of (process.env.PATH ?? '').split(':').concat('/usr/bin')) {
    const p = join(dir, 'promtool');
    if (dir && existsSync(p)) return p;
  }
  throw new Error('promtool not found (PATH or /usr/bin/promtool). Install the "prometheus" package: apt-get install -y prometheus');
}

// ---- PromQL helpers (small, for the expressions this repo writes) ------------------------------

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan']);

/** Selectors in an expression: metric name (or undefined for `{__name__=...}`-less forms) and its label matchers. */
function selectorsOf(expr: string): Array<{ name: string; labels: string[] }> {
  const noStrings = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const out: Array<{ name: string; labels: string[] }> = [];
  // Remove grouping lists and ranges first, so their label names are not taken for metrics.
  const cleaned = noStrings
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ');
  const re = /([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(\{[^}]*\})?/g;
  for (const m of cleaned.matchAll(re)) {
    const [whole, name, braces] = m;
    if (!whole || !whole.trim()) continue;
    if (name) {
      const after = cleaned.slice((m.index ?? 0) + whole.length);
      if (!braces && /^\s*\(/.test(after)) continue; // a function or aggregation
      if (KEYWORDS.has(name.toLowerCase())) continue;
    }
    if (!name && !braces) continue;
    const labels = braces ? [...braces.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)/g)].map((x) => x[1]!) : [];
    out.push({ name: name ?? '', labels });
  }
  return out.filter((s) => !/^\d/.test(s.name));
}

/** Grouping labels used in by (...) / on (...) etc. */
function groupingLabelsOf(expr: string): string[] {
  return [...expr.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)].flatMap((m) =>
    m[1]!.split(',').map((s) => s.trim()).filter(Boolean),
  );
}

interface Known {
  labels: Map<string, Set<string>>;
}

async function knownMetrics(): Promise<Known> {
  const labels = new Map<string, Set<string>>();
  const scrape = ['instance', 'job'];
  const add = (name: string, type: string, ls: readonly string[]) => {
    const names = type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name];
    for (const n of names) labels.set(n, new Set([...ls, ...scrape, ...(n.endsWith('_bucket') ? ['le'] : [])]));
  };
  for (const m of METRIC_LIST) add(m.name, m.type, m.labels);
  const reg = new client.Registry();
  client.collectDefaultMetrics({ register: reg });
  for (const m of await reg.getMetricsAsJSON()) {
    const ls = new Set<string>();
    for (const v of (m as { values?: Array<{ labels: Record<string, unknown> }> }).values ?? []) for (const l of Object.keys(v.labels)) ls.add(l);
    add(m.name, String(m.type), [...ls]);
  }
  add('up', 'gauge', []);
  return { labels };
}

interface Target {
  panel: string;
  expr: string;
}

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Array<{ expr?: string; refId?: string; datasource?: { uid?: string } }>;
  panels?: Panel[];
}

function loadDashboard(): { dash: Record<string, unknown> & { panels: Panel[]; templating: { list: Array<Record<string, unknown>> } }; panels: Panel[] } {
  const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8'));
  const panels: Panel[] = [];
  for (const p of dash.panels as Panel[]) {
    panels.push(p);
    for (const inner of p.panels ?? []) panels.push(inner);
  }
  return { dash, panels };
}

function checkExpr(known: Known, expr: string): string[] {
  const problems: string[] = [];
  const selectors = selectorsOf(expr);
  if (selectors.length === 0) problems.push(`no metric selector in: ${expr}`);
  for (const s of selectors) {
    if (!s.name) {
      problems.push(`selector without a metric name in: ${expr}`);
      continue;
    }
    const labels = known.labels.get(s.name);
    if (!labels) {
      problems.push(`unknown metric ${s.name}`);
      continue;
    }
    for (const l of s.labels) if (!labels.has(l)) problems.push(`${s.name} has no label "${l}"`);
  }
  const allLabels = new Set(selectors.flatMap((s) => [...(known.labels.get(s.name) ?? [])]));
  for (const l of groupingLabelsOf(expr)) if (!allLabels.has(l)) problems.push(`grouping label "${l}" is on none of the metrics in: ${expr}`);
  return problems;
}

// ---- tests ---------------------------------------------------------------------------------------

describe('PromQL name checker', () => {
  let known: Known;
  beforeAll(async () => {
    known = await knownMetrics();
  });
  it.each([
    { expr: 'sum by (state) (rate(crowdgate_requests_total{site=~".*"}[5m]))', problems: [] },
    { expr: 'histogram_quantile(0.99, sum by (le) (rate(crowdgate_origin_duration_seconds_bucket[1m])))', problems: [] },
    { expr: 'rate(process_cpu_seconds_total[1m]) and on (instance) up{job="crowdgate"} == 0', problems: [] },
    { expr: 'rate(crowdgate_no_such_metric_total[5m])', problems: ['unknown metric crowdgate_no_such_metric_total'] },
    { expr: 'crowdgate_requests_total{status="5xx"}', problems: ['crowdgate_requests_total has no label "status"'] },
    { expr: 'sum by (path) (crowdgate_requests_total)', problems: ['grouping label "path" is on none of the metrics in: sum by (path) (crowdgate_requests_total)'] },
    { expr: 'crowdgate_origin_duration_seconds', problems: ['unknown metric crowdgate_origin_duration_seconds'] },
  ])('$expr -> $problems', ({ expr, problems }) => {
    expect(checkExpr(known, expr)).toEqual(problems);
  });
});

describe('alert rules (promtool)', () => {
  const promtool = findPromtool();

  it('pass promtool check rules', () => {
    const r = spawnSync(promtool, ['check', 'rules', RULES], { encoding: 'utf8' });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('pass their promtool unit tests', () => {
    const r = spawnSync(promtool, ['test', 'rules', RULE_TESTS], { encoding: 'utf8', cwd: join(ROOT, 'grafana/alerts') });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/SUCCESS/);
  });

  it('make promtool test rules fail when a rule is broken (the unit tests can fail)', () => {
    const broken = readFileSync(RULES, 'utf8').replace('> 0.05', '> 0.5');
    expect(broken).not.toBe(readFileSync(RULES, 'utf8'));
    const dir = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
    execFileSync('cp', [RULE_TESTS, join(dir, 'crowdgate.rules.test.yaml')]);
    execFileSync('sh', ['-c', 'cat > "$1"', 'sh', join(dir, 'crowdgate.rules.yaml')], { input: broken });
    const r = spawnSync(promtool, ['test', 'rules', 'crowdgate.rules.test.yaml'], { encoding: 'utf8', cwd: dir });
    execFileSync('rm', ['-rf', dir]);
    expect(r.status).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/CrowdgateServerErrorsHigh/);
  });

  const rules = (parse(readFileSync(RULES, 'utf8')) as { groups: Array<{ rules: Array<Record<string, any>> }> }).groups.flatMap((g) => g.rules);
  const alerts = rules.filter((r) => r.alert);
  const tests = (parse(readFileSync(RULE_TESTS, 'utf8')) as { tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts?: unknown[] }> }> }).tests.flatMap(
    (t) => t.alert_rule_test ?? [],
  );

  it('cover the alerts the runbook promises', () => {
    expect(alerts.map((a) => a.alert).sort()).toEqual(
      [
        'CrowdgateAcmeTemporaryCertificate',
        'CrowdgateCertificateExpiringSoon',
        'CrowdgateConfigReloadFailed',
        'CrowdgateDown',
        'CrowdgateOriginDown',
        'CrowdgateOriginDownServingStale',
        'CrowdgateOriginErrorsHiddenByStale',
        'CrowdgateServerErrorsHigh',
        'CrowdgateOriginLimiterSaturated',
        'CrowdgateRedisDown',
        'CrowdgateRedisErrors',
        'CrowdgateSheddingHigh',
      ].sort(),
    );
  });

  it.each(alerts.map((a) => [a.alert as string, a] as const))('%s is tested firing and not firing', (name) => {
    const cases = tests.filter((t) => t.alertname === name);
    expect(cases.some((c) => (c.exp_alerts ?? []).length > 0), `${name}: no firing case`).toBe(true);
    expect(cases.some((c) => (c.exp_alerts ?? []).length === 0), `${name}: no not-firing case`).toBe(true);
  });

  it.each(alerts.map((a) => [a.alert as string, a] as const))('%s has severity, summary, description and a runbook line that exists', (name, a) => {
    expect(['page', 'warning']).toContain(a.labels?.severity);
    expect(a.annotations?.summary).toBeTruthy();
    expect(a.annotations?.description).toBeTruthy();
    const anchor = String(a.annotations?.runbook ?? '');
    expect(anchor).toBe(`grafana/README.md#${name.toLowerCase()}`);
    expect(readFileSync(GRAFANA_README, 'utf8')).toMatch(new RegExp(`^#+ ${name}\\s*\\n+\\S`, 'm'));
  });

  it('use only known metric names and labels', async () => {
    const known = await knownMetrics();
    const problems = alerts.flatMap((a) => checkExpr(known, String(a.expr)).map((p) => `${a.alert}: ${p}`));
    expect(problems).toEqual([]);
  });
});

describe('Grafana dashboard', () => {
  const { dash, panels } = loadDashboard();
  const content = panels.filter((p) => p.type !== 'row');
  const targets: Target[] = content.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr ?? '' })));

  it('has the stable uid, a modern schema and no __inputs (importable by provisioning as is)', () => {
    expect(dash.uid).toBe('crowdgate');
    expect(dash.schemaVersion).toBeGreaterThanOrEqual(36);
    expect('__inputs' in dash).toBe(false);
    expect(readFileSync(DASHBOARD, 'utf8')).not.toMatch(/\$\{DS_[A-Z_]+\}/);
  });

  it('has a Prometheus datasource variable and site/instance variables from crowdgate_requests_total', () => {
    const vars = Object.fromEntries(dash.templating.list.map((v) => [v.name as string, v]));
    expect(vars.datasource).toMatchObject({ type: 'datasource', query: 'prometheus' });
    for (const name of ['site', 'instance']) {
      expect(vars[name]).toMatchObject({ type: 'query', datasource: { uid: '${datasource}' } });
      expect(JSON.stringify(vars[name]!.query)).toMatch(new RegExp(`label_values\\(crowdgate_requests_total[^,]*, ${name}\\)`));
    }
  });

  it('has the rows ops look for', () => {
    expect(panels.filter((p) => p.type === 'row').map((p) => p.title)).toEqual(['Overview', 'Origin', 'Admission', 'Cache', 'Redis', 'Process']);
  });

  it('queries the datasource variable from every panel and target, with unique ids and refIds', () => {
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    for (const p of content) {
      expect(p.datasource?.uid, p.title).toBe('${datasource}');
      expect((p.targets ?? []).length, `${p.title} has no targets`).toBeGreaterThan(0);
      const refIds = (p.targets ?? []).map((t) => t.refId);
      expect(new Set(refIds).size, p.title).toBe(refIds.length);
      for (const t of p.targets ?? []) {
        expect(t.expr, p.title).toBeTruthy();
        expect(t.datasource?.uid, p.title).toBe('${datasource}');
      }
    }
  });

  it('filters every selector by $instance, and by $site where the metric has a site label', async () => {
    const known = await knownMetrics();
    for (const t of targets) {
      for (const s of selectorsOf(t.expr)) {
        const sel = t.expr.match(new RegExp(`${s.name}\\{[^}]*\\}`))?.[0] ?? '';
        expect(sel, `${t.panel}: ${s.name}`).toMatch(/instance=~"\$instance"/);
        if (known.labels.get(s.name)?.has('site')) expect(sel, `${t.panel}: ${s.name}`).toMatch(/site=~"\$site"/);
      }
    }
  });

  it('uses only known metric names and labels in every expression', async () => {
    const known = await knownMetrics();
    const problems = targets.flatMap((t) => checkExpr(known, t.expr).map((p) => `${t.panel}: ${p}`));
    expect(problems).toEqual([]);
  });

  it('places every catalogue metric on a panel, or says why not', () => {
    const used = new Set(targets.flatMap((t) => selectorsOf(t.expr).map((s) => s.name.replace(/_(bucket|sum|count)$/, ''))));
    const missing = METRIC_LIST.map((m) => m.name).filter((n) => !used.has(n) && !(n in NOT_ON_DASHBOARD));
    expect(missing).toEqual([]);
    for (const n of Object.keys(NOT_ON_DASHBOARD)) expect(used.has(n), `${n} is on the dashboard; drop it from NOT_ON_DASHBOARD`).toBe(false);
  });

  it('lays panels out on the 24-column grid without overlaps', () => {
    const boxes = panels.map((p) => p.gridPos);
    for (const b of boxes) expect(b.x + b.w).toBeLessThanOrEqual(24);
    for (let i = 0; i < boxes.length; i++)
      for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i]!;
        const b = boxes[j]!;
        const overlap = a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
        expect(overlap, `${panels[i]!.title} overlaps ${panels[j]!.title}`).toBe(false);
      }
  });
});
