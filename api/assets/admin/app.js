// Aula admin dashboard. Plain JavaScript, no build step, no dependencies: it talks
// only to the public GraphQL API (POST /graphql with a bearer token, subscriptions on
// /graphql/ws with the graphql-transport-ws protocol). The filters, sort and tab live
// in the URL query string, so a view can be bookmarked and the back button restores it.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "aula.admin.token";

const EVENT_STATUSES = ["pending", "retrying", "succeeded", "failed"];
// `retrying`: pending after a failed attempt; `paused`: waiting behind a paused kind.
const TASK_STATUSES = ["pending", "retrying", "paused", "running", "succeeded", "failed", "dead", "cancelled"];
const WAITING_TASK = ["pending", "retrying", "paused"];

const EVENT_COLUMNS = [
  { label: "#", sort: "POSITION", cell: (e) => String(e.logPosition), num: true },
  { label: "Type", sort: "EVENT_TYPE", open: true, cell: (e) => e.eventType },
  { label: "Status", sort: "STATUS", badge: (e) => e.status },
  { label: "Created", sort: "RECORDED_AT", cell: (e) => time(e.recordedAt) },
  { label: "Processed", sort: "PROCESSED_AT", cell: (e) => time(e.processedAt) },
  { label: "Duration", sort: "DURATION", cell: (e) => ms(e.durationMs), num: true },
  { label: "Tasks", cell: (e) => taskSummary(e) },
  { label: "Institution", cell: (e) => short(e.institutionId) },
  { label: "Latest copy", cell: (e) => copyOutcome(e) },
];
const TASK_COLUMNS = [
  { label: "#", sort: "ID", cell: (t) => String(t.id), num: true },
  { label: "Kind", sort: "KIND", open: true, cell: (t) => t.kind },
  { label: "Status", sort: "STATUS", badge: (t) => t.status },
  { label: "Created", sort: "CREATED_AT", cell: (t) => time(t.createdAt) },
  { label: "Processed", sort: "FINISHED_AT", cell: (t) => time(t.finishedAt) },
  { label: "Duration", sort: "DURATION", cell: (t) => ms(t.durationMs), num: true },
  { label: "Institution", sort: "INSTITUTION", cell: (t) => short(t.institutionId) },
  { label: "Attempts", sort: "ATTEMPTS", cell: (t) => `${t.attempt}/${t.maxAttempts}`, num: true },
  // Not sortable: the list's indexes (one per sort) do not cover priority.
  { label: "Priority", cell: (t) => String(t.priority), num: true },
  { label: "Next run", cell: (t) => (WAITING_TASK.includes(t.status) ? time(t.runAt) : "–") },
];

const EVENT_FIELDS = `eventId logPosition eventType aggregateType aggregateId institutionId recordedAt
  reprocessedFrom copyCount status processedAt durationMs error tasksPending tasksRunning tasksSucceeded tasksFailed
  latestCopyId latestCopyStatus resolvedByCopy reprocessNote`;
const TASK_FIELDS = `id kind status priority attempt maxAttempts eventId eventType institutionId originTaskId
  createdAt startedAt finishedAt durationMs lastError runAt leaseUntil worker`;
const JOB_FIELDS = "id status total done failed upToPosition error copiesSucceeded copiesFailed copiesRunning";

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  me: null,
  view: null, // parsed from the URL
  cursors: [null], // cursors of the pages seen, for "previous"
  page: 0,
  next: null,
  facets: { eventTypes: [], taskKinds: [] },
  drawer: null, // { eventId, opener, timer }
  job: null, // { id, socket }
  summaryTimer: null,
  socket: null,
  rebuildTimers: {},
};

// ---------- formatting ----------
function time(value) {
  if (!value) return "–";
  const d = new Date(value);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}
function ms(value) {
  if (value === null || value === undefined) return "–";
  return `${Math.round(value).toLocaleString("en")} ms`;
}
function short(id) {
  return id ? id.slice(0, 8) : "–";
}
function taskSummary(e) {
  const total = e.tasksPending + e.tasksRunning + e.tasksSucceeded + e.tasksFailed;
  if (!total) return "none";
  return e.tasksFailed ? `${total} (${e.tasksFailed} failed)` : String(total);
}
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
function badge(status) {
  return el("span", { class: `badge ${status}`, text: status });
}

// ---------- errors ----------
class ApiFailure extends Error {
  constructor(message, code, extensions) {
    super(message);
    this.code = code;
    this.extensions = extensions || {};
  }
}
function describe(error) {
  if (error instanceof ApiFailure) {
    const reason = error.extensions.reason ? ` ${error.extensions.reason}` : "";
    const request = error.extensions.requestId ? ` (request ${error.extensions.requestId})` : "";
    return `${error.message} — ${error.code}${reason}${request}`;
  }
  return `${error.message || error} — the server could not be reached`;
}
function notify(message, kind = "error") {
  const box = $("notice");
  box.textContent = message;
  box.className = kind === "error" ? "notice" : "notice info";
  box.hidden = !message;
}
function fail(error) {
  if (error instanceof ApiFailure && error.code === "UNAUTHENTICATED" && state.token) {
    signOut(`Your session ended: ${describe(error)}. Sign in again.`);
    return;
  }
  notify(describe(error));
}

// ---------- GraphQL over HTTP ----------
async function gql(query, variables = {}) {
  const headers = { "content-type": "application/json" };
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  let response;
  try {
    response = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  } catch (e) {
    throw new ApiFailure(`network error: ${e.message}`, "NETWORK");
  }
  let body;
  try {
    body = await response.json();
  } catch (e) {
    throw new ApiFailure(`HTTP ${response.status} without a GraphQL answer`, "HTTP_" + response.status);
  }
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    const ext = first.extensions || {};
    throw new ApiFailure(first.message, ext.code || "UNKNOWN", ext);
  }
  return body.data;
}

// ---------- GraphQL over WebSocket (graphql-transport-ws) ----------
class Subscriptions {
  constructor(token, onClosed) {
    this.token = token;
    this.onClosed = onClosed;
    this.handlers = new Map();
    this.nextId = 1;
    this.ready = null;
  }
  open() {
    if (this.ready) return this.ready;
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql/ws`;
    this.ready = new Promise((resolve, reject) => {
      const socket = new WebSocket(url, "graphql-transport-ws");
      this.socket = socket;
      socket.onopen = () => socket.send(JSON.stringify({ type: "connection_init", payload: { authorization: `Bearer ${this.token}` } }));
      socket.onmessage = (message) => {
        const data = JSON.parse(message.data);
        if (data.type === "connection_ack") resolve(this);
        else if (data.type === "ping") socket.send(JSON.stringify({ type: "pong" }));
        else {
          const handler = this.handlers.get(data.id);
          if (!handler) return;
          if (data.type === "next") {
            if (data.payload.errors && data.payload.errors.length) {
              const e = data.payload.errors[0];
              handler.error(new ApiFailure(e.message, (e.extensions || {}).code || "UNKNOWN", e.extensions));
            } else handler.next(data.payload.data);
          } else if (data.type === "error") {
            const e = (data.payload || [])[0] || { message: "subscription refused" };
            this.handlers.delete(data.id);
            handler.error(new ApiFailure(e.message, (e.extensions || {}).code || "UNKNOWN", e.extensions));
          } else if (data.type === "complete") {
            this.handlers.delete(data.id);
            handler.complete();
          }
        }
      };
      socket.onerror = () => reject(new ApiFailure("the subscription socket failed", "NETWORK"));
      socket.onclose = (event) => {
        reject(new ApiFailure(`the subscription socket closed (${event.code} ${event.reason})`, "NETWORK"));
        for (const handler of this.handlers.values()) handler.complete(true);
        this.handlers.clear();
        this.ready = null;
        if (this.onClosed) this.onClosed(event);
      };
    });
    return this.ready;
  }
  async subscribe(query, variables, handler) {
    await this.open();
    const id = String(this.nextId++);
    this.handlers.set(id, {
      next: handler.next || (() => {}),
      error: handler.error || (() => {}),
      complete: handler.complete || (() => {}),
    });
    this.socket.send(JSON.stringify({ id, type: "subscribe", payload: { query, variables } }));
    return () => {
      if (this.handlers.delete(id) && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(JSON.stringify({ id, type: "complete" }));
      }
    };
  }
  close() {
    this.onClosed = null;
    if (this.socket) this.socket.close(1000, "bye");
  }
}

// ---------- URL state ----------
const FILTER_KEYS = ["types", "kinds", "status", "createdFrom", "createdTo", "processedFrom", "processedTo",
  "durationOp", "durationMs", "institution", "failed", "q", "priority"];

function readView() {
  const params = new URLSearchParams(location.search);
  const view = { tab: params.get("tab") || "events", sort: params.get("sort") || "", dir: params.get("dir") || "DESC" };
  for (const key of FILTER_KEYS) view[key] = params.get(key) || "";
  view.event = params.get("event") || "";
  view.range = params.get("range") || "";
  if (!["events", "tasks", "projections", "webhooks"].includes(view.tab)) view.tab = "events";
  if (view.tab === "projections" && !seesPlatform()) view.tab = "events";
  return view;
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

function eventFilter(view) {
  const filter = {};
  if (view.types) filter.types = view.types.split(",");
  // The URL keeps the status across tabs; a task status (`dead`, `running`) means
  // nothing for events, and the API refuses a status outside its enum.
  if (EVENT_STATUSES.includes(view.status)) filter.status = view.status;
  Object.assign(filter, unresolvedFilter(view));
  if (view.createdFrom) filter.recordedFrom = iso(view.createdFrom);
  if (view.createdTo) filter.recordedTo = iso(view.createdTo);
  if (view.processedFrom) filter.processedFrom = iso(view.processedFrom);
  if (view.processedTo) filter.processedTo = iso(view.processedTo);
  if (view.durationOp && view.durationMs !== "") filter.duration = { op: view.durationOp, ms: Number(view.durationMs) };
  if (view.institution) filter.institutionId = view.institution;
  if (view.failed) filter.hasFailedTasks = view.failed === "yes";
  if (view.q) filter.search = view.q;
  return filter;
}
function taskFilter(view) {
  const filter = {};
  if (view.kinds) filter.kinds = view.kinds.split(",");
  if (TASK_STATUSES.includes(view.status)) filter.status = view.status;
  if (view.createdFrom) filter.createdFrom = iso(view.createdFrom);
  if (view.createdTo) filter.createdTo = iso(view.createdTo);
  if (view.processedFrom) filter.finishedFrom = iso(view.processedFrom);
  if (view.processedTo) filter.finishedTo = iso(view.processedTo);
  if (view.durationOp && view.durationMs !== "") filter.duration = { op: view.durationOp, ms: Number(view.durationMs) };
  if (view.institution) filter.institutionId = view.institution;
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

// ---------- authentication ----------
function isAdmin() {
  return state.me && state.me.role === "ADMIN";
}
// `seesPlatform`, `applyRole`: insights.js (observers).
async function signIn(email, password) {
  const data = await gql(
    "mutation($input: LoginInput!) { login(input: $input) { accessToken role } }",
    { input: { email, password } },
  );
  if (!["ADMIN", "MANAGER", "OBSERVER"].includes(data.login.role)) {
    throw new ApiFailure("This dashboard is for administrators, managers and observers", "FORBIDDEN", { reason: "ROLE_NOT_ALLOWED" });
  }
  state.token = data.login.accessToken;
  sessionStorage.setItem(TOKEN_KEY, state.token);
}
function signOut(message) {
  state.token = null;
  state.me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.socket) state.socket.close();
  state.socket = null;
  clearInterval(state.summaryTimer);
  closeDrawer(false);
  $("app-view").hidden = true;
  $("summary").hidden = true;
  $("who").hidden = true;
  $("login-view").hidden = false;
  notify(message || "");
  $("login-email").focus();
}
async function start() {
  notify("");
  try {
    const data = await gql("{ me { id email name role institutionId } }");
    state.me = data.me;
  } catch (error) {
    if (error instanceof ApiFailure && error.code === "UNAUTHENTICATED") {
      signOut(state.token ? `Your session ended: ${describe(error)}. Sign in again.` : "");
      return;
    }
    fail(error);
    return;
  }
  if (!["ADMIN", "MANAGER", "OBSERVER"].includes(state.me.role)) {
    signOut(`Signed in as ${state.me.role}: this dashboard is for administrators, managers and observers (FORBIDDEN ROLE_NOT_ALLOWED).`);
    return;
  }
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("who").hidden = false;
  $("who-name").textContent = `${state.me.name || state.me.email} · ${state.me.role.toLowerCase()}`;
  // What a manager may not use is hidden; the API refuses it anyway.
  $("tab-projections").hidden = !seesPlatform();
  // A manager's or an institution observer's header covers its institution.
  $("summary").hidden = false;
  applyRole();
  // The socket closed: reconnect, unless the session is over (an expired token or a
  // deactivated account is refused at every reconnect; the server closes with 1002).
  state.socket = new Subscriptions(state.token, () => setTimeout(async () => {
    if (!state.token) return;
    try {
      await gql("{ me { id } }");
    } catch (error) {
      if (error instanceof ApiFailure && error.code === "UNAUTHENTICATED") {
        fail(error);
        return;
      }
    }
    liveHeader();
  }, 3000));
  await loadFacets();
  refreshSummary();
  liveHeader();
  state.summaryTimer = setInterval(refreshSummary, 5000);
  apply(readView(), false);
}

// ---------- header ----------
let summaryPending = false;
async function refreshSummary() {
  if (!state.me || summaryPending) return;
  summaryPending = true;
  try {
    const data = await gql(`{ processingSummary { ratePerHourToday statusCounts { kind status count }
      projections { name lagEvents lagSeconds lastError } unresolvedFailures failuresResolvedByCopy } }`);
    const s = data.processingSummary;
    $("rate").textContent = `${s.ratePerHourToday.toFixed(1)} events/h`;
    const counts = (kind) => s.statusCounts.filter((c) => c.kind === kind).map((c) => `${c.count} ${c.status}`).join(" · ");
    $("event-counts").textContent = counts("event") || "none";
    $("task-counts").textContent = counts("task") || "none";
    showUnresolved(s);
    const worst = s.projections.reduce((a, p) => (p.lagEvents > a.lagEvents ? p : a), { lagEvents: 0, lagSeconds: 0, name: "" });
    const failing = s.projections.filter((p) => p.lastError).length;
    $("lag").textContent = `${worst.lagEvents} events${worst.lagEvents ? ` (${worst.name}, ${worst.lagSeconds.toFixed(1)} s)` : ""}${failing ? ` · ${failing} failing` : ""}`;
  } catch (error) {
    if (error instanceof ApiFailure && error.code === "UNAUTHENTICATED") {
      fail(error);
      return;
    }
    $("rate").textContent = `unavailable (${error.code || "error"})`;
  } finally {
    summaryPending = false;
  }
}
let headerThrottle = null;
async function liveHeader() {
  if (!state.me || !state.socket) return;
  try {
    await state.socket.subscribe("subscription { logPosition }", {}, {
      next: () => {
        // New events: the visible list follows (insights.js), the header at most once
        // a second.
        liveTick();
        if (headerThrottle) return;
        headerThrottle = setTimeout(() => { headerThrottle = null; refreshSummary(); }, 1000);
      },
      error: (error) => {
        if (error instanceof ApiFailure && error.code === "UNAUTHENTICATED") fail(error);
        else notify(`Live header stopped: ${describe(error)}`);
      },
    });
  } catch (error) {
    // The socket closed; onClosed retries.
  }
}

// ---------- facets ----------
async function loadFacets() {
  try {
    const data = await gql("{ dashboardFacets { eventTypes taskKinds } }");
    state.facets = data.dashboardFacets;
  } catch (error) {
    fail(error);
  }
}
function fillMulti(select, values, selected) {
  const chosen = new Set(selected ? selected.split(",") : []);
  const all = [...new Set([...values, ...chosen])].sort();
  select.replaceChildren(...all.map((v) => el("option", { value: v, selected: chosen.has(v) }, v)));
}

// ---------- the list ----------
function apply(view, keepPage) {
  const sameList = state.view && ["tab", "sort", "dir", ...FILTER_KEYS].every((k) => state.view[k] === view[k]);
  state.view = view;
  if (!sameList && !keepPage) {
    state.cursors = [null];
    state.page = 0;
  }
  renderTabs();
  renderFilters();
  if (view.tab === "projections") loadProjections();
  else if (view.tab === "webhooks") loadWebhooks();
  else if (!sameList || keepPage) loadList();
  if (view.event && (!state.drawer || state.drawer.eventId !== view.event)) openDrawer(view.event, null, false);
  if (!view.event && state.drawer) closeDrawer(false);
  renderInsights();
}

function renderTabs() {
  for (const button of document.querySelectorAll("[data-tab]")) {
    const selected = button.dataset.tab === state.view.tab;
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
  }
  $("list-panel").hidden = state.view.tab === "projections" || state.view.tab === "webhooks";
  $("projections-panel").hidden = state.view.tab !== "projections";
  $("webhooks-panel").hidden = state.view.tab !== "webhooks";
  $("list-panel").setAttribute("aria-labelledby", `tab-${state.view.tab === "tasks" ? "tasks" : "events"}`);
}

function renderFilters() {
  const v = state.view;
  const tasks = v.tab === "tasks";
  $("field-types").hidden = tasks;
  $("field-kinds").hidden = !tasks;
  $("field-failed").hidden = tasks;
  $("bulk-bar").hidden = tasks;
  fillMulti($("f-types"), state.facets.eventTypes, v.types);
  fillMulti($("f-kinds"), state.facets.taskKinds, v.kinds);
  const statuses = tasks ? TASK_STATUSES : [...EVENT_STATUSES, UNRESOLVED];
  $("f-status").replaceChildren(el("option", { value: "" }, "any"),
    ...statuses.map((s) => el("option", { value: s, selected: s === v.status }, s)));
  $("f-created-from").value = v.createdFrom;
  $("f-created-to").value = v.createdTo;
  $("f-processed-from").value = v.processedFrom;
  $("f-processed-to").value = v.processedTo;
  $("f-duration-op").value = v.durationOp;
  $("f-duration-ms").value = v.durationMs;
  $("f-institution").value = v.institution;
  $("f-failed").value = v.failed;
  renderQueueControls(tasks);
}

function readFilters() {
  const selected = (select) => [...select.selectedOptions].map((o) => o.value).join(",");
  return {
    types: selected($("f-types")),
    kinds: selected($("f-kinds")),
    status: $("f-status").value,
    createdFrom: $("f-created-from").value,
    createdTo: $("f-created-to").value,
    processedFrom: $("f-processed-from").value,
    processedTo: $("f-processed-to").value,
    durationOp: $("f-duration-op").value,
    durationMs: $("f-duration-ms").value,
    institution: $("f-institution").value.trim(),
    failed: $("f-failed").value,
    priority: $("f-priority").value.trim(),
  };
}

function columns() {
  return state.view.tab === "tasks" ? TASK_COLUMNS : EVENT_COLUMNS;
}

function renderHead() {
  const v = state.view;
  const defaultSort = v.tab === "tasks" ? "ID" : "POSITION";
  const sort = v.sort || defaultSort;
  const row = el("tr");
  for (const column of columns()) {
    const th = el("th", { scope: "col", class: column.num ? "num" : null });
    if (column.sort) {
      const active = column.sort === sort;
      if (active) th.setAttribute("aria-sort", v.dir === "ASC" ? "ascending" : "descending");
      th.append(el("button", {
        type: "button",
        "data-sort": column.sort,
        title: `Sort by ${column.label.toLowerCase()}`,
        onclick: () => {
          const dir = active && v.dir === "DESC" ? "ASC" : "DESC";
          navigate({ sort: column.sort, dir });
        },
      }, column.label));
    } else th.textContent = column.label;
    row.append(th);
  }
  $("list-head").replaceChildren(row);
}

function stateRow(text) {
  return el("tr", {}, el("td", { class: "state", colspan: columns().length }, text));
}

// One page of the view's list (tasks or events, filtered and sorted), after `after`.
async function fetchPage(v, after) {
  const sort = v.sort ? { field: v.sort, direction: v.dir } : null;
  if (v.tab === "tasks") {
    const data = await gql(`query($filter: AdminTaskFilter, $sort: AdminTaskSort, $after: String) {
      adminTasks(filter: $filter, sort: $sort, first: 25, after: $after) { nodes { ${TASK_FIELDS} } nextCursor } }`,
    { filter: taskFilter(v), sort, after });
    return { nodes: data.adminTasks.nodes, next: data.adminTasks.nextCursor };
  }
  const data = await gql(`query($filter: AdminEventFilter, $sort: AdminEventSort, $after: String) {
    adminEvents(filter: $filter, sort: $sort, first: 25, after: $after) { nodes { ${EVENT_FIELDS} } nextCursor } }`,
  { filter: eventFilter(v), sort, after });
  return { nodes: data.adminEvents.nodes, next: data.adminEvents.nextCursor };
}

let listRequest = 0;
async function loadList() {
  const v = state.view;
  const tasks = v.tab === "tasks";
  renderHead();
  $("list-caption").textContent = tasks ? "Tasks" : "Events";
  const body = $("list-body");
  body.setAttribute("aria-busy", "true");
  body.replaceChildren(stateRow(`Loading ${tasks ? "tasks" : "events"}…`));
  $("list").dataset.state = "loading";
  const request = ++listRequest;
  const after = state.cursors[state.page];
  try {
    const { nodes, next } = await fetchPage(v, after);
    if (request !== listRequest) return;
    state.next = next;
    if (!nodes.length) {
      const filtered = FILTER_KEYS.some((k) => v[k]);
      body.replaceChildren(stateRow(filtered
        ? `No ${tasks ? "tasks" : "events"} match these filters. Clear or widen them.`
        : `No ${tasks ? "tasks" : "events"} yet.`));
      $("list").dataset.state = "empty";
    } else {
      body.replaceChildren(...nodes.map((node) => row(node, tasks)));
      $("list").dataset.state = "ready";
    }
    notify("");
  } catch (error) {
    if (request !== listRequest) return;
    // No next page of a list that did not load (a refused filter).
    state.next = null;
    body.replaceChildren(stateRow(`Could not load the list: ${describe(error)}`));
    $("list").dataset.state = "error";
    fail(error);
  } finally {
    if (request === listRequest) body.removeAttribute("aria-busy");
  }
  $("prev-page").disabled = state.page === 0;
  $("next-page").disabled = !state.next;
  $("page-info").textContent = `Page ${state.page + 1}`;
}

function row(node, tasks) {
  const tr = el("tr", tasks
    ? { "data-task-id": node.id, "data-event-id": node.eventId, "data-status": node.status, "data-kind": node.kind, "data-institution": node.institutionId || "" }
    : { "data-event-id": node.eventId, "data-status": node.status, "data-type": node.eventType, "data-institution": node.institutionId || "" });
  for (const column of columns()) {
    const td = el("td", { class: column.num ? "num" : null });
    if (column.badge) td.append(badge(column.badge(node)));
    else if (column.open && node.eventId) {
      td.className = "open";
      td.append(el("button", {
        type: "button",
        "aria-label": `Details of ${tasks ? "task " + node.id + " (" + node.kind + ")" : node.eventType + " #" + node.logPosition}`,
        onclick: (e) => openDrawer(node.eventId, e.currentTarget, true),
      }, column.cell(node)));
    } else td.textContent = column.cell(node);
    tr.append(td);
  }
  return tr;
}

// ---------- details drawer ----------
async function openDrawer(eventId, opener, push) {
  const previous = state.drawer;
  if (previous && previous.timer) clearTimeout(previous.timer);
  // `pushed`: history entries this drawer added (a copy opened from the drawer adds
  // one more); closing goes back over them instead of adding yet another entry, so
  // the back button after a close does not reopen the drawer.
  state.drawer = {
    eventId,
    opener: (previous && previous.opener) || opener || document.activeElement,
    timer: null,
    pushed: previous ? previous.pushed : 0,
  };
  if (push) {
    state.view = { ...state.view, event: eventId };
    const before = location.search;
    writeView(state.view);
    if (location.search !== before) state.drawer.pushed += 1;
  }
  $("drawer").hidden = false;
  $("drawer-backdrop").hidden = false;
  $("drawer-title").textContent = "Loading event…";
  $("drawer-body").replaceChildren(el("p", { class: "muted" }, "Loading…"));
  $("drawer-action-status").textContent = "";
  $("drawer").dataset.state = "loading";
  $("drawer-title").focus();
  await loadDrawer();
}

function closeDrawer(push = true) {
  if (!state.drawer) return;
  const { opener, timer, pushed } = state.drawer;
  clearTimeout(timer);
  state.drawer = null;
  $("drawer").hidden = true;
  $("drawer-backdrop").hidden = true;
  if (push && state.view.event) {
    state.view = { ...state.view, event: "" };
    // Back to the list's own entry (popstate then finds the drawer already closed);
    // a drawer opened from a link had no entry of its own: replace it.
    if (pushed > 0) history.go(-pushed);
    else writeView(state.view, true);
  }
  if (opener && document.body.contains(opener)) opener.focus();
  else $("main").focus({ preventScroll: true });
}

async function loadDrawer() {
  const drawer = state.drawer;
  if (!drawer) return;
  // Only the latest load of this drawer renders and schedules the next one: an action
  // (reprocess, retry) starts a load while a timed one may still be in flight, and two
  // loops would then poll side by side.
  clearTimeout(drawer.timer);
  drawer.loads = (drawer.loads || 0) + 1;
  const load = drawer.loads;
  const current = () => state.drawer === drawer && drawer.loads === load;
  const eventId = drawer.eventId;
  try {
    const data = await gql(`query($id: UUID!) {
      adminEvent(eventId: $id) { ${EVENT_FIELDS} copies { eventId logPosition status processedAt error recordedAt } }
      adminEventDetail(eventId: $id) { payload metadata actor correlationId causationId requestId eventVersion }
      eventTasks(eventId: $id, first: 100) { nodes { id kind status priority runAt attempt maxAttempts createdAt startedAt finishedAt
        lastError originTaskId archived attempts { attempt worker startedAt finishedAt durationMs outcome error } } nextCursor }
    }`, { id: eventId });
    if (!current()) return;
    renderDrawer(data);
    // Keep watching while something is still moving (a reprocessed copy, a retry).
    const moving = data.adminEvent.status === "pending"
      || data.adminEvent.copies.some((c) => c.status === "pending")
      || data.eventTasks.nodes.some((t) => t.status === "pending" || t.status === "running")
      || drawer.watchUntil > Date.now();
    if (moving) drawer.timer = setTimeout(loadDrawer, 1000);
  } catch (error) {
    if (!current()) return;
    $("drawer-title").textContent = "Event";
    $("drawer-body").replaceChildren(el("p", { class: "error", role: "alert" }, `Could not load this event: ${describe(error)}`));
    $("drawer").dataset.state = "error";
  }
}

function errorChain(text) {
  // Errors are recorded as "outer: cause: root cause".
  const parts = String(text).split(/: (?=[^ ])/);
  return el("ol", { class: "chain" }, parts.map((p) => el("li", {}, p)));
}

function renderDrawer(data) {
  const e = data.adminEvent;
  const d = data.adminEventDetail;
  $("drawer-title").textContent = `${e.eventType} #${e.logPosition}`;
  let payload = d.payload;
  try { payload = JSON.stringify(JSON.parse(d.payload), null, 2); } catch (_) { /* shown as stored */ }
  const sections = [];
  sections.push(el("h3", {}, "Summary"), el("dl", {},
    el("dt", {}, "Status"), el("dd", {}, badge(e.status)),
    el("dt", {}, "Event id"), el("dd", { class: "mono" }, e.eventId),
    el("dt", {}, "Aggregate"), el("dd", {}, `${e.aggregateType} ${e.aggregateId}`),
    el("dt", {}, "Institution"), el("dd", { class: "mono" }, e.institutionId || "none (system)"),
    el("dt", {}, "Created"), el("dd", {}, time(e.recordedAt)),
    el("dt", {}, "Processed"), el("dd", {}, time(e.processedAt)),
    el("dt", {}, "Duration"), el("dd", {}, ms(e.durationMs)),
  ));
  if (e.error) sections.push(el("h3", {}, "Error"), el("div", { id: "drawer-error" }, errorChain(e.error)));
  sections.push(el("h3", {}, "Metadata"), el("dl", {},
    el("dt", {}, "Actor"), el("dd", {}, d.actor || "–"),
    el("dt", {}, "Correlation"), el("dd", { class: "mono" }, d.correlationId || "–"),
    el("dt", {}, "Causation"), el("dd", { class: "mono" }, d.causationId || "–"),
    el("dt", {}, "Request"), el("dd", { class: "mono" }, d.requestId || "–"),
    el("dt", {}, "Version"), el("dd", {}, d.eventVersion),
  ));
  sections.push(el("h3", {}, "Payload"), el("pre", { tabindex: "0", "aria-label": "Payload" }, payload));

  sections.push(el("h3", {}, `Tasks (${data.eventTasks.nodes.length})`));
  if (!data.eventTasks.nodes.length) sections.push(el("p", { class: "muted" }, "This event issued no task."));
  for (const t of data.eventTasks.nodes) {
    const canRetry = ["failed", "dead", "succeeded"].includes(t.status) && !t.archived;
    sections.push(el("div", { class: "task", "data-task-id": t.id, "data-status": t.status },
      el("div", { class: "task-head" },
        el("strong", {}, `#${t.id} ${t.kind}`), badge(t.status),
        el("span", { class: "muted" }, `attempt ${t.attempt}/${t.maxAttempts}`),
        t.originTaskId ? el("span", { class: "muted" }, `retry of #${t.originTaskId}`) : null,
        t.archived ? el("span", { class: "muted" }, "archived") : null,
        canRetry ? el("button", { type: "button", class: "secondary", "data-retry": t.id, "data-focus-id": `retry-${t.id}`, onclick: () => retryTask(t.id) }, "Retry task") : null),
      taskControls(t),
      t.lastError ? el("div", { class: "task-error" }, errorChain(t.lastError)) : null,
      t.attempts.length ? el("table", {},
        el("thead", {}, el("tr", {}, ["#", "Outcome", "Started", "Finished", "Duration", "Worker", "Error"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, t.attempts.map((a) => el("tr", {},
          el("td", {}, a.attempt), el("td", {}, badge(a.outcome)), el("td", {}, time(a.startedAt)),
          el("td", {}, time(a.finishedAt)), el("td", {}, ms(a.durationMs)), el("td", {}, a.worker),
          el("td", { class: "err" }, a.error || ""))))) : el("p", { class: "muted" }, "Not attempted yet."),
    ));
  }

  sections.push(...reprocessingSection(e));
  sections.push(el("h3", {}, "Lineage"));
  const lineage = el("ul", { id: "lineage" });
  if (e.reprocessedFrom) {
    lineage.append(el("li", {}, "Copy of ", el("button", { type: "button", class: "link", onclick: () => openDrawer(e.reprocessedFrom, null, true) }, e.reprocessedFrom)));
  } else lineage.append(el("li", {}, "Original event"));
  for (const c of e.copies) {
    lineage.append(el("li", { "data-copy-id": c.eventId, "data-status": c.status },
      "Copy ", el("button", { type: "button", class: "link", onclick: () => openDrawer(c.eventId, null, true) }, `#${c.logPosition}`),
      " ", badge(c.status), ` ${time(c.recordedAt)}`, c.error ? el("span", { class: "error" }, ` ${c.error}`) : null));
  }
  if (!e.copies.length) lineage.append(el("li", { class: "muted" }, "No reprocessed copies."));
  sections.push(lineage);

  // Keep the focus where it was if it was inside the body being replaced.
  const focused = document.activeElement && $("drawer-body").contains(document.activeElement)
    ? document.activeElement.getAttribute("data-focus-id") : null;
  $("drawer-body").replaceChildren(...sections);
  if (focused) {
    const again = $("drawer-body").querySelector(`[data-focus-id="${focused}"]`);
    if (again) again.focus();
    else $("drawer-title").focus();
  }
  $("drawer").dataset.state = "ready";
  $("drawer").dataset.status = e.status;
}

async function reprocessCurrent() {
  if (!state.drawer) return;
  const button = $("drawer-reprocess");
  button.disabled = true;
  $("drawer-action-status").textContent = "Reprocessing…";
  try {
    const data = await gql(`mutation($id: UUID!) { reprocessEvent(eventId: $id, waitForProjections: true) { eventId logPosition } }`,
      { id: state.drawer.eventId });
    $("drawer-action-status").textContent = `Copy #${data.reprocessEvent.logPosition} appended; its tasks run now.`;
    state.drawer.watchUntil = Date.now() + 5000;
    clearTimeout(state.drawer.timer);
    await loadDrawer();
  } catch (error) {
    $("drawer-action-status").textContent = `Reprocess failed: ${describe(error)}`;
  } finally {
    button.disabled = false;
  }
}

async function retryTask(taskId) {
  $("drawer-action-status").textContent = `Retrying task #${taskId}…`;
  try {
    const data = await gql("mutation($id: Int!) { retryTask(taskId: $id) { taskId retriedTaskId } }", { id: taskId });
    $("drawer-action-status").textContent = `Task #${data.retryTask.taskId} retries #${data.retryTask.retriedTaskId}.`;
    if (state.drawer) {
      state.drawer.watchUntil = Date.now() + 5000;
      clearTimeout(state.drawer.timer);
      await loadDrawer();
    }
  } catch (error) {
    $("drawer-action-status").textContent = `Retry failed: ${describe(error)}`;
  }
}

function trapFocus(event) {
  if (event.key !== "Tab" || !state.drawer) return;
  const focusable = [...$("drawer").querySelectorAll("button:not([disabled]), [href], [tabindex]:not([tabindex='-1'])")]
    .filter((n) => n.offsetParent !== null);
  if (!focusable.length) return;
  const first = focusable[0];
  const last = focusable[focusable.length - 1];
  if (event.shiftKey && (document.activeElement === first || document.activeElement === $("drawer-title"))) {
    event.preventDefault();
    last.focus();
  } else if (!event.shiftKey && document.activeElement === last) {
    event.preventDefault();
    first.focus();
  }
}

// ---------- reprocessing outcomes (issue #19) ----------
// The status filter's extra value: failed events their latest copy has not resolved.
const UNRESOLVED = "unresolved";
function unresolvedFilter(view) {
  return view.status === UNRESOLVED ? { status: "failed", resolved: false } : {};
}

// What became of an original's latest copy, for its row and drawer.
function copyOutcome(e) {
  if (!e.latestCopyId) return "";
  if (e.resolvedByCopy) return "resolved by copy";
  if (e.latestCopyStatus === "failed") return "copy failed";
  return "copy running";
}

function showUnresolved(summary) {
  const resolved = summary.failuresResolvedByCopy;
  $("unresolved-failures").textContent =
    `${summary.unresolvedFailures}${resolved ? ` (${resolved} resolved by copy)` : ""}`;
}

// The drawer's "Reprocessing" section: the latest copy and its outcome, and what a copy
// of this event cannot do (a one-time link), shown before anyone reprocesses it.
function reprocessingSection(e) {
  const out = [];
  if (!e.reprocessedFrom) {
    out.push(el("h3", {}, "Reprocessing"));
    const dl = el("dl", { id: "drawer-reprocessing" });
    if (e.latestCopyId) {
      dl.append(
        el("dt", {}, "Latest copy"),
        el("dd", {}, el("button", { type: "button", class: "link", onclick: () => openDrawer(e.latestCopyId, null, true) }, e.latestCopyId),
          " ", e.latestCopyStatus ? badge(e.latestCopyStatus) : null),
        el("dt", {}, "Outcome"),
        el("dd", { id: "drawer-copy-outcome", "data-resolved": String(e.resolvedByCopy) }, copyOutcome(e)));
    } else {
      dl.append(el("dt", {}, "Latest copy"), el("dd", { class: "muted" }, "never reprocessed"));
    }
    out.push(dl);
  }
  if (e.reprocessNote) out.push(el("p", { class: "note", id: "drawer-reprocess-note", role: "note" }, e.reprocessNote));
  return out;
}

// The bulk preview's lines on what earlier reprocessing already fixed and what a copy
// cannot do; the checkbox previews again with the resolved events included.
function bulkPreviewOutcomes(p) {
  const out = [];
  if (p.alreadyResolved > 0 || state.bulkIncludeResolved) {
    const box = el("input", { type: "checkbox", id: "bulk-include-resolved", checked: Boolean(state.bulkIncludeResolved),
      onchange: (ev) => { state.bulkIncludeResolved = ev.currentTarget.checked; bulkPreview(); } });
    out.push(el("p", { id: "bulk-already-resolved" },
      `${p.alreadyResolved} matching event${p.alreadyResolved === 1 ? " was" : "s were"} already reprocessed with success ` +
      `and ${state.bulkIncludeResolved ? "are included" : "are left out"}. `,
      el("label", {}, box, " Include them")));
  }
  for (const note of p.notes || []) out.push(el("p", { class: "note", role: "note" }, note));
  return out;
}

// A job's copies' tasks, live: written is not done until their tasks ran.
function showJobOutcomes(job) {
  const panel = $("job-panel");
  panel.dataset.copiesSucceeded = String(job.copiesSucceeded);
  panel.dataset.copiesRunning = String(job.copiesRunning);
  $("job-text").textContent += ` · copies' tasks: ${job.copiesSucceeded} succeeded, ${job.copiesFailed} failed, ` +
    `${job.copiesRunning} still running`;
}
function jobMoving(job) {
  return job.status === "running" || job.copiesRunning > 0;
}

// ---------- bulk reprocess ----------
async function bulkPreview() {
  const panel = $("bulk-panel");
  panel.hidden = false;
  $("bulk-body").replaceChildren(el("p", { class: "muted" }, "Counting the matching events…"));
  $("bulk-actions").replaceChildren();
  panel.dataset.state = "loading";
  panel.focus();
  try {
    const data = await gql(`query($filter: AdminEventFilter, $includeResolved: Boolean) {
      bulkReprocessPreview(filter: $filter, includeResolved: $includeResolved) {
      count byType { type count } byStatus { status count } upToPosition confirmToken expiresAt alreadyResolved notes } }`,
    { filter: eventFilter(state.view), includeResolved: Boolean(state.bulkIncludeResolved) });
    const p = data.bulkReprocessPreview;
    const table = (rows, key) => el("table", {}, el("tbody", {}, rows.map((r) => el("tr", {}, el("td", {}, r[key]), el("td", { class: "num" }, r.count)))));
    $("bulk-body").replaceChildren(
      el("p", {}, el("span", { class: "big", id: "bulk-count" }, String(p.count)), ` event${p.count === 1 ? "" : "s"} match the current filters (up to log position ${p.upToPosition}).`),
      el("div", { class: "breakdown" },
        el("div", {}, el("h3", {}, "By type"), p.byType.length ? table(p.byType, "type") : el("p", { class: "muted" }, "–")),
        el("div", {}, el("h3", {}, "By status"), p.byStatus.length ? table(p.byStatus, "status") : el("p", { class: "muted" }, "–"))),
      el("p", {}, "What will happen: each matching event gets an immutable copy (a new event linked to its original; " +
        "the original is not changed and no aggregate changes). The processor issues fresh tasks for every copy. " +
        "Events recorded after the preview and copies themselves are not included. The job runs in the background in batches; " +
        `you can cancel it. This preview expires at ${time(p.expiresAt)}.`),
      ...bulkPreviewOutcomes(p),
    );
    const confirm = el("button", { type: "button", id: "bulk-confirm", disabled: p.count === 0, onclick: () => bulkConfirm(p.confirmToken) },
      `Reprocess ${p.count} event${p.count === 1 ? "" : "s"}`);
    $("bulk-actions").replaceChildren(confirm,
      el("button", { type: "button", class: "secondary", id: "bulk-close", onclick: () => { panel.hidden = true; $("bulk-preview").focus(); } }, "Cancel"));
    panel.dataset.state = "ready";
    (p.count ? confirm : $("bulk-close")).focus();
  } catch (error) {
    $("bulk-body").replaceChildren(el("p", { class: "error", role: "alert" }, `Could not preview: ${describe(error)}`));
    $("bulk-actions").replaceChildren(el("button", { type: "button", class: "secondary", id: "bulk-close", onclick: () => { panel.hidden = true; } }, "Close"));
    panel.dataset.state = "error";
  }
}

async function bulkConfirm(token) {
  $("bulk-confirm").disabled = true;
  try {
    const data = await gql(`mutation($token: String!) { bulkReprocessConfirm(confirmToken: $token) { ${JOB_FIELDS} } }`, { token });
    $("bulk-panel").hidden = true;
    watchJob(data.bulkReprocessConfirm);
  } catch (error) {
    $("bulk-body").append(el("p", { class: "error", role: "alert" }, `Could not start: ${describe(error)}`));
    $("bulk-confirm").disabled = false;
  }
}

function showJob(job) {
  const pct = job.total ? Math.floor((job.done * 100) / job.total) : (job.status === "done" ? 100 : 0);
  $("job-progress").value = pct;
  $("job-progress").max = 100;
  const panel = $("job-panel");
  panel.dataset.status = job.status;
  panel.dataset.percent = String(pct);
  const failed = job.failed ? `, ${job.failed} failed` : "";
  const error = job.error ? ` — ${job.error}` : "";
  $("job-text").textContent = `${job.status}: ${job.done} of ${job.total} reprocessed (${pct}%)${failed}${error}`;
  showJobOutcomes(job);
  const finished = job.status !== "running";
  $("job-cancel").hidden = finished;
  $("job-dismiss").hidden = !finished;
}

async function watchJob(job) {
  if (state.job && state.job.stop) state.job.stop();
  state.job = { id: job.id, stop: null };
  delete $("job-panel").dataset.via;
  $("job-panel").hidden = false;
  showJob(job);
  $("job-text").focus();
  const poll = async () => {
    // Fallback when the socket is unavailable.
    $("job-panel").dataset.via = "polling";
    try {
      const data = await gql(`query($id: UUID!) { bulkReprocessJob(id: $id) { ${JOB_FIELDS} } }`, { id: job.id });
      showJob(data.bulkReprocessJob);
      if (jobMoving(data.bulkReprocessJob) && state.job && state.job.id === job.id) setTimeout(poll, 1000);
      else loadList();
    } catch (error) {
      $("job-text").textContent = `Could not follow the job: ${describe(error)}`;
    }
  };
  try {
    state.job.stop = await state.socket.subscribe(
      `subscription($id: UUID!) { bulkReprocessProgress(id: $id, untilSettled: true) { ${JOB_FIELDS} } }`, { id: job.id }, {
        next: (data) => { $("job-panel").dataset.via = "subscription"; showJob(data.bulkReprocessProgress); },
        error: (error) => { $("job-text").textContent = `Progress stream failed: ${describe(error)}`; poll(); },
        complete: (lost) => { if (lost) poll(); else loadList(); },
      });
  } catch (error) {
    poll();
  }
}

async function cancelJob() {
  if (!state.job) return;
  $("job-cancel").disabled = true;
  try {
    const data = await gql(`mutation($id: UUID!) { bulkReprocessCancel(id: $id) { ${JOB_FIELDS} } }`, { id: state.job.id });
    showJob(data.bulkReprocessCancel);
  } catch (error) {
    $("job-text").textContent = `Could not cancel: ${describe(error)}`;
  } finally {
    $("job-cancel").disabled = false;
  }
}

// ---------- projections ----------
async function loadProjections() {
  const body = $("projections-body");
  body.replaceChildren(el("tr", {}, el("td", { class: "state", colspan: 5 }, "Loading projections…")));
  try {
    const data = await gql(`{ projectionStatus { name position lagEvents lagSeconds lastError failedPosition attempts }
      rebuildProgress { name state position eventsDone eventsPerSecond remaining error } }`);
    const progress = Object.fromEntries(data.rebuildProgress.map((p) => [p.name, p]));
    if (!data.projectionStatus.length) {
      body.replaceChildren(el("tr", {}, el("td", { class: "state", colspan: 5 }, "No projection has run yet.")));
      return;
    }
    body.replaceChildren(...data.projectionStatus.map((p) => {
      const r = progress[p.name];
      const status = p.lastError
        ? el("span", { class: "error" }, `failing at #${p.failedPosition ?? "?"} (${p.attempts} attempts): ${p.lastError}`)
        : el("span", { class: `badge ${p.lagEvents ? "pending" : "succeeded"}` }, p.lagEvents ? "catching up" : "up to date");
      return el("tr", { "data-projection": p.name },
        el("th", { scope: "row" }, p.name),
        el("td", { class: "num" }, p.position),
        el("td", { class: "num" }, `${p.lagEvents} events · ${p.lagSeconds.toFixed(1)} s`),
        el("td", {}, status),
        p.name.startsWith("broker.") ? el("td", {}, "published to the broker") : el("td", {},
          el("button", { type: "button", class: "secondary", "data-rebuild": p.name, disabled: r && (r.state === "running" || r.state === "swapping"),
            onclick: () => rebuild(p.name) }, "Rebuild"),
          " ", el("span", { class: "rebuild-state", role: "status", "data-rebuild-state": r ? r.state : "" }, r ? rebuildText(r) : "")));
    }));
    for (const r of data.rebuildProgress) if (r.state === "running" || r.state === "swapping") followRebuild(r.name);
  } catch (error) {
    body.replaceChildren(el("tr", {}, el("td", { class: "state", colspan: 5 }, `Could not load the projections: ${describe(error)}`)));
    fail(error);
  }
}
function rebuildText(r) {
  if (r.state === "failed") return `rebuild failed: ${r.error || "unknown error"}`;
  if (r.state === "done") return `rebuilt (${r.eventsDone} events)`;
  const total = r.eventsDone + r.remaining;
  const pct = total ? Math.floor((r.eventsDone * 100) / total) : 0;
  return `${r.state}: ${r.eventsDone} events, ${pct}%, ${Math.round(r.eventsPerSecond)} events/s`;
}
async function rebuild(name) {
  try {
    await gql("mutation($name: String!) { rebuildProjection(name: $name) { name requestedAt } }", { name });
    followRebuild(name);
  } catch (error) {
    fail(error);
  }
}
function followRebuild(name) {
  if (state.rebuildTimers[name]) return;
  const tick = async () => {
    try {
      const data = await gql("query($name: String) { rebuildProgress(name: $name) { name state position eventsDone eventsPerSecond remaining error } }", { name });
      const r = data.rebuildProgress[0];
      const cell = document.querySelector(`[data-projection="${name}"] .rebuild-state`);
      const button = document.querySelector(`[data-rebuild="${name}"]`);
      if (r && cell) { cell.textContent = rebuildText(r); cell.dataset.rebuildState = r.state; }
      const running = !r || r.state === "running" || r.state === "swapping";
      if (button) button.disabled = running;
      if (running && state.view.tab === "projections") state.rebuildTimers[name] = setTimeout(tick, 700);
      else { delete state.rebuildTimers[name]; if (state.view.tab === "projections") setTimeout(loadProjections, 300); }
    } catch (error) {
      delete state.rebuildTimers[name];
      fail(error);
    }
  };
  state.rebuildTimers[name] = setTimeout(tick, 200);
}

// ---------- webhooks ----------
const WH_ENDPOINT = `id url institutionId eventTypes enabled disabledReason successRateLastDay attemptsLastDay
  lastFailure lastFailureAt pendingMessages signatureScheme publicKey`;
async function loadWebhooks() {
  const body = $("webhook-endpoints-body");
  body.replaceChildren(el("tr", {}, el("td", { class: "state", colspan: 8 }, "Loading endpoints…")));
  try {
    const data = await gql(`{ webhookEndpoints { ${WH_ENDPOINT} } }`);
    state.webhookEndpoints = data.webhookEndpoints;
    const select = $("wh-endpoint");
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "all"),
      ...data.webhookEndpoints.map((e) => el("option", { value: e.id, selected: e.id === chosen }, e.url)));
    if (!data.webhookEndpoints.length) {
      body.replaceChildren(el("tr", {}, el("td", { class: "state", colspan: 8 }, "No webhook endpoint is registered.")));
    } else {
      body.replaceChildren(...data.webhookEndpoints.map((e) => {
        const since = el("input", { type: "datetime-local", "aria-label": `Recover ${e.url} since` });
        return el("tr", { "data-endpoint": e.id },
          el("th", { scope: "row" }, e.url, el("br"),
            // The scheme, and for v1a the public key receivers verify with (whole in the title).
            el("small", { class: "signing", title: e.publicKey || "HMAC-SHA256 (whsec_ secret)" },
              e.signatureScheme === "v1a" ? `v1a · ${e.publicKey.slice(0, 16)}…` : "v1")),
          el("td", {}, e.institutionId ? short(e.institutionId) : "platform"),
          el("td", {}, e.eventTypes ? e.eventTypes.join(", ") : "all"),
          el("td", {}, e.enabled ? badge("succeeded") : el("span", { class: "error" }, `disabled: ${e.disabledReason || ""}`)),
          el("td", { class: "num" }, e.successRateLastDay == null ? "–" : `${Math.round(e.successRateLastDay * 100)} % of ${e.attemptsLastDay}`),
          el("td", {}, e.lastFailureAt ? `${time(e.lastFailureAt)}: ${e.lastFailure || ""}` : "–"),
          el("td", { class: "num" }, e.pendingMessages),
          el("td", {}, since, " ", el("button", { type: "button", class: "secondary",
            "data-write": "", onclick: () => recoverEndpoint(e.id, since.value) }, "Recover")));
      }));
    }
    await loadWebhookMessages(false);
  } catch (error) {
    body.replaceChildren(el("tr", {}, el("td", { class: "state", colspan: 8 }, `Could not load the endpoints: ${describe(error)}`)));
    fail(error);
  }
}
function webhookFilter() {
  const filter = {};
  if ($("wh-endpoint").value) filter.endpointId = $("wh-endpoint").value;
  if ($("wh-type").value.trim()) filter.eventType = $("wh-type").value.trim();
  if ($("wh-status").value) filter.status = $("wh-status").value;
  if ($("wh-from").value) filter.from = iso($("wh-from").value);
  if ($("wh-to").value) filter.to = iso($("wh-to").value);
  return filter;
}
async function loadWebhookMessages(more) {
  const body = $("webhook-messages-body");
  if (!more) { state.webhookCursor = null; body.replaceChildren(); }
  try {
    const data = await gql(`query($filter: WebhookMessageFilter, $after: String) {
      webhookMessages(filter: $filter, first: 50, after: $after) { nextCursor
        nodes { id eventType status attempts createdAt lastError } } }`,
    { filter: webhookFilter(), after: more ? state.webhookCursor : null });
    const page = data.webhookMessages;
    state.webhookCursor = page.nextCursor;
    $("wh-more").hidden = !page.nextCursor;
    if (!more && !page.nodes.length) {
      body.replaceChildren(el("tr", {}, el("td", { class: "state", colspan: 7 }, "No message matches.")));
      return;
    }
    for (const m of page.nodes) {
      const attempts = el("tr", { hidden: true }, el("td", { colspan: 7 }));
      body.append(el("tr", { "data-message": m.id },
        el("td", {}, time(m.createdAt)),
        el("td", {}, el("code", {}, m.id)),
        el("td", {}, m.eventType),
        el("td", {}, badge(m.status === "delivered" ? "succeeded" : m.status)),
        el("td", { class: "num" }, m.attempts),
        el("td", {}, m.lastError || ""),
        el("td", {},
          el("button", { type: "button", class: "secondary", onclick: () => showAttempts(m.id, attempts) }, "Attempts"), " ",
          el("button", { type: "button", class: "secondary", "data-write": "", onclick: () => resendMessage(m.id) }, "Resend"))), attempts);
    }
  } catch (error) {
    fail(error);
  }
}
async function showAttempts(id, row) {
  if (!row.hidden) { row.hidden = true; return; }
  try {
    const data = await gql(`query($id: String!) { webhookAttempts(messageId: $id) {
      attempt startedAt latencyMs statusCode outcome responseExcerpt error } }`, { id });
    row.firstChild.replaceChildren(el("ol", { class: "attempts" }, ...data.webhookAttempts.map((a) =>
      el("li", {}, `${time(a.startedAt)} · ${a.outcome} · ${a.statusCode ?? "no answer"} · ${ms(a.latencyMs)}`,
        a.error ? ` · ${a.error}` : "", a.responseExcerpt ? el("pre", {}, a.responseExcerpt) : ""))));
    row.hidden = false;
  } catch (error) {
    fail(error);
  }
}
async function resendMessage(id) {
  try {
    await gql("mutation($id: String!) { resendWebhookMessage(messageId: $id) { id status } }", { id });
    notify(`Message ${id} queued again.`, "info");
  } catch (error) {
    fail(error);
  }
}
async function recoverEndpoint(endpointId, since) {
  if (!since) { notify("Choose the time to recover from."); return; }
  try {
    const data = await gql(`mutation($id: UUID!, $since: DateTime!) { recoverWebhookEndpoint(endpointId: $id, since: $since) {
      id status total done } }`, { id: endpointId, since: iso(since) });
    followRecovery(endpointId, data.recoverWebhookEndpoint);
  } catch (error) {
    fail(error);
  }
}
function followRecovery(endpointId, job) {
  const line = $("webhook-recovery");
  const cancel = el("button", { type: "button", class: "secondary", "data-write": "", onclick: async () => {
    try { await gql("mutation($id: UUID!) { cancelWebhookRecovery(id: $id) { id status } }", { id: job.id }); } catch (error) { fail(error); }
  } }, "Cancel");
  const show = (j) => line.replaceChildren(`Recovery ${short(j.id)}: ${j.status}, ${j.done} of ${j.total} events `, j.status === "running" ? cancel : "");
  show(job);
  const tick = async () => {
    try {
      const data = await gql("query($id: UUID!) { webhookRecoveries(endpointId: $id) { id status total done } }", { id: endpointId });
      const j = data.webhookRecoveries.find((r) => r.id === job.id);
      if (j) show(j);
      if (j && j.status === "running" && state.view.tab === "webhooks") setTimeout(tick, 700);
    } catch (error) {
      fail(error);
    }
  };
  setTimeout(tick, 500);
}

// ---------- wiring ----------
document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("login-error");
    error.hidden = true;
    $("login-submit").disabled = true;
    try {
      await signIn($("login-email").value, $("login-password").value);
      $("login-password").value = "";
      await start();
      $("main").focus({ preventScroll: true });
    } catch (e) {
      error.textContent = `Sign-in failed: ${describe(e)}`;
      error.hidden = false;
    } finally {
      $("login-submit").disabled = false;
    }
  });
  $("logout").addEventListener("click", () => signOut("Signed out."));
  for (const tab of document.querySelectorAll("[data-tab]")) {
    tab.addEventListener("click", () => {
      // Filters that do not apply to the other list are dropped with the tab change.
      navigate({ tab: tab.dataset.tab, sort: "", dir: "DESC", types: "", kinds: "", failed: "", event: "" });
    });
    tab.addEventListener("keydown", (event) => {
      const tabs = [...document.querySelectorAll("[data-tab]")].filter((t) => !t.hidden);
      const i = tabs.indexOf(tab);
      if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
        const next = tabs[(i + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
        next.focus();
        next.click();
      }
    });
  }
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    // Resolves the institution (short id or name) and checks the search first.
    submitFilters();
  });
  $("clear-filters").addEventListener("click", () => {
    const cleared = Object.fromEntries(FILTER_KEYS.map((k) => [k, ""]));
    navigate(cleared);
  });
  $("prev-page").addEventListener("click", () => {
    if (state.page > 0) { state.page -= 1; loadList(); }
  });
  $("refresh-list").addEventListener("click", () => loadList());
  $("next-page").addEventListener("click", () => {
    if (!state.next) return;
    state.cursors[state.page + 1] = state.next;
    state.page += 1;
    loadList();
  });
  $("webhook-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    loadWebhookMessages(false);
  });
  $("wh-more").addEventListener("click", () => loadWebhookMessages(true));
  $("drawer-close").addEventListener("click", () => closeDrawer());
  $("drawer-backdrop").addEventListener("click", () => closeDrawer());
  $("drawer-reprocess").addEventListener("click", reprocessCurrent);
  $("bulk-preview").addEventListener("click", bulkPreview);
  $("job-cancel").addEventListener("click", cancelJob);
  $("job-dismiss").addEventListener("click", () => { $("job-panel").hidden = true; state.job = null; });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.drawer) {
      event.preventDefault();
      closeDrawer();
    }
    trapFocus(event);
  });
  window.addEventListener("popstate", () => {
    if (state.me) apply(readView(), false);
  });
  // On a narrow screen the filters start folded, so the list is what shows first.
  const narrow = window.matchMedia("(max-width: 700px)");
  const fold = () => { $("filters-box").open = !narrow.matches; };
  narrow.addEventListener("change", fold);
  fold();
  if (state.token) start();
  else signOut("");
});

// ---------- queue controls (issue #19) ----------
// Per task in the drawer: its priority and next run, "Cancel task…" (waiting tasks),
// "Force release…" (running ones), each confirmed inline, and a priority field. The
// drawer re-renders while tasks move, so a pending confirmation and a typed priority
// live in `state.drawer` and the focus is kept by `data-focus-id`.
function taskControls(t) {
  const drawer = state.drawer;
  const box = el("div", { class: "task-controls", "data-controls-for": t.id });
  const waiting = WAITING_TASK.includes(t.status);
  box.append(el("span", { class: "muted" }, `priority ${t.priority}`));
  if (waiting) box.append(el("span", { class: "muted" }, `next run ${time(t.runAt)}`));
  if (t.archived || (!waiting && t.status !== "running")) return box;
  const confirm = drawer && drawer.confirm && drawer.confirm.taskId === t.id ? drawer.confirm : null;
  if (confirm) {
    const what = confirm.action === "cancel" ? `Cancel task #${t.id}? It will never run.`
      : `Force release task #${t.id}? Its worker's result will be refused and the task runs again.`;
    box.append(el("span", { role: "alert", class: "confirm" }, what),
      el("button", { type: "button", class: "danger", "data-focus-id": `confirm-${t.id}`, "data-confirm": confirm.action,
        onclick: () => runTaskControl(t.id, confirm.action) }, confirm.action === "cancel" ? "Confirm cancel" : "Confirm release"),
      el("button", { type: "button", class: "secondary", "data-focus-id": `keep-${t.id}`,
        onclick: () => askTaskControl(null) }, "Keep it"));
    return box;
  }
  if (waiting) {
    box.append(el("button", { type: "button", class: "secondary", "data-focus-id": `cancel-${t.id}`, "data-cancel": t.id,
      onclick: () => askTaskControl({ taskId: t.id, action: "cancel" }) }, "Cancel task…"));
    const draft = drawer && drawer.priorityDraft && drawer.priorityDraft[t.id] !== undefined ? drawer.priorityDraft[t.id] : String(t.priority);
    const input = el("input", { type: "number", min: "0", max: "100", step: "1", value: draft, id: `priority-${t.id}`,
      "data-focus-id": `priority-${t.id}`, class: "priority-input",
      oninput: (e) => { if (state.drawer) state.drawer.priorityDraft = { ...(state.drawer.priorityDraft || {}), [t.id]: e.target.value }; } });
    box.append(el("label", { for: `priority-${t.id}`, class: "visually-hidden" }, `Priority of task #${t.id} (0 runs first, 100 last)`), input,
      el("button", { type: "button", class: "secondary", "data-focus-id": `set-priority-${t.id}`, "data-set-priority": t.id,
        onclick: () => setTaskPriority(t.id, input.value) }, "Set priority"));
  } else {
    box.append(el("button", { type: "button", class: "danger", "data-focus-id": `release-${t.id}`, "data-release": t.id,
      onclick: () => askTaskControl({ taskId: t.id, action: "release" }) }, "Force release…"));
  }
  return box;
}

function askTaskControl(confirm) {
  if (!state.drawer) return;
  state.drawer.confirm = confirm;
  loadDrawer().then(() => {
    const key = confirm ? `confirm-${confirm.taskId}` : null;
    const target = key && $("drawer-body").querySelector(`[data-focus-id="${key}"]`);
    if (target) target.focus();
  });
}

async function runTaskControl(taskId, action) {
  if (state.drawer) state.drawer.confirm = null;
  const cancel = action === "cancel";
  $("drawer-action-status").textContent = cancel ? `Cancelling task #${taskId}…` : `Releasing task #${taskId}…`;
  try {
    const data = cancel
      ? await gql("mutation($id: BigInt!) { cancelTask(taskId: $id) { taskId status } }", { id: taskId })
      : await gql("mutation($id: BigInt!) { forceReleaseTask(taskId: $id) { taskId status } }", { id: taskId });
    const done = cancel ? data.cancelTask : data.forceReleaseTask;
    $("drawer-action-status").textContent = `Task #${done.taskId} is ${done.status} now.`;
  } catch (error) {
    $("drawer-action-status").textContent = `${cancel ? "Cancel" : "Force release"} failed: ${describe(error)}`;
  }
  await afterTaskControl();
}

async function setTaskPriority(taskId, value) {
  const priority = Number(value);
  if (value === "" || !Number.isInteger(priority)) {
    $("drawer-action-status").textContent = "A priority is a whole number from 0 (first) to 100.";
    return;
  }
  try {
    const data = await gql(`mutation($id: BigInt!, $p: Int!) { setTaskPriority(taskId: $id, priority: $p) {
      taskId previousPriority priority } }`, { id: taskId, p: priority });
    const r = data.setTaskPriority;
    $("drawer-action-status").textContent = `Task #${r.taskId}: priority ${r.previousPriority} → ${r.priority}.`;
    if (state.drawer && state.drawer.priorityDraft) delete state.drawer.priorityDraft[taskId];
  } catch (error) {
    $("drawer-action-status").textContent = `Priority not changed: ${describe(error)}`;
  }
  await afterTaskControl();
}

async function afterTaskControl() {
  if (state.drawer) {
    state.drawer.watchUntil = Date.now() + 3000;
    clearTimeout(state.drawer.timer);
    await loadDrawer();
  }
  if (state.view && state.view.tab === "tasks") loadList();
  refreshSummary();
}

// The Tasks tab's paused-kinds panel: each paused kind, who paused it, how many tasks
// wait behind it, and a Resume button; admins pause a kind from the select.
function renderQueueControls(tasks) {
  $("field-priority").hidden = !tasks;
  $("f-priority").value = state.view.priority;
  $("paused-panel").hidden = !tasks;
  $("pause-form").hidden = !isAdmin();
  if (tasks) loadPausedKinds();
}

let pausedRequest = 0;
async function loadPausedKinds() {
  const request = ++pausedRequest;
  try {
    const data = await gql("{ pausedTaskKinds { kind pausedAt pausedBy waiting } }");
    if (request !== pausedRequest) return;
    const kinds = data.pausedTaskKinds;
    const list = $("paused-list");
    list.replaceChildren(...(kinds.length ? kinds.map((k) => el("li", { "data-paused-kind": k.kind },
      el("strong", {}, k.kind), ` paused ${time(k.pausedAt)} by ${k.pausedBy}`,
      k.waiting === null ? "" : ` · ${k.waiting} waiting`,
      isAdmin() ? el("button", { type: "button", class: "secondary", "data-resume": k.kind,
        onclick: () => setKindPaused(k.kind, false) }, `Resume ${k.kind}`) : null))
      : [el("li", { class: "muted" }, "No task kind is paused.")]));
    const paused = new Set(kinds.map((k) => k.kind));
    const choices = state.facets.taskKinds.filter((k) => !paused.has(k));
    $("pause-kind").replaceChildren(...choices.map((k) => el("option", { value: k }, k)));
    $("pause-submit").disabled = !choices.length;
    $("paused-panel").dataset.state = "ready";
  } catch (error) {
    if (request !== pausedRequest) return;
    $("paused-list").replaceChildren(el("li", { class: "error" }, `Could not load the paused kinds: ${describe(error)}`));
  }
}

async function setKindPaused(kind, pause) {
  $("paused-status").textContent = `${pause ? "Pausing" : "Resuming"} ${kind}…`;
  try {
    if (pause) {
      const data = await gql("mutation($k: String!) { pauseTaskKind(kind: $k) { kind tasksParked } }", { k: kind });
      $("paused-status").textContent = `${kind} paused; ${data.pauseTaskKind.tasksParked} waiting tasks held.`;
    } else {
      const data = await gql("mutation($k: String!) { resumeTaskKind(kind: $k) { kind tasksResumed } }", { k: kind });
      $("paused-status").textContent = `${kind} resumed; ${data.resumeTaskKind.tasksResumed} tasks released to the workers.`;
    }
  } catch (error) {
    $("paused-status").textContent = `${pause ? "Pause" : "Resume"} failed: ${describe(error)}`;
  }
  await loadPausedKinds();
  if (state.view && state.view.tab === "tasks") loadList();
  const again = pause ? $("paused-list").querySelector(`[data-resume="${kind}"]`) : $("pause-kind");
  if (again) again.focus();
}

// "Reprocess with priority": the copy's tasks run at the given priority (0 first).
async function reprocessWithPriority() {
  if (!state.drawer) return;
  const value = $("drawer-priority").value.trim();
  const priority = Number(value);
  if (value === "" || !Number.isInteger(priority)) {
    $("drawer-action-status").textContent = "A priority is a whole number from 0 (first) to 100.";
    $("drawer-priority").focus();
    return;
  }
  const button = $("drawer-reprocess-priority");
  button.disabled = true;
  $("drawer-action-status").textContent = `Reprocessing at priority ${priority}…`;
  try {
    const data = await gql(`mutation($id: UUID!, $p: Int!) {
      reprocessEvent(eventId: $id, waitForProjections: true, priority: $p) { eventId logPosition } }`,
    { id: state.drawer.eventId, p: priority });
    $("drawer-action-status").textContent = `Copy #${data.reprocessEvent.logPosition} appended; its tasks run at priority ${priority}.`;
    state.drawer.watchUntil = Date.now() + 5000;
    clearTimeout(state.drawer.timer);
    await loadDrawer();
  } catch (error) {
    $("drawer-action-status").textContent = `Reprocess failed: ${describe(error)}`;
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("drawer-reprocess-priority").addEventListener("click", reprocessWithPriority);
  $("pause-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const kind = $("pause-kind").value;
    if (kind) setKindPaused(kind, true);
  });
});
