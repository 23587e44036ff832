// Hodei dashboard: a Connect (JSON protocol) client for the API as the
// signed-in session, and the helpers every page shares.
"use strict";

const hodei = (() => {
  const csrf = document.querySelector('meta[name="hodei-csrf"]').content;
  const canWrite = document.body.dataset.write === "true";
  const canAdmin = document.body.dataset.admin === "true";
  const base = "/ui/api/hodei.v1.";
  // Leaving the page ends its streams at once: over HTTP/1.1 a browser
  // opens few connections to a server, and the next page needs them.
  const page = new AbortController();
  window.addEventListener("pagehide", () => page.abort());
  // A page brought back from the back/forward cache has no streams left.
  window.addEventListener("pageshow", (ev) => { if (ev.persisted) location.reload(); });
  const within = (signal) => (signal ? AbortSignal.any([signal, page.signal]) : page.signal);

  class RPCError extends Error {
    constructor(code, message) { super(message || code); this.code = code; }
  }

  function headers(type) {
    return { "Content-Type": type, "Connect-Protocol-Version": "1", "X-Hodei-Csrf": csrf };
  }

  async function failure(res) {
    const text = await res.text();
    try { const e = JSON.parse(text); return new RPCError(e.code, e.message); } catch (_) { return new RPCError(String(res.status), text.trim()); }
  }

  // call runs a unary procedure ("JobService/GetJob") and returns its answer.
  async function call(proc, msg, signal) {
    const res = await fetch(base + proc, { method: "POST", headers: headers("application/json"), body: JSON.stringify(msg || {}), signal: within(signal), credentials: "same-origin" });
    if (!res.ok) throw await failure(res);
    return res.json();
  }

  // stream runs a server-streaming procedure and calls onMessage for each
  // answer; it resolves when the stream ends and rejects on an error.
  async function stream(proc, msg, onMessage, signal) {
    const body = new TextEncoder().encode(JSON.stringify(msg || {}));
    const env = new Uint8Array(5 + body.length);
    new DataView(env.buffer).setUint32(1, body.length);
    env.set(body, 5);
    const res = await fetch(base + proc, { method: "POST", headers: headers("application/connect+json"), body: env, signal: within(signal), credentials: "same-origin" });
    if (!res.ok) throw await failure(res);
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = new Uint8Array(0);
    for (;;) {
      const { done, value } = await reader.read();
      if (done) throw new RPCError("unavailable", "the stream ended without its end message");
      const joined = new Uint8Array(buf.length + value.length);
      joined.set(buf); joined.set(value, buf.length); buf = joined;
      while (buf.length >= 5) {
        const flags = buf[0];
        const n = new DataView(buf.buffer, buf.byteOffset).getUint32(1);
        if (buf.length < 5 + n) break;
        const m = JSON.parse(dec.decode(buf.subarray(5, 5 + n)));
        buf = buf.slice(5 + n);
        if (flags & 2) {
          if (m.error) throw new RPCError(m.error.code, m.error.message);
          return;
        }
        onMessage(m);
      }
    }
  }

  // live keeps a stream open, opening it again (with msgFn's request)
  // after a break, until signal or the page ends.
  function live(proc, msgFn, onMessage, signal) {
    let delay = 500;
    const ended = () => signal.aborted || page.signal.aborted;
    (async () => {
      while (!ended()) {
        try {
          await stream(proc, msgFn(), (m) => { if (delay > 500) say(""); delay = 500; onMessage(m); }, signal);
        } catch (e) {
          if (ended()) return;
          say("Live updates interrupted (" + e.message + "); reconnecting…");
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10000);
      }
    })();
  }

  function say(text) { document.getElementById("status").textContent = text; }

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }

  const stateName = (s) => (s || "JOB_STATE_UNSPECIFIED").replace("JOB_STATE_", "").toLowerCase().replace("_", " ");
  const className = (s) => (s || "").replace(/^[A-Z]+_[A-Z]+_/, "").toLowerCase().replace(/_/g, " ");
  const finalStates = new Set(["JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_TIMED_OUT"]);

  function time(ts) {
    if (!ts) return "";
    const d = new Date(ts);
    return d.toLocaleString(undefined, { hour12: false });
  }

  function duration(a, b) {
    if (!a || !b) return "";
    const ms = new Date(b) - new Date(a);
    if (ms < 1000) return ms + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
  }

  function command(spec) {
    if (!spec) return "";
    if (spec.command && spec.command.length) return spec.command.join(" ");
    return spec.script || "";
  }

  return { call, stream, live, say, el, stateName, className, finalStates, time, duration, command, canWrite, canAdmin, RPCError };
})();
