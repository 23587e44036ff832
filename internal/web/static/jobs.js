// The job list: filters in the address, cursor pages of ListJobs, rows
// kept current by the event stream. The text filter is the server's: a
// search examines a bounded number of jobs per call, so a page may hold
// few matches or none and still go on ("searched to", "Search older").
"use strict";

(() => {
  const { call, live, say, el, stateName, time, command } = hodei;
  const pageSize = 50;
  const tbody = document.querySelector("#jobs tbody");
  const form = document.getElementById("filters");
  const params = new URLSearchParams(location.search);
  const filter = { state: params.get("state") || "", type: params.get("type") || "", label: params.get("label") || "", q: params.get("q") || "" };
  let cursor = params.get("page") || ""; // this page's token; "" is the newest page
  let next = "";
  for (const [k, v] of Object.entries(filter)) form.elements[k].value = v;

  function request(token) {
    const req = { pageSize, pageToken: token };
    if (filter.state) req.states = [filter.state];
    if (filter.type) req.type = filter.type;
    if (filter.q) req.text = filter.q;
    if (filter.label) {
      const [k, v] = filter.label.split("=");
      req.labels = { [k.trim()]: (v || "").trim() };
    }
    return req;
  }

  function matches(job) {
    if (filter.state && job.state !== filter.state) return false;
    if (filter.type && (job.spec.type || "") !== filter.type) return false;
    if (filter.label) {
      const [k, v] = filter.label.split("=");
      if (((job.spec.labels || {})[k.trim()] || "") !== (v || "").trim()) return false;
    }
    if (filter.q) {
      const q = filter.q.toLowerCase();
      if (!(job.spec.name || "").toLowerCase().includes(q) && !command(job.spec).toLowerCase().includes(q)) return false;
    }
    return true;
  }

  function row(job) {
    const s = stateName(job.state);
    const link = el("a", { href: "/ui/jobs/" + job.id, text: job.spec.name || job.id.slice(-12) });
    return el("tr", { "data-id": job.id, "data-state": s },
      el("td", { "data-label": "State" }, el("span", { class: "state s-" + s.replace(" ", "-"), text: s })),
      el("td", { "data-label": "Name" }, link),
      el("td", { "data-label": "Command", class: "mono cmd", text: command(job.spec) }),
      el("td", { "data-label": "Type", text: job.spec.type || "" }),
      el("td", { "data-label": "Attempt", text: (job.attempt || 0) + "/" + (job.maxAttempts || 0) }),
      el("td", { "data-label": "Created", text: time(job.createdAt) }));
  }

  let loadedAt = 0, reload = null;
  async function load() {
    loadedAt = Date.now();
    const t0 = performance.now();
    const res = await call("JobService/ListJobs", request(cursor));
    const jobs = res.jobs || [];
    tbody.replaceChildren(...jobs.map(row));
    next = res.nextPageToken || "";
    document.getElementById("next").disabled = !next;
    document.getElementById("first").disabled = !cursor;
    // A search that stopped at its bound has not looked at older jobs:
    // say how far it got rather than that nothing matches.
    const searched = document.getElementById("searched");
    searched.hidden = !res.searchedTo;
    if (res.searchedTo) {
      document.getElementById("searched-to").textContent = (jobs.length ? "" : "No match yet. ") + "Searched to " + time(res.searchedTo) + ".";
    }
    document.getElementById("empty").hidden = jobs.length > 0 || !!res.searchedTo;
    document.body.dataset.loaded = Math.round(performance.now() - t0);
    if (!document.body.dataset.rendered) document.body.dataset.rendered = Math.round(performance.now()); // since navigation
    select(Math.min(selected, tbody.rows.length - 1));
  }

  function go(token) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(filter)) if (v) p.set(k, v);
    if (token) p.set("page", token);
    history.replaceState(null, "", "?" + p.toString());
    cursor = token;
    selected = 0;
    load().catch((e) => say("Could not list jobs: " + e.message));
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    for (const k of Object.keys(filter)) filter[k] = form.elements[k].value.trim();
    go("");
  });
  document.getElementById("next").addEventListener("click", () => go(next));
  document.getElementById("search-older").addEventListener("click", () => go(next));
  document.getElementById("first").addEventListener("click", () => go(""));

  // Live: gather the ids of changed jobs, then read each once.
  const changed = new Set();
  let timer = null;
  async function flush() {
    timer = null;
    const ids = [...changed];
    changed.clear();
    if (ids.length > pageSize && !cursor) {
      if (!filter.q) return load();
      // A search reads up to 20,000 jobs: under a burst, at most every 2 s.
      if (!reload) reload = setTimeout(() => { reload = null; load().catch((e) => say("Could not list jobs: " + e.message)); }, Math.max(0, loadedAt + 2000 - Date.now()));
      return;
    }
    for (const id of ids) {
      const have = tbody.querySelector(`tr[data-id="${id}"]`);
      if (!have && cursor) continue; // older pages only change in place
      let job;
      try { job = (await call("JobService/GetJob", { id })).job; } catch (_) { continue; }
      const fresh = row(job);
      if (have && matches(job)) have.replaceWith(fresh);
      else if (have) have.remove();
      else if (matches(job) && (!tbody.rows.length || job.id > tbody.rows[0].dataset.id)) {
        tbody.prepend(fresh);
        if (tbody.rows.length > pageSize) tbody.rows[tbody.rows.length - 1].remove();
        document.getElementById("empty").hidden = true;
      }
    }
    select(selected);
  }
  const ctl = new AbortController();
  const types = ["JobCreated", "JobAssigned", "JobStarted", "JobCompleted", "JobFailed", "JobCancelled", "JobRetryScheduled"];
  live("EventService/Subscribe", () => ({ types, aggregateKind: "job" }), (m) => {
    if (!m.event) return;
    changed.add(m.event.aggregateId);
    if (!timer) timer = setTimeout(flush, 150);
  }, ctl.signal);

  // Keyboard: j/k move, Enter opens, / filters, n older, p newest.
  let selected = 0;
  function select(i) {
    const rows = tbody.rows;
    for (const r of rows) r.removeAttribute("aria-selected");
    if (!rows.length) return;
    selected = Math.max(0, Math.min(i, rows.length - 1));
    rows[selected].setAttribute("aria-selected", "true");
  }
  document.addEventListener("keydown", (ev) => {
    if (ev.target.closest("input, select, textarea") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const rows = tbody.rows;
    if (ev.key === "j" || ev.key === "ArrowDown") { select(selected + 1); rows[selected]?.scrollIntoView({ block: "nearest" }); }
    else if (ev.key === "k" || ev.key === "ArrowUp") { select(selected - 1); rows[selected]?.scrollIntoView({ block: "nearest" }); }
    else if (ev.key === "Enter" && rows[selected] && !ev.target.closest("a, button")) location.href = "/ui/jobs/" + rows[selected].dataset.id;
    else if (ev.key === "/") form.elements.state.focus();
    else if (ev.key === "n" && next) go(next);
    else if (ev.key === "p") go("");
    else return;
    ev.preventDefault();
  });

  load().catch((e) => say("Could not list jobs: " + e.message));
})();
