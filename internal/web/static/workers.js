// Providers with their health, limits and enabled switch; workers as
// their events arrive.
"use strict";

(() => {
  const { call, live, say, el, time } = hodei;
  const tbody = document.querySelector("#providers tbody");
  const ctl = new AbortController();

  function row(p) {
    const health = p.healthy ? "healthy" : "unhealthy" + (p.unhealthySince ? " since " + time(p.unhealthySince) : "");
    const limits = "max " + (p.maxWorkers || 0) + (p.idleTimeout ? ", idle " + p.idleTimeout : "") + (p.ephemeral ? ", ephemeral" : "");
    let enabled = el("span", { text: p.enabled ? "yes" : "no" });
    if (hodei.canWrite) {
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
  let reload = null;
  live("EventService/Subscribe", () => ({ aggregateKind: "worker" }), (m) => {
    const ev = m.event;
    if (!ev) return;
    const body = Object.values(ev.payload || {})[0] || {};
    const r = el("tr", { "data-worker": ev.aggregateId },
      el("td", { "data-label": "Worker", class: "mono", text: ev.aggregateId }),
      el("td", { "data-label": "Provider", text: body.provider || "" }),
      el("td", { "data-label": "Last event", text: ev.type }),
      el("td", { "data-label": "When", text: time(ev.time) }));
    const old = workers.querySelector(`tr[data-worker="${ev.aggregateId}"]`);
    if (old) old.replaceWith(r); else workers.prepend(r);
    if (!reload) reload = setTimeout(() => { reload = null; load(); }, 300);
  }, ctl.signal);
  load();
})();
