// The dashboard's state in its address (tabs, filters, sort, the open drawer): read,
// checked and written back. Loaded after app.js; the functions here run only once the
// page has loaded every script.
// ---------- URL state ----------
const FILTER_KEYS = ["types", "kinds", "status", "createdFrom", "createdTo", "processedFrom", "processedTo",
  "durationOp", "durationMs", "institution", "failed", "q", "priority"];

const TABS = ["events", "tasks", "projections", "webhooks"];
// What a datetime-local field holds (local time, seconds and milliseconds optional).
const LOCAL_TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?$/;

function readView() {
  const params = new URLSearchParams(location.search);
  const view = { tab: params.get("tab") || "events", sort: params.get("sort") || "", dir: params.get("dir") || "DESC" };
  for (const key of FILTER_KEYS) view[key] = params.get(key) || "";
  view.event = params.get("event") || "";
  view.range = params.get("range") || "";
  return view;
}
function localTime(text) {
  return LOCAL_TIME_RE.test(text) && !isNaN(new Date(text));
}
// A view from a hand-edited or shared address is checked before any of it reaches a
// GraphQL variable: the API would refuse a value of the wrong shape with its parser's
// words, which say nothing to a person. What the page cannot use is dropped (`ignored`,
// said in `#url-hints`); the institution and the search keep their text and are
// checked beside their fields (`checkFields`), like the form's.
function checkView(given) {
  const view = { ...given };
  const ignored = [];
  const drop = (key, why, fallback = "") => {
    ignored.push(`${key} “${view[key]}”: ${why}`);
    view[key] = fallback;
  };
  if (!TABS.includes(view.tab)) drop("tab", "no such tab", "events");
  if (view.tab === "projections" && !seesPlatform()) drop("tab", "not for your role", "events");
  const sorts = (view.tab === "tasks" ? TASK_COLUMNS : EVENT_COLUMNS).map((c) => c.sort).filter(Boolean);
  if (view.sort && !sorts.includes(view.sort)) drop("sort", `not a column of this list (${sorts.join(", ")})`);
  if (!["ASC", "DESC"].includes(view.dir)) drop("dir", "ASC or DESC", "DESC");
  // The URL keeps the status across tabs: a task status on the Events tab is kept.
  if (view.status && ![...EVENT_STATUSES, ...TASK_STATUSES, UNRESOLVED].includes(view.status)) drop("status", "no such status");
  for (const key of ["createdFrom", "createdTo", "processedFrom", "processedTo"]) {
    if (view[key] && !localTime(view[key])) drop(key, "not a date and time like 2026-12-07T09:30");
  }
  if (view.durationOp && !["EQ", "GT", "LT"].includes(view.durationOp)) drop("durationOp", "EQ, GT or LT");
  if (view.durationMs && !/^\d{1,15}$/.test(view.durationMs)) drop("durationMs", "a whole number of milliseconds");
  if (view.failed && !["yes", "no"].includes(view.failed)) drop("failed", "yes or no");
  if (view.priority && !(/^\d{1,3}$/.test(view.priority) && Number(view.priority) <= 100)) {
    drop("priority", "a whole number from 0 to 100");
  }
  if (view.range && !RANGES.some(([value]) => value === view.range)) drop("range", "no such range");
  if (view.event && !UUID_RE.test(view.event)) drop("event", "not an event id");
  // The institution field is the platform's: others see their own institution only.
  if (view.institution && !UUID_RE.test(view.institution) && !seesPlatform()) {
    drop("institution", "you see your own institution only");
  }
  return { view, ignored };
}
function showUrlHints(ignored) {
  const box = $("url-hints");
  box.textContent = ignored.length ? `Left out of this address: ${ignored.join("; ")}.` : "";
  box.hidden = !ignored.length;
}
function writeView(view, replace = false) {
  const params = new URLSearchParams();
  if (view.tab !== "events") params.set("tab", view.tab);
  for (const key of FILTER_KEYS) if (view[key]) params.set(key, view[key]);
  if (view.sort) params.set("sort", view.sort);
  if (view.sort && view.dir !== "DESC") params.set("dir", view.dir);
  if (view.event) params.set("event", view.event);
  if (view.range) params.set("range", view.range);
  const url = `${location.pathname}${params.toString() ? "?" + params : ""}`;
  if (url === location.pathname + location.search) return;
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
}
function navigate(changes, { replace = false, keepPage = false } = {}) {
  const view = { ...state.view, ...changes };
  writeView(view, replace);
  apply(view, keepPage);
}

// What both lists filter alike: the form's two time ranges, each under the list's own
// field names (`ranges`: view key -> filter field), the duration and the institution.
function sharedFilter(view, ranges) {
  const filter = {};
  for (const [key, field] of Object.entries(ranges)) if (view[key]) filter[field] = iso(view[key]);
  if (view.durationOp && view.durationMs !== "") filter.duration = { op: view.durationOp, ms: Number(view.durationMs) };
  if (view.institution) filter.institutionId = view.institution;
  return filter;
}
// Events are recorded and processed; tasks are created and finished.
const EVENT_RANGES = { createdFrom: "recordedFrom", createdTo: "recordedTo", processedFrom: "processedFrom", processedTo: "processedTo" };
const TASK_RANGES = { createdFrom: "createdFrom", createdTo: "createdTo", processedFrom: "finishedFrom", processedTo: "finishedTo" };
function eventFilter(view) {
  const filter = sharedFilter(view, EVENT_RANGES);
  if (view.types) filter.types = view.types.split(",");
  // The URL keeps the status across tabs; a task status (`dead`, `running`) means
  // nothing for events, and the API refuses a status outside its enum.
  if (EVENT_STATUSES.includes(view.status)) filter.status = view.status;
  Object.assign(filter, unresolvedFilter(view));
  if (view.failed) filter.hasFailedTasks = view.failed === "yes";
  if (view.q) filter.search = view.q;
  return filter;
}
function taskFilter(view) {
  const filter = sharedFilter(view, TASK_RANGES);
  if (view.kinds) filter.kinds = view.kinds.split(",");
  if (TASK_STATUSES.includes(view.status)) filter.status = view.status;
  // Error texts are searchable by the platform's operators only.
  if (view.q && seesPlatform()) filter.search = view.q;
  if (view.priority !== "" && !isNaN(Number(view.priority))) filter.priority = Number(view.priority);
  return filter;
}
// datetime-local values are local time; the API wants an instant.
function iso(local) {
  const d = new Date(local);
  return isNaN(d) ? local : d.toISOString();
}
