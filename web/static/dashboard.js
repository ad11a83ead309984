// Refresh the live section in place every few seconds; the page works without this script.
(function () {
  "use strict";
  const live = document.getElementById("live");
  const updated = document.getElementById("updated");
  const every = (Number(updated && updated.dataset.refresh) || 3) * 1000;
  async function refresh() {
    try {
      const response = await fetch("/?partial=1", { headers: { Accept: "text/html" }, cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      live.innerHTML = await response.text();
      updated.textContent = "updated " + new Date().toLocaleTimeString();
      updated.classList.remove("stale");
    } catch (err) {
      updated.textContent = "gateway unreachable (" + err.message + ")";
      updated.classList.add("stale");
    }
  }
  setInterval(refresh, every);
})();
