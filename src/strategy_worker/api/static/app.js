// Strategy Worker dashboard: plain JS, no dependencies. The REST API gives the state, the
// WebSocket says when it changed (then the visible parts are re-read), so the page is live
// without reloads. Amounts are shown rounded to cents; the API itself is exact.
"use strict";

const API = "/api/v1";
const state = { token: null, me: null, ws: null, cursor: null, retry: 0, view: null, timer: null };

// ------------------------------------------------------------------ token and fetch

function takeToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("sw-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + "#/"); // the token leaves the URL
  }
  state.token = sessionStorage.getItem("sw-token");
}

async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + state.token };
  if (options.body) headers["Content-Type"] = "application/json";
  const res = await fetch(API + path, { ...options, headers });
  const body = await res.json().catch(() => ({}));
  if (res.status === 401) { askToken(body.error || "unauthorized"); throw new Error("401"); }
  if (!res.ok && res.status !== 202) throw new Error(body.detail || res.status);
  return body;
}

function askToken(why) {
  sessionStorage.removeItem("sw-token");
  main().innerHTML = `<section><h2>Sign in</h2><p class="muted">${esc(why)}: paste a token
    (<code>strategy-worker token --user UUID</code>).</p><form id="tf" class="row">
    <input id="tok" size="60" data-testid="token-input"><button>Open</button></form></section>`;
  document.getElementById("tf").onsubmit = (e) => {
    e.preventDefault();
    sessionStorage.setItem("sw-token", document.getElementById("tok").value.trim());
    start();
  };
}

// ------------------------------------------------------------------ helpers

const main = () => document.getElementById("main");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) =>
  ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const money = (v) => v === null || v === undefined ? "–" :
  Number(v).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const signed = (v) => `<span class="${Number(v) >= 0 ? "up" : "down"}">${money(v)}</span>`;
const qty = (v) => esc(Number(v).toLocaleString());
const when = (t) => t ? new Date(t).toLocaleString() : "–";
const badge = (v) => `<span class="badge ${esc(v)}">${esc(v)}</span>`;

function table(rows, cols, testid) {
  if (!rows.length) return `<p class="muted">none yet</p>`;
  const head = cols.map((c) => `<th class="${c[2] || ""}">${c[0]}</th>`).join("");
  const body = rows.map((r) => `<tr data-testid="${testid}">` +
    cols.map((c) => `<td class="${c[2] || ""}">${c[1](r)}</td>`).join("") + "</tr>").join("");
  return `<div class="scroll"><table><tr>${head}</tr>${body}</table></div>`;
}

function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-reason").value = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.onclose = () => resolve(dialog.returnValue === "ok" ?
      document.getElementById("confirm-reason").value : null);
  });
}

// ------------------------------------------------------------------ charts (SVG)

function lineChart(points, { markers = [], level = null } = {}) {
  const W = 600, H = 220, P = 34;
  if (points.length < 1) return `<p class="muted">no data yet</p>`;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const all = ys.concat(markers.map((m) => m.price), level === null ? [] : [level]);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...all), Math.max(...all)];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  const X = (x) => P + (x - x0) / (x1 - x0) * (W - 2 * P);
  const Y = (y) => H - P + (y0 - y) / (y1 - y0) * (H - 2 * P);
  const path = points.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
  const marks = markers.map((m) => {
    const x = X(m.t), y = Y(m.price), color = { entry: "#13804b", exit: "#2858b8", stop: "#c0392b" }[m.kind];
    const shape = m.kind === "entry" ? `M${x},${y - 7}L${x - 5},${y + 3}L${x + 5},${y + 3}Z`
      : m.kind === "exit" ? `M${x},${y + 7}L${x - 5},${y - 3}L${x + 5},${y - 3}Z`
      : `M${x - 5},${y - 5}L${x + 5},${y + 5}M${x + 5},${y - 5}L${x - 5},${y + 5}`;
    return `<path d="${shape}" fill="${color}" stroke="${color}" stroke-width="2"
      data-testid="marker-${m.kind}"><title>${esc(m.kind)} ${qty(m.quantity)} @ ${money(m.price)}</title></path>`;
  }).join("");
  const stop = level === null ? "" :
    `<line class="stop" x1="${P}" x2="${W - P}" y1="${Y(level)}" y2="${Y(level)}"><title>stop ${money(level)}</title></line>`;
  return `<svg class="chart" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none">
    <text class="axis" x="2" y="${P}">${money(y1)}</text><text class="axis" x="2" y="${H - P}">${money(y0)}</text>
    <path class="line" d="${path}"/>${stop}${marks}</svg>`;
}

// ------------------------------------------------------------------ views

async function listView() {
  const status = new URLSearchParams(location.hash.split("?")[1] || "").get("status") || "";
  const q = status ? `?status=${encodeURIComponent(status)}&limit=200` : "?limit=200";
  const data = await api("/executions" + q);
  const options = ["", "active", "paused", "stopped", "completed", "error"]
    .map((s) => `<option ${s === status ? "selected" : ""} value="${s}">${s || "all"}</option>`).join("");
  main().innerHTML = `${state.me.role === "operator" ? killSwitch() : ""}
    <section><div class="row"><h2>Executions</h2>
    <select id="status" data-testid="status-filter">${options}</select></div>
    ${table(data.executions, [
      ["Strategy", (e) => esc(e.name)], ["Status", (e) => badge(e.status)],
      ["Trading", (e) => badge(e.trading_state)], ["Capital", (e) => money(e.initial_capital), "num"],
      ["Total P&L", (e) => signed(e.total_pnl), "num"], ["Trades", (e) => e.total_trades, "num"],
      ["Started", (e) => when(e.started_at)],
    ], "exec-row")}</section>`;
  main().querySelectorAll("tr[data-testid=exec-row]").forEach((tr, i) => {
    tr.classList.add("link");
    tr.onclick = () => { location.hash = "#/e/" + data.executions[i].execution_id; };
  });
  document.getElementById("status").onchange = (e) => { location.hash = "#/?status=" + e.target.value; };
  bindKillSwitch();
}

function killSwitch() {
  return `<section><h2>Kill switch</h2><div class="row">
    <select id="ks-mode" data-testid="ks-mode"><option value="reduce_only">reduce-only</option>
    <option value="stop">stop</option><option value="clear_reduce_only">clear reduce-only</option></select>
    <input id="ks-user" placeholder="user id (empty: everyone)" size="38" data-testid="ks-user">
    <button class="danger" id="ks-go" data-testid="ks-go">Apply</button>
    <span id="ks-out" class="outcome"></span></div></section>`;
}

function bindKillSwitch() {
  const go = document.getElementById("ks-go");
  if (!go) return;
  go.onclick = async () => {
    const mode = document.getElementById("ks-mode").value, user = document.getElementById("ks-user").value.trim();
    const reason = await confirmAction(`Kill switch: ${mode} for ${user || "EVERY user"}?`);
    if (reason === null) return;
    const body = { scope: user ? "user" : "all", mode, reason, request_id: crypto.randomUUID() };
    if (user) body.user_id = user;
    const out = await api("/kill-switch", { method: "POST", body: JSON.stringify(body) });
    document.getElementById("ks-out").textContent = `${out.messages} execution(s), request ${out.request_id}`;
  };
}

async function executionView(id) {
  const [e, orders, fills, risks, decisions, equity, perf] = await Promise.all([
    api(`/executions/${id}`), api(`/executions/${id}/orders`), api(`/executions/${id}/fills`),
    api(`/executions/${id}/risk-events?limit=100`), api(`/executions/${id}/decisions?limit=100`),
    api(`/executions/${id}/equity`), api(`/executions/${id}/performance`),
  ]);
  const symbols = e.config.symbols || [];
  const chosen = state.symbol && symbols.includes(state.symbol) ? state.symbol : symbols[0];
  const chart = chosen ? await api(`/executions/${id}/chart?symbol=${encodeURIComponent(chosen)}`) : null;
  const running = e.status === "active" || e.status === "paused";
  const t = (s) => Date.parse(s);
  main().innerHTML = `
  <section><div class="row"><h2 data-testid="exec-name">${esc(e.name)}</h2>
    ${badge(e.status)} <span data-testid="trading-state">${badge(e.trading_state)}</span>
    <span data-testid="exec-status" hidden>${esc(e.status)}</span>
    <span class="muted">${esc(e.strategy_type)} · started ${when(e.started_at)}</span></div>
    <div class="row" style="margin:.6rem 0">
      <button data-testid="btn-pause" ${running && e.status === "active" ? "" : "disabled"}>Pause</button>
      <button data-testid="btn-resume" ${e.status === "paused" ? "" : "disabled"}>Resume</button>
      <button class="danger" data-testid="btn-stop" ${running ? "" : "disabled"}>Stop</button>
      <span id="outcome" class="outcome" data-testid="outcome">${esc(state.outcome || "")}</span></div>
    <div class="cards">
      ${card("Equity", money(e.at_marks.equity))}${card("Cash", money(e.cash))}
      ${card("Realized", signed(e.realized_pnl))}${card("Unrealized", signed(e.at_marks.unrealized_pnl))}
      ${card("Total P&L", signed(e.at_marks.total_pnl))}${card("Fees", money(e.fees))}
      ${card("Return", (Number(perf.total_return) * 100).toFixed(2) + "%")}
      ${card("Max drawdown", (Number(perf.max_drawdown) * 100).toFixed(2) + "%")}
      ${card("Sharpe / Sortino", `${perf.sharpe ?? "–"} / ${perf.sortino ?? "–"}`)}
      ${card("Trades W/L", `${e.trade_stats.winning}/${e.trade_stats.losing} of ${e.trade_stats.total}`)}
    </div></section>
  <div class="grid2">
    <section><h3>Equity</h3>${lineChart(equity.points.map((p) => [t(p.taken_at), Number(p.total_value)]))}</section>
    <section><div class="row"><h3>Price</h3><select id="sym" data-testid="symbol">${symbols.map((s) =>
      `<option ${s === chosen ? "selected" : ""}>${esc(s)}</option>`).join("")}</select>
      <span class="muted">▲ entry ▼ exit ✕ stop, dashed: stop level</span></div>
      ${chart ? lineChart(chart.prices.map((p) => [t(p.t), Number(p.price)]), {
        markers: chart.markers.map((m) => ({ ...m, t: t(m.t), price: Number(m.price) })),
        level: chart.stop_level === null ? null : Number(chart.stop_level) }) : ""}</section>
  </div>
  <section><h3>Positions</h3>${table(e.positions, [
    ["Symbol", (p) => esc(p.symbol)], ["Qty", (p) => qty(p.quantity), "num"],
    ["Avg cost", (p) => money(p.avg_cost), "num"], ["Mark", (p) => money(p.mark), "num"],
    ["Value", (p) => money(p.market_value), "num"], ["Unrealized", (p) => signed(p.unrealized_pnl), "num"],
    ["Stop", (p) => money(p.stop_level), "num"]], "position-row")}
    <p class="muted">Limits: position ${esc(e.limits.max_position_size)}, daily loss ${esc(e.limits.max_daily_loss)}
    (max ${money(e.limits.max_daily_loss_amount)}), stop-loss ${esc(e.limits.stop_loss_pct ?? "none")}</p></section>
  <div class="grid2">
    <section><h3>Orders</h3>${table(orders.orders, [
      ["#", (o) => o.intent_seq], ["Side", (o) => esc(o.side)], ["Symbol", (o) => esc(o.symbol)],
      ["Qty", (o) => qty(o.quantity), "num"], ["Purpose", (o) => esc(o.purpose)],
      ["Status", (o) => `<span data-testid="order-status">${esc(o.status)}</span>`]], "order-row")}</section>
    <section><h3>Fills</h3>${table(fills.fills, [
      ["Time", (f) => when(f.filled_at)], ["Side", (f) => esc(f.side)], ["Symbol", (f) => esc(f.symbol)],
      ["Qty", (f) => qty(f.quantity), "num"], ["Price", (f) => money(f.price), "num"]], "fill-row")}</section>
  </div>
  <div class="grid2">
    <section><h3>Risk events</h3><ul class="timeline scroll">${risks.risk_events.map((r) =>
      `<li data-testid="risk-row">${badge(r.severity)} <b>${esc(r.event_type)}</b> ${esc(r.description)}
       <span class="muted">${when(r.occurred_at)}</span></li>`).join("") || "<li class=muted>none</li>"}</ul></section>
    <section><h3>Decisions</h3>${decisions.available ? table(decisions.decisions, [
      ["Time", (d) => when(d.decided_at)], ["Symbol", (d) => esc(d.symbol)], ["Rule", (d) => esc(d.rule)],
      ["Outcome", (d) => esc(d.outcome)], ["Gate", (d) => esc(d.gate ?? "")]], "decision-row")
      : `<p class="muted">no decision log on this deployment yet</p>`}</section>
  </div>`;
  document.getElementById("sym").onchange = (ev) => { state.symbol = ev.target.value; refresh(); };
  const act = (action, destructive) => async () => {
    const reason = destructive ? await confirmAction(`${action} "${e.name}"?`) : "";
    if (reason === null) return;
    const out = await api(`/executions/${id}/${action}`, { method: "POST",
      body: JSON.stringify({ request_id: crypto.randomUUID(), reason }) });
    state.outcome = `${action}: request ${out.request_id} published`;
    document.getElementById("outcome").textContent = state.outcome;
    followOutcome(out.status_url.replace(API, ""), action);
  };
  main().querySelector("[data-testid=btn-pause]").onclick = act("pause", true);
  main().querySelector("[data-testid=btn-resume]").onclick = act("resume", false);
  main().querySelector("[data-testid=btn-stop]").onclick = act("stop", true);
}

const card = (label, value) => `<div class="card"><span>${label}</span><b>${value}</b></div>`;

async function followOutcome(path, action) {
  for (let i = 0; i < 60; i++) {
    const s = await api(path);
    if (s.outcome !== "PENDING") {
      state.outcome = `${action}: ${s.outcome}${s.messages[0] ? " – " + s.messages[0].detail : ""}`;
      const el = document.getElementById("outcome");
      if (el) el.textContent = state.outcome;
      return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// ------------------------------------------------------------------ routing and live

async function refresh() {
  const m = location.hash.match(/^#\/e\/([0-9a-f-]{36})/);
  state.view = m ? m[1] : "list";
  try {
    if (m) await executionView(m[1]); else await listView();
  } catch (err) {
    if (err.message !== "401") main().innerHTML = `<section><p class="down">${esc(err.message)}</p></section>`;
  }
}

function soon() { // many events in a burst -> one re-read
  clearTimeout(state.timer);
  state.timer = setTimeout(refresh, 250);
}

function connect() {
  const ws = new WebSocket(location.origin.replace(/^http/, "ws") + API + "/stream");
  state.ws = ws;
  const live = document.getElementById("live");
  ws.onopen = () => ws.send(JSON.stringify({ type: "subscribe", token: state.token, cursor: state.cursor }));
  ws.onmessage = (msg) => {
    const frame = JSON.parse(msg.data);
    if (frame.cursor) state.cursor = frame.cursor;
    if (frame.type === "hello" || frame.type === "reset") {
      state.retry = 0; live.textContent = "live"; live.className = "live on";
      soon(); // (re)read the state: anything before the subscription is in it
    } else if (frame.type === "event") {
      if (state.view === "list" || frame.event.execution_id === state.view) soon();
    }
  };
  ws.onclose = (ev) => {
    live.textContent = "reconnecting"; live.className = "live off";
    if (ev.code === 4401) { askToken("session expired"); return; }
    state.retry = Math.min(state.retry + 1, 6);
    setTimeout(connect, 250 * 2 ** state.retry); // resumes from state.cursor: no gap
  };
}

async function start() {
  takeToken();
  if (!state.token) { askToken("no token"); return; }
  try { state.me = await api("/me"); } catch { return; }
  document.getElementById("who").textContent = `${state.me.role} ${state.me.user_id}`;
  window.onhashchange = () => { state.outcome = ""; refresh(); };
  connect();
  refresh();
}

start();
