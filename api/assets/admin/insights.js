// Aula admin dashboard, second part (issue #23): charts over time, live lists with a
// pause toggle, the institution filter's short ids and names, dark mode and the
// observers' read-only view. Loaded after app.js and uses its globals (state, gql, el,
// navigate, row...). Plain JavaScript and hand-written SVG: nothing from another origin
// (the page's content security policy allows this origin only).
"use strict";

const RANGES = [
  ["LAST_HOUR", "Last hour"],
  ["LAST_6_HOURS", "Last 6 hours"],
  ["LAST_24_HOURS", "Last 24 hours"],
  ["LAST_7_DAYS", "Last 7 days"],
  ["LAST_14_DAYS", "Last 14 days"],
];
const DEFAULT_RANGE = "LAST_HOUR";
const THEME_KEY = "aula.admin.theme";
const LIVE_KEY = "aula.admin.live";
const SVG = "http://www.w3.org/2000/svg";
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const insights = {
  live: sessionStorage.getItem(LIVE_KEY) !== "paused",
  liveBusy: false,
  liveTimer: null,
  lastLive: 0,
  chartBusy: false,
  lastCharts: 0,
  chartKey: "",
};

// ---------- roles ----------
function isObserver() {
  return Boolean(state.me && state.me.role === "OBSERVER");
}
// Admins and observers without an institution read the whole platform.
function seesPlatform() {
  return Boolean(state.me && (state.me.role === "ADMIN" || (isObserver() && !state.me.institutionId)));
}
// Observers change nothing: every control that would is hidden (`.read-only
// [data-write]` and the known action buttons in insights.css); the API refuses anyway.
function applyRole() {
  document.body.classList.toggle("read-only", isObserver());
  $("field-institution").hidden = !seesPlatform();
}

// ---------- dark mode ----------
function effectiveTheme() {
  const chosen = localStorage.getItem(THEME_KEY);
  if (chosen === "dark" || chosen === "light") return chosen;
  return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}
function applyTheme() {
  const theme = effectiveTheme();
  document.documentElement.dataset.theme = theme;
  const toggle = $("theme-toggle");
  if (toggle) {
    toggle.setAttribute("aria-pressed", String(theme === "dark"));
    toggle.textContent = theme === "dark" ? "☀ Light mode" : "☾ Dark mode";
  }
}
function toggleTheme() {
  localStorage.setItem(THEME_KEY, effectiveTheme() === "dark" ? "light" : "dark");
  applyTheme();
}

// ---------- filters: institution and search ----------
function showFieldError(id, message) {
  const input = $(id);
  const box = $(`${id}-error`);
  input.setAttribute("aria-invalid", message ? "true" : "false");
  box.textContent = message || "";
  box.hidden = !message;
}
// What the table shows (8 characters), a full id or part of a name: the full id, or an
// error to show beside the field.
async function resolveInstitution(text) {
  const value = text.trim();
  if (!value || UUID_RE.test(value)) return value.toLowerCase();
  if (!seesPlatform()) throw new Error("you see your own institution only");
  const data = await gql("query($t: String!) { institutionSuggestions(text: $t) { id name } }", { t: value });
  const found = data.institutionSuggestions;
  const byId = found.filter((s) => s.id.startsWith(value.toLowerCase()));
  const matches = byId.length ? byId : found;
  if (matches.length === 1) return matches[0].id;
  if (!matches.length) throw new Error(`no institution has an id starting with or a name containing “${value}”`);
  throw new Error(`“${value}” matches ${matches.length} institutions: ${matches.map((s) => `${s.id.slice(0, 8)} ${s.name}`).join(", ")}`);
}
let suggestTimer = null;
function suggestInstitutions() {
  clearTimeout(suggestTimer);
  const value = $("f-institution").value.trim();
  if (!seesPlatform() || !value || UUID_RE.test(value)) return;
  suggestTimer = setTimeout(async () => {
    try {
      const data = await gql("query($t: String!) { institutionSuggestions(text: $t) { id name } }", { t: value });
      $("institution-options").replaceChildren(...data.institutionSuggestions.map((s) =>
        el("option", { value: s.id }, `${s.id.slice(0, 8)} · ${s.name}`)));
    } catch (error) {
      // Suggestions are a convenience; the submit reports errors.
    }
  }, 250);
}
async function submitFilters() {
  const filters = readFilters();
  filters.q = $("f-search").value.trim();
  let failed = false;
  try {
    filters.institution = await resolveInstitution(filters.institution);
    showFieldError("f-institution", "");
  } catch (error) {
    showFieldError("f-institution", error instanceof ApiFailure ? describe(error) : error.message);
    failed = true;
  }
  if (filters.q && filters.q.length < 3) {
    showFieldError("f-search", "type at least 3 characters");
    failed = true;
  } else showFieldError("f-search", "");
  if (failed) {
    // A page of the old filter must not be paged on as if it were the new one.
    state.next = null;
    $("next-page").disabled = true;
    return;
  }
  navigate(filters);
}
function renderSearchField() {
  const tasks = state.view.tab === "tasks";
  $("f-search").value = state.view.q || "";
  $("f-search-label").textContent = tasks ? "Error contains" : "Payload contains";
  // Task error texts are searchable by the platform's operators only (the API says so).
  $("field-search").hidden = tasks && !seesPlatform();
}

// ---------- charts ----------
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) if (value !== undefined && value !== null) node.setAttribute(key, value);
  for (const child of children.flat()) if (child) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}
function bucketLabel(at, width) {
  const d = new Date(at);
  const pad = (n) => String(n).padStart(2, "0");
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return width === "HOUR" ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}` : hm;
}
// Every chart's size and margins (the y axis's ticks stand in `left`).
const FRAME = { W: 640, H: 150, left: 40, bottom: 20, top: 8 };
// A chart: the x axis, the y axis's `max` and 0 ticks, the first and last of `times`
// under the ends of the x axis, then its `marks` (bars or lines).
function chartSvg(label, max, times, width, marks) {
  const { W, H, left, bottom, top } = FRAME;
  return svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label },
    svg("line", { class: "axis", x1: left, y1: H - bottom, x2: W, y2: H - bottom }),
    svg("text", { class: "tick", x: left - 4, y: top + 8, "text-anchor": "end" }, String(max)),
    svg("text", { class: "tick", x: left - 4, y: H - bottom, "text-anchor": "end" }, "0"),
    times.length ? svg("text", { class: "tick", x: left, y: H - 4 }, bucketLabel(times[0], width)) : null,
    times.length ? svg("text", { class: "tick", x: W, y: H - 4, "text-anchor": "end" }, bucketLabel(times[times.length - 1], width)) : null,
    ...marks);
}
// Stacked bars: one per bucket, a segment per series (class sets the colour).
function barChart(id, title, points, width, series) {
  const { W, H, left, bottom, top } = FRAME;
  const totals = points.map((p) => series.reduce((sum, s) => sum + Number(p[s.key]), 0));
  const max = Math.max(1, ...totals);
  const step = (W - left) / Math.max(1, points.length);
  const bars = points.map((p, i) => {
    let y = H - bottom;
    const segments = series.map((s) => {
      const h = (Number(p[s.key]) / max) * (H - bottom - top);
      y -= h;
      return h > 0 ? svg("rect", { class: s.cls, x: (left + i * step).toFixed(1), y: y.toFixed(1), width: Math.max(1, step - 1).toFixed(1), height: h.toFixed(1) }) : null;
    });
    const text = `${bucketLabel(p.at, width)}: ${series.map((s) => `${p[s.key]} ${s.label}`).join(", ")}`;
    return svg("g", { "data-total": totals[i] }, svg("title", {}, text), ...segments);
  });
  const sum = series.map((s) => `${points.reduce((n, p) => n + Number(p[s.key]), 0)} ${s.label}`).join(", ");
  const chart = chartSvg(`${title}: ${sum}`, max, points.map((p) => p.at), width, bars);
  return figure(id, title, sum, chart, series.map((s) => [s.cls, s.label]));
}
// Lines: the queue's depth (pending + running) of the busiest kinds.
function depthChart(samples, width) {
  const { W, H, left, bottom, top } = FRAME;
  const depth = (s) => Number(s.pending) + Number(s.running);
  const kinds = new Map();
  for (const s of samples) {
    const k = kinds.get(s.kind) || [];
    k.push(s);
    kinds.set(s.kind, k);
  }
  const busiest = [...kinds.entries()]
    .map(([kind, list]) => [kind, list, Math.max(...list.map(depth))])
    .sort((a, b) => b[2] - a[2]).slice(0, 5);
  const times = [...new Set(samples.map((s) => s.at))].sort();
  const max = Math.max(1, ...busiest.map((b) => b[2]));
  const x = (at) => left + (times.length > 1 ? (times.indexOf(at) / (times.length - 1)) * (W - left) : (W - left) / 2);
  const y = (n) => H - bottom - (n / max) * (H - bottom - top);
  const lines = busiest.map(([kind, list], i) => svg("polyline", {
    class: `series s${i}`, "data-kind": kind, fill: "none",
    points: list.map((s) => `${x(s.at).toFixed(1)},${y(depth(s)).toFixed(1)}`).join(" "),
  }, svg("title", {}, `${kind}: up to ${Math.max(...list.map(depth))} unfinished`)));
  const now = busiest.map(([kind, list]) => `${kind} ${depth(list[list.length - 1])}`);
  const summary = busiest.length ? `latest: ${now.join(", ")}` : "nothing queued";
  const chart = chartSvg(`Queue depth by kind: ${summary}`, max, times, width, lines);
  return figure("chart-depth", "Queue depth by kind", summary, chart, busiest.map(([kind], i) => [`s${i}`, kind]));
}
function figure(id, title, summary, chart, legend) {
  return el("figure", { class: "chart-figure", id },
    el("figcaption", {}, el("strong", {}, title), el("span", { class: "muted" }, ` · ${summary}`)),
    chart,
    el("ul", { class: "legend" }, legend.map(([cls, label]) => el("li", {}, el("span", { class: `key ${cls}`, "aria-hidden": "true" }), label))));
}
function chartRange() {
  return RANGES.some(([value]) => value === state.view.range) ? state.view.range : DEFAULT_RANGE;
}
async function loadCharts(force = false) {
  const panel = $("charts-box");
  if (!state.me || !state.view || panel.hidden || !panel.open) return;
  const range = chartRange();
  const institution = seesPlatform() && UUID_RE.test(state.view.institution || "") ? state.view.institution : null;
  const key = `${range}|${institution}`;
  if (!force && key === insights.chartKey && Date.now() - insights.lastCharts < 10000) return;
  if (insights.chartBusy) return;
  insights.chartBusy = true;
  insights.chartKey = key;
  insights.lastCharts = Date.now();
  const box = $("charts");
  box.setAttribute("aria-busy", "true");
  try {
    const data = await gql(`query($range: SeriesRange!, $i: UUID) { processingSeries(range: $range, institutionId: $i) {
      width points { at eventsSucceeded eventsFailed tasksSucceeded tasksFailed } queueDepth { at kind pending running } } }`,
    { range, i: institution });
    const s = data.processingSeries;
    box.replaceChildren(
      barChart("chart-events", "Events processed", s.points, s.width,
        [{ key: "eventsSucceeded", label: "succeeded", cls: "ok" }, { key: "eventsFailed", label: "failed", cls: "bad" }]),
      barChart("chart-tasks", "Tasks processed", s.points, s.width,
        [{ key: "tasksSucceeded", label: "succeeded", cls: "ok" }, { key: "tasksFailed", label: "failed", cls: "bad" }]),
      depthChart(s.queueDepth, s.width));
    box.dataset.state = "ready";
  } catch (error) {
    box.replaceChildren(el("p", { class: "error" }, `Could not load the charts: ${describe(error)}`));
    box.dataset.state = "error";
  } finally {
    box.removeAttribute("aria-busy");
    insights.chartBusy = false;
  }
}
function renderCharts() {
  const range = chartRange();
  const select = $("chart-range");
  if (!select.options.length) {
    select.replaceChildren(...RANGES.map(([value, label]) => el("option", { value }, label)));
  }
  select.value = range;
  $("charts-box").hidden = !["events", "tasks"].includes(state.view.tab);
  loadCharts(false);
}

// ---------- live lists ----------
function renderLiveToggle() {
  const button = $("live-toggle");
  button.setAttribute("aria-pressed", String(!insights.live));
  button.textContent = insights.live ? "⏸ Pause live updates" : "▶ Resume live updates";
  $("live-state").textContent = insights.live ? "Live" : "Paused";
  $("live-state").dataset.live = String(insights.live);
}
function toggleLive() {
  insights.live = !insights.live;
  sessionStorage.setItem(LIVE_KEY, insights.live ? "live" : "paused");
  renderLiveToggle();
  if (insights.live) liveTick(true);
}
// Called by the live header when the log moves, and every few seconds (a task can
// finish without a new event): refreshes the visible page in place.
function liveTick(now = false) {
  if (!state.me || !state.view) return;
  if (!now && Date.now() - insights.lastLive < 1000) {
    clearTimeout(insights.liveTimer);
    insights.liveTimer = setTimeout(() => liveTick(true), 1000);
    return;
  }
  loadCharts(false);
  if (!insights.live || insights.liveBusy) return;
  if (!["events", "tasks"].includes(state.view.tab)) return;
  const list = $("list").dataset.state;
  if (list !== "ready" && list !== "empty") return;
  insights.lastLive = Date.now();
  refreshPage();
}
async function refreshPage() {
  const v = state.view;
  const tasks = v.tab === "tasks";
  const page = state.page;
  const after = state.cursors[page];
  const started = listRequest;
  insights.liveBusy = true;
  try {
    const { nodes, next } = await fetchPage(v, after);
    // A load of another page or filter started meanwhile: it draws the list.
    if (started !== listRequest || state.view !== v || state.page !== page || !insights.live) return;
    patchList(nodes, next, tasks);
  } catch (error) {
    // The next tick tries again; a lasting failure shows on the next full load.
  } finally {
    insights.liveBusy = false;
  }
}
// Rows keep their elements (and so the focus, the scroll position and the open
// drawer's opener): changed cells are replaced, new rows inserted where they belong,
// rows gone from the page removed (unless focused).
function patchList(nodes, next, tasks) {
  const body = $("list-body");
  const key = (n) => String(tasks ? n.id : n.eventId);
  const keyOf = (tr) => (tasks ? tr.dataset.taskId : tr.dataset.eventId);
  if ($("list").dataset.state === "empty") {
    if (!nodes.length) return;
    body.replaceChildren();
    $("list").dataset.state = "ready";
  }
  const existing = new Map([...body.rows].filter((tr) => keyOf(tr)).map((tr) => [keyOf(tr), tr]));
  const wanted = new Set(nodes.map(key));
  for (const [k, tr] of existing) {
    if (!wanted.has(k) && !tr.contains(document.activeElement)) {
      tr.remove();
      existing.delete(k);
    }
  }
  let previous = null;
  let added = 0;
  for (const node of nodes) {
    const fresh = row(node, tasks);
    const old = existing.get(key(node));
    if (old) {
      patchRow(old, fresh);
      previous = old;
    } else {
      fresh.classList.add("fresh");
      if (previous) previous.after(fresh);
      else body.prepend(fresh);
      previous = fresh;
      added += 1;
    }
  }
  state.next = next;
  $("next-page").disabled = !next;
  if (added) $("live-state").textContent = `Live · ${added} new`;
}
function patchRow(old, fresh) {
  for (const name of fresh.getAttributeNames()) {
    if (name.startsWith("data-") && old.getAttribute(name) !== fresh.getAttribute(name)) old.setAttribute(name, fresh.getAttribute(name));
  }
  const oldCells = [...old.cells];
  const newCells = [...fresh.cells];
  newCells.forEach((cell, i) => {
    const current = oldCells[i];
    if (!current || current.innerHTML === cell.innerHTML) return;
    const focused = document.activeElement && current.contains(document.activeElement) ? document.activeElement : null;
    if (focused && focused.tagName === "BUTTON") focused.textContent = cell.textContent;
    else current.replaceWith(cell);
    old.classList.add("changed");
  });
}

// ---------- wiring ----------
// Called by app.js after each change of view (`apply`).
function renderInsights() {
  if (!state.view) return;
  // A new view was applied: whatever was refused before is not on screen any more.
  showFieldError("f-institution", "");
  showFieldError("f-search", "");
  renderSearchField();
  renderCharts();
}
applyTheme();
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);
document.addEventListener("DOMContentLoaded", () => {
  $("theme-toggle").addEventListener("click", toggleTheme);
  applyTheme();
  $("live-toggle").addEventListener("click", () => toggleLive());
  renderLiveToggle();
  $("chart-range").addEventListener("change", () => navigate({ range: $("chart-range").value }));
  $("charts-box").addEventListener("toggle", () => loadCharts(true));
  $("f-institution").addEventListener("input", () => {
    showFieldError("f-institution", "");
    suggestInstitutions();
  });
  setInterval(() => liveTick(false), 5000);
});
