// flow report: draws the page from the JSON document in #data. Everything is built with DOM
// calls and textContent (never markup from data), and nothing is fetched.
"use strict";
(function () {
  const started = performance.now();
  const page = JSON.parse(document.getElementById("data").textContent);
  const stages = page.stages;
  const SVG = "http://www.w3.org/2000/svg";
  const COL = 210, ROW = 34, W = 176, H = 24, PAD = 16;
  // The list shows at most this many matching stages; the filter narrows it.
  const LIST_MAX = 300;
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];
  const LABEL = { ran: "ran", cached: "cached", downloaded: "downloaded", failed: "failed", skipped: "skipped", will_run: "will run", will_download: "will download" };

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }
  function seconds(s) {
    if (s === undefined || s === null) return "";
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    const m = Math.floor(s / 60);
    return m < 60 ? m + " min " + Math.round(s - 60 * m) + " s" : Math.floor(m / 60) + " h " + (m % 60) + " min";
  }
  function num(v) {
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : String(+v.toPrecision(5));
  }
  function badge(state) { return el("span", { class: "badge s-" + state, text: LABEL[state] }); }

  // The graph.
  const dag = document.getElementById("dag");
  const cols = stages.reduce((m, s) => Math.max(m, s.place.col), 0) + 1;
  const rows = stages.reduce((m, s) => Math.max(m, s.place.row), 0) + 1;
  dag.setAttribute("width", PAD * 2 + (cols - 1) * COL + W);
  dag.setAttribute("height", PAD * 2 + (rows - 1) * ROW + H);
  const pos = stages.map((s) => [PAD + s.place.col * COL, PAD + s.place.row * ROW]);
  const edgeEls = [];
  const edgeLayer = svg("g", {});
  for (const [from, to] of page.edges) {
    const [x1, y1] = [pos[from][0] + W, pos[from][1] + H / 2];
    const [x2, y2] = [pos[to][0], pos[to][1] + H / 2];
    const mid = (x1 + x2) / 2;
    const p = svg("path", { class: "edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` });
    edgeLayer.append(p);
    edgeEls.push([from, to, p]);
  }
  dag.append(edgeLayer);
  const nodes = stages.map((s, k) => {
    const g = svg("g", { class: "node s-" + s.state, transform: `translate(${pos[k][0]},${pos[k][1]})`, "data-stage": s.name, "data-state": s.state });
    const title = svg("title", {});
    title.textContent = `${s.name} (${s.kind}): ${LABEL[s.state]}`;
    const text = svg("text", { x: 8, y: 16 });
    text.textContent = s.name.length > 24 ? s.name.slice(0, 23) + "…" : s.name;
    g.append(title, svg("rect", { width: W, height: H }), text);
    g.addEventListener("click", () => select(k));
    dag.append(g);
    return g;
  });

  // Filtering: by text (name or kind) and by state.
  const search = document.getElementById("search");
  const toggles = Array.from(document.querySelectorAll("#controls input[type=checkbox]"));
  const tbody = document.querySelector("#stages tbody");
  function visible() {
    const q = search.value.trim().toLowerCase();
    const on = new Set(toggles.filter((t) => t.checked).map((t) => t.dataset.state));
    return stages.map((s) => on.has(s.state) && (!q || s.name.toLowerCase().includes(q) || s.kind.toLowerCase().includes(q)));
  }
  function filter() {
    const shown = visible();
    let count = 0;
    tbody.textContent = "";
    stages.forEach((s, k) => {
      nodes[k].classList.toggle("dim", !shown[k]);
      if (!shown[k]) return;
      count++;
      if (count > LIST_MAX) return;
      const tr = el("tr", { "data-stage": s.name },
        el("td", { text: s.name }), el("td", { text: s.kind }), el("td", {}, badge(s.state)),
        el("td", { class: "num", text: s.record ? seconds(s.record.seconds) : "" }),
        el("td", {}, el("code", { text: s.artifact ? s.artifact.slice(0, 12) : "" })));
      tr.addEventListener("click", () => select(k));
      tbody.append(tr);
    });
    document.getElementById("shown").textContent = `${count} of ${stages.length} stages shown`;
    document.getElementById("more").textContent = count > LIST_MAX ? `${count - LIST_MAX} more match: narrow the filter to list them.` : "";
  }
  search.addEventListener("input", filter);
  toggles.forEach((t) => t.addEventListener("change", filter));

  // A stage's details.
  const details = document.getElementById("details");
  let selected = -1;
  function facts(rows) {
    const t = el("table", { class: "facts" });
    for (const [k, v] of rows) if (v !== undefined && v !== null && v !== "") t.append(el("tr", {}, el("td", { class: "k", text: k }), el("td", {}, v)));
    return t;
  }
  function link(k) {
    const a = el("a", { class: "stage", text: stages[k].name });
    a.addEventListener("click", () => select(k));
    return a;
  }
  function table(head, rows) {
    const t = el("table", {}, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { text: h })))));
    const b = el("tbody");
    for (const r of rows) b.append(el("tr", {}, ...r.map((c) => (c instanceof Node ? el("td", {}, c) : el("td", { text: c === undefined ? "" : String(c) })))));
    t.append(b);
    return t;
  }
  // Flattens nested objects into [path, value] rows.
  function flat(v, prefix, out) {
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      for (const [k, x] of Object.entries(v)) flat(x, prefix ? prefix + "." + k : k, out);
    } else out.push([prefix, Array.isArray(v) ? JSON.stringify(v) : num(v)]);
    return out;
  }
  function chart(metric, series) {
    const w = 560, h = 190, l = 56, r = 10, t = 18, b = 24;
    const pts = series.flatMap(([, p]) => p.filter((q) => q[1] !== null && isFinite(q[1])));
    const box = svg("svg", { class: "chart", width: w, height: h, "data-metric": metric, viewBox: `0 0 ${w} ${h}` });
    const caption = svg("text", { x: l, y: 12 });
    caption.textContent = metric;
    box.append(caption);
    if (!pts.length) return box;
    const xs = pts.map((q) => q[0]), ys = pts.map((q) => q[1]);
    let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y0 -= Math.abs(y0) * 0.05 + 1e-9; y1 += Math.abs(y1) * 0.05 + 1e-9; }
    const X = (x) => l + ((x - x0) / (x1 - x0)) * (w - l - r);
    const Y = (y) => h - b - ((y - y0) / (y1 - y0)) * (h - t - b);
    for (let i = 0; i <= 4; i++) {
      const y = y0 + ((y1 - y0) * i) / 4;
      box.append(svg("line", { class: "grid", x1: l, x2: w - r, y1: Y(y), y2: Y(y) }));
      const tx = svg("text", { x: l - 4, y: Y(y) + 3, "text-anchor": "end" });
      tx.textContent = num(+y.toPrecision(3));
      box.append(tx);
    }
    for (const x of [x0, x1]) {
      const tx = svg("text", { x: X(x), y: h - 8, "text-anchor": x === x0 ? "start" : "end" });
      tx.textContent = "step " + x;
      box.append(tx);
    }
    box.append(svg("line", { class: "axis", x1: l, x2: l, y1: t, y2: h - b }), svg("line", { class: "axis", x1: l, x2: w - r, y1: h - b, y2: h - b }));
    series.forEach(([name, p], i) => {
      const good = p.filter((q) => q[1] !== null && isFinite(q[1]));
      const color = COLORS[i % COLORS.length];
      box.append(svg("polyline", { points: good.map((q) => `${X(q[0]).toFixed(1)},${Y(q[1]).toFixed(1)}`).join(" "), stroke: color, "data-series": name }));
      // Sparse series (validation every few hundred steps, a single final value) show their points.
      if (good.length <= 60) for (const q of good) box.append(svg("circle", { cx: X(q[0]).toFixed(1), cy: Y(q[1]).toFixed(1), r: 2.5, fill: color }));
    });
    return box;
  }
  function legend(series) {
    return el("div", { class: "legend" }, ...series.map(([name], i) => el("span", {}, el("i", { style: "background:" + COLORS[i % COLORS.length] }), name)));
  }
  // One chart per metric; the validation losses of several sources share the `val_loss` one.
  const FIRST = ["loss", "val_loss", "lr", "grad_norm", "tokens_per_s"];
  function curves(c) {
    const rank = (n) => (FIRST.includes(n) ? FIRST.indexOf(n) : FIRST.length);
    const names = Object.keys(c).sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
    const perSource = names.filter((n) => n.startsWith("val_loss/"));
    const out = [];
    for (const n of names) {
      if (n.startsWith("val_loss/") && perSource.length > 1) continue;
      const series = [[n, c[n]]];
      if (n === "val_loss" && perSource.length > 1) perSource.forEach((s) => series.push([s, c[s]]));
      out.push(chart(n === "val_loss" && perSource.length > 1 ? "val_loss (per source)" : n, series));
      if (series.length > 1) out.push(legend(series));
    }
    if (perSource.length > 1 && !names.includes("val_loss")) {
      const series = perSource.map((s) => [s, c[s]]);
      out.push(chart("val_loss (per source)", series), legend(series));
    }
    return out;
  }
  function select(k) {
    if (selected >= 0) nodes[selected].classList.remove("selected");
    selected = k;
    nodes[k].classList.add("selected");
    for (const [from, to, p] of edgeEls) p.classList.toggle("hot", from === k || to === k);
    const s = stages[k];
    const rec = s.record || {};
    details.textContent = "";
    details.dataset.stage = s.name;
    details.append(el("h2", {}, s.name + " ", badge(s.state)));
    details.append(facts([
      ["kind", s.kind], ["executor", s.executor], ["device", rec.device], ["host", rec.host], ["created", rec.created],
      ["duration", seconds(rec.seconds)], ["size", rec.bytes !== undefined ? bytes(rec.bytes) : ""],
      ["fingerprint", s.fingerprint ? el("code", { text: s.fingerprint }) : ""], ["artifact", s.artifact ? el("code", { text: s.artifact }) : ""],
      ["produced by", rec.produced_by], ["flow", rec.flow_version],
    ]));
    if (s.failure) details.append(el("h3", { text: s.state === "skipped" ? "skipped" : "failure" }), el("pre", { text: s.failure }));
    if (s.reasons && s.reasons.length) {
      details.append(el("h3", { text: s.state === "ran" ? "why it ran" : "why it will run" }), el("ul", { class: "reasons" }, ...s.reasons.map((r) => el("li", { text: r }))));
    }
    if (s.inputs && Object.keys(s.inputs).length) {
      const rows = [];
      for (const [role, from] of Object.entries(s.inputs)) for (const j of from) {
        const m = stages[j].model;
        rows.push([role, link(j), el("code", { text: (stages[j].artifact || "").slice(0, 12) }), m ? `${m.num_hidden_layers} layers × ${m.hidden_size}` : ""]);
      }
      details.append(el("h3", { text: "what went in" }), table(["role", "stage", "artifact", "model"], rows));
    }
    if (s.model) details.append(el("h3", { text: "model" }), facts(Object.entries(s.model).map(([k, v]) => [k, num(v)])));
    if (s.curves && Object.keys(s.curves).length) details.append(el("h3", { text: "curves" }), ...curves(s.curves));
    if (s.eval) details.append(el("h3", { text: "evaluation" }), table(["metric", "value"], flat(s.eval, "", [])));
    if (s.answers && s.answers.length) {
      const keys = Object.keys(s.answers[0]);
      details.append(el("h3", { text: "task answers (first " + s.answers.length + ")" }), table(keys, s.answers.map((a) => keys.map((k) => (typeof a[k] === "string" ? a[k] : JSON.stringify(a[k]))))));
    }
    if (s.samples && s.samples.length) details.append(el("h3", { text: "samples" }), table(["prompt", "completion"], s.samples.map((x) => [x.prompt, x.completion])));
    if (rec.metrics && Object.keys(rec.metrics).length) details.append(el("h3", { text: "last reported" }), table(["metric", "value"], flat(rec.metrics, "", [])));
    if (Object.keys(s.params || {}).length) details.append(el("h3", { text: "parameters" }), el("pre", { text: JSON.stringify(s.params, null, 2) }));
    if (s.files && s.files.length) {
      details.append(el("h3", { text: "files" }), table(["path", "size"], s.files.map(([p, n]) => [p, bytes(n)])));
      if (s.more_files) details.append(el("p", { class: "hint", text: `and ${s.more_files} more` }));
    }
    if (s.log_tail && s.log_tail.length) details.append(el("h3", { text: "log (last lines)" }), el("pre", { class: "log", text: s.log_tail.join("\n") }));
    if (location.hash !== "#" + encodeURIComponent(s.name)) history.replaceState(null, "", "#" + encodeURIComponent(s.name));
  }

  filter();
  const wanted = decodeURIComponent(location.hash.slice(1));
  const at = stages.findIndex((s) => s.name === wanted);
  if (at >= 0) {
    select(at);
    nodes[at].scrollIntoView({ block: "nearest", inline: "nearest" });
  }
  document.body.dataset.renderedMs = Math.round(performance.now() - started);
})();
