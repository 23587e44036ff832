// Providers with their health, limits and enabled switch; the workers
// with their slots in use; both read again as events arrive.
"use strict";

(() => {
  const { call, live, say, el, time } = hodei;
  const tbody = document.querySelector("#providers tbody");
  const ctl = new AbortController();

  function row(p) {
    const health = p.healthy ? "healthy" : "unhealthy" + (p.unhealthySince ? " since " + time(p.unhealthySince) : "");
    const limits = "max " + (p.maxWorkers || 0) + (p.idleTimeout ? ", idle " + p.idleTimeout : "") + (p.ephemeral ? ", ephemeral" : "");
    let enabled = el("span", { text: p.enabled ? "yes" : "no" });
    if (hodei.canAdmin) {
      enabled = el("button", { type: "button", class: "toggle", "aria-pressed": String(!!p.enabled), text: p.enabled ? "Disable" : "Enable" });
      enabled.addEventListener("click", async () => {
        try {
          await call("ProviderService/UpdateProvider", { name: p.name, enabled: !p.enabled });
          say("Provider " + p.name + (p.enabled ? " disabled." : " enabled."));
          load();
        } catch (e) { say("Could not change " + p.name + ": " + e.message); }
      });
    }
    return el("tr", { "data-name": p.name },
      el("td", { "data-label": "Name", text: p.name }),
      el("td", { "data-label": "Kind", text: p.kind }),
      el("td", { "data-label": "Health", class: p.healthy ? "ok" : "bad", title: p.healthMessage || "", text: health + (p.healthMessage ? ": " + p.healthMessage : "") }),
      el("td", { "data-label": "Workers", text: String(p.workers || 0) }),
      el("td", { "data-label": "Limits", text: limits }),
      el("td", { "data-label": "Labels", class: "mono", text: Object.entries(p.labels || {}).map(([k, v]) => k + "=" + v).join(" ") + (p.anyImage ? " any image" : "") }),
      el("td", { "data-label": "Enabled" }, enabled));
  }

  async function load() {
    try {
      const res = await call("ProviderService/ListProviders", {});
      tbody.replaceChildren(...(res.providers || []).map(row));
    } catch (e) { say("Could not list providers: " + e.message); }
  }

  const workers = document.querySelector("#workers tbody");
  function workerRow(w) {
    const state = (w.state || "").replace("WORKER_STATE_", "").toLowerCase();
    return el("tr", { "data-worker": w.id, "data-state": state },
      el("td", { "data-label": "Worker", class: "mono", text: w.id + (w.hostname ? " (" + w.hostname + ")" : "") }),
      el("td", { "data-label": "Provider", text: w.provider }),
      el("td", { "data-label": "State", class: state === "draining" ? "bad" : "", text: state }),
      el("td", { "data-label": "Slots in use", text: (w.running || 0) + " / " + (w.slots || 0) }),
      el("td", { "data-label": "Labels", class: "mono", text: Object.entries(w.labels || {}).map(([k, v]) => k + "=" + v).join(" ") }),
      el("td", { "data-label": "Last heartbeat", text: time(w.lastSeen) }),
      el("td", { "data-label": "Replica", class: "mono", text: w.replicaId || "" }));
  }
  async function loadWorkers() {
    try {
      const res = await call("ProviderService/ListWorkers", {});
      workers.replaceChildren(...(res.workers || []).map(workerRow));
      document.getElementById("no-workers").hidden = workers.rows.length > 0;
    } catch (e) { say("Could not list workers: " + e.message); }
  }

  // Worker events and the starts and ends of attempts change the tables;
  // they are read again at most every 500 ms.
  let reload = null;
  const types = ["WorkerRegistered", "WorkerProvisioned", "WorkerDisconnected", "WorkerReconnected", "WorkerGracefulShutdown",
    "WorkerShutdownForced", "WorkerTerminated", "ProviderHealthChanged", "ProviderMarkedUnhealthy", "ProviderRecovered",
    "JobAssigned", "JobCompleted", "JobFailed", "JobCancelled"];
  live("EventService/Subscribe", () => ({ types }), (m) => {
    if (!m.event || reload) return;
    reload = setTimeout(() => { reload = null; load(); loadWorkers(); }, 500);
  }, ctl.signal);
  load();
  loadWorkers();
})();
