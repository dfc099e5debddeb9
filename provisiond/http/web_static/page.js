// Live updates of the status page: rows arrive server-rendered over server-sent events.
// No framework, nothing fetched from another site; without this script the page still works
// (it reloads itself every 15 seconds instead).
"use strict";

(function () {
  const script = document.currentScript;
  const live = document.getElementById("live");
  const summary = document.getElementById("summary");
  if (!script || !live || !summary) return;

  function age(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 120) return seconds + "s";
    if (seconds < 7200) return Math.floor(seconds / 60) + "m";
    const minutes = Math.floor((seconds % 3600) / 60);
    return Math.floor(seconds / 3600) + "h" + String(minutes).padStart(2, "0") + "m";
  }

  function tick() {
    const now = Date.now() / 1000;
    for (const element of document.querySelectorAll("time[data-ts]")) {
      element.textContent = age(now - Number(element.dataset.ts)) + (element.dataset.suffix || "");
    }
  }

  function replaceRow(html) {
    const holder = document.createElement("tbody");
    holder.innerHTML = html.trim();
    const row = holder.firstElementChild;
    if (!row || !row.id) return;
    const old = document.getElementById(row.id);
    if (old && old.dataset.state !== row.dataset.state) {
      live.textContent = row.id.replace(/^node-/, "") + " is now " + row.dataset.state;
    }
    if (old) {
      old.replaceWith(row);
    } else {
      document.querySelector("#nodes tbody").appendChild(row);
    }
  }

  function showSummary(counts) {
    summary.replaceChildren();
    for (const [state, count] of Object.entries(counts)) {
      if (!count) continue;
      const badge = document.createElement("span");
      badge.className = "badge state-" + state;
      badge.textContent = state + ": " + count;
      summary.append(badge, " ");
    }
  }

  const url = script.dataset.stream + "?since=" + encodeURIComponent(summary.dataset.marker || "");
  const source = new EventSource(url);
  source.addEventListener("node", (event) => replaceRow(event.data));
  source.addEventListener("summary", (event) => {
    showSummary(JSON.parse(event.data));
    summary.dataset.marker = event.lastEventId;
    document.body.dataset.live = "on";
  });
  source.addEventListener("open", () => { document.body.dataset.live = "on"; });
  source.addEventListener("error", () => { document.body.dataset.live = "reconnecting"; });
  setInterval(tick, 1000);
})();
