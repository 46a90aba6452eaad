// Aula admin dashboard: the details drawer of an event (its tasks, payload, reprocessing)
// and the per-task queue controls in it. A classic script loaded after app.js, whose
// globals (state, gql, el, ...) it uses; the page's wiring is main.js.

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

// Reloads the open drawer now and keeps it refreshing for `ms` at least, so what an
// action set off (a copy, a retry, a queue control) shows as it moves.
async function watchDrawer(ms) {
  if (!state.drawer) return;
  state.drawer.watchUntil = Date.now() + ms;
  clearTimeout(state.drawer.timer);
  await loadDrawer();
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
  await reprocess($("drawer-reprocess"), null);
}

// Appends a copy of the open event and watches it; `priority` (null: each task kind's
// own) is the priority its tasks run at.
async function reprocess(button, priority) {
  button.disabled = true;
  const when = priority === null ? "now" : `at priority ${priority}`;
  $("drawer-action-status").textContent = priority === null ? "Reprocessing…" : `Reprocessing ${when}…`;
  try {
    const data = await gql(`mutation($id: UUID!, $p: Int) {
      reprocessEvent(eventId: $id, waitForProjections: true, priority: $p) { eventId logPosition } }`,
    { id: state.drawer.eventId, p: priority });
    $("drawer-action-status").textContent = `Copy #${data.reprocessEvent.logPosition} appended; its tasks run ${when}.`;
    await watchDrawer(5000);
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
    await watchDrawer(5000);
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
  await watchDrawer(3000);
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
  await reprocess($("drawer-reprocess-priority"), priority);
}

document.addEventListener("DOMContentLoaded", () => {
  $("drawer-reprocess-priority").addEventListener("click", reprocessWithPriority);
  $("pause-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const kind = $("pause-kind").value;
    if (kind) setKindPaused(kind, true);
  });
});
