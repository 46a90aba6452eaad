// Aula admin dashboard: the page's wiring, run once the document is parsed (every
// deferred script has run by then, so the handlers may use any of them).

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
