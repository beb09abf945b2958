// portcullis console. Loaded as a file (the Content-Security-Policy forbids inline script);
// builds every element with the DOM API and sets text with textContent, so nothing an
// operator or a token carries (a reason, a subject) is ever parsed as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const WINDOW = 900; // samples kept: 15 minutes at one a second
const state = { csrf: null, samples: [], lastT: 0, timer: null, user: null };

const $ = (id) => document.getElementById(id);

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function when(unix) {
  if (unix === null || unix === undefined) return "-";
  return new Date(unix * 1000).toISOString().replace(".000Z", "Z");
}

function say(node, text, ok) {
  node.textContent = text;
  node.classList.toggle("bad", ok === false);
  node.classList.toggle("good", ok === true);
}

// One console API call: the session cookie goes along by itself (same origin); changes
// carry the CSRF token. Answers {status, body}; a 401 means the session is gone.
async function api(method, path, body) {
  const headers = { "accept": "application/json" };
  if (method !== "GET") headers["x-portcullis-csrf"] = state.csrf || "";
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch("/ui/api" + path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  const text = await res.text();
  if (text) { try { data = JSON.parse(text); } catch (e) { data = { error_description: text }; } }
  if (res.status === 401) signedOut();
  return { status: res.status, body: data };
}

function problem(r) {
  const b = r.body || {};
  return (b.error_description || b.error || ("HTTP " + r.status)) + (b.reason ? ": " + b.reason : "");
}

// ---- sign-in ----

function signedIn(actor, csrf) {
  state.csrf = csrf;
  $("actor").textContent = actor;
  $("who").hidden = false;
  $("signin").hidden = true;
  $("console").hidden = false;
  if (!state.timer) {
    poll();
    state.timer = setInterval(poll, 1000);
  }
  loadAudit();
  loadKeys();
}

function signedOut() {
  state.csrf = null;
  if (state.timer) { clearInterval(state.timer); state.timer = null; }
  $("who").hidden = true;
  $("console").hidden = true;
  $("signin").hidden = false;
  $("token").focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const err = $("signin-error");
  say(err, "");
  const res = await fetch("/ui/session", {
    method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: $("token").value }),
  });
  const body = await res.json().catch(() => ({}));
  $("token").value = "";
  if (res.ok) signedIn(body.actor, body.csrf);
  else say(err, body.error_description || ("sign-in failed (HTTP " + res.status + ")"), false);
}

async function signOut() {
  await fetch("/ui/session", {
    method: "DELETE", credentials: "same-origin",
    headers: { "x-portcullis-csrf": state.csrf || "" },
  });
  signedOut();
}

// ---- live charts (hand-drawn SVG) ----

const CHARTS = {
  "chart-requests": (s) => ["1xx", "2xx", "3xx", "4xx", "5xx"].map((c) => ({
    name: c, cls: "c-" + c, values: s.map((x) => x.status[c] || 0) })),
  "chart-latency": (s) => [
    { name: "p50", cls: "c-p50", values: s.map((x) => x.p50_ms) },
    { name: "p99", cls: "c-p99", values: s.map((x) => x.p99_ms) }],
  "chart-auth": (s) => {
    const totals = {};
    for (const x of s) for (const [r, n] of Object.entries(x.auth_failures)) totals[r] = (totals[r] || 0) + n;
    const reasons = Object.keys(totals).sort((a, b) => totals[b] - totals[a]).slice(0, 6);
    if (reasons.length === 0) return [{ name: "none", cls: "c-r5", values: s.map(() => 0) }];
    return reasons.map((r, i) => ({ name: r, cls: "c-r" + i, values: s.map((x) => x.auth_failures[r] || 0) }));
  },
  "chart-errors": (s) => [
    { name: "rate-limited", cls: "c-limited", values: s.map((x) => x.rate_limited) },
    { name: "upstream errors", cls: "c-upstream", values: s.map((x) => x.upstream_errors) }],
  "chart-revocations": (s) => [
    { name: "revocations", cls: "c-revocations", values: s.map((x) => x.revocations) }],
};

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmt(v) {
  if (v === null || v === undefined) return "-";
  if (v >= 100 || Number.isInteger(v)) return String(Math.round(v));
  return v.toFixed(v >= 10 ? 1 : 2);
}

// Draw `series` (each {name, cls, values}) on a fresh SVG inside `fig`; the latest value of
// each series is written in the legend as text (what a screen reader and the tests read).
function draw(fig, series) {
  const W = 360, H = 150, L = 34, R = 6, T = 8, B = 18;
  const n = WINDOW;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  max = niceMax(max);
  const x = (i, len) => L + (W - L - R) * (n - len + i) / (n - 1);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": fig.id + "-cap" });
  for (const f of [0, 0.5, 1]) {
    const gy = y(max * f);
    root.appendChild(svg("line", { x1: L, x2: W - R, y1: gy, y2: gy, class: f === 0 ? "axis" : "grid" }));
    const t = svg("text", { x: L - 4, y: gy + 3, "text-anchor": "end", class: "tick" });
    t.textContent = fmt(max * f);
    root.appendChild(t);
  }
  for (const [label, at] of [["-15m", L], ["-5m", x(n - 300, n)], ["now", W - R]]) {
    const t = svg("text", { x: at, y: H - 4, "text-anchor": label === "now" ? "end" : "start", class: "tick" });
    t.textContent = label;
    root.appendChild(t);
  }
  for (const s of series) {
    let d = "", pen = false;
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) { pen = false; return; }
      d += (pen ? "L" : "M") + x(i, s.values.length).toFixed(1) + " " + y(v).toFixed(1);
      pen = true;
    });
    if (d) root.appendChild(svg("path", { d, class: "line " + s.cls, "data-series": s.name }));
  }
  const legend = el("ul", { class: "legend" });
  for (const s of series) {
    const latest = s.values.length ? s.values[s.values.length - 1] : null;
    const li = el("li", { class: s.cls, "data-series": s.name });
    li.appendChild(el("span", { class: "swatch", "aria-hidden": "true" }));
    li.appendChild(el("span", {}, s.name + ":"));
    li.appendChild(el("span", { class: "value", "data-value": latest === null ? "" : String(latest) }, fmt(latest)));
    legend.appendChild(li);
  }
  const cap = el("figcaption", { id: fig.id + "-cap" }, fig.dataset.title);
  fig.replaceChildren(cap, root, legend);
}

function drawRoutes(rows) {
  const body = $("routes-table").tBodies[0];
  body.replaceChildren(...rows.map((r) => {
    const tr = el("tr");
    tr.appendChild(el("th", { scope: "row" }, r.route));
    for (const v of [r.rps, r.status["2xx"], r.status["4xx"], r.status["5xx"], fmt(r.p50_ms), fmt(r.p99_ms), r.requests_total]) {
      tr.appendChild(el("td", { class: "num" }, v));
    }
    return tr;
  }));
}

async function poll() {
  if (!state.csrf) return;
  let r;
  try { r = await api("GET", "/stats" + (state.lastT ? "?since=" + state.lastT : "")); }
  catch (e) { say($("live-status"), "(gateway unreachable)"); return; }
  if (r.status !== 200) return;
  for (const s of r.body.samples) state.samples.push(s);
  if (state.samples.length > WINDOW) state.samples.splice(0, state.samples.length - WINDOW);
  if (state.samples.length) state.lastT = state.samples[state.samples.length - 1].t;
  say($("live-status"), state.samples.length ? "(updated " + when(state.lastT) + ")" : "(first sample in a second)");
  for (const [id, make] of Object.entries(CHARTS)) draw($(id), make(state.samples));
  drawRoutes(r.body.routes);
}

// ---- revocations and the audit trail ----

function row(cells) {
  const tr = el("tr");
  for (const c of cells) tr.appendChild(c instanceof Node ? wrap(c) : el("td", {}, c === null || c === undefined ? "-" : c));
  return tr;
}
function wrap(node) { const td = el("td"); td.appendChild(node); return td; }

async function revoke(ev) {
  ev.preventDefault();
  const kind = $("revoke-kind").value, value = $("revoke-value").value.trim();
  const reason = $("revoke-reason").value.trim();
  const body = { [kind]: value };
  if (reason) body.reason = reason;
  const r = await api("POST", "/revocations", body);
  if (r.status === 201) {
    say($("revoke-result"), "Revoked (" + (r.body.kind || kind) + ") until " + when(r.body.exp || r.body.expires) + " by " + r.body.actor + ".", true);
    $("revoke-value").value = "";
    $("revoke-reason").value = "";
    loadAudit();
  } else {
    say($("revoke-result"), "Not revoked: " + problem(r), false);
  }
}

async function find(ev) {
  if (ev) ev.preventDefault();
  const by = $("find-by").value, value = $("find-value").value.trim();
  const r = await api("GET", "/revocations?" + by + "=" + encodeURIComponent(value) + "&limit=100");
  const body = $("find-table").tBodies[0];
  if (r.status !== 200) { say($("find-result"), problem(r), false); body.replaceChildren(); return; }
  say($("find-result"), r.body.items.length + " in force.");
  body.replaceChildren(...r.body.items.map((it) => {
    const undo = el("button", { type: "button", class: "secondary" }, "Un-revoke");
    undo.setAttribute("aria-label", "Un-revoke " + it.kind + " " + it.id);
    undo.addEventListener("click", () => unrevoke(it));
    return row([when(it.time), it.kind, it.id, it.sub, it.actor, it.reason, when(it.exp), undo]);
  }));
}

async function unrevoke(it) {
  const kind = it.kind === "sub" ? "sub" : "jti";
  const r = await api("DELETE", "/revocations/" + kind + "/" + encodeURIComponent(it.id));
  if (r.status === 204) say($("find-result"), "Un-revoked " + it.id + ".", true);
  else say($("find-result"), "Not un-revoked: " + problem(r), false);
  find();
  loadAudit();
}

async function loadAudit() {
  const since = Math.floor(Date.now() / 1000) - 86400;
  const r = await api("GET", "/audit?since=" + since + "&limit=1000");
  if (r.status !== 200) return;
  const items = r.body.items.slice().reverse().slice(0, 200);
  $("audit-table").tBodies[0].replaceChildren(...items.map((it) =>
    row([when(it.time), it.action, it.kind, it.id, it.sub, it.actor, it.ip, it.reason])));
}

// ---- API keys ----

async function loadKeys() {
  const r = await api("GET", "/apikeys");
  if (r.status !== 200) return;
  $("key-table").tBodies[0].replaceChildren(...r.body.items.map((k) => {
    const b = el("button", { type: "button", class: "danger" }, "Revoke");
    b.setAttribute("aria-label", "Revoke API key " + k.id + " of " + k.app);
    b.addEventListener("click", async () => {
      const d = await api("DELETE", "/apikeys/" + encodeURIComponent(k.id));
      say($("key-result"), d.status === 204 ? "Key " + k.id + " revoked." : "Not revoked: " + problem(d), d.status === 204);
      loadKeys();
    });
    return row([k.id, k.app, when(k.created), b]);
  }));
}

async function createKey(ev) {
  ev.preventDefault();
  const r = await api("POST", "/apikeys", { app: $("key-app").value.trim() });
  if (r.status === 201) {
    $("key-value").textContent = r.body.key;
    $("key-new").hidden = false;
    say($("key-result"), "Key " + r.body.id + " created for " + r.body.app + ".", true);
    $("key-app").value = "";
    loadKeys();
  } else {
    $("key-new").hidden = true;
    say($("key-result"), "Not created: " + problem(r), false);
  }
}

// ---- a user's sessions ----

async function showSessions(ev) {
  if (ev) ev.preventDefault();
  const user = $("user-id").value.trim();
  state.user = user;
  const r = await api("GET", "/users/" + encodeURIComponent(user) + "/sessions");
  const body = $("session-table").tBodies[0];
  $("logout-form").hidden = false;
  if (r.status !== 200) { say($("user-result"), problem(r), false); body.replaceChildren(); return; }
  say($("user-result"), user + ": " + r.body.count + " live session(s).");
  body.replaceChildren(...r.body.sessions.map((s) => row([s.id.slice(0, 12), when(s.started), when(s.expires), s.access_tokens])));
}

async function logoutEverywhere(ev) {
  ev.preventDefault();
  if (!state.user) return;
  const reason = $("logout-reason").value.trim();
  const r = await api("POST", "/users/" + encodeURIComponent(state.user) + "/logout", reason ? { reason } : {});
  if (r.status === 200) {
    say($("user-result"), state.user + " logged out everywhere: sessions ended, tokens issued up to now revoked.", true);
    $("logout-reason").value = "";
    const body = $("session-table").tBodies[0];
    body.replaceChildren();
    loadAudit();
  } else {
    say($("user-result"), "Not logged out: " + problem(r), false);
  }
}

// ---- config ----

async function reload() {
  const out = $("reload-result");
  const r = await api("POST", "/reload");
  if (r.status === 200) {
    const notes = r.body.notes || [];
    out.replaceChildren(el("p", { class: "good" }, "Reloaded." + (notes.length ? " Notes:" : " No notes.")),
      ...(notes.length ? [el("ul", {})] : []));
    const ul = out.querySelector("ul");
    for (const n of notes) ul.appendChild(el("li", {}, n));
  } else {
    out.replaceChildren(el("p", { class: "bad" }, "Refused; the previous configuration stays in force."),
      el("pre", {}, (r.body && r.body.reason) || problem(r)));
  }
}

// ---- start ----

document.addEventListener("DOMContentLoaded", async () => {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("revoke-form").addEventListener("submit", revoke);
  $("find-form").addEventListener("submit", find);
  $("audit-refresh").addEventListener("click", loadAudit);
  $("key-form").addEventListener("submit", createKey);
  $("user-form").addEventListener("submit", showSessions);
  $("logout-form").addEventListener("submit", logoutEverywhere);
  $("reload").addEventListener("click", reload);
  const r = await fetch("/ui/session", { credentials: "same-origin" });
  if (r.ok) { const b = await r.json(); signedIn(b.actor, b.csrf); }
  else signedOut();
});
