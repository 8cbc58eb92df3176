"""The dashboard's one HTML page (``reports.dashboard``): markup, style and script.

The script polls the JSON routes every ``__POLL_MS__`` ms and redraws with Plotly (served from
``/static/plotly.min.js``, the plotly package's bundled copy: nothing comes from a CDN).
Table cells are set with ``textContent``, never ``innerHTML``, so a trial's error message or
a searched string value cannot inject markup.
"""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wen dashboard</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;color:#222}
header{background:#243b53;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#bcccdc} header select{font-size:14px}
nav button{margin-right:4px;padding:4px 12px} nav button.on{font-weight:bold}
main{padding:8px 16px} .grid{display:grid;grid-template-columns:1fr 1fr;gap:8px}
table{border-collapse:collapse;font-size:12px;margin:6px 0} th,td{border:1px solid #ccd;padding:2px 6px}
th{background:#eef;cursor:pointer;position:sticky;top:0} tr.sel td{background:#fff3c4}
tr[data-stopped="true"] td.status{color:#b44} tr[data-status="ERROR"] td.status{color:#c00;font-weight:bold}
.scroll{max-height:380px;overflow:auto} .muted{color:#667} .hidden{display:none}
</style></head>
<body>
<header><b>wen dashboard</b><select id="run"></select><span id="status"></span>
<span id="links"></span></header>
<main>
<nav><button id="tab-trials" class="on">Trials</button><button id="tab-ensemble">Ensemble</button></nav>
<section id="trials">
 <p>Filter: <input id="filter" placeholder="text in any cell, e.g. resnet or ERROR" size="40">
 <span id="counts" class="muted"></span></p>
 <div class="scroll"><table id="trial-table"><thead></thead><tbody></tbody></table></div>
 <div class="grid"><div id="curves"></div><div id="parcoords"></div></div>
 <div id="rungs"></div>
</section>
<section id="ensemble" class="hidden">
 <p id="chosen"></p>
 <h3>Comparison (95% subject-bootstrap intervals)</h3>
 <div class="scroll"><table id="comparison"><thead></thead><tbody></tbody></table></div>
 <h3>Paired tests against the baselines (test split)</h3>
 <div class="scroll"><table id="tests"><thead></thead><tbody></tbody></table></div>
 <div class="grid"><div id="weights"></div><div id="diversity"></div></div>
 <h3>Export</h3><pre id="manifest" class="muted"></pre>
</section>
</main>
<!-- plotly.js (4.6 MB) loads after the table's first paint; figures are drawn once it has -->
<script src="/static/plotly.min.js" async onload="window.plotlyReady && window.plotlyReady()"></script>
<script>
"use strict";
const POLL = __POLL_MS__;
const plotlyLoaded = new Promise((resolve) => {
  if (window.Plotly) resolve(); else window.plotlyReady = resolve;
});
let state = {run: null, sort: null, desc: true, selected: new Set(), trials: null, tab: "trials"};
const $ = (id) => document.getElementById(id);
function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  return String(v);
}
function cell(tr, text, cls) {
  const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls;
  tr.appendChild(td); return td;
}
function header(table, names, onclick) {
  const tr = document.createElement("tr");
  for (const n of names) {
    const th = document.createElement("th"); th.textContent = n;
    if (onclick) th.onclick = () => onclick(n);
    tr.appendChild(th);
  }
  table.tHead.replaceChildren(tr);
}
async function getJSON(url) { const r = await fetch(url, {cache: "no-store"}); return r.json(); }

async function refreshRuns() {
  const data = await getJSON("/api/runs");
  const sel = $("run"); const names = data.runs.map((r) => r.name);
  if (sel.options.length !== names.length) {
    sel.replaceChildren(...names.map((n) => new Option(n, n)));
  }
  if (!state.run || !names.includes(state.run)) state.run = names[0] || null;
  sel.value = state.run;
  const run = data.runs.find((r) => r.name === state.run);
  const links = $("links"); links.replaceChildren();
  const add = (label, href, text) => {
    if (!/^https?:\/\//.test(href || "")) return;  // a run's files name the links: http(s) only
    const a = document.createElement("a"); a.href = href; a.textContent = label;
    a.target = "_blank"; links.append(a, " "); if (text) links.append(text, " ");
  };
  if (run && run.ray_dashboard) add("Ray dashboard", run.ray_dashboard);
  for (const [label, href] of Object.entries(data.links || {})) add(label, href);
  return run;
}

function rowCells(r, searched) {
  const stop = r.stopped_at ? `stopped at epoch ${r.stopped_at}` : "";
  return [r.trial_id, r.status + (stop ? ` (${stop})` : ""), r.node || "", fmt(r.fold),
    ...searched.map((k) => fmt(r.params ? r.params[k] : null)), fmt(r.best_epoch),
    ...state.trials.metrics.map((m) => fmt(r.metrics ? r.metrics[m] : null)), fmt(r.epochs_run),
    r.error || ""];
}
function drawTable() {
  const t = state.trials; const s = t.summary; const searched = s.searched || [];
  const names = ["trial", "status", "node", "fold", ...searched, "best epoch",
    ...t.metrics.map((m) => `best ${m}`.replace("best val_", "").replace("best train_", "train ")),
    "epochs", "error"];
  header($("trial-table"), names, (n) => {
    state.desc = state.sort === n ? !state.desc : true; state.sort = n; drawTable();
  });
  const filter = $("filter").value.toLowerCase();
  let rows = t.rows.map((r) => ({r, cells: rowCells(r, searched)}));
  if (filter) rows = rows.filter((x) => x.cells.join(" ").toLowerCase().includes(filter));
  if (state.sort) {
    const i = names.indexOf(state.sort);
    rows.sort((a, b) => {
      const x = a.cells[i], y = b.cells[i]; const nx = parseFloat(x), ny = parseFloat(y);
      const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return state.desc ? -c : c;
    });
  }
  const body = $("trial-table").tBodies[0]; body.replaceChildren();
  for (const {r, cells} of rows) {
    const tr = document.createElement("tr");
    tr.dataset.trial = r.trial_id; tr.dataset.status = r.status;
    tr.dataset.stopped = r.stopped_at ? "true" : "false";
    tr.dataset.epochs = r.epochs_run;
    cells.forEach((c, i) => cell(tr, c, i === 1 ? "status" : ""));
    if (state.selected.has(r.trial_id)) tr.className = "sel";
    tr.onclick = () => {
      state.selected.has(r.trial_id) ? state.selected.delete(r.trial_id) : state.selected.add(r.trial_id);
      drawTable(); drawCurves();
    };
    body.appendChild(tr);
  }
  const stopped = t.rows.filter((r) => r.stopped_at).length;
  const running = t.rows.filter((r) => r.status === "RUNNING").length;
  $("counts").textContent = `${rows.length} of ${t.rows.length} trials; ${running} running, ` +
    `${stopped} stopped by the scheduler; click rows to compare their curves`;
}
function drawCurves() {
  const t = state.trials; const metric = t.summary.metric; let ids = [...state.selected];
  if (!ids.length) {
    const scored = t.rows.filter((r) => r.metrics && r.metrics[metric] !== undefined && r.metrics[metric] !== null);
    scored.sort((a, b) => (b.metrics[metric] - a.metrics[metric]) * (t.summary.mode === "max" ? 1 : -1));
    ids = scored.slice(0, 5).map((r) => r.trial_id);
  }
  const traces = [];
  for (const id of ids) {
    const c = t.curves[id]; if (!c) continue;
    traces.push({x: c.epoch, y: c[metric], name: `${id} ${metric}`, mode: "lines+markers"});
    if (c.lr && c.lr.x.length) traces.push({x: c.lr.x, y: c.lr.y, name: `${id} lr`, yaxis: "y2",
      line: {dash: "dot", width: 1}, opacity: 0.6});
  }
  Plotly.react("curves", traces, {title: {text: `learning curves (${metric}) and learning rate`},
    xaxis: {title: {text: "epoch"}}, yaxis: {title: {text: metric}}, yaxis2: {title: {text: "lr"}, overlaying: "y", side: "right", type: "log", exponentformat: "e"},
    height: 380, margin: {t: 40, r: 60}, legend: {font: {size: 9}}});
}
function drawParcoords() {
  const t = state.trials; const metric = t.summary.metric;
  const rows = t.rows.filter((r) => r.metrics && r.metrics[metric] !== null && r.metrics[metric] !== undefined);
  const dims = [];
  for (const k of t.summary.searched || []) {
    const vals = rows.map((r) => r.params ? r.params[k] : null);
    if (vals.every((v) => typeof v === "number")) dims.push({label: k, values: vals});
    else {
      const cats = [...new Set(vals.map(String))];
      dims.push({label: k, values: vals.map((v) => cats.indexOf(String(v))),
        tickvals: cats.map((_, i) => i), ticktext: cats});
    }
  }
  const y = rows.map((r) => r.metrics[metric]);
  dims.push({label: metric, values: y});
  Plotly.react("parcoords", [{type: "parcoords", dimensions: dims, line: {color: y, colorscale: "Viridis", showscale: true}}],
    {title: {text: `parameters against ${metric}`}, height: 380, margin: {t: 60}});
}
function drawRungs() {
  const r = state.trials.rungs; const x = r.map((g) => `epoch ${g.epoch}`);
  Plotly.react("rungs", [
    {type: "bar", x, y: r.map((g) => g.went_on), name: "went on"},
    {type: "bar", x, y: r.map((g) => g.stopped), name: "stopped here"},
    {type: "bar", x, y: r.map((g) => g.running), name: "running"}],
    {barmode: "group", title: {text: `rungs (${state.trials.summary.scheduler}): trials per rung`}, height: 300});
}
function fillTable(id, records, columns) {
  const table = $(id); header(table, columns); const body = table.tBodies[0]; body.replaceChildren();
  for (const rec of records) {
    const tr = document.createElement("tr");
    for (const c of columns) cell(tr, fmt(rec[c]));
    body.appendChild(tr);
  }
}
async function refreshEnsemble() {
  const e = await getJSON(`/api/runs/${encodeURIComponent(state.run)}/ensemble`);
  if (!e) { $("chosen").textContent = "No ensemble yet: run `wen ensemble RUN`."; return; }
  const ch = e.chosen || {};
  $("chosen").textContent = `Chosen: ${ch.method || "?"} -- ${ch.why || ""}`;
  const metrics = ["wfs", "auc", "acc", "kappa"];
  const rows = e.comparison.map((r) => {
    const out = {method: r.method, split: r.split};
    for (const m of metrics) out[m] = r[m] === null || r[m] === undefined ? "" :
      `${fmt(r[m])} [${fmt(r[m + "_low"])}, ${fmt(r[m + "_high"])}]`;
    return out;
  });
  fillTable("comparison", rows, ["method", "split", ...metrics]);
  fillTable("tests", e.tests, ["method", "baseline", "metric", "diff", "diff_low", "diff_high", "p_value", "p_adjusted", "test"]);
  const methods = Object.keys(e.weights); const members = [...new Set(methods.flatMap((m) => Object.keys(e.weights[m])))];
  Plotly.react("weights", methods.map((m) => ({type: "bar", name: m, x: members, y: members.map((k) => e.weights[m][k] || 0)})),
    {barmode: "group", title: {text: "every method's weights"}, height: 380, xaxis: {tickfont: {size: 9}}});
  const d = e.diversity.filter((r) => r.split === "test" || !r.split);
  const names = [...new Set(d.flatMap((r) => [r.a, r.b]))];
  const z = names.map((a) => names.map((b) => {
    if (a === b) return 0; const r = d.find((q) => (q.a === a && q.b === b) || (q.a === b && q.b === a));
    return r ? r.disagreement : null;
  }));
  Plotly.react("diversity", [{type: "heatmap", x: names, y: names, z, colorscale: "Blues"}],
    {title: {text: "candidates' pairwise disagreement (test)"}, height: 380});
  $("manifest").textContent = e.manifest ? JSON.stringify(e.manifest, null, 1) : "not exported yet: run `wen export RUN`";
}
async function refresh() {
  try {
    const run = await refreshRuns();
    if (!state.run) { $("status").textContent = "no runs yet"; return; }
    if (state.tab === "trials") {
      state.trials = await getJSON(`/api/runs/${encodeURIComponent(state.run)}/trials`);
      const epochs = state.trials.rows.reduce((a, r) => a + (r.epochs_run || 0), 0);
      $("status").textContent = `${run ? run.status : ""}; ${state.trials.rows.length} trials, ${epochs} epochs`;
      $("status").dataset.epochs = epochs;
      drawTable();
      // the table first: it paints before Plotly lays out the figures
      if (!document.body.dataset.firstTable) document.body.dataset.firstTable = String(performance.now());
      await plotlyLoaded;
      drawCurves(); drawParcoords(); drawRungs();
    } else { await plotlyLoaded; await refreshEnsemble(); }
    if (!document.body.dataset.rendered) document.body.dataset.rendered = String(performance.now());
  } catch (err) { $("status").textContent = `cannot read the run: ${err}`; }
}
function tab(name) {
  state.tab = name;
  for (const t of ["trials", "ensemble"]) {
    $(t).classList.toggle("hidden", t !== name); $(`tab-${t}`).classList.toggle("on", t === name);
  }
  refresh();
}
$("tab-trials").onclick = () => tab("trials"); $("tab-ensemble").onclick = () => tab("ensemble");
$("run").onchange = (ev) => { state.run = ev.target.value; state.selected.clear(); refresh(); };
$("filter").oninput = () => drawTable();
refresh(); setInterval(refresh, POLL);
</script></body></html>
"""
