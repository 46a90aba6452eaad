// Aula admin dashboard: what operators run from the page: reprocessing outcomes and bulk
// reprocessing, projection rebuilds, webhook endpoints and their messages. A classic
// script loaded after app.js, whose globals it uses.

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
  if (state.refused) {
    // Never a count, let alone a job, over filters the page could not read.
    $("bulk-body").replaceChildren(el("p", { class: "error", role: "alert" },
      "Correct or clear the filters marked beside their fields first."));
    $("bulk-actions").replaceChildren();
    panel.dataset.state = "refused";
    panel.focus();
    return;
  }
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
  // Every event the total counted is copied, failed or skipped (no longer matched).
  const dealt = job.done + job.failed + (job.skipped || 0);
  const pct = job.total ? Math.min(100, Math.floor((dealt * 100) / job.total)) : (job.status === "done" ? 100 : 0);
  $("job-progress").value = pct;
  $("job-progress").max = 100;
  const panel = $("job-panel");
  panel.dataset.status = job.status;
  panel.dataset.percent = String(pct);
  const failed = job.failed ? `, ${job.failed} failed` : "";
  const skipped = job.skipped ? `, ${job.skipped} skipped (no longer matched: resolved meanwhile)` : "";
  const error = job.error ? ` — ${job.error}` : "";
  $("job-text").textContent = `${job.status}: ${job.done} of ${job.total} reprocessed (${pct}%)${failed}${skipped}${error}`;
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
