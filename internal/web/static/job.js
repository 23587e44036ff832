// One job: its state, attempts and spec, kept current by WatchJob; "why
// is it waiting"; its history from its creation on, continued as it
// changes; and its log followed live in a bounded window, with earlier
// windows loaded on demand.
"use strict";

(() => {
  const { call, stream, say, el, stateName, className, finalStates, time, duration, command } = hodei;
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
      moreHistory();
      say("Job " + verb + ".");
    } catch (e) { say("Could not " + verb.replace(/led$|ed$/, "") + " the job: " + e.message); }
  }
  document.getElementById("cancel")?.addEventListener("click", () => act("JobService/CancelJob", "cancelled"));
  document.getElementById("retry")?.addEventListener("click", () => {
    act("JobService/RetryJob", "retried").then(() => { if (!following) followLog(); if (!watching) watch(); });
  });
  document.getElementById("download").href = "/ui/jobs/" + id + "/log";

  // The job as it changes: WatchJob sends it at once, then on each change
  // of its state, until it is final (a retry watches again).
  let watching = false;
  async function watch() {
    watching = true;
    let delay = 500;
    while (!ctl.signal.aborted) {
      let final = false;
      try {
        await stream("JobService/WatchJob", { id }, (m) => {
          if (delay > 500) say("");
          delay = 500;
          render(m.job);
          final = finalStates.has(m.job.state);
          moreHistory();
        }, ctl.signal);
      } catch (e) {
        if (ctl.signal.aborted) break;
        say("Live updates interrupted (" + e.message + "); reconnecting…");
      }
      if (final) break;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
    watching = false;
  }

  // The history (ListJobHistory: from the job and its attempts as
  // stored, oldest first), read on from the last entry shown whenever the
  // job changes; reads never overlap, and a change during one reads again.
  const histList = document.getElementById("history");
  let resume = "", histRun = null, histAgain = false;
  function moreHistory() {
    if (histRun) { histAgain = true; return; }
    histRun = (async () => {
      do {
        histAgain = false;
        try {
          for (;;) {
            const res = await call("JobService/ListJobHistory", { id, pageToken: resume, pageSize: 500 }, ctl.signal);
            histList.append(...(res.entries || []).map(entry));
            resume = res.resumeToken || resume;
            if (!res.nextPageToken) break;
          }
        } catch (e) {
          if (!ctl.signal.aborted) say("Could not read the job's history: " + e.message);
        }
      } while (histAgain && !ctl.signal.aborted);
      histRun = null;
    })();
  }
  function entry(e) {
    const bits = [];
    if (e.attempt) bits.push("attempt " + e.attempt);
    if (e.type === "JobAssigned" && e.workerId) bits.push("worker " + e.workerId);
    if (e.type === "JobFailed") bits.push(stateName(e.state));
    if (e.failureClass) bits.push(className(e.failureClass));
    if (e.exitCode) bits.push("exit " + e.exitCode);
    if (e.signal) bits.push(e.signal);
    if (e.message) bits.push(e.message);
    return el("li", { "data-type": e.type }, el("time", { datetime: e.time, text: time(e.time) }), " ",
      el("strong", { text: e.type }), bits.length ? " " + bits.join(", ") : "");
  }


  // The log: the last 2 MiB stored, then followed (GetJobLogs with
  // tail_bytes); only the last window is kept on the page as output
  // follows. "Load earlier" puts the 2 MiB before the first batch shown
  // above it (tail_bytes with before_attempt and before_seq). Each chunk
  // is an element that names its batch, so that a window is trimmed and
  // continued by whole batches.
  const tailBytes = 2 * 1024 * 1024;
  const maxChars = 2 * 1024 * 1024;
  const pre = document.getElementById("log");
  const follow = document.getElementById("follow");
  const earlierBtn = document.getElementById("load-earlier");
  let kept = 0, limit = maxChars, earlier = false, following = false, loading = false;
  let decoders = {}, sgr = {};

  // chunkEl renders a chunk, decoding its bytes with the decoders and
  // colour states of one run of the log (a window continues its own).
  function chunkEl(chunk, decs, states) {
    const s = chunk.stream || "LOG_STREAM_STDOUT";
    const dec = decs[s] || (decs[s] = new TextDecoder());
    const bin = atob(chunk.data || "");
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const text = dec.decode(bytes, { stream: true });
    const cls = s === "LOG_STREAM_STDERR" ? "err" : s === "LOG_STREAM_SYSTEM" ? "sys" : "out";
    const w = el("span", { "data-a": chunk.attempt || 0, "data-s": chunk.seq || 0 });
    w.append(ansi(text, cls, states[s] || (states[s] = { fg: "", bold: false })));
    return { w, n: text.length };
  }

  // append adds a message's chunks to the page in one change, trims the
  // window by whole batches, and scrolls once per frame: layout per chunk
  // would make a long log quadratic.
  let scrolling = false;
  function append(chunks) {
    const frag = document.createDocumentFragment();
    for (const chunk of chunks) {
      const { w, n } = chunkEl(chunk, decoders, sgr);
      frag.append(w);
      kept += n;
    }
    pre.append(frag);
    while (!loading && kept > limit && pre.firstElementChild) { // not under a window being loaded
      const batch = pre.firstElementChild.dataset.a + ":" + pre.firstElementChild.dataset.s;
      for (let c = pre.firstElementChild; c && c.dataset.a + ":" + c.dataset.s === batch; c = pre.firstElementChild) {
        kept -= c.textContent.length;
        c.remove();
      }
      earlier = true;
    }
    windowNote();
    if (follow.checked && !scrolling) {
      scrolling = true;
      requestAnimationFrame(() => { scrolling = false; pre.scrollTop = pre.scrollHeight; });
    }
  }

  function windowNote() {
    earlierBtn.hidden = !earlier;
    document.getElementById("log-window").textContent = earlier
      ? "Showing " + Math.round(kept / 1024) + " KiB; the output before it: Load earlier, or all of it in the download." : "";
  }

  // loadEarlier puts the window before the first batch shown above it,
  // where it keeps the scroll position; following stops, so that what is
  // read stays in view.
  async function loadEarlier() {
    const first = pre.firstElementChild;
    if (loading || !first || Number(first.dataset.a) < 1) return;
    loading = true;
    earlierBtn.disabled = true;
    follow.checked = false;
    const frag = document.createDocumentFragment();
    const decs = {}, states = {};
    let chars = 0, more = false;
    try {
      await stream("JobService/GetJobLogs", { id, tailBytes: String(tailBytes), beforeAttempt: Number(first.dataset.a), beforeSeq: first.dataset.s }, (m) => {
        if (m.skipped) more = true;
        for (const chunk of m.chunks || []) {
          const { w, n } = chunkEl(chunk, decs, states);
          frag.append(w);
          chars += n;
        }
      }, ctl.signal);
      const height = pre.scrollHeight, top = pre.scrollTop;
      pre.prepend(frag);
      pre.scrollTop = top + (pre.scrollHeight - height);
      kept += chars;
      limit += chars;
      earlier = more;
      windowNote();
      if (!earlier) pre.focus({ preventScroll: true });
    } catch (e) {
      if (!ctl.signal.aborted) say("Could not load the earlier output: " + e.message);
    }
    earlierBtn.disabled = false;
    loading = false;
  }
  earlierBtn.addEventListener("click", loadEarlier);

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
    pre.replaceChildren(); kept = 0; limit = maxChars; earlier = false; decoders = {}; sgr = {};
    windowNote();
    try {
      await stream("JobService/GetJobLogs", { id, follow: true, tailBytes: String(tailBytes) }, (m) => {
        if (m.skipped) earlier = true;
        if (m.chunks) append(m.chunks);
        if (m.job) { render(m.job); moreHistory(); }
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

  call("JobService/GetJob", { id }).then((res) => { render(res.job); followLog(); watch(); })
    .catch((e) => say("Could not read the job: " + e.message));
})();
