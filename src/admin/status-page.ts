/**
 * The live status page served at the admin listener's /status: one self-contained HTML document
 * (inline CSS and JS, no CDN, no external fonts) that polls `status.json` every 1.5 s and draws
 * the last few minutes (StatusHistory's ring buffer) as small inline SVG charts — requests/s by
 * cache state, origin in-flight vs limit, shed and stale rates — plus origin health and the hot
 * keys. Readable on a phone (fluid grid, viewport meta, nothing wider than the screen).
 *
 * Owns the markup and the drawing code; admin-server.ts routes /status to it. It does not collect
 * data (status-history.ts). Hot-key paths are client-controlled text: the script only ever writes
 * them with textContent, never as HTML.
 */


/** Poll period of the page, ms. */
export const STATUS_POLL_MS = 1_500;

export function renderStatusPage(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>crowdgate status</title>
<style>
:root { --bg:#f6f7f9; --card:#fff; --fg:#1d2330; --muted:#677084; --grid:#e3e6eb; --bad:#c62828; --ok:#2e7d32; --warn:#ef6c00; }
@media (prefers-color-scheme: dark) { :root { --bg:#14171c; --card:#1d2128; --fg:#e6e9ef; --muted:#9aa3b2; --grid:#2c323c; } }
* { box-sizing: border-box; }
html, body { margin:0; padding:0; background:var(--bg); color:var(--fg); font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
body { overflow-x:hidden; }
header { display:flex; flex-wrap:wrap; gap:.25rem 1rem; align-items:baseline; padding:.75rem 1rem; }
header h1 { font-size:1.15rem; margin:0; }
#conn { color:var(--muted); font-size:.85rem; }
#conn.down { color:var(--bad); }
#config-note, #redis-note, #pressure-note { margin:0 1rem .5rem; padding:.4rem .75rem; border-radius:8px; background:var(--card); border-left:4px solid var(--warn); font-size:.85rem; overflow-wrap:anywhere; }
#config-note.bad, #redis-note.bad, #pressure-note.bad { border-left-color:var(--bad); }
#redis-note.ok { border-left-color:var(--ok, #2a9d55); }
#config-note ul { margin:.25rem 0 0; padding-left:1.2rem; }
.kpis { display:grid; grid-template-columns:repeat(auto-fit, minmax(min(100%, 9rem), 1fr)); gap:.5rem; padding:0 1rem; }
.kpi { background:var(--card); border-radius:8px; padding:.5rem .75rem; min-width:0; }
.kpi b { display:block; font-size:1.35rem; font-variant-numeric:tabular-nums; overflow-wrap:anywhere; }
.kpi span { color:var(--muted); font-size:.8rem; }
main { display:grid; grid-template-columns:repeat(auto-fit, minmax(min(100%, 22rem), 1fr)); gap:.75rem; padding:.75rem 1rem 1.5rem; }
section { background:var(--card); border-radius:8px; padding:.6rem .75rem; min-width:0; }
section h2 { font-size:.95rem; margin:0 0 .4rem; }
svg.chart { display:block; width:100%; height:auto; }
svg.chart text { fill:var(--muted); font-size:10px; }
svg.chart .gridline { stroke:var(--grid); stroke-width:1; }
.legend { display:flex; flex-wrap:wrap; gap:.15rem .75rem; margin-top:.35rem; font-size:.8rem; }
.legend i { display:inline-block; width:.7rem; height:.7rem; border-radius:2px; margin-right:.25rem; vertical-align:-1px; }
.empty { color:var(--muted); font-size:.85rem; margin:.25rem 0; }
table { width:100%; border-collapse:collapse; table-layout:fixed; font-size:.85rem; }
th, td { text-align:left; padding:.25rem .3rem; border-bottom:1px solid var(--grid); vertical-align:top; overflow-wrap:anywhere; }
th { color:var(--muted); font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; width:4.5rem; }
td.path { word-break:break-all; }
.badge { display:inline-block; padding:0 .4rem; border-radius:999px; color:#fff; font-size:.75rem; }
.badge.up, .badge.closed { background:var(--ok); } .badge.down, .badge.open { background:var(--bad); } .badge.half_open, .badge.unknown { background:var(--warn); }
</style>
</head>
<body>
<header>
  <h1>crowdgate status</h1>
  <span id="conn">connecting…</span>
</header>
<div id="config-note" role="status" hidden></div>
<div id="redis-note" role="status" hidden></div>
<div id="pressure-note" role="status" hidden></div>
<div class="kpis">
  <div class="kpi"><b id="kpi-rps">–</b><span>requests/s now</span></div>
  <div class="kpi"><b id="kpi-hit">–</b><span>answered from cache (window)</span></div>
  <div class="kpi"><b id="kpi-stale">–</b><span>stale/s now</span></div>
  <div class="kpi"><b id="kpi-shed">–</b><span>shed/s now</span></div>
  <div class="kpi"><b id="total-requests">–</b><span>requests since start</span></div>
</div>
<main>
  <section id="sec-requests"><h2>Requests/s by cache state</h2>
    <svg class="chart" id="chart-requests" viewBox="0 0 360 140" role="img" aria-label="requests per second by cache state"></svg>
    <div class="legend" id="legend-requests"></div></section>
  <section id="sec-origin"><h2>Origin in-flight vs limit</h2>
    <svg class="chart" id="chart-origin" viewBox="0 0 360 140" role="img" aria-label="origin requests in flight against the concurrency limit"></svg>
    <div class="legend" id="legend-origin"></div></section>
  <section id="sec-shed"><h2>Shed and stale/s</h2>
    <svg class="chart" id="chart-shed" viewBox="0 0 360 140" role="img" aria-label="shed and stale responses per second"></svg>
    <div class="legend" id="legend-shed"></div></section>
  <section id="sec-health"><h2>Origins</h2>
    <table id="origins"><thead><tr><th>origin</th><th>health</th><th>circuit</th><th class="num">in-flight</th><th class="num">queue</th></tr></thead><tbody></tbody></table>
    <p class="empty" id="origins-empty">No origin has been contacted yet.</p></section>
  <section id="sec-hot"><h2>Hot keys</h2>
    <table id="hot-keys"><thead><tr><th>site</th><th>path</th><th class="num">count</th><th>answered as</th></tr></thead><tbody></tbody></table>
    <p class="empty" id="hot-empty">No requests yet.</p></section>
</main>
<script>
(function () {
  "use strict";
  var POLL_MS = ${STATUS_POLL_MS};
  var W = 360, H = 140, PAD_L = 34, PAD_R = 6, PAD_T = 8, PAD_B = 18;
  var SVGNS = "http://www.w3.org/2000/svg";
  var COLORS = { hit:"#2e7d32", updating:"#66bb6a", revalidated:"#9ccc65", miss:"#1e88e5", expired:"#5c6bc0",
    stale:"#ef6c00", bypass:"#8d6e63", pass:"#90a4ae", shed:"#c62828", error:"#6d1b1b" };
  var PALETTE = ["#1e88e5", "#8e24aa", "#00897b", "#f4511e", "#6d4c41", "#3949ab"];

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, text) {
    var n = document.createElement(tag);
    for (var k in attrs || {}) n.setAttribute(k, attrs[k]);
    if (text !== undefined) n.textContent = String(text);
    return n;
  }
  function svgEl(tag, attrs) {
    var n = document.createElementNS(SVGNS, tag);
    for (var k in attrs) n.setAttribute(k, attrs[k]);
    return n;
  }
  function fmt(v) {
    if (!isFinite(v)) return "–";
    if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (v >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (v >= 100) return v.toFixed(0);
    if (v >= 10) return v.toFixed(1);
    return v.toFixed(2).replace(/\\.?0+$/, "") || "0";
  }
  /** Smallest of 1, 2, 5 × 10^n at or above v (an axis maximum that reads well). */
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }

  /**
   * Draws series over the window [now − windowMs, now] into an SVG.
   * series: [{ name, color, values: number[] (one per sample), dashed?, fill? }]; stacked adds them up.
   */
  function drawChart(svg, legend, times, series, opts) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    // The x axis covers the history there is (at least 10 s, at most the window), so a page
    // opened on a fresh gateway fills its charts instead of drawing a sliver at the right edge.
    var end = opts.now;
    var spanMs = times.length ? Math.min(opts.windowMs, Math.max(10000, end - times[0])) : opts.windowMs;
    var start = end - spanMs;
    var ymaxRaw = 0;
    var stackTop = times.map(function () { return 0; });
    series.forEach(function (s) {
      s.values.forEach(function (v, i) {
        if (opts.stacked) { stackTop[i] += v; ymaxRaw = Math.max(ymaxRaw, stackTop[i]); }
        else ymaxRaw = Math.max(ymaxRaw, v);
      });
    });
    var ymax = niceMax(ymaxRaw);
    function X(t) { return PAD_L + (W - PAD_L - PAD_R) * Math.max(0, (t - start) / (end - start)); }
    function Y(v) { return H - PAD_B - (H - PAD_T - PAD_B) * Math.min(1, v / ymax); }
    [0, 0.5, 1].forEach(function (f) {
      var y = Y(ymax * f);
      svg.appendChild(svgEl("line", { x1: PAD_L, x2: W - PAD_R, y1: y, y2: y, "class": "gridline" }));
      var label = svgEl("text", { x: PAD_L - 4, y: y + 3, "text-anchor": "end" });
      label.textContent = fmt(ymax * f);
      svg.appendChild(label);
    });
    var l0 = svgEl("text", { x: PAD_L, y: H - 4 });
    l0.textContent = spanMs < 120000 ? "−" + Math.round(spanMs / 1000) + " s" : "−" + Math.round(spanMs / 60000) + " min";
    svg.appendChild(l0);
    var l1 = svgEl("text", { x: W - PAD_R, y: H - 4, "text-anchor": "end" }); l1.textContent = "now"; svg.appendChild(l1);
    var base = times.map(function () { return 0; });
    var drawn = 0;
    series.forEach(function (s) {
      if (times.length === 0) return;
      // A stacked series that stayed at 0 adds nothing but a line over the ones below it.
      if (opts.stacked && !s.values.some(function (v) { return v > 0; })) return;
      var top = s.values.map(function (v, i) { return (opts.stacked ? base[i] : 0) + v; });
      var line = times.map(function (t, i) { return X(t).toFixed(1) + "," + Y(top[i]).toFixed(1); });
      if (opts.stacked) {
        var under = times.map(function (t, i) { return X(t).toFixed(1) + "," + Y(base[i]).toFixed(1); }).reverse();
        svg.appendChild(svgEl("polygon", { points: line.concat(under).join(" "), fill: s.color, "fill-opacity": "0.55", stroke: "none", "data-series": s.name }));
        base = top;
      }
      // Stacked, a series' outline is drawn only where it adds something (and one sample either
      // side): one error in the window drew the error colour along the whole stack's top, and a
      // crowd answered wholly from the cache read as a red line (WordPress trial).
      var runs = [];
      if (!opts.stacked) runs.push(line);
      else {
        var run = [];
        s.values.forEach(function (v, i) {
          if (v > 0 || s.values[i - 1] > 0 || s.values[i + 1] > 0) run.push(line[i]);
          else if (run.length) { runs.push(run); run = []; }
        });
        if (run.length) runs.push(run);
      }
      runs.forEach(function (points) {
        var attrs = { points: points.join(" "), fill: "none", stroke: s.color, "stroke-width": "1.5", "data-series": s.name };
        if (s.dashed) attrs["stroke-dasharray"] = "4 3";
        svg.appendChild(svgEl("polyline", attrs));
      });
      drawn++;
    });
    svg.setAttribute("data-points", String(times.length));
    svg.setAttribute("data-series", String(drawn));
    svg.setAttribute("data-max", String(ymaxRaw));
    if (times.length === 0) {
      var msg = svgEl("text", { x: (W + PAD_L) / 2, y: H / 2, "text-anchor": "middle" });
      msg.textContent = "collecting samples…";
      svg.appendChild(msg);
    } else if (ymaxRaw === 0) {
      var idle = svgEl("text", { x: (W + PAD_L) / 2, y: H / 2, "text-anchor": "middle" });
      idle.textContent = opts.idleText || "no traffic";
      svg.appendChild(idle);
    }
    while (legend.firstChild) legend.removeChild(legend.firstChild);
    series.forEach(function (s) {
      if (opts.legendOnlyActive && !s.values.some(function (v) { return v > 0; })) return;
      var item = el("span", { "data-series": s.name });
      var sw = el("i");
      sw.style.background = s.color;
      if (s.dashed) sw.style.opacity = "0.6";
      item.appendChild(sw);
      var lastV = s.values.length ? s.values[s.values.length - 1] : 0;
      item.appendChild(document.createTextNode(s.name + " " + fmt(lastV)));
      legend.appendChild(item);
    });
  }

  // The last config reload, when it needs a look: refused (the old config still runs), or
  // accepted with keys that wait for a restart.
  function renderReload(r) {
    var box = $("config-note");
    box.textContent = "";
    var refused = r && !r.ok;
    var pending = r && r.restartRequired && r.restartRequired.length > 0;
    if (!refused && !pending) { box.hidden = true; return; }
    box.hidden = false;
    box.className = refused ? "bad" : "";
    var when = new Date(r.at).toLocaleTimeString();
    box.appendChild(document.createTextNode(refused
      ? "Config reload refused at " + when + " (" + r.errorCount + " error" + (r.errorCount === 1 ? "" : "s") + "): still running generation " + r.generation + "."
      : "Config reloaded at " + when + "; these keys need a restart to change: " + r.restartRequired.join(", ") + "."));
    if (refused) {
      var ul = el("ul", {});
      r.errors.forEach(function (e) { ul.appendChild(el("li", {}, e)); });
      box.appendChild(ul);
      if (pending) box.appendChild(el("p", {}, "Still waiting for a restart: " + r.restartRequired.join(", ") + "."));
    }
  }

  // The Redis tier, when there is one: answering or skipped, purges it has not taken, and how
  // the fills asked across instances ended since start.
  function renderRedis(r) {
    var box = $("redis-note");
    if (!r) { box.hidden = true; return; }
    box.hidden = false;
    box.className = !r.up ? "bad" : r.purgesPending > 0 ? "" : "ok";
    var f = r.fills || {};
    box.textContent = (r.up ? "Redis: shared tier up" : "Redis: skipped (memory only; every instance fetches alone)") +
      (r.purgesPending > 0 ? " · " + r.purgesPending + " purge" + (r.purgesPending === 1 ? "" : "s") + " waiting for it" : "") +
      " · fills since start: " + (f.locked || 0) + " fetched here, " + (f.filled || 0) + " from another instance, " +
      (f.timeout || 0) + " waited then fetched alone, " + (f.redis_down || 0) + " alone (Redis down)" +
      (f.lap ? ", " + f.lap + " not waited for (held by an instance the request came through: a loop)" : "");
  }

  // The gateway itself overloaded (its pressure gate: event loop or heap): what the cache cannot
  // answer is refused or answered stale for that reason, not the origin's (ops trial: the page
  // drew the stale line with no reason).
  function renderPressure(p) {
    var box = $("pressure-note");
    if (!p || !p.overloaded) { box.hidden = true; return; }
    box.hidden = false;
    box.className = "bad";
    box.textContent = "Gateway overloaded (its own CPU or memory, not the origin): event loop busy " +
      Math.round((p.eventLoopUtilization || 0) * 100) + " %, delay p99 " + Math.round(p.eventLoopDelayMs || 0) +
      " ms, heap " + Math.round((p.heapUsedRatio || 0) * 100) + " %. Requests the cache cannot answer are refused " +
      "(503, shed reason pressure) or answered stale; give it more CPU or add instances.";
  }

  function render(d) {
    renderReload(d.lastReload);
    renderRedis(d.redis);
    renderPressure(d.pressure);
    var samples = d.samples || [];
    var times = samples.map(function (s) { return s.at; });
    var now = d.generatedAt;
    var last = samples.length ? samples[samples.length - 1] : null;

    // Requests by state, stacked; only states that had traffic in the window get a legend entry.
    var reqSeries = d.states.map(function (state) {
      return { name: state, color: COLORS[state] || "#999",
        values: samples.map(function (s) { return s.requestsPerSecond[state] || 0; }) };
    });
    drawChart($("chart-requests"), $("legend-requests"), times, reqSeries,
      { now: now, windowMs: d.windowMs, stacked: true, legendOnlyActive: true, idleText: "no requests in the window" });

    // Origin in-flight (solid) vs limit (dashed), per member.
    var members = {};
    samples.forEach(function (s) { (s.origins || []).forEach(function (o) { members[o.site + "/" + o.origin] = true; }); });
    var names = Object.keys(members).sort();
    var originSeries = [];
    names.forEach(function (name, k) {
      var color = PALETTE[k % PALETTE.length];
      function pick(field) {
        return samples.map(function (s) {
          var o = (s.origins || []).filter(function (o) { return o.site + "/" + o.origin === name; })[0];
          return o ? o[field] : 0;
        });
      }
      originSeries.push({ name: name + " in-flight", color: color, values: pick("inflight") });
      originSeries.push({ name: name + " limit", color: color, values: pick("limit"), dashed: true });
    });
    drawChart($("chart-origin"), $("legend-origin"), times, originSeries, { now: now, windowMs: d.windowMs, idleText: "no origin contacted yet" });

    drawChart($("chart-shed"), $("legend-shed"), times, [
      { name: "shed (admission, 503)", color: COLORS.shed, values: samples.map(function (s) { return s.shedPerSecond; }) },
      { name: "rate limited (429)", color: "#8e44ad", values: samples.map(function (s) { return s.rateLimitedPerSecond || 0; }), dashed: true },
      { name: "stale", color: COLORS.stale, values: samples.map(function (s) { return s.stalePerSecond; }) },
    ], { now: now, windowMs: d.windowMs, idleText: "nothing shed or stale" });

    // Headline numbers.
    var rpsNow = 0;
    if (last) for (var k in last.requestsPerSecond) rpsNow += last.requestsPerSecond[k];
    $("kpi-rps").textContent = last ? fmt(rpsNow) : "–";
    $("kpi-stale").textContent = last ? fmt(last.stalePerSecond) : "–";
    $("kpi-shed").textContent = last ? fmt(last.shedPerSecond) : "–";
    var cached = 0, all = 0;
    samples.forEach(function (s) {
      for (var st in s.requestsPerSecond) {
        var n = s.requestsPerSecond[st] * s.spanMs / 1000;
        all += n;
        if (st === "hit" || st === "updating" || st === "stale" || st === "revalidated") cached += n;
      }
    });
    $("kpi-hit").textContent = all > 0 ? Math.round((100 * cached) / all) + " %" : "–";
    var total = 0;
    for (var t in d.totals.requests) total += d.totals.requests[t];
    $("total-requests").textContent = String(total);
    $("total-requests").setAttribute("data-value", String(total));

    // Origins table.
    var ob = $("origins").tBodies[0];
    while (ob.firstChild) ob.removeChild(ob.firstChild);
    (d.origins || []).forEach(function (o) {
      var tr = el("tr", { "data-origin": o.site + "/" + o.origin });
      tr.appendChild(el("td", {}, o.site + "/" + o.origin));
      var h = o.healthy === undefined ? "unknown" : o.healthy ? "up" : "down";
      var td1 = el("td"); td1.appendChild(el("span", { "class": "badge " + h }, h)); tr.appendChild(td1);
      var c = o.circuit || "unknown";
      var td2 = el("td"); td2.appendChild(el("span", { "class": "badge " + c }, c.replace("_", "-"))); tr.appendChild(td2);
      tr.appendChild(el("td", { "class": "num" }, fmt(o.inflight) + " / " + fmt(o.limit)));
      tr.appendChild(el("td", { "class": "num" }, fmt(o.queue)));
      ob.appendChild(tr);
    });
    $("origins-empty").style.display = (d.origins || []).length ? "none" : "";

    // Hot keys: paths are client-controlled, written as text only.
    var hb = $("hot-keys").tBodies[0];
    while (hb.firstChild) hb.removeChild(hb.firstChild);
    (d.hotKeys || []).forEach(function (r) {
      var tr = el("tr", { "data-path": r.path });
      tr.appendChild(el("td", {}, r.site));
      tr.appendChild(el("td", { "class": "path" }, r.path));
      tr.appendChild(el("td", { "class": "num" }, r.count));
      var parts = [];
      for (var s in r.states) if (r.states[s] > 0) parts.push(s + " " + r.states[s]);
      tr.appendChild(el("td", {}, parts.join(", ")));
      hb.appendChild(tr);
    });
    $("hot-empty").style.display = (d.hotKeys || []).length ? "none" : "";
  }

  function poll() {
    fetch("status.json", { cache: "no-store", headers: { accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (d) {
        render(d);
        $("conn").className = "";
        $("conn").textContent = "live · updated " + new Date(d.generatedAt).toLocaleTimeString();
      })
      .catch(function (err) {
        $("conn").className = "down";
        $("conn").textContent = "cannot reach the gateway (" + err.message + "), retrying…";
      })
      .then(function () { setTimeout(poll, POLL_MS); });
  }
  poll();
})();
</script>
</body>
</html>
`;
}

/**
 * Headers for the page: everything is inline, so the policy forbids every other source; the
 * script may only fetch from the admin listener itself.
 */
export const STATUS_PAGE_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'content-security-policy':
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
} as const;

