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
const JOB_FIELDS = "id status total done failed skipped upToPosition error copiesSucceeded copiesFailed copiesRunning";

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
  // deactivated account is refused at every reconnect; the server closes with 4403 Forbidden).
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
function apply(given, keepPage) {
  const { view, ignored } = checkView(given);
  // The address says only what the page uses (a reload does not say it again).
  if (ignored.length) writeView(view, true);
  const sameList = state.view && ["tab", "sort", "dir", ...FILTER_KEYS].every((k) => state.view[k] === view[k]);
  state.view = view;
  if (!sameList && !keepPage) {
    state.cursors = [null];
    state.page = 0;
  }
  renderTabs();
  renderFilters();
  // Before the list: it clears the fields' errors of the previous view.
  renderInsights();
  showUrlHints(ignored);
  if (view.tab === "projections") loadProjections();
  else if (view.tab === "webhooks") loadWebhooks();
  else if (!sameList || keepPage) checkFields(view);
  if (view.event && (!state.drawer || state.drawer.eventId !== view.event)) openDrawer(view.event, null, false);
  if (!view.event && state.drawer) closeDrawer(false);
}

// The institution (a short id or a name, resolved to its id) and the search of a view
// from the address, checked as the filter form checks them (insights.js): what does
// not resolve is said beside its field, and no list of another filter shows under it.
async function checkFields(view) {
  const refused = [];
  let institution = view.institution;
  // Until it is settled, nothing loads a list of this view (`loadList` comes back here).
  state.refused = true;
  // Task errors are searched by the platform's operators only (`taskFilter`).
  const searched = view.q && (view.tab !== "tasks" || seesPlatform());
  if (searched && view.q.trim().length < 3) refused.push(["f-search", "type at least 3 characters"]);
  if (searched && view.q.length > 200) refused.push(["f-search", "at most 200 characters"]);
  if (institution && !UUID_RE.test(institution)) {
    const request = ++listRequest;
    listState(`Finding the institution “${institution}”…`, "loading");
    try {
      institution = await resolveInstitution(institution);
    } catch (error) {
      refused.push(["f-institution", error instanceof ApiFailure ? describe(error) : error.message]);
    }
    if (request !== listRequest || state.view !== view) return;
  }
  state.refused = refused.length > 0;
  if (refused.length) {
    listRefused(refused);
    return;
  }
  if (institution !== view.institution) {
    // The resolved id goes into the address and the view: a reload does not resolve it
    // again, and the charts and the bulk reprocess use it.
    state.view = { ...view, institution };
    writeView(state.view, true);
    $("f-institution").value = institution;
    loadCharts(true);
  }
  loadList();
}
function listState(text, status) {
  renderHead();
  $("list-body").replaceChildren(stateRow(text));
  $("list").dataset.state = status;
}
// A list not loaded: its filters are refused beside their fields, and the list says so.
function listRefused(refused) {
  listRequest += 1;
  $("list-body").removeAttribute("aria-busy");
  for (const [field, message] of refused) showFieldError(field, message);
  listState("The filters marked beside their fields were not understood: correct or clear them.", "refused");
  state.next = null;
  $("prev-page").disabled = true;
  $("next-page").disabled = true;
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
  // A view whose institution or search is not settled is checked first (a refresh, a
  // queue control); it loads the list once they are.
  if (state.refused) return checkFields(state.view);
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
