// Mandate approvals: the live list (server-sent events) and approve/deny with a passkey.
// No inline script; everything shown is set with textContent (never HTML).
"use strict";

function tickCountdowns() {
  document.querySelectorAll("[data-left]").forEach((el) => {
    const left = Math.max(0, parseInt(el.dataset.left, 10) - 1);
    el.dataset.left = String(left);
    el.textContent = left > 0 ? left + " s" : "expired";
  });
}

async function refreshList(table) {
  const resp = await fetch(table.dataset.list, { credentials: "same-origin" });
  if (!resp.ok) return;
  const data = await resp.json();
  const body = table.querySelector("tbody");
  body.replaceChildren();
  for (const r of data.requests) {
    const tr = document.createElement("tr");
    tr.dataset.id = r.id;
    const cell = (text) => { const td = document.createElement("td"); td.textContent = text; tr.appendChild(td); return td; };
    const first = cell("");
    const a = document.createElement("a");
    a.href = "/approvals/" + encodeURIComponent(r.id);
    a.textContent = r.agent_name;
    first.appendChild(a);
    cell(r.server_name);
    cell(r.scope);
    cell(r.binding_message);
    const left = cell("");
    const span = document.createElement("span");
    span.dataset.left = String(r.seconds_left);
    span.textContent = r.seconds_left + " s";
    left.appendChild(span);
    body.appendChild(tr);
  }
  const none = document.getElementById("none-pending");
  if (none) none.hidden = data.requests.length > 0;
}

function wireList(table) {
  const es = new EventSource(table.dataset.events);
  es.addEventListener("changed", () => { refreshList(table); });
  // Reconnects are automatic; a refresh on (re)open catches anything missed.
  es.addEventListener("open", () => { refreshList(table); });
}

function wireDecide(form) {
  let decision = "approve";
  form.querySelectorAll("button[name=decision]").forEach((b) => {
    b.addEventListener("click", () => { decision = b.value; });
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const err = form.querySelector("[data-role=error]");
    err.textContent = "";
    try {
      const csrf = form.dataset.csrf;
      const started = await post(form.dataset.start, {}, csrf);
      const cred = await navigator.credentials.get(requestOptions(started.options));
      const reason = form.querySelector("#reason").value || null;
      const done = await post(form.dataset.finish, {
        ceremony: started.ceremony,
        credential: assertionJson(cred),
        decision,
        reason,
      }, csrf);
      const status = document.getElementById("status");
      if (status) status.textContent = done.status;
      form.remove();
    } catch (e) {
      err.textContent = e.message || String(e);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("approvals");
  if (table) wireList(table);
  const form = document.getElementById("decide");
  if (form) wireDecide(form);
  setInterval(tickCountdowns, 1000);
});
