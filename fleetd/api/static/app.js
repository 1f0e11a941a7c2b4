// The pyfleet dashboard: an overview (machines, units, unplaceable units, recent events) and a
// page per unit, kept live from fleetd's event stream. No build step: plain ES modules.
//
// Start-up: one GET of /fleet/v1/snapshot (the whole cluster and its revision), then the event
// stream from that revision. The unit list is virtual: only the rows in view are in the DOM, so
// 10,000 units render as fast as 50. Renders are coalesced to one per animation frame.

import { ApiError, followEvents, getJson, getText, hasToken, listAll, send, setToken, takeTokenFromUrl } from "./net.js";
import { Store } from "./store.js";

const store = new Store();
const $ = (id) => document.getElementById(id);
const ROW = 34;
const HEALTHS = ["all", "running", "pending", "failed", "stopped", "inactive", "unplaceable"];
const ui = { filter: "", health: "all", machine: "", page: "overview", unit: "", rendered: -1, filtered: null, filteredAt: -1 };
let stopEvents = null;
let frame = 0;

const esc = (text) =>
  String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const short = (id) => (id ? `${id.slice(0, 8)}…` : "");

function schedule() {
  if (!frame) frame = requestAnimationFrame(() => { frame = 0; render(); });
}

// ---------------------------------------------------------------- start-up

async function start() {
  takeTokenFromUrl();
  bindControls();
  window.addEventListener("hashchange", route);
  await connect();
}

async function connect() {
  stopEvents?.();
  setConn("connecting", "loading");
  let snapshot;
  try {
    snapshot = await getJson("/fleet/v1/snapshot");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return showLogin(hasToken() ? "That token was refused." : "");
    setConn("error", error.message);
    setTimeout(connect, 2000);
    return;
  }
  $("login").hidden = true;
  store.load(snapshot);
  document.body.dataset.ready = "true";
  route();
  stopEvents = followEvents(snapshot.revision, onEvent, (state, detail) => {
    setConn(state, detail || (state === "live" ? `live · revision ${store.revision}` : state));
    if (state === "error" && /token/.test(detail || "")) showLogin("The token was refused.");
  });
}

function onEvent(kind, data, id) {
  if (kind === "relist") { connect(); return; }
  if (kind === "dropped") return; // the stream reconnects from the last id by itself
  if (store.apply(kind, data, id)) refreshMachines();
  setConn("live", `live · revision ${store.revision}`);
  schedule();
}

let machinesTimer = 0;
function refreshMachines() {
  clearTimeout(machinesTimer);
  machinesTimer = setTimeout(async () => {
    try {
      store.setMachines(await listAll("/fleet/v1/machines", "machines"));
      schedule();
    } catch { /* the next machine event tries again */ }
  }, 150);
}

function setConn(state, text) {
  $("conn").dataset.state = state;
  $("conn-text").textContent = text;
}

function showLogin(message) {
  $("overview").hidden = true;
  $("unit-page").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  setConn("error", "token needed");
}

function bindControls() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setToken($("login-token").value.trim());
    connect();
  });
  $("filter").addEventListener("input", (event) => { ui.filter = event.target.value.trim(); ui.filteredAt = -1; $("scroller").scrollTop = 0; schedule(); });
  $("health-filter").innerHTML = HEALTHS.map((h) => `<button data-health="${h}">${h}</button>`).join("");
  $("health-filter").addEventListener("click", (event) => {
    const health = event.target.dataset?.health;
    if (!health) return;
    ui.health = health; ui.filteredAt = -1; schedule();
  });
  $("machines").addEventListener("click", (event) => {
    const card = event.target.closest("[data-machine]");
    if (!card) return;
    ui.machine = ui.machine === card.dataset.machine ? "" : card.dataset.machine;
    ui.filteredAt = -1; schedule();
  });
  $("scroller").addEventListener("scroll", () => { ui.rendered = -1; schedule(); }, { passive: true });
  window.addEventListener("resize", () => { ui.rendered = -1; schedule(); });
  document.addEventListener("click", onAction);
  $("rows").addEventListener("click", (event) => {
    if (event.target.closest("button")) return;
    const row = event.target.closest("[data-unit]");
    if (row) location.hash = `#/unit/${encodeURIComponent(row.dataset.unit)}`;
  });
}

function route() {
  const match = location.hash.match(/^#\/unit\/(.+)$/);
  ui.page = match ? "unit" : "overview";
  ui.unit = match ? decodeURIComponent(match[1]) : "";
  $("overview").hidden = ui.page !== "overview";
  $("unit-page").hidden = ui.page !== "unit";
  ui.rendered = -1;
  if (ui.page === "unit") loadUnitPage(ui.unit);
  schedule();
}

// ---------------------------------------------------------------- actions

async function onAction(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  event.stopPropagation();
  const { action, unit } = button.dataset;
  const path = `/fleet/v1/units/${encodeURIComponent(unit)}`;
  try {
    if (action === "destroy") {
      if (!confirm(`Destroy ${unit}? Its file is removed from the cluster.`)) return;
      await send("DELETE", path);
    } else {
      await send("PUT", path, { desiredState: action === "start" ? "launched" : "loaded" });
    }
    toast(`${action} ${unit}: sent`);
  } catch (error) {
    toast(`${action} ${unit}: ${error.message}`, true);
  }
}

function actionButtons(name, desired) {
  const buttons = [];
  if (desired !== "launched") buttons.push(`<button data-action="start" data-unit="${esc(name)}">start</button>`);
  if (desired === "launched") buttons.push(`<button data-action="stop" data-unit="${esc(name)}">stop</button>`);
  buttons.push(`<button class="danger" data-action="destroy" data-unit="${esc(name)}">destroy</button>`);
  return buttons.join("");
}

let toastTimer = 0;
function toast(text, bad = false) {
  const box = $("toast");
  box.textContent = text;
  box.className = bad ? "toast bad" : "toast";
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 4000);
}

// ---------------------------------------------------------------- rendering

function render() {
  if (document.body.dataset.ready !== "true") return;
  renderSummary();
  if (ui.page === "overview") {
    renderMachines();
    renderUnplaceable();
    renderUnits();
    renderEvents($("events"), store.events);
  } else {
    renderUnitPage();
  }
}

function renderSummary() {
  let running = 0, failed = 0, pending = 0;
  for (const states of store.states.values()) {
    for (const state of states.values()) {
      if (state.activeState === "active") running++;
      else if (state.activeState === "failed") failed++;
      else if (/activating|deactivating/.test(state.activeState)) pending++;
    }
  }
  const chips = [
    `<span class="chip"><b>${store.machines.size}</b>machines</span>`,
    `<span class="chip"><b>${store.units.size}</b>${store.units.size === 1 ? "unit" : "units"}</span>`,
    `<span class="chip running"><b>${running}</b>running</span>`,
    pending ? `<span class="chip pending"><b>${pending}</b>starting</span>` : "",
    failed ? `<span class="chip failed"><b>${failed}</b>failed</span>` : "",
    store.reasons.size ? `<span class="chip unplaceable"><b>${store.reasons.size}</b>unplaceable</span>` : "",
  ];
  setHtml($("summary"), chips.join(""));
}

function renderMachines() {
  const counts = store.machineCounts();
  const ids = [...store.machines.keys()].sort();
  $("machine-count").textContent = ids.length;
  const cards = ids.map((id) => {
    const m = store.machines.get(id);
    const c = counts.get(id) || { total: 0, running: 0, failed: 0 };
    const meta = Object.entries(m.metadata || {}).sort().map(([k, v]) => `<span class="tag">${esc(k)}=${esc(v)}</span>`).join("");
    const ok = c.total ? (100 * c.running) / c.total : 0;
    const bad = c.total ? (100 * c.failed) / c.total : 0;
    return `<div class="machine${ui.machine === id ? " selected" : ""}" data-machine="${esc(id)}" title="${esc(id)}">
      <span class="id mono">${esc(short(id))}</span><span class="ip">${esc(m.primaryIP || "")}</span>
      <div class="meta">${meta || '<span class="muted">no metadata</span>'}</div>
      <div class="bar"><i class="ok" style="width:${ok}%"></i><i class="bad" style="width:${bad}%"></i></div>
      <div class="numbers">${c.running} running · ${c.total} ${c.total === 1 ? "unit" : "units"}${c.failed ? ` · ${c.failed} failed` : ""}</div></div>`;
  });
  setHtml($("machines"), cards.join("") || '<p class="muted">No machines have joined.</p>');
}

function renderUnplaceable() {
  const names = [...store.reasons.keys()].sort();
  $("unplaceable-panel").hidden = names.length === 0;
  $("unplaceable-count").textContent = names.length;
  const items = names.slice(0, 100).map((name) =>
    `<li><a href="#/unit/${encodeURIComponent(name)}">${esc(name)}</a>: ${esc(store.reasons.get(name).join("; "))}</li>`);
  if (names.length > 100) items.push(`<li class="muted">and ${names.length - 100} more</li>`);
  setHtml($("unplaceable"), items.join(""));
}

function globToRegExp(glob) {
  return new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`);
}

function filteredNames() {
  if (ui.filteredAt === store.version && ui.filtered) return ui.filtered;
  let names = store.sortedNames();
  const text = ui.filter.toLowerCase();
  if (text) {
    const glob = /[*?]/.test(text) ? globToRegExp(text) : null;
    names = names.filter((name) => {
      const lower = name.toLowerCase();
      if (glob ? glob.test(lower) : lower.includes(text)) return true;
      if (glob) return false;
      const v = store.view(name);
      return v.machine.startsWith(text) || v.currentState === text || v.state?.activeState === text || v.state?.subState === text;
    });
  }
  if (ui.health !== "all" || ui.machine) {
    names = names.filter((name) => {
      const v = store.view(name);
      return (ui.health === "all" || v.health === ui.health) && (!ui.machine || store.placements.get(name)?.has(ui.machine));
    });
  }
  ui.filtered = names;
  ui.filteredAt = store.version;
  return names;
}

function renderUnits() {
  for (const button of $("health-filter").children) button.classList.toggle("on", button.dataset.health === ui.health);
  const names = filteredNames();
  const total = store.units.size;
  $("unit-count").textContent = names.length === total ? total : `${names.length} of ${total}`;
  $("units-empty").hidden = total !== 0;
  const scroller = $("scroller");
  $("spacer").style.height = `${names.length * ROW}px`;
  const first = Math.max(0, Math.floor(scroller.scrollTop / ROW) - 10);
  const last = Math.min(names.length, Math.ceil((scroller.scrollTop + scroller.clientHeight) / ROW) + 10);
  const key = `${store.version}:${first}:${last}:${names.length}`;
  if (ui.rendered === key) return;
  ui.rendered = key;
  const rows = [];
  for (let i = first; i < last; i++) rows.push(unitRow(store.view(names[i])));
  const box = $("rows");
  box.style.transform = `translateY(${first * ROW}px)`;
  box.innerHTML = rows.join("");
}

function unitRow(v) {
  const machine = store.machines.get(v.machine);
  const where = v.machines > 1 ? `${v.machines} machines` : v.machine ? `${short(v.machine)} ${machine?.primaryIP || ""}` : "";
  const systemd = v.state ? `${v.state.loadState} · ${v.state.activeState} · ${v.state.subState}` : "";
  const why = v.reasons.length ? `<span class="muted" title="${esc(v.reasons.join("; "))}">unplaceable</span>` : esc(where);
  return `<div class="row unit-row h-${v.health}" data-unit="${esc(v.name)}" data-health="${v.health}">
    <span class="dot" title="${v.health}"></span><span class="name" title="${esc(v.name)}">${esc(v.name)}</span>
    <span><span class="state ${esc(v.desiredState)}">${esc(v.desiredState)}</span></span>
    <span><span class="state ${esc(v.currentState)}" data-current>${esc(v.currentState)}</span></span>
    <span class="mono">${why}</span><span class="systemd" title="${esc(systemd)}">${esc(systemd)}</span>
    <span class="actions">${actionButtons(v.name, v.desiredState)}</span></div>`;
}

function describe(kind, d) {
  switch (kind) {
    case "unit": return d.action === "destroyed" ? "destroyed" : `${d.action} (${d.desiredState})`;
    case "desired-state": return `${d.previous} → ${d.desiredState}`;
    case "placement": return d.action === "unscheduled" ? `unscheduled from ${short(d.machineID)}` : `${d.action} on ${short(d.machineID)} (${d.desiredState})`;
    case "unplaceable": return d.reasons?.length ? d.reasons.join("; ") : "placeable again";
    case "unit-state": return d.action === "removed" ? `state removed on ${short(d.machineID)}` : `${d.activeState}/${d.subState} on ${short(d.machineID)}${d.podAddress ? `, pod ${d.podAddress}` : ""}`;
    case "machine": return d.action === "metadata" ? `${short(d.machineID)} metadata ${d.key}=${d.value ?? "(removed)"}` : `${short(d.machineID)} ${d.action} ${d.primaryIP || ""}`;
    default: return "";
  }
}

function renderEvents(list, events, limit = 60) {
  const shown = events.slice(-limit).reverse();
  const key = `${events.length}:${events.at(-1)?.id ?? ""}`;
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  list.innerHTML = shown.map((e) => {
    const unit = e.data.unit ? `<a href="#/unit/${encodeURIComponent(e.data.unit)}">${esc(e.data.unit)}</a>` : "";
    return `<li><time>${e.at.toLocaleTimeString([], { hour12: false })}</time><span><span class="kind ${esc(e.kind)}">${esc(e.kind)}</span>${unit}</span>
      <span class="what">${esc(describe(e.kind, e.data))}</span></li>`;
  }).join("") || '<li class="muted">Waiting for changes…</li>';
}

function setHtml(element, html) {
  if (element.dataset.html !== html) { element.innerHTML = html; element.dataset.html = html; }
}

// ---------------------------------------------------------------- the unit page

async function loadUnitPage(name) {
  $("unit-file").textContent = "loading…";
  $("unit-journal").textContent = "loading…";
  const path = `/fleet/v1/units/${encodeURIComponent(name)}`;
  try {
    const unit = await getJson(path);
    $("unit-file").innerHTML = unitFile(unit.options || []);
  } catch (error) {
    $("unit-file").textContent = error.status === 404 ? "This unit is not in the cluster." : `Could not read the unit: ${error.message}`;
  }
  try {
    const { type, text } = await getText(`${path}/journal?lines=50`);
    $("unit-journal").textContent = journalText(type, text) || "(no journal lines)";
  } catch (error) {
    $("unit-journal").textContent = error.status === 404
      ? "No journal from this fleetd (it serves no journal route), or the unit is gone."
      : `Could not read the journal: ${error.message}`;
  }
}

function unitFile(options) {
  const lines = [];
  let section = null;
  for (const o of options) {
    if (o.section !== section) {
      if (section !== null) lines.push("");
      section = o.section;
      lines.push(`<span class="section">[${esc(section)}]</span>`);
    }
    lines.push(`<span class="key">${esc(o.name)}</span>=${esc(o.value)}`);
  }
  return lines.join("\n");
}

function journalText(type, text) {
  // fleetd's journal route answers NDJSON, one `journalctl -o json` entry a line; anything else
  // is shown as it came.
  if (!type.includes("json")) return text;
  const lines = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    let entry;
    try { entry = JSON.parse(line); } catch { lines.push(line); continue; }
    if (typeof entry !== "object" || entry === null) { lines.push(String(entry)); continue; }
    if (entry.end !== undefined && entry.__CURSOR === undefined) { lines.push(`-- ${entry.end} --`); continue; }
    let message = entry.MESSAGE ?? entry.message ?? "";
    if (Array.isArray(message)) message = new TextDecoder().decode(new Uint8Array(message));
    const micros = Number(entry.__REALTIME_TIMESTAMP);
    const when = micros ? new Date(micros / 1000).toLocaleTimeString([], { hour12: false }) + " " : "";
    lines.push(when + message);
  }
  return lines.join("\n");
}

function renderUnitPage() {
  const name = ui.unit;
  const v = store.view(name);
  const exists = store.units.has(name);
  $("unit-name").textContent = name;
  $("unit-dot").className = `dot big h-${v.health}`;
  setHtml($("unit-actions"), exists ? actionButtons(name, v.desiredState) : "");
  const machine = store.machines.get(v.machine);
  const s = v.state;
  const facts = exists ? [
    ["Desired state", v.desiredState], ["Current state", v.currentState],
    ["Machine", v.machine ? `${short(v.machine)} ${machine?.primaryIP || ""}` : "—"],
    ["Load", s?.loadState || "—"], ["Active", s?.activeState || "—"], ["Sub", s?.subState || "—"],
    ["Pod address", s?.podAddress || "—"],
    ["Since", s?.since ? new Date(s.since * 1000).toLocaleString() : "—"], ["Hash", (store.units.get(name)?.hash || "").slice(0, 12)],
  ] : [["State", "not in the cluster (destroyed, or never submitted)"]];
  setHtml($("unit-facts"), facts.map(([k, val]) => `<div><dt>${esc(k)}</dt><dd>${esc(val)}</dd></div>`).join(""));
  setHtml($("unit-reasons"), v.reasons.map((r) => `<li>${esc(r)}</li>`).join(""));
  renderEvents($("unit-events"), store.events.filter((e) => e.data.unit === name), 100);
}

start();
