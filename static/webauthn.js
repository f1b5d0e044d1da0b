// Mandate passkey ceremonies: enrolment, adding a passkey, email-first sign-in.
// No inline script: pages carry data-start / data-finish (and data-csrf on the account page).
"use strict";

function b64urlToBuf(s) {
  const pad = "=".repeat((4 - (s.length % 4)) % 4);
  const b64 = (s + pad).replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out.buffer;
}

function bufToB64url(buf) {
  const bytes = new Uint8Array(buf);
  let bin = "";
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function post(url, body, csrf) {
  const headers = { "Content-Type": "application/json" };
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const resp = await fetch(url, {
    method: "POST",
    headers,
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = {};
  try { data = await resp.json(); } catch (e) { data = {}; }
  if (!resp.ok) throw new Error(data.error || ("request failed: " + resp.status));
  return data;
}

function creationOptions(o) {
  const pk = o.publicKey;
  pk.challenge = b64urlToBuf(pk.challenge);
  pk.user.id = b64urlToBuf(pk.user.id);
  if (pk.excludeCredentials) {
    pk.excludeCredentials = pk.excludeCredentials.map(c => Object.assign({}, c, { id: b64urlToBuf(c.id) }));
  }
  return { publicKey: pk };
}

function requestOptions(o) {
  const pk = o.publicKey;
  pk.challenge = b64urlToBuf(pk.challenge);
  if (pk.allowCredentials) {
    pk.allowCredentials = pk.allowCredentials.map(c => Object.assign({}, c, { id: b64urlToBuf(c.id) }));
  }
  return { publicKey: pk };
}

function registrationJson(cred) {
  return {
    id: cred.id,
    rawId: bufToB64url(cred.rawId),
    type: cred.type,
    response: {
      attestationObject: bufToB64url(cred.response.attestationObject),
      clientDataJSON: bufToB64url(cred.response.clientDataJSON),
      transports: cred.response.getTransports ? cred.response.getTransports() : undefined,
    },
    extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
  };
}

function assertionJson(cred) {
  return {
    id: cred.id,
    rawId: bufToB64url(cred.rawId),
    type: cred.type,
    response: {
      authenticatorData: bufToB64url(cred.response.authenticatorData),
      clientDataJSON: bufToB64url(cred.response.clientDataJSON),
      signature: bufToB64url(cred.response.signature),
      userHandle: cred.response.userHandle ? bufToB64url(cred.response.userHandle) : null,
    },
    extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
  };
}

function showError(form, err) {
  const el = form.querySelector("[data-role=error]");
  if (el) el.textContent = err && err.message ? err.message : String(err);
}

function wireRegister(form) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError(form, "");
    const csrf = form.dataset.csrf || null;
    try {
      const started = await post(form.dataset.start, {}, csrf);
      const cred = await navigator.credentials.create(creationOptions(started.options));
      const done = await post(form.dataset.finish, {
        ceremony: started.ceremony,
        name: form.elements.name.value,
        credential: registrationJson(cred),
      }, csrf);
      window.location.assign(done.redirect || "/account");
    } catch (err) {
      showError(form, err);
    }
  });
}

function wireLogin(form) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError(form, "");
    try {
      const started = await post(form.dataset.start, { email: form.elements.email.value });
      const cred = await navigator.credentials.get(requestOptions(started.options));
      const done = await post(form.dataset.finish, {
        ceremony: started.ceremony,
        credential: assertionJson(cred),
        next: form.elements.next.value,
      });
      window.location.assign(done.redirect || "/account");
    } catch (err) {
      showError(form, err);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const reg = document.getElementById("passkey-register");
  if (reg) wireRegister(reg);
  const login = document.getElementById("passkey-login");
  if (login) wireLogin(login);
  document.querySelectorAll("[data-epoch]").forEach((el) => {
    const t = Number(el.dataset.epoch);
    if (t) el.textContent = new Date(t * 1000).toLocaleString();
  });
  document.documentElement.dataset.passkeysReady = "1";
});
