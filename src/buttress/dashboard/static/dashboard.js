// The buttress dashboard: polls /dashboard/data, draws every panel, and promotes or rolls back
// registry models through the admin API with a token kept in this tab's sessionStorage.
// Every text from the server goes in with textContent, never as HTML.
"use strict";

(function () {
  const Charts = window.ButtressCharts;
  const TOKEN_KEY = "buttress.adminToken";
  const HISTORY_SECONDS = 300;
  const SWITCH_POLL_MS = 500;
  const CATEGORIES = ["input_invalid", "input_contract", "features_missing",
    "features_unavailable", "model_error", "model_timeout", "model_unavailable", "overloaded",
    "cache_unavailable", "guardrail_exceeded", "guardrail_unavailable", "events_dropped",
    "internal"];

  const history = [];
  const modelBlocks = new Map();
  let insightsRan = undefined;
  let switching = null; // {model, version, since}
  let pending = null; // the action the dialog asks about
  let lastOk = 0;

  // -- small helpers ---------------------------------------------------------------------

  const $ = (selector, root) => (root || document).querySelector(selector);
  const panel = (name) => $(`[data-panel="${name}"]`);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  // A name that may wrap after "_", "." or "]" (a <wbr>, so a copy of it stays whole).
  function breakable(name) {
    const span = el("span");
    for (const part of String(name).split(/(?<=[_.\]])/)) {
      if (span.childNodes.length) span.append(el("wbr"));
      span.append(part);
    }
    return span;
  }

  function num(value, unit) {
    if (value === null || value === undefined || !isFinite(value)) return "—";
    const abs = Math.abs(value);
    const text = abs >= 1000 ? Math.round(value).toLocaleString("en-US")
      : abs >= 100 || Number.isInteger(value) ? value.toFixed(0)
      : abs >= 10 ? value.toFixed(1) : value.toFixed(2);
    return unit ? `${text} ${unit}` : text;
  }

  function count(value) {
    if (value === null || value === undefined || !isFinite(value)) return "—";
    return Math.round(value).toLocaleString("en-US");
  }

  function pct(value) {
    if (value === null || value === undefined || !isFinite(value)) return "—";
    const p = value * 100;
    return `${p === 0 ? "0" : p < 10 ? p.toFixed(1) : p.toFixed(0)} %`;
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString("en-GB", {hour12: false});
  }

  function minute(t) {
    return new Date(t * 1000).toLocaleTimeString("en-GB", {hour: "2-digit", minute: "2-digit"});
  }

  function color(category) {
    const index = CATEGORIES.indexOf(category);
    return Charts.COLORS[(index < 0 ? category.length : index) % Charts.COLORS.length];
  }

  function set(name, text) {
    for (const node of document.querySelectorAll(`[data-value="${name}"]`)) {
      node.textContent = text;
    }
  }

  function fill(name, ...children) {
    const list = $(`[data-list="${name}"]`);
    list.replaceChildren(...children.flat());
    return list;
  }

  function state(name, hasData) {
    panel(name).dataset.state = hasData ? "data" : "empty";
  }

  function bar(share, classes) {
    const inner = el("span");
    inner.style.width = `${Math.max(0, Math.min(1, share || 0)) * 100}%`;
    return el("div", {class: `bar ${classes || ""}`}, inner);
  }

  function table(head, rows) {
    return [el("tr", null, ...head.map(([text, cls]) => el("th", {class: cls, text}))),
            ...rows];
  }

  // -- history for the live charts -------------------------------------------------------

  function remember(d) {
    if (d.requests.per_s === null) return;
    if (history.length && history[history.length - 1].t >= d.time) return;
    const fallbacks = {};
    for (const c of d.fallbacks.by_category) fallbacks[c.category] = c.per_s;
    const batches = {};
    for (const b of d.batches) batches[b.model] = b.mean_rows;
    history.push({t: d.time, rps: d.requests.per_s, p50: d.latency_ms.p50,
                  p99: d.latency_ms.p99, fallbacks, batches});
    while (history.length && history[0].t < d.time - HISTORY_SECONDS) history.shift();
  }

  function series(name, pick, colour) {
    return {name, color: colour, points: history.map((h) => [h.t, pick(h)])};
  }

  function draw(chart, list, format) {
    const target = $(`[data-chart="${chart}"]`);
    if (!history.length) {  // no rate yet: nothing to draw against
      target.replaceChildren();
      return;
    }
    const now = history[history.length - 1].t;
    const span = now - history[0].t;
    Charts.lines(target, list, {height: 80, format, label: clock, t1: now,
                                t0: now - Math.min(HISTORY_SECONDS, Math.max(60, span))});
  }

  // -- panels ----------------------------------------------------------------------------

  function requests(d) {
    set("rps", num(d.requests.per_s));
    set("in-flight", count(d.requests.in_flight));
    const chips = Object.entries(d.requests.by_status)
      .filter(([, rate]) => rate > 0)
      .map(([status, rate]) => el("span", {class: `chip ${status >= 500 ? "bad" : ""}`,
                                           text: `${status} · ${num(rate)}/s`}));
    fill("statuses", ...chips, el("span", {class: "hint", text: d.requests.per_s === null
      ? "measuring…" : `${count(d.requests.total)} requests since start`}));
    draw("rps", [series("req/s", (h) => h.rps)], (v) => num(v));
    state("requests", d.requests.per_s !== null && d.requests.total > 0);
  }

  function latency(d) {
    set("p50", num(d.latency_ms.p50));
    set("p99", num(d.latency_ms.p99));
    draw("latency", [series("p50", (h) => h.p50, Charts.COLORS[0]),
                     series("p99", (h) => h.p99, Charts.COLORS[1])], (v) => `${num(v)} ms`);
    state("latency", d.latency_ms.p99 !== null);
  }

  function fallbacks(d) {
    set("fallback-share", pct(d.fallbacks.per_request));
    set("fallback-rate", num(d.fallbacks.per_s));
    const categories = d.fallbacks.by_category;
    draw("fallbacks", categories.map((c) => series(c.category,
      (h) => h.fallbacks[c.category] ?? 0, color(c.category))), (v) => `${num(v)}/s`);
    fill("categories", table([["category"], ["/s", "num"], ["per req", "num"], ["total", "num"]],
      categories.map((c) => el("tr", {"data-category": c.category},
        el("td", null, el("span", {class: "swatch", "data-color": c.category}), c.category),
        el("td", {class: "num", text: num(c.per_s)}),
        el("td", {class: "num", text: pct(c.per_request)}),
        el("td", {class: "num", text: count(c.total)})))));
    for (const swatch of document.querySelectorAll("[data-color]")) {
      swatch.style.background = color(swatch.dataset.color);
    }
    state("fallbacks", categories.length > 0);
  }

  function violations(d) {
    fill("violations", d.violations.length ? table(
      [["field"], ["kind"], ["/s", "num"], ["total", "num"]],
      d.violations.map((v) => el("tr", {"data-field": v.field},
        el("td", {class: "field"}, breakable(v.field)),
        el("td", null, el("span", {class: `badge ${v.kind === "renamed" ? "warn" : ""}`,
                                   text: v.kind})),
        el("td", {class: "num", text: num(v.per_s)}),
        el("td", {class: "num", text: count(v.total)})))) : [
      el("tr", null, el("td", {class: "hint", text: "no violation so far"}))]);
    state("violations", d.violations.length > 0);
  }

  function caches(d) {
    fill("caches", d.caches.length ? d.caches.map((c) => el("div", {class: "item", "data-cache": c.cache},
      el("div", {class: "line"}, el("span", {class: "name"}, breakable(c.cache)),
         el("span", {class: "value", text: `${pct(c.hit_ratio)} hits`})),
      bar(c.hit_ratio),
      el("div", {class: "detail", text: `${num(c.lookups_per_s)} lookups/s · ` +
        `${count(c.lookups_total)} since start (${pct(c.hit_ratio_total)} hits)`})))
      : [el("p", {class: "hint", text: "no cache declared"})]);
    state("caches", d.caches.some((c) => c.lookups_total > 0));
  }

  function batches(d) {
    fill("batches", d.batches.length ? d.batches.map((b) => el("div", {class: "item", "data-model": b.model},
      el("div", {class: "line"}, el("span", {class: "name"}, breakable(b.model)),
         el("span", {class: "value", text: `${num(b.mean_rows)} rows / batch`})),
      el("div", {class: "detail", text: `p50 ${num(b.p50_rows)} · p99 ${num(b.p99_rows)} rows · ` +
        `${num(b.batches_per_s)} batches/s · queue wait p99 ${num(b.queue_wait_p99_ms)} ms · ` +
        `${count(b.queued_rows)} queued`})))
      : [el("p", {class: "hint", text: "no batched model"})]);
    draw("batches", d.batches.map((b, i) => series(`${b.model} rows/batch`,
      (h) => h.batches[b.model] ?? null, Charts.COLORS[(i + 2) % Charts.COLORS.length])),
      (v) => num(v));
    state("batches", d.batches.some((b) => b.batches_total > 0));
  }

  function guardrails(d) {
    fill("guardrails", d.guardrails.length ? d.guardrails.map((g) => {
      const level = g.share > 0.95 ? "bad" : g.share > 0.7 ? "warn" : "";
      const key = g.key ? ` · busiest key ${g.key}` : "";
      const use = g.limit === null ? "no key has spent any budget yet"
        : `${num(g.used)} of ${num(g.limit)}${key}`;
      return el("div", {class: "item", "data-guardrail": g.guardrail},
        el("div", {class: "line"}, el("span", {class: "name"}, breakable(g.guardrail)),
           el("span", {class: "value", text: `${pct(g.share)} used`})),
        bar(g.share, level),
        el("div", {class: "detail", text: `${use} · ` +
          `trips ${num(g.trips_per_s)}/s (${count(g.trips_total)} total)`}));
    }) : [el("p", {class: "hint", text: "no guardrail declared"})]);
    state("guardrails", d.guardrails.some((g) => g.limit !== null));
  }

  function alerts(d) {
    const a = d.alerts;
    const stale = a.stale ? " · state not updated recently" : "";
    set("alerts-summary", a.rules.length
      ? `${a.rules.length} rule${a.rules.length === 1 ? "" : "s"} · ${a.firing} firing${a.evaluated_at ? ` · evaluated ${clock(a.evaluated_at)}` : ""}${stale}`
      : "no alert rules ([[alerts]] in buttress.toml)");
    fill("alerts", a.rules.map((r) => el("li", {"data-alert": r.name, "data-alert-state": r.state},
      el("span", {class: `badge ${r.state === "firing" ? "bad" : r.state === "pending" ? "warn"
                                  : r.state === "inactive" ? "good" : ""}`, text: r.state}),
      " ", el("strong", {text: r.name}), ` ${num(r.value)} (${r.condition}, ${r.severity})`,
      el("span", {class: "why", text: r.watches}))));
    state("alerts", a.evaluated_at !== null && a.rules.length > 0);
  }

  function insights(d) {
    const ins = d.insights;
    set("insights-meta", ins.ran_at ? `· last ${Math.round(ins.window_s / 60)} min of events, ` +
      `run ${clock(ins.ran_at)} in ${num(ins.seconds)} s` : "· running…");
    if (ins.ran_at === insightsRan && $("[data-list=insights]").childElementCount) return;
    insightsRan = ins.ran_at;
    fill("insights", ins.charts.map((c) => {
      const box = el("div", {class: "insight", "data-query": c.name, "data-kind": c.kind},
                     el("h4", {text: c.name.replaceAll("_", " ")}));
      if (c.kind === "lines") {
        const area = el("div", {class: "chart"});
        box.append(area, Charts.legend(c.series, (v) => num(v)),
                   el("div", {class: "hint", text: `${c.y} by ${c.x}`}));
        requestAnimationFrame(() => Charts.lines(area, c.series, {height: 110,
          format: (v) => num(v), label: minute, t0: ins.ran_at - ins.window_s, t1: ins.ran_at}));
      } else if (c.kind === "table") {
        box.append(el("table", {class: "rows"}, ...table(c.columns.map((name) => [name]),
          c.rows.map((row) => el("tr", null, ...row.map((cell) => el("td",
            {class: typeof cell === "number" ? "num" : "", text: typeof cell === "number" ? num(cell) : String(cell ?? "—")})))))));
      } else {
        box.append(el("p", {class: "hint", text: c.kind === "pending" ? "running…" : `no data: ${c.error}`}));
      }
      return box;
    }));
    state("insights", ins.charts.some((c) => (c.kind === "lines" && c.series.length) ||
                                            (c.kind === "table" && c.rows.length)));
  }

  // -- models: versions per replica, promote and rollback ---------------------------------

  function models(d) {
    const list = $("[data-list=models]");
    const seen = new Set();
    for (const m of d.models.models) {
      seen.add(m.name);
      const key = JSON.stringify([m.stable, m.rollback_to, m.versions, m.controls, m.error]);
      let block = modelBlocks.get(m.name);
      if (!block || block.key !== key) {
        const fresh = modelBlock(m);
        if (block) block.node.replaceWith(fresh.node); else list.append(fresh.node);
        block = Object.assign(fresh, {key});
        modelBlocks.set(m.name, block);
      }
      block.node.dataset.stable = m.stable || "";
      block.replicas.replaceChildren(...table([["replica"], ["serves", "num"]],
        m.replicas.map((r) => el("tr", {"data-replica": r.replica, "data-version": r.version},
          el("td", {text: r.replica}),
          el("td", {class: "num"}, el("span", {class: `badge ${r.version === m.stable ? "good" : "warn"}`,
            text: r.version === m.stable ? r.version : `${r.version} → ${m.stable}`}))))));
    }
    for (const [name, block] of modelBlocks) {
      if (!seen.has(name)) { block.node.remove(); modelBlocks.delete(name); }
    }
    if (switching) watchSwitch(d);
    state("models", d.models.models.some((m) => m.replicas && m.replicas.length));
  }

  function modelBlock(m) {
    const replicas = el("table", {class: "rows"});
    const node = el("div", {class: "model", "data-model": m.name},
      el("div", {class: "line"}, el("span", {class: "name", text: m.name}), " ",
         el("span", {class: "badge good", text: m.stable ? `stable ${m.stable}` : "no stable"}),
         el("span", {class: "hint", text: Object.entries(m.aliases || {})
           .filter(([alias]) => alias !== "stable").map(([alias, v]) => ` ${alias} ${v}`).join(" ·")})),
      m.error ? el("p", {class: "hint", text: m.error}) : null, replicas);
    if (m.controls) {
      const back = el("button", {type: "button", "data-action": "rollback",
        text: m.rollback_to ? `Roll back to ${m.rollback_to}` : "Nothing to roll back to"});
      back.disabled = !m.rollback_to;
      back.addEventListener("click", () => ask({action: "rollback", model: m.name,
        from: m.stable, to: m.rollback_to}));
      const others = m.versions.filter((v) => v !== m.stable);
      const choice = el("select", {"data-role": "version", "aria-label": "version to promote"},
        ...others.map((v) => el("option", {value: v, text: v})));
      const promote = el("button", {type: "button", "data-action": "promote", text: "Promote"});
      promote.disabled = !others.length;
      choice.disabled = !others.length;
      promote.addEventListener("click", () => ask({action: "promote", model: m.name,
        from: m.stable, to: choice.value}));
      node.append(el("div", {class: "controls"}, back, choice, promote));
    }
    return {node, replicas};
  }

  function say(text, kind) {
    const line = $("[data-role=model-status]");
    line.textContent = text;
    line.dataset.kind = kind || "";
  }

  function ask(what) {
    pending = what;
    const verb = what.action === "rollback" ? "Roll back" : "Promote";
    $("#confirm-title").textContent = `${verb} ${what.model}?`;
    $("#confirm-text").textContent = `stable ${what.from || "—"} → ${what.to} on every replica. ` +
      "Each replica loads and warms the version, then switches; no request fails.";
    $("#confirm-button").textContent = verb;
    const saved = sessionStorage.getItem(TOKEN_KEY);
    $("#token").value = "";
    $("#token-row").hidden = Boolean(saved);
    $("#token-saved").hidden = !saved;
    $("#confirm").showModal();
    if (!saved) $("#token").focus();
  }

  async function act(what, token) {
    const headers = {"content-type": "application/json", "x-buttress-actor": "dashboard"};
    if (token) headers.authorization = `Bearer ${token}`;
    const body = what.action === "promote" ? {version: what.to, reason: "from the dashboard"}
      : {reason: "from the dashboard"};
    say(`${what.action === "rollback" ? "Rolling back" : "Promoting"} ${what.model}…`);
    let response;
    try {
      response = await fetch(`/admin/models/${encodeURIComponent(what.model)}/${what.action}`,
        {method: "POST", headers, body: JSON.stringify(body), credentials: "omit",
         cache: "no-store", referrerPolicy: "no-referrer"});
    } catch (error) {
      say(`Could not reach the server: ${error.message}`, "error");
      return;
    }
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      if (response.status === 401) sessionStorage.removeItem(TOKEN_KEY);
      const why = answer && answer.error ? answer.error.message : response.statusText;
      say(`Refused (${response.status}): ${why}. Nothing changed.`, "error");
      return;
    }
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    if (!answer.changed) {
      say(`${what.model}: ${what.to} is stable already; nothing changed.`, "ok");
      return;
    }
    switching = {model: what.model, version: answer.to, since: performance.now()};
    say(`${answer.action === "rollback" ? "Rolled back" : "Promoted"} ${what.model}: ` +
        `${answer.from} → ${answer.to}. Waiting for every replica…`);
    schedule(SWITCH_POLL_MS);
  }

  function watchSwitch(d) {
    const m = d.models.models.find((x) => x.name === switching.model);
    if (!m) return;
    const serving = m.replicas.filter((r) => r.version === switching.version).length;
    const seconds = ((performance.now() - switching.since) / 1000).toFixed(1);
    if (m.replicas.length && serving === m.replicas.length) {
      say(`Every replica serves ${switching.version} (switched in ${seconds} s).`, "ok");
      switching = null;
    } else {
      say(`${serving} of ${m.replicas.length} replicas serve ${switching.version} (${seconds} s)…`);
    }
  }

  function setUpDialog() {
    const dialog = $("#confirm");
    $("#confirm-form").addEventListener("submit", (event) => {
      event.preventDefault(); // no navigation: the token never lands in a URL
      const what = pending;
      const token = $("#token").value || sessionStorage.getItem(TOKEN_KEY) || "";
      $("#token").value = "";
      dialog.close();
      pending = null;
      if (what) act(what, token);
    });
    $("#cancel").addEventListener("click", () => { pending = null; dialog.close(); });
    $("#forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      $("#token-row").hidden = false;
      $("#token-saved").hidden = true;
      $("#token").focus();
    });
  }

  // -- polling ---------------------------------------------------------------------------

  let timer = null;

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }

  function render(d) {
    $("#service").textContent = d.service;
    document.title = `${d.service} · buttress`;
    $("#meta").textContent = `${d.workers} worker${d.workers === 1 ? "" : "s"} · rates over ` +
      `${d.window_s === null ? "—" : num(d.window_s)} s · answered by pid ${d.pid}` +
      `${d.ready ? "" : " · not ready"}`;
    remember(d);
    for (const show of [requests, latency, fallbacks, violations, caches, batches, guardrails,
                        alerts, insights, models]) {
      show(d);
    }
  }

  async function poll() {
    let interval = 1000;
    try {
      const response = await fetch("/dashboard/data", {cache: "no-store"});
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const d = await response.json();
      interval = d.poll_ms;
      render(d);
      lastOk = Date.now();
      $("#status").dataset.live = "yes";
      $("#status-text").textContent = `live · ${clock(d.time)}`;
    } catch (error) {
      $("#status").dataset.live = "error";
      const ago = lastOk ? ` (last update ${Math.round((Date.now() - lastOk) / 1000)} s ago)` : "";
      $("#status-text").textContent = `no data: ${error.message}${ago}`;
    }
    schedule(switching ? SWITCH_POLL_MS : document.hidden ? 5 * interval : interval);
  }

  setUpDialog();
  document.addEventListener("visibilitychange", () => { if (!document.hidden) schedule(0); });
  poll();
})();
