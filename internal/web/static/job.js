// One job: its state re-read on each of its events, its attempts and spec,
// "why is it waiting", its events since the page opened, and its log
// followed live in a bounded window.
"use strict";

(() => {
  const { call, stream, live, say, el, stateName, className, finalStates, time, duration, command } = hodei;
  const id = document.body.dataset.job;
  const ctl = new AbortController();
  let current = null;

  function render(job) {
    current = job;
    const s = stateName(job.state);
    const badge = document.getElementById("job-state");
    badge.textContent = s;
    badge.className = "state s-" + s.replace(" ", "-");
    document.getElementById("job-name").textContent = job.spec.name || "";
    document.title = (job.spec.name || "Job " + id) + " · " + s + " · Hodei";
    const final = finalStates.has(job.state);
    const cancel = document.getElementById("cancel");
    const retry = document.getElementById("retry");
    if (cancel) cancel.hidden = final;
    if (retry) retry.hidden = !final;
    attempts(job);
    spec(job.spec, job);
    explain(job);
  }

  function attempts(job) {
    const rows = (job.attempts || []).slice().reverse().map((a) => el("tr", {},
      el("td", { "data-label": "#", text: a.number }),
      el("td", { "data-label": "State", text: stateName(a.state) }),
      el("td", { "data-label": "Worker", class: "mono", text: a.workerId || "" }),
      el("td", { "data-label": "Exit", text: a.finishedAt ? String(a.exitCode || 0) + (a.signal ? " (" + a.signal + ")" : "") : "" }),
      el("td", { "data-label": "Failure", text: className(a.failureClass) }),
      el("td", { "data-label": "Assigned", text: time(a.assignedAt) }),
      el("td", { "data-label": "Started", text: time(a.startedAt) }),
      el("td", { "data-label": "Took", text: duration(a.startedAt || a.assignedAt, a.finishedAt) }),
      el("td", { "data-label": "Message", text: a.message || "" })));
    document.querySelector("#attempts tbody").replaceChildren(...rows);
  }

  function spec(sp, job) {
    const items = [
      ["Command", command(sp)], ["Interpreter", sp.interpreter], ["Image", sp.image], ["Type", sp.type],
      ["Priority", sp.priority], ["Timeout", sp.timeout], ["Working directory", sp.workdir],
      ["Labels", kv(sp.labels)], ["Tags", kv(sp.tags)], ["Environment", kv(sp.env)],
      ["Secrets", (sp.secrets || []).map((r) => (r.env || "SECRET_" + r.name.toUpperCase().replace(/[.-]/g, "_")) + " ← secret " + r.name).join("  ")],
      ["Resources", sp.resources ? (sp.resources.cpuMillis || 0) + "m CPU, " + (sp.resources.memoryMib || 0) + " MiB" : ""],
      ["Attempts", (job.attempt || 0) + " of " + (job.maxAttempts || 0)], ["Created", time(job.createdAt)],
      ["Finished", time(job.finishedAt)], ["Retry at", time(job.runAt)], ["Message", job.message],
    ];
    const dl = document.getElementById("spec");
    dl.replaceChildren();
    for (const [k, v] of items) if (v !== undefined && v !== "" && v !== null) dl.append(el("dt", { text: k }), el("dd", { class: "mono", text: String(v) }));
  }
  const kv = (m) => Object.entries(m || {}).map(([k, v]) => k + "=" + v).join("  ");

  let explained = "";
  async function explain(job) {
    const box = document.getElementById("explain-box");
    const waiting = !finalStates.has(job.state) && job.state !== "JOB_STATE_RUNNING";
    box.hidden = !waiting;
    if (!waiting || explained === job.state + job.updatedAt) return;
    explained = job.state + job.updatedAt;
    try {
      const res = await call("JobService/ExplainJob", { id });
      document.getElementById("explain").replaceChildren(...(res.reasons || []).map((r) => el("li", { text: r })));
    } catch (e) { say("Could not explain the job: " + e.message); }
  }

  async function act(proc, verb) {
    try {
      const res = await call(proc, { id });
      render(res.job);
      say("Job " + verb + ".");
    } catch (e) { say("Could not " + verb.replace(/led$|ed$/, "") + " the job: " + e.message); }
  }
  document.getElementById("cancel")?.addEventListener("click", () => act("JobService/CancelJob", "cancelled"));
  document.getElementById("retry")?.addEventListener("click", () => { act("JobService/RetryJob", "retried").then(() => { if (!following) followLog(); }); });
  document.getElementById("download").href = "/ui/jobs/" + id + "/log";

  // The job's events since the page opened; each one re-reads the job.
  const evList = document.getElementById("events");
  let reread = null;
  live("EventService/Subscribe", () => ({ aggregateKind: "job", aggregateId: id }), (m) => {
    if (!m.event) return;
    evList.append(el("li", {}, el("time", { text: time(m.event.time) }), " ", el("strong", { text: m.event.type }), " ", detail(m.event.payload)));
    if (!reread) reread = setTimeout(refresh, 100);
  }, ctl.signal);
  async function refresh() {
    reread = null;
    try { render((await call("JobService/GetJob", { id })).job); } catch (e) { say("Could not read the job: " + e.message); }
  }
  function detail(p) {
    const body = Object.values(p || {})[0] || {};
    return Object.entries(body).filter(([k]) => k !== "jobId").map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join(" ");
  }


  // The log: the last 2 MiB stored, then followed (GetJobLogs with
  // tail_bytes); only the last window is kept on the page.
  const tailBytes = 2 * 1024 * 1024;
  const maxChars = 2 * 1024 * 1024;
  const pre = document.getElementById("log");
  const follow = document.getElementById("follow");
  let kept = 0, dropped = 0, skipped = false, following = false;
  const decoders = {};
  const sgr = {};
  // append adds a message's chunks to the page in one change, trims the
  // window, and scrolls once per frame: layout per chunk would make a
  // long log quadratic.
  let scrolling = false;
  function append(chunks) {
    const frag = document.createDocumentFragment();
    for (const chunk of chunks) {
      const s = chunk.stream || "LOG_STREAM_STDOUT";
      const dec = decoders[s] || (decoders[s] = new TextDecoder());
      const bin = atob(chunk.data || "");
      const bytes = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      const text = dec.decode(bytes, { stream: true });
      const cls = s === "LOG_STREAM_STDERR" ? "err" : s === "LOG_STREAM_SYSTEM" ? "sys" : "out";
      frag.append(ansi(text, cls, sgr[s] || (sgr[s] = { fg: "", bold: false })));
      kept += text.length;
    }
    pre.append(frag);
    while (kept > maxChars && pre.firstChild) {
      const n = pre.firstChild.textContent.length;
      kept -= n;
      dropped += n;
      pre.firstChild.remove();
    }
    if (dropped || skipped) document.getElementById("log-window").textContent = "Showing the last " + Math.round(kept / 1024) + " KiB; the output before it is in the download.";
    if (follow.checked && !scrolling) {
      scrolling = true;
      requestAnimationFrame(() => { scrolling = false; pre.scrollTop = pre.scrollHeight; });
    }
  }

  // ansi renders SGR colour codes as classes; other escapes are dropped.
  function ansi(text, cls, st) {
    const frag = document.createDocumentFragment();
    const re = /\x1b\[([0-9;]*)([A-Za-z])/g;
    let at = 0, m;
    const put = (s) => { if (s) frag.append(el("span", { class: [cls, st.fg, st.bold ? "b" : ""].filter(Boolean).join(" "), text: s })); };
    while ((m = re.exec(text))) {
      put(text.slice(at, m.index));
      at = re.lastIndex;
      if (m[2] !== "m") continue;
      for (const c of (m[1] || "0").split(";").map(Number)) {
        if (c === 0) { st.fg = ""; st.bold = false; }
        else if (c === 1) st.bold = true;
        else if (c === 22) st.bold = false;
        else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) st.fg = "c" + c;
        else if (c === 39) st.fg = "";
      }
    }
    put(text.slice(at));
    return frag;
  }

  async function followLog() {
    following = true;
    pre.replaceChildren(); kept = 0; dropped = 0; skipped = false;
    try {
      await stream("JobService/GetJobLogs", { id, follow: true, tailBytes: String(tailBytes) }, (m) => {
        if (m.skipped) skipped = pre.dataset.skipped = true;
        if (m.chunks) append(m.chunks);
        if (m.job) render(m.job);
      }, ctl.signal);
      pre.dataset.done = "true";
    } catch (e) {
      if (!ctl.signal.aborted) say("The log stopped: " + e.message);
    }
    following = false;
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.target.closest("input, select, textarea, button") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "f") follow.click();
    else if (ev.key === "u" || ev.key === "Backspace") location.href = "/ui/";
    else return;
    ev.preventDefault();
  });

  call("JobService/GetJob", { id }).then((res) => { render(res.job); followLog(); })
    .catch((e) => say("Could not read the job: " + e.message));
})();
