// The ledger console's only script: live numbers on the overview, the log's live tail, and the
// progress of rebuilds and verifications. Pages work without it; it only keeps them current.
"use strict";

function $(sel, root) { return (root || document).querySelector(sel); }

function overview() {
  const inv = $("#invariant");
  if (!inv) return;
  const refresh = async () => {
    try {
      const res = await fetch("/console/overview.json", { credentials: "same-origin", cache: "no-store" });
      if (!res.ok) return;
      const o = await res.json();
      for (const el of document.querySelectorAll("[data-k]")) {
        const k = el.dataset.k;
        if (k === "mark") {
          el.textContent = o.holds ? "✔ The bank invariant holds" : "✘ The bank invariant does not hold";
        } else if (k === "catchingup") {
          el.hidden = o.caughtUp;
        } else if (k === "commandsPerSecond") {
          el.textContent = o[k].toFixed(1);
        } else if (k in o) {
          el.textContent = o[k];
        }
      }
      inv.classList.toggle("holds", o.holds);
      inv.classList.toggle("broken", !o.holds);
      inv.dataset.holds = String(o.holds);
    } catch (e) { /* the next refresh tries again */ }
  };
  setInterval(refresh, 2000);
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  if (text instanceof Node) td.appendChild(text); else td.textContent = text;
  tr.appendChild(td);
  return td;
}

function link(href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  return a;
}

function code(text) {
  const c = document.createElement("code");
  c.textContent = text;
  return c;
}

function tail() {
  const el = $("#tail");
  if (!el) return;
  const body = $("#log-rows");
  const state = $(".tail-state", el);
  let after = el.dataset.after;
  let source;
  const connect = () => {
    source = new EventSource("/console/log/tail?after=" + encodeURIComponent(after));
    source.addEventListener("ready", () => {
      el.dataset.state = "live";
      state.textContent = "Live tail: new events appear at the top as they are written.";
    });
    source.addEventListener("event", (msg) => {
      const e = JSON.parse(msg.data);
      after = e.checkpoint;
      const empty = $(".empty-row", body);
      if (empty) empty.remove();
      const tr = document.createElement("tr");
      tr.className = "new";
      tr.dataset.checkpoint = e.checkpoint;
      tr.dataset.eventId = e.eventId;
      cell(tr, code(e.checkpoint));
      cell(tr, e.at);
      cell(tr, e.account ? link(e.accountUrl + "?v=" + e.version + "#v" + e.version, e.account) : "");
      cell(tr, String(e.version), "num");
      cell(tr, e.type);
      cell(tr, e.change ? (e.change > 0 ? "+" : "") + e.change : "", "num");
      cell(tr, e.counterparty ? link("/console/accounts/" + encodeURIComponent(e.counterparty), e.counterparty) : "");
      cell(tr, code(e.hash));
      body.insertBefore(tr, body.firstChild);
    });
    source.addEventListener("failure", (msg) => {
      state.textContent = "Live tail stopped: " + JSON.parse(msg.data).error;
    });
    source.onerror = () => {
      source.close();
      el.dataset.state = "reconnecting";
      state.textContent = "Live tail: reconnecting…";
      setTimeout(connect, 1000);
    };
  };
  connect();
}

function job() {
  const el = $("#job");
  if (!el || el.dataset.finished === "true") return;
  const bar = $("#job-bar"), phase = $("#job-phase"), count = $("#job-count"), result = $("#job-result"), seen = $("#job-phases");
  const source = new EventSource("/console/jobs/" + encodeURIComponent(el.dataset.job) + "/events");
  source.addEventListener("progress", (msg) => {
    const p = JSON.parse(msg.data);
    const phases = p.phases || [p.phase];
    seen.textContent = "(" + phases.join(" → ") + ")";
    el.dataset.phases = phases.join(",");
    el.dataset.phase = p.phase;
    phase.textContent = p.phase;
    count.textContent = p.done + " / " + p.total;
    bar.value = p.total > 0 ? Math.min(100, Math.floor(p.done * 100 / p.total)) : 0;
    if (p.finished) {
      source.close();
      el.dataset.finished = "true";
      if (!p.error) bar.value = 100;
      result.className = p.error ? "bad" : "ok";
      result.textContent = p.error ? "Failed: " + p.error : p.summary;
      if (p.kind === "verify") location.replace("/console/verify?job=" + encodeURIComponent(p.id));
    }
  });
  source.onerror = () => { source.close(); setTimeout(job, 1000); };
}

document.addEventListener("DOMContentLoaded", () => { overview(); tail(); job(); });
