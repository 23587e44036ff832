// The overview: queue depth, throughput, success rate and dispatch
// latency from the server's rolling counters (GetJobStats), read again
// as job events arrive (at most once a second).
"use strict";

(() => {
  const { call, live, say, el, time } = hodei;
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.getElementById("chart");
  const n = (v) => Number(v || 0);

  function svgEl(tag, attrs) {
    const e = document.createElementNS(svgNS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  }

  function draw(minutes) {
    svg.replaceChildren();
    const W = 600, H = 200, w = W / 60;
    const peak = Math.max(1, ...minutes.map((m) => Math.max(n(m.succeeded) + n(m.failed), n(m.created))));
    const qpeak = Math.max(1, ...minutes.map((m) => n(m.queued)));
    const offset = 60 - minutes.length;
    let created = "", queued = "";
    minutes.forEach((m, i) => {
      const x = (offset + i) * w;
      const ok = n(m.succeeded), bad = n(m.failed);
      const hOk = (ok / peak) * (H - 10), hBad = (bad / peak) * (H - 10);
      const g = svgEl("g", { "data-minute": m.start, "data-finished": ok + bad, "data-created": n(m.created) });
      const title = svgEl("title", {});
      title.textContent = time(m.start) + ": " + n(m.created) + " submitted, " + ok + " succeeded, " + bad + " failed, " + n(m.dispatched) + " dispatched";
      g.append(title, svgEl("rect", { class: "bar-ok", x: x + 1, y: H - hOk, width: w - 2, height: hOk }),
        svgEl("rect", { class: "bar-bad", x: x + 1, y: H - hOk - hBad, width: w - 2, height: hBad }));
      svg.append(g);
      created += (created ? " L" : "M") + (x + w / 2) + " " + (H - (n(m.created) / peak) * (H - 10));
      if (n(m.queued) >= 0 && m.queued !== undefined) queued += (queued ? " L" : "M") + (x + w / 2) + " " + (H - (n(m.queued) / qpeak) * (H - 10));
    });
    if (created) svg.append(svgEl("path", { class: "line-new", d: created }));
    if (queued) svg.append(svgEl("path", { class: "line-q", d: queued }));
  }

  async function load() {
    try {
      const s = await call("JobService/GetJobStats", {});
      const minutes = s.minutes || [];
      const ok = minutes.reduce((a, m) => a + n(m.succeeded), 0), bad = minutes.reduce((a, m) => a + n(m.failed), 0);
      const recent = minutes.slice(-5).filter((m) => n(m.dispatched) > 0);
      document.getElementById("c-queued").textContent = n(s.queued);
      document.getElementById("c-retrying").textContent = n(s.retrying);
      document.getElementById("c-running").textContent = n(s.running);
      document.getElementById("c-finished").textContent = ok + bad;
      document.getElementById("c-success").textContent = ok + bad ? (100 * ok / (ok + bad)).toFixed(1) + " %" : "–";
      document.getElementById("c-dispatch").textContent = recent.length
        ? "≤ " + Math.max(...recent.map((m) => n(m.dispatchP50Ms))) + " ms / ≤ " + Math.max(...recent.map((m) => n(m.dispatchP99Ms))) + " ms" : "–";
      document.getElementById("chart-note").textContent = "Counted by this server since " + time(s.since) + "; queue depth as published by the leader when it changes.";
      draw(minutes);
      document.body.dataset.finished = ok + bad;
    } catch (e) { say("Could not read the counters: " + e.message); }
  }

  const ctl = new AbortController();
  let timer = null;
  live("EventService/Subscribe", () => ({ types: ["JobCreated", "JobCompleted", "JobFailed", "JobCancelled", "JobQueueDepthChanged"] }), () => {
    if (!timer) timer = setTimeout(() => { timer = null; load(); }, 1000);
  }, ctl.signal);
  load();
})();
