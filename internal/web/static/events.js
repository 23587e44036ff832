// A live tail of the event log, filtered by type and aggregate.
"use strict";

(() => {
  const { live, el, time } = hodei;
  const list = document.getElementById("tail");
  const form = document.getElementById("evfilter");
  const pause = document.getElementById("ev-pause");
  const maxRows = 500;
  let ctl = null, paused = false, last = 0;

  function start() {
    if (ctl) ctl.abort();
    ctl = new AbortController();
    const types = document.getElementById("ev-types").value.split(/[\s,]+/).filter(Boolean);
    const [kind, aid] = document.getElementById("ev-agg").value.trim().split(":");
    const req = () => ({ types, aggregateKind: kind || "", aggregateId: aid || "", afterId: String(last) });
    live("EventService/Subscribe", req, (m) => {
      const ev = m.event;
      if (!ev || paused) return;
      last = Math.max(last, Number(ev.id));
      const body = Object.values(ev.payload || {})[0] || {};
      const link = ev.aggregateKind === "job" ? el("a", { href: "/ui/jobs/" + ev.aggregateId, text: ev.aggregateId }) : el("span", { text: ev.aggregateId });
      list.prepend(el("li", { "data-type": ev.type },
        el("time", { text: time(ev.time) }), " ", el("strong", { text: ev.type }), " ", ev.aggregateKind + " ", link, " ",
        el("span", { class: "mono", text: Object.entries(body).filter(([k]) => k !== "jobId" && k !== "workerId").map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join(" ") })));
      while (list.children.length > maxRows) list.lastChild.remove();
    }, ctl.signal);
  }

  form.addEventListener("submit", (ev) => { ev.preventDefault(); list.replaceChildren(); last = 0; start(); });
  pause.addEventListener("click", () => { paused = !paused; pause.setAttribute("aria-pressed", String(paused)); pause.textContent = paused ? "Resume" : "Pause"; });
  start();
})();
