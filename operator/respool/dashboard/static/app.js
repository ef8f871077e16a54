// respool dashboard: draws every pool's timeline from one server-sent event stream.
// Plain JavaScript, no framework and no build step. The stream starts with a snapshot and then
// carries each change; only the pools a change touches are drawn again.
"use strict";

(function () {
  const HOUR = 3600;
  const AXIS_HEIGHT = 22;
  const WAITING_SHOWN = 20;
  const FIRST_POOLS = 6;
  const ON_TIMELINE = new Set(["Active", "Scheduled", "Expired", "Failed"]);

  const state = {
    pools: new Map(),         // name -> pool view
    reservations: new Map(),  // "namespace/name" -> reservation view
    byPool: new Map(),        // pool name -> Set of reservation keys
    health: {},
    spanHours: 24,
    offset: 0,                // seconds the window is moved from "now"
    namespace: "",
    poolFilter: "",
    dirty: new Set(),
    everything: false,
    frame: 0,
    openKey: null,
    renders: 0,
    drawing: 0,               // bumped by each full drawing; a stale continuation stops
  };

  const $ = (id) => document.getElementById(id);
  const escapeMap = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (value) => String(value == null ? "" : value).replace(/[&<>"']/g, (c) => escapeMap[c]);

  // -- idsets and times ----------------------------------------------------------------------

  function parseIdset(text) {
    const ids = [];
    for (const part of String(text || "").replace(/[[\]]/g, "").split(",")) {
      if (!part) continue;
      const [low, high] = part.split("-").map(Number);
      if (Number.isNaN(low)) continue;
      const top = Number.isNaN(high) || high === undefined ? low : high;
      for (let id = low; id <= top && id - low < 1000000; id++) ids.push(id);
    }
    return ids;
  }

  const pad = (n) => String(n).padStart(2, "0");
  function clockText(epoch) {
    const d = new Date(epoch * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }
  // Formatting a date with the locale's rules is slow (it showed as seconds with ten thousand
  // bookings): one formatter, and one answer per day.
  const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", month: "short", day: "numeric" });
  const dayCache = new Map();
  function dayText(epoch) {
    const date = new Date(epoch * 1000);
    const day = `${date.getFullYear()}-${date.getMonth()}-${date.getDate()}`;
    let text = dayCache.get(day);
    if (text === undefined) {
      text = dayFormat.format(date);
      dayCache.set(day, text);
    }
    return text;
  }
  function timeText(epoch) {
    if (epoch == null) return "open";
    return `${dayText(epoch)} ${clockText(epoch)}`;
  }
  function spanText(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h}h${pad(m % 60)}m`;
    return `${Math.floor(h / 24)}d${h % 24}h`;
  }
  const now = () => Date.now() / 1000;

  function windowNow() {
    const span = state.spanHours * HOUR;
    const start = now() - span / 8 + state.offset;
    return { start, end: start + span, span };
  }

  // -- the model -----------------------------------------------------------------------------

  function index(view) {
    if (!state.byPool.has(view.pool)) state.byPool.set(view.pool, new Set());
    state.byPool.get(view.pool).add(view.key);
  }
  function unindex(view) {
    const keys = state.byPool.get(view.pool);
    if (keys) keys.delete(view.key);
  }

  function loadSnapshot(message) {
    state.pools = new Map(message.pools.map((p) => [p.name, p]));
    state.reservations = new Map();
    state.byPool = new Map();
    for (const r of message.reservations) {
      state.reservations.set(r.key, r);
      index(r);
    }
    state.health = message.health || {};
    refreshNamespaces();
    scheduleAll();
  }

  function applyChange(message) {
    if (message.kind === "pool") {
      if (message.type === "deleted") state.pools.delete(message.key);
      else state.pools.set(message.key, message.view);
      if (message.type === "deleted" || !document.getElementById(poolId(message.key))) scheduleAll();
      else markDirty(message.key);
      return;
    }
    const before = state.reservations.get(message.key);
    if (before) {
      unindex(before);
      markDirty(before.pool);
    }
    if (message.type === "deleted") {
      state.reservations.delete(message.key);
    } else {
      state.reservations.set(message.key, message.view);
      index(message.view);
      markDirty(message.view.pool);
      if (!before) refreshNamespaces();
    }
    if (message.key === state.openKey) refreshDetails(message.type === "deleted");
  }

  // -- what is shown -------------------------------------------------------------------------

  function visibleReservations(poolName) {
    const keys = state.byPool.get(poolName);
    const result = [];
    if (!keys) return result;
    for (const key of keys) {
      const r = state.reservations.get(key);
      if (r && (!state.namespace || r.namespace === state.namespace)) result.push(r);
    }
    return result;
  }

  function shownPools() {
    const filter = state.poolFilter.trim().toLowerCase();
    return [...state.pools.values()]
      .filter((p) => !filter || p.name.toLowerCase().includes(filter))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  function refreshNamespaces() {
    const select = $("namespace");
    const namespaces = new Set();
    for (const r of state.reservations.values()) namespaces.add(r.namespace);
    if (state.namespace) namespaces.add(state.namespace);
    const wanted = ["", ...[...namespaces].sort()];
    const have = [...select.options].map((o) => o.value);
    if (wanted.join("\n") === have.join("\n")) return;
    select.innerHTML = wanted
      .map((ns) => `<option value="${esc(ns)}">${ns ? esc(ns) : "All namespaces"}</option>`)
      .join("");
    select.value = state.namespace;
  }

  // -- drawing -------------------------------------------------------------------------------

  const poolId = (name) => `pool-${name}`;

  function capacityHtml(pool) {
    const parts = [];
    for (const kind of ["node", "core", "gpu"]) {
      const c = (pool.capacity || {})[kind];
      if (!c || !c.total) continue;
      const label = { node: "Nodes", core: "Cores", gpu: "GPUs" }[kind];
      const down = c.down ? `, ${c.down} down` : "";
      parts.push(`<div><dt>${label} free</dt><dd>${c.free} of ${c.total}${down}</dd></div>`);
    }
    const counts = pool.counts || {};
    const phases = ["Active", "Scheduled", "Pending"].filter((p) => counts[p]).map((p) => `${counts[p]} ${p}`);
    parts.push(`<div><dt>Reservations</dt><dd>${phases.length ? esc(phases.join(", ")) : "none"}</dd></div>`);
    return `<dl class="capacity">${parts.join("")}</dl>`;
  }

  function readyBadge(pool) {
    if (pool.ready === "True") return `<span class="badge ready">Ready</span>`;
    if (pool.ready === "False") return `<span class="badge not-ready">Not ready${pool.readyReason ? `: ${esc(pool.readyReason)}` : ""}</span>`;
    return `<span class="badge unknown">Not yet seen by the operator</span>`;
  }

  function ticks(win) {
    const steps = [1, 3, 6, 12, 24, 48].map((h) => h * HOUR);
    const step = steps.find((s) => win.span / s <= 12) || 7 * 24 * HOUR;
    const offsetMinutes = new Date(win.start * 1000).getTimezoneOffset();
    const local = (t) => t - offsetMinutes * 60;
    const first = Math.ceil(local(win.start) / step) * step + offsetMinutes * 60;
    const result = [];
    for (let t = first; t < win.end; t += step) {
      const dayStart = local(t) % (24 * HOUR) === 0;
      result.push({ t, label: step >= 24 * HOUR || dayStart ? dayText(t) : clockText(t), day: dayStart });
    }
    return result;
  }

  function bookingLabel(r) {
    const window = r.start != null ? `${timeText(r.start)} to ${timeText(r.end)}` : "no window";
    return `${r.namespace}/${r.name}: ${r.phase}, ${r.mode}, ${window}, ${r.nodes || "ranks " + r.ranks}`;
  }

  function timelineSvg(pool, reservations, width, win) {
    const ranks = pool.ranks || [];
    const rows = ranks.length || 1;
    const rowHeight = rows <= 32 ? 18 : Math.max(3, Math.floor(576 / rows));
    const labelEvery = rowHeight >= 12 ? 1 : Math.ceil(12 / rowHeight);
    // Room for the longest rank name and "(down)", within limits.
    const longest = Math.min(24, Math.max(5, ...(pool.rankNames || []).map((n) => n.length)));
    const labelWidth = Math.round(longest * 6.6 + (pool.down ? 52 : 12));
    const plotWidth = Math.max(100, width - labelWidth);
    const height = AXIS_HEIGHT + rows * rowHeight + 2;
    const x = (t) => labelWidth + ((t - win.start) / win.span) * plotWidth;
    const rowOf = new Map(ranks.map((rank, i) => [rank, i]));
    const down = new Set(parseIdset(pool.down));
    const out = [];
    out.push(`<svg width="${labelWidth + plotWidth}" height="${height}" role="group" aria-label="Timeline of pool ${esc(pool.name)}: ${ranks.length} ranks, ${timeText(win.start)} to ${timeText(win.end)}">`);
    // Rows: bands, down ranks, labels.
    for (let i = 0; i < rows; i++) {
      const y = AXIS_HEIGHT + i * rowHeight;
      const rank = ranks[i];
      const isDown = down.has(rank);
      if (isDown) out.push(`<rect class="down-row" x="${labelWidth}" y="${y}" width="${plotWidth}" height="${rowHeight}"><title>${esc(pool.rankNames[i])} (rank ${rank}) is down</title></rect>`);
      else if (i % 2) out.push(`<rect class="row-band" x="${labelWidth}" y="${y}" width="${plotWidth}" height="${rowHeight}"/>`);
      if (i % labelEvery === 0 && rank !== undefined) {
        const name = pool.rankNames[i] || `rank${rank}`;
        out.push(`<text class="rank-text${isDown ? " down" : ""}" x="4" y="${y + Math.min(rowHeight, 14) - 3}">${esc(name.length > 24 ? name.slice(0, 23) + "…" : name)}${isDown ? " (down)" : ""}</text>`);
      }
    }
    // Past the pool's expiration nothing is granted.
    if (pool.expiration != null && pool.expiration < win.end) {
      const from = Math.max(labelWidth, x(pool.expiration));
      out.push(`<rect class="expired-zone" x="${from}" y="${AXIS_HEIGHT}" width="${labelWidth + plotWidth - from}" height="${rows * rowHeight}"><title>the pool expires ${esc(timeText(pool.expiration))}</title></rect>`);
    }
    // Maintenance windows (issue 14): drawn over the rows they take out; they always win.
    for (const m of pool.maintenance || []) {
      if (m.end <= win.start || m.start >= win.end) continue;
      const x1 = Math.max(labelWidth, x(m.start));
      const x2 = Math.min(labelWidth + plotWidth, x(m.end));
      const label = `maintenance '${m.name}' ${timeText(m.start)} to ${timeText(m.end)} (${m.mode})${m.reason ? ": " + m.reason : ""}`;
      const rowsOut = parseIdset(m.ranks).map((rank) => rowOf.get(rank)).filter((i) => i !== undefined);
      for (const row of rowsOut) {
        out.push(`<rect class="maintenance-zone" data-maintenance="${esc(m.name)}" x="${x1}" y="${AXIS_HEIGHT + row * rowHeight}" width="${Math.max(2, x2 - x1)}" height="${rowHeight}"><title>${esc(label)}</title></rect>`);
      }
    }
    // Axis and grid.
    for (const tick of ticks(win)) {
      const tx = x(tick.t);
      out.push(`<line class="${tick.day ? "day-line" : "grid-line"}" x1="${tx}" x2="${tx}" y1="${AXIS_HEIGHT - 4}" y2="${height}"/>`);
      out.push(`<text class="axis-text" x="${tx + 3}" y="${AXIS_HEIGHT - 8}">${esc(tick.label)}</text>`);
    }
    // Bookings: one group per reservation, one box per run of neighbouring rows.
    const ordered = reservations
      .filter((r) => ON_TIMELINE.has(r.phase) && r.ranks && r.start != null)
      .filter((r) => r.start < win.end && (r.end == null || r.end > win.start))
      .sort((a, b) => a.start - b.start || a.key.localeCompare(b.key));
    for (const r of ordered) {
      const rowsHeld = parseIdset(r.ranks).map((rank) => rowOf.get(rank)).filter((i) => i !== undefined).sort((a, b) => a - b);
      if (!rowsHeld.length) continue;
      const x1 = Math.max(labelWidth, x(r.start));
      const x2 = Math.min(labelWidth + plotWidth, r.end == null ? Infinity : x(r.end));
      const w = Math.max(2, x2 - x1);
      const label = bookingLabel(r);
      out.push(`<g class="booking${r.deleting ? " deleting" : ""}" tabindex="0" role="button" data-key="${esc(r.key)}" aria-label="${esc(label)}"><title>${esc(label)}</title>`);
      let runStart = rowsHeld[0];
      let previous = rowsHeld[0];
      const runs = [];
      for (const row of rowsHeld.slice(1).concat([Infinity])) {
        if (row === previous + 1) { previous = row; continue; }
        runs.push([runStart, previous]);
        runStart = previous = row;
      }
      for (const [first, last] of runs) {
        const y = AXIS_HEIGHT + first * rowHeight + 1;
        const h = (last - first + 1) * rowHeight - 2;
        out.push(`<rect class="booking-box phase-${esc(r.phase)}" x="${x1}" y="${y}" width="${w}" height="${Math.max(1, h)}"/>`);
        if (r.mode === "shared") out.push(`<rect class="shared-stripes" x="${x1}" y="${y}" width="${w}" height="${Math.max(1, h)}"/>`);
      }
      const [first, last] = runs[0];
      const boxHeight = (last - first + 1) * rowHeight;
      const chars = Math.floor((w - 6) / 6.5);
      if (chars >= 4 && boxHeight >= 14) {
        const text = r.name.length > chars ? r.name.slice(0, chars - 1) + "…" : r.name;
        out.push(`<text class="booking-label" x="${x1 + 3}" y="${AXIS_HEIGHT + first * rowHeight + Math.min(boxHeight, 16) - 4}">${esc(text)}</text>`);
      }
      out.push(`</g>`);
    }
    const t = now();
    if (t >= win.start && t <= win.end) {
      const nx = x(t);
      out.push(`<line class="now-line" x1="${nx}" x2="${nx}" y1="${AXIS_HEIGHT - 14}" y2="${height}"/>`);
      out.push(`<text class="now-text" x="${nx + 3}" y="${height - 3}">now</text>`);
    }
    out.push(`</svg>`);
    return out.join("");
  }

  function waitingHtml(pool, reservations) {
    // In the pool's queue order where the operator gives one (status.queuePosition), then the
    // rest (waiting for something else, or not yet seen) by age.
    const waiting = reservations
      .filter((r) => r.phase === "Pending" || r.phase === "")
      .sort((a, b) => (a.queuePosition || Infinity) - (b.queuePosition || Infinity)
        || (a.created || 0) - (b.created || 0) || a.key.localeCompare(b.key));
    if (!waiting.length) return "";
    const items = waiting.slice(0, WAITING_SHOWN).map((r) => {
      const why = r.phase ? (r.reason ? `${r.reason}: ${r.message}` : r.message) : "not yet seen by the operator";
      const earliest = r.earliest != null ? `; earliest start ${timeText(r.earliest)}` : "";
      const place = r.queuePosition != null ? `#${r.queuePosition} in line` : "";
      const startBy = r.startNoLaterThan != null ? `, starts by ${timeText(r.startNoLaterThan)}` : "";
      const standing = place ? `<span class="queue-position">${esc(place + startBy)}</span> ` : "";
      return `<li><button type="button" class="linkish" data-key="${esc(r.key)}">${esc(r.key)}</button> ${standing}<span class="muted">${esc(why)}${esc(earliest)}</span></li>`;
    });
    const more = waiting.length > WAITING_SHOWN ? `<li class="muted">and ${waiting.length - WAITING_SHOWN} more (see the table)</li>` : "";
    return `<div class="waiting"><h3>Waiting (${waiting.length})</h3><ul>${items.join("")}${more}</ul></div>`;
  }

  function tableHtml(reservations) {
    const rows = reservations
      .sort((a, b) => (a.start || Infinity) - (b.start || Infinity) || a.key.localeCompare(b.key))
      .map((r) => `<tr><td><button type="button" class="linkish" data-key="${esc(r.key)}">${esc(r.name)}</button></td><td>${esc(r.namespace)}</td><td>${esc(r.mode)}</td><td>${esc(r.phase || "new")}</td><td>${r.start != null ? esc(timeText(r.start)) : ""}</td><td>${r.start != null ? esc(timeText(r.end)) : ""}</td><td>${esc(r.nodes || r.ranks)}</td><td>${esc(r.reason)}</td></tr>`);
    return `<table><caption class="visually-hidden">Reservations of this pool</caption><thead><tr><th scope="col">Name</th><th scope="col">Namespace</th><th scope="col">Mode</th><th scope="col">Phase</th><th scope="col">Start</th><th scope="col">End</th><th scope="col">Nodes</th><th scope="col">Reason</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
  }

  function poolHtml(pool, width, win) {
    const reservations = visibleReservations(pool.name);
    const id = poolId(pool.name);
    const message = pool.message ? `<p class="pool-message">${esc(pool.message)}</p>` : "";
    return `<section class="pool" id="${esc(id)}" data-pool="${esc(pool.name)}" aria-labelledby="${esc(id)}-title">
<div class="pool-head"><h2 id="${esc(id)}-title">${esc(pool.name)}</h2>${readyBadge(pool)}${capacityHtml(pool)}${message}</div>
<div class="timeline">${timelineSvg(pool, reservations, width, win)}</div>
<div class="pool-foot">${waitingHtml(pool, reservations)}
<details class="table" data-pool="${esc(pool.name)}"><summary>All ${reservations.length} reservations of ${esc(pool.name)} as a table</summary></details></div>
</section>`;
  }

  function timelineWidth() {
    const list = $("pool-list");
    return Math.max(420, (list.clientWidth || window.innerWidth) - 2 * 16 - 18);
  }

  function focusedKey() {
    const active = document.activeElement;
    return active && active.dataset ? active.dataset.key || null : null;
  }
  function restoreFocus(key) {
    if (!key) return;
    const again = document.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus({ preventScroll: true });
  }

  function renderAll() {
    const key = focusedKey();
    const win = windowNow();
    const width = timelineWidth();
    const pools = shownPools();
    const list = $("pool-list");
    const generation = ++state.drawing;
    if (!pools.length) {
      list.innerHTML = `<p class="muted">${state.pools.size ? "No pool matches the filter." : "No resource pools (or none you may list)."}</p>`;
      allDrawn();
    } else if (state.renders === 0 && pools.length > FIRST_POOLS) {
      // The first time, draw the pools a screen shows at once, and the others in the
      // following tasks: the page is usable long before ten thousand bookings are drawn.
      list.innerHTML = pools.slice(0, FIRST_POOLS).map((p) => poolHtml(p, width, win)).join("");
      const rest = pools.slice(FIRST_POOLS).map((p) => p.name);
      // Only once that first frame is on screen (busy tasks would hold it back).
      requestAnimationFrame(() => requestAnimationFrame(() => appendLater(rest, generation, width, win)));
    } else {
      list.innerHTML = pools.map((p) => poolHtml(p, width, win)).join("");
      allDrawn();
    }
    restoreFocus(key);
    renderSummary();
  }

  function appendLater(names, generation, width, win) {
    setTimeout(() => {
      if (generation !== state.drawing) return;  // drawn again from scratch meanwhile
      const started = performance.now();
      const parts = [];
      let done = 0;
      while (done < names.length && performance.now() - started < 40) {
        const pool = state.pools.get(names[done++]);  // deleted meanwhile: skipped
        if (pool) parts.push(poolHtml(pool, width, win));
      }
      $("pool-list").insertAdjacentHTML("beforeend", parts.join(""));
      if (done < names.length) appendLater(names.slice(done), generation, width, win);
      else allDrawn();
    }, 0);
  }

  function allDrawn() {
    if (document.body.dataset.complete) return;
    performance.mark("respool-all-drawn");
    document.body.dataset.complete = "1";
  }

  function renderPool(name) {
    const section = document.getElementById(poolId(name));
    const pool = state.pools.get(name);
    if (!section || !pool) return;
    const key = focusedKey();
    const table = section.querySelector("details.table");
    const open = Boolean(table && table.open);
    const holder = document.createElement("div");
    holder.innerHTML = poolHtml(pool, timelineWidth(), windowNow());
    const fresh = holder.firstElementChild;
    section.replaceWith(fresh);
    if (open) {
      const details = fresh.querySelector("details.table");
      details.open = true;
      fillTable(details);
    }
    restoreFocus(key);
  }

  function renderSummary() {
    const win = windowNow();
    let pending = 0;
    let shown = 0;
    for (const r of state.reservations.values()) {
      if (state.namespace && r.namespace !== state.namespace) continue;
      shown++;
      if (r.phase === "Pending") pending++;
    }
    const scope = (state.health.reservation || {}).scope;
    $("summary").textContent =
      `${state.pools.size} pools, ${shown} reservations${state.namespace ? ` in namespace ${state.namespace}` : scope ? ` (${scope})` : ""}, ` +
      `${pending} waiting. Showing ${timeText(win.start)} to ${timeText(win.end)}.`;
  }

  function renderConnection(text, kind) {
    const el = $("connection");
    const errors = ["pool", "reservation"].map((k) => (state.health[k] || {}).error).filter(Boolean);
    el.textContent = errors.length ? `Live, but: ${errors.join("; ")}` : text;
    el.className = `connection ${errors.length ? "problem" : kind}`;
  }

  function markDirty(pool) {
    state.dirty.add(pool);
    schedule();
  }
  function scheduleAll() {
    state.everything = true;
    schedule();
  }
  function schedule() {
    if (state.frame) return;
    state.frame = requestAnimationFrame(() => {
      state.frame = 0;
      if (state.everything) {
        renderAll();
      } else {
        for (const pool of state.dirty) renderPool(pool);
        renderSummary();
      }
      state.everything = false;
      state.dirty.clear();
      state.renders++;
      document.body.dataset.renders = String(state.renders);
      if (state.renders === 1) {
        performance.mark("respool-first-render");
        // The next frame's callback runs once the frame holding the drawing was produced.
        requestAnimationFrame(() => requestAnimationFrame(() => {
          performance.mark("respool-first-paint");
          document.body.dataset.ready = "1";
        }));
      }
    });
  }

  function fillTable(details) {
    if (details.querySelector("table")) details.querySelector("table").remove();
    details.insertAdjacentHTML("beforeend", tableHtml(visibleReservations(details.dataset.pool)));
  }

  // -- details -------------------------------------------------------------------------------

  let detailsTimer = 0;
  function refreshDetails(deleted) {
    clearTimeout(detailsTimer);
    if (deleted) {
      const notice = document.createElement("p");
      notice.className = "gone";
      notice.textContent = "This reservation has been deleted.";
      $("details-body").prepend(notice);
      state.openKey = null;
      return;
    }
    detailsTimer = setTimeout(() => loadDetails(state.openKey, false), 300);
  }

  function factsHtml(pairs) {
    return `<dl class="facts">${pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("")}</dl>`;
  }

  function rowsHtml(headers, rows, caption) {
    if (!rows.length) return `<p class="muted">None.</p>`;
    return `<table><caption class="visually-hidden">${esc(caption)}</caption><thead><tr>${headers.map((h) => `<th scope="col">${esc(h)}</th>`).join("")}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join("")}</tr>`).join("")}</tbody></table>`;
  }

  async function loadDetails(key, fresh) {
    if (!key) return;
    const [namespace, name] = key.split("/");
    const dialog = $("details");
    $("details-title").textContent = `Reservation ${key}`;
    if (fresh) {
      $("details-body").innerHTML = `<p class="muted">Loading&hellip;</p>`;
      if (!dialog.open) dialog.showModal();
    }
    let answer;
    try {
      const response = await fetch(`/api/reservations/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`);
      answer = await response.json();
      if (!response.ok) throw new Error(answer.error || response.statusText);
    } catch (error) {
      $("details-body").innerHTML = `<p class="gone">Cannot read ${esc(key)}: ${esc(error.message)}</p>`;
      return;
    }
    if (state.openKey !== key) return;
    const obj = answer.object;
    const spec = obj.spec || {};
    const status = obj.status || {};
    const view = state.reservations.get(key) || {};
    const allocated = status.allocated || {};
    const facts = factsHtml([
      ["Pool", spec.pool],
      ["Mode", spec.mode || "exclusive"],
      ["Phase", status.phase || "not yet seen by the operator"],
      ["Reason", view.reason],
      ["Message", status.message],
      ["Window", status.startTime ? `${status.startTime} to ${status.endTime || "open"}` : ""],
      ["Nodes", allocated.nodelist ? `${allocated.nodelist} (ranks ${allocated.ranks})` : ""],
      ["Reservation ID", status.reservationId],
      ["Pre-reservation ID", status.preReservationId],
      ["Claim by", status.preReservationExpires],
      ["Retries", status.retryCount != null ? `${status.retryCount} of ${spec.maxRetry != null ? spec.maxRetry : 5}` : ""],
      ["Queue position", status.queuePosition != null ? `${status.queuePosition} (1 = next when capacity frees)` : ""],
      ["Starts no later than", status.startNoLaterThan ? `${status.startNoLaterThan} (if nothing new is booked first)` : ""],
      ["Created", (obj.metadata || {}).creationTimestamp],
      ["Being deleted", (obj.metadata || {}).deletionTimestamp ? "yes" : ""],
    ]);
    const conditions = rowsHtml(["Type", "Status", "Reason", "Message", "Since"],
      (status.conditions || []).map((c) => [c.type, c.status, c.reason, c.message, c.lastTransitionTime]), "Conditions");
    let events;
    if (answer.events == null) {
      events = `<p class="muted">${esc(answer.eventsError || "Events cannot be read.")}</p>`;
    } else {
      events = rowsHtml(["Last seen", "Type", "Reason", "Message", "Count"],
        answer.events.map((e) => [e.lastTimestamp || e.eventTime || "", e.type, e.reason, e.message, e.count || 1]), "Events");
    }
    $("details-body").innerHTML =
      `${facts}<h3>Conditions</h3>${conditions}<h3>Events</h3>${events}` +
      `<h3>Spec</h3><pre>${esc(JSON.stringify(spec, null, 2))}</pre>` +
      `<h3>Status</h3><pre>${esc(JSON.stringify(status, null, 2))}</pre>`;
  }

  function openDetails(key) {
    state.openKey = key;
    loadDetails(key, true);
  }

  // -- the stream ----------------------------------------------------------------------------

  function connect() {
    const source = new EventSource("/api/stream");
    source.onopen = () => renderConnection("Live: changes appear as they happen.", "live");
    source.onerror = () => renderConnection("Connection to the dashboard lost; reconnecting…", "problem");
    source.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "snapshot") {
        if (!state.renders) performance.mark("respool-snapshot-received");
        loadSnapshot(message);
        renderConnection("Live: changes appear as they happen.", "live");
      } else if (message.type === "status") {
        state.health = message;
        delete state.health.type;
        renderConnection("Live: changes appear as they happen.", "live");
      } else {
        applyChange(message);
      }
    };
  }

  // -- controls ------------------------------------------------------------------------------

  function readLocation() {
    const params = new URLSearchParams(location.search);
    state.namespace = params.get("namespace") || "";
    state.poolFilter = params.get("pool") || "";
    const span = Number(params.get("span"));
    if ([6, 24, 72, 168, 336].includes(span)) state.spanHours = span;
  }
  function writeLocation() {
    const params = new URLSearchParams();
    if (state.namespace) params.set("namespace", state.namespace);
    if (state.poolFilter) params.set("pool", state.poolFilter);
    if (state.spanHours !== 24) params.set("span", String(state.spanHours));
    const query = params.toString();
    history.replaceState(null, "", query ? `?${query}` : location.pathname);
  }
  function showSpan() {
    for (const button of document.querySelectorAll(".zoom button")) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.span) === state.spanHours));
    }
  }

  function activate(event) {
    const target = event.target.closest("[data-key]");
    if (!target) return false;
    event.preventDefault();
    openDetails(target.dataset.key);
    return true;
  }

  function setUp() {
    readLocation();
    showSpan();
    $("pool-filter").value = state.poolFilter;
    refreshNamespaces();
    $("namespace").addEventListener("change", (e) => {
      state.namespace = e.target.value;
      writeLocation();
      scheduleAll();
    });
    let typing = 0;
    $("pool-filter").addEventListener("input", (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        state.poolFilter = e.target.value;
        writeLocation();
        scheduleAll();
      }, 150);
    });
    for (const button of document.querySelectorAll(".zoom button")) {
      button.addEventListener("click", () => {
        state.spanHours = Number(button.dataset.span);
        showSpan();
        writeLocation();
        scheduleAll();
      });
    }
    $("earlier").addEventListener("click", () => { state.offset -= (state.spanHours * HOUR) / 2; scheduleAll(); });
    $("later").addEventListener("click", () => { state.offset += (state.spanHours * HOUR) / 2; scheduleAll(); });
    $("to-now").addEventListener("click", () => { state.offset = 0; scheduleAll(); });
    const list = $("pool-list");
    list.addEventListener("click", (e) => { activate(e); });
    list.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") activate(e);
    });
    list.addEventListener("toggle", (e) => {
      if (e.target.matches && e.target.matches("details.table") && e.target.open) fillTable(e.target);
    }, true);
    $("details").addEventListener("close", () => {
      const key = state.openKey;
      state.openKey = null;
      restoreFocus(key);
    });
    let resizing = 0;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(scheduleAll, 200);
    });
    // The now-line moves: draw again every half minute.
    setInterval(scheduleAll, 30000);
    connect();
  }

  window.respoolDashboard = { state };
  document.addEventListener("DOMContentLoaded", setUp);
})();
