// Progressive enhancement for the dashboard: the server-rendered page works without this file.
// It swaps the live section in place every few seconds and, under --emulate, wires the
// per-provider emulator mode menus to POST /_emulator/{kind}.
(function () {
  "use strict";
  const root = document.documentElement;
  const live = document.getElementById("live");
  const updated = document.getElementById("updated");
  if (!live || !updated) return;
  root.classList.replace("no-js", "js");
  const label = updated.querySelector(".text") || updated;
  const every = (Number(updated.dataset.refresh) || 3) * 1000;
  let timer = 0;
  let inFlight = false;
  let freshAt = new Date();  // when the figures on the page were last known to be current

  function clock(date) {
    return date.toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function say(text, stale) {
    label.textContent = text;
    updated.classList.toggle("stale", Boolean(stale));
  }

  // Unreachable: grey out every figure and say since when, in the tab title too (a background
  // tab is where an operator would otherwise keep trusting old numbers).
  function markStale(reason) {
    const since = "stale since " + clock(freshAt);
    root.classList.add("data-stale");
    document.title = since + " · " + baseTitle();
    say(since + ": gateway unreachable, retrying (" + reason + ")", true);
  }

  function baseTitle() {
    const meta = document.getElementById("live-meta");
    return (meta && meta.dataset.title) || "sms-gateway";
  }

  // Enable the controls the server renders disabled (they stay inert with JavaScript off).
  function enhance() {
    for (const select of live.querySelectorAll("select.emu-mode")) {
      select.disabled = false;
    }
    root.classList.remove("data-stale");
    document.title = baseTitle();
  }

  // A swap would close an open menu or drop a text selection, so wait for the user (and say so).
  function busyReason() {
    const active = document.activeElement;
    if (active && active.tagName === "SELECT" && live.contains(active)) return "a menu has focus";
    const selection = window.getSelection();
    if (selection && !selection.isCollapsed && live.contains(selection.anchorNode)) return "text is selected";
    return "";
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(refresh, delay === undefined ? every : delay);
  }

  async function refresh() {
    if (inFlight) return;
    if (document.hidden) { schedule(); return; }
    const busy = busyReason();
    if (busy) { say("paused while " + busy, false); schedule(); return; }
    inFlight = true;
    try {
      const query = new URLSearchParams(location.search);  // the status filter, if any
      query.set("partial", "1");
      const response = await fetch("/?" + query.toString(), { headers: { Accept: "text/html" }, cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const html = await response.text();
      if (busyReason()) return;  // the user started something while we waited
      live.innerHTML = html;
      freshAt = new Date();
      enhance();
      say("updated " + clock(freshAt), false);
    } catch (err) {
      markStale(err.message);
    } finally {
      inFlight = false;
      schedule();
    }
  }

  async function setMode(select) {
    const kind = select.dataset.kind;
    const mode = select.value;
    const body = { mode: mode, latency_ms: mode === "latency" ? Number(select.dataset.latencyMs) || 2000 : 0 };
    select.setAttribute("aria-busy", "true");
    select.disabled = true;
    try {
      const response = await fetch("/_emulator/" + encodeURIComponent(kind), {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      if (!response.ok) {
        let detail = "HTTP " + response.status;
        try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
        throw new Error(detail);
      }
      say(kind + " emulator: " + mode, false);
    } catch (err) {
      say(kind + " emulator: " + err.message, true);
    } finally {
      select.removeAttribute("aria-busy");
      select.blur();
      schedule(0);  // show the new mode (and what it does to the breaker) at once
    }
  }

  live.addEventListener("change", function (event) {
    const target = event.target;
    if (target instanceof HTMLSelectElement && target.classList.contains("emu-mode")) setMode(target);
    // The status filter is a plain GET form (it works without JavaScript); here a choice applies at once.
    if (target instanceof HTMLSelectElement && target.name === "status" && target.form) target.form.submit();
  });
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) schedule(0);
  });
  enhance();
  schedule();
})();
