// The actuator dashboard: hash-routed pages over the JSON API. Every data call carries the
// token kept in sessionStorage; the rollout page follows the rollout's server-sent events.
"use strict";
(() => {
  const TOKEN_KEY = "actuator.token";
  const main = document.getElementById("main");
  let who = null; // {name, role, open}
  let stopPage = () => {}; // ends the current page's timers and streams
  let pendingMessage = ""; // what the sign-in page says after a redirect to it

  // ------------------------------------------------------------------ helpers

  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  function headers(extra) {
    const hd = Object.assign({ Accept: "application/json" }, extra || {});
    if (token()) hd.Authorization = `Bearer ${token()}`;
    return hd;
  }

  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  async function api(path, opts) {
    const o = opts || {};
    const init = { method: o.method || "GET", headers: headers(o.body !== undefined ? { "Content-Type": "application/json" } : {}) };
    if (o.body !== undefined) init.body = JSON.stringify(o.body);
    const r = await fetch(path, init);
    const text = await r.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
    if (!r.ok) {
      const e = body && body.error ? body.error : { code: String(r.status), message: text || r.statusText };
      throw new ApiError(r.status, e.code, e.message);
    }
    return body;
  }

  const enc = encodeURIComponent;
  const items = (page) => (Array.isArray(page) ? page : (page && page.items) || []);
  const when = (s) => (s ? new Date(s).toLocaleString() : "–");
  const pct = (v) => (Number.isFinite(v) ? `${Number(v.toFixed(2))}%` : "–");
  const num = (v) => (Number.isFinite(v) ? Charts.fmt(v) : "no data");
  const TERMINAL = ["completed", "rolled_back", "failed", "aborted"];

  function stateBadge(state, id) { return h("span", { class: `state ${state}`, id }, state.replace(/_/g, " ")); }

  function mayControl() { return who && (who.open || who.role === "operator" || who.role === "admin"); }

  function showError(e) {
    if (e instanceof ApiError && e.status === 401) { signOut("Your token was refused: " + e.message); return; }
    main.replaceChildren(h("div", { class: "card error", id: "page-error" }, e.message || String(e)));
  }

  function page(title, ...content) { main.replaceChildren(h("h1", {}, title), ...content.filter((c) => c !== null && c !== undefined)); }

  // ------------------------------------------------------------------ sign-in

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    who = null;
    // One drawing of the sign-in page: directly when already there, else by the hash change.
    if (location.hash === "#/signin") renderSignIn(message);
    else { pendingMessage = message; location.hash = "#/signin"; }
  }

  function renderSignIn(message) {
    stopPage();
    document.getElementById("who").textContent = "";
    const input = h("input", { id: "token", type: "password", autocomplete: "off", placeholder: "act_…" });
    const err = h("p", { class: "error", id: "signin-error" }, message || "");
    const form = h("form", { class: "card signin", id: "signin" },
      h("p", {}, "Paste an API token (viewer, operator or admin). It is kept in this tab's session storage only."),
      h("label", { for: "token" }, "Token"), input,
      h("button", { type: "submit", id: "signin-submit" }, "Sign in"), err);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      try {
        await whoAmI();
        location.hash = "#/rollouts";
        route();
      } catch (e) {
        sessionStorage.removeItem(TOKEN_KEY);
        err.textContent = e.message;
      }
    });
    page("Sign in", form);
  }

  async function whoAmI() {
    who = await api("/v1/whoami");
    const label = who.open ? "open daemon (no tokens): every role" : `${who.name} · ${who.role}`;
    document.getElementById("who").textContent = label;
    document.getElementById("who").dataset.role = who.role;
    document.getElementById("signout").hidden = who.open;
    return who;
  }

  // ------------------------------------------------------------------ rollouts

  function lastDecision(v) {
    const d = v.last_decision;
    if (!d) return "–";
    return d.rule.startsWith(d.kind) ? d.rule : `${d.kind}: ${d.rule}`;
  }

  function stepText(v) {
    // Numbered from 0, as in the API, the observations' `phase` and the CLI.
    return v.phases > 1 ? `${v.phase} of 0–${v.phases - 1}` : v.phases === 1 ? "0" : "–";
  }

  async function renderRollouts() {
    const body = h("tbody", { id: "rollout-rows" });
    const stamp = h("span", { class: "live", id: "live" }, "connecting…");
    page("Rollouts", stamp, h("table", { id: "rollouts" },
      h("thead", {}, h("tr", {}, ["Rollout", "Slot", "Strategy", "State", "Step", "Share", "Last decision", "Updated"].map((t) => h("th", {}, t)))),
      body));
    const draw = (list) => {
      body.replaceChildren(...(list.length === 0
        ? [h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No rollout yet."))]
        : list.map((v) => h("tr", { "data-id": v.id },
          h("td", {}, h("a", { href: `#/rollout/${enc(v.id)}` }, v.id)),
          h("td", {}, v.slot), h("td", {}, v.strategy), h("td", {}, stateBadge(v.state)),
          h("td", {}, stepText(v)), h("td", { class: "num" }, pct(v.share_percent)),
          h("td", {}, lastDecision(v)), h("td", {}, when(v.updated_at))))));
    };
    // Live by server-sent events: one `rollouts` event at once and one after every change.
    draw(items(await api("/v1/rollouts?limit=100")));
    stopPage = follow("/v1/events/rollouts?limit=100", (name, data) => { if (name === "rollouts") draw(data.items || []); },
      (on, err) => {
        stamp.className = on ? "live on" : "live";
        stamp.textContent = on ? "live" : err ? `not live: ${err.message}` : "reconnecting…";
      });
  }

  // ------------------------------------------------------------------ one rollout

  // Reads server-sent events with fetch (EventSource cannot send the token) and calls
  // onEvent(name, data) per event; reconnects after a drop. Returns a stop function.
  function follow(path, onEvent, onLive) {
    let stopped = false;
    let ctrl = null;
    const run = async () => {
      while (!stopped) {
        ctrl = new AbortController();
        try {
          const r = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal: ctrl.signal });
          if (!r.ok) {
            const b = await r.json().catch(() => null);
            throw new ApiError(r.status, b && b.error ? b.error.code : "", b && b.error ? b.error.message : r.statusText);
          }
          onLive(true);
          const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
          let buf = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += value;
            let cut;
            while ((cut = buf.indexOf("\n\n")) >= 0) {
              const block = buf.slice(0, cut);
              buf = buf.slice(cut + 2);
              let name = "message";
              const data = [];
              for (const line of block.split("\n")) {
                if (line.startsWith("event:")) name = line.slice(6).trim();
                else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
              }
              if (data.length > 0) onEvent(name, JSON.parse(data.join("\n")));
            }
          }
        } catch (e) {
          if (stopped) return;
          if (e instanceof ApiError && (e.status === 401 || e.status === 404)) { onLive(false, e); return; }
        }
        onLive(false);
        await new Promise((res) => setTimeout(res, 2000));
      }
    };
    run();
    return () => { stopped = true; if (ctrl) ctrl.abort(); };
  }

  function marker(i, v) {
    if (i < v.phase || v.state === "completed") return ["done", "✔"];
    if (i === v.phase) {
      if (["rolled_back", "failed", "aborted", "rolling_back"].includes(v.state)) return ["failed", "✖"];
      if (v.state === "paused") return ["current", "॥"];
      return ["current", "●"];
    }
    return ["pending", "◌"];
  }

  function planView(v) {
    return h("ol", { class: "plan", id: "plan" }, v.steps.map((s, i) => {
      const [cls, m] = marker(i, v);
      const limits = [s.min_samples ? `≥${s.min_samples} requests` : null, s.min_secs ? `≥${s.min_secs}s` : null].filter(Boolean).join(", ");
      return h("li", { class: cls, "data-step": i }, h("span", { class: "marker" }, m),
        `${i}. ${s.role || s.kind} ${s.kind === "shadow" ? "mirror" : pct(s.share_percent)}`, limits ? h("span", { class: "muted" }, ` (${limits})`) : null);
    }));
  }

  function armsView(v) {
    return h("table", { id: "arms" },
      h("thead", {}, h("tr", {}, ["Arm", "Requests", "Errors", "Error rate", "p50 ms", "p95 ms", "p99 ms", "Cost", "Quality"].map((t) => h("th", { class: t === "Arm" ? "" : "num" }, t)))),
      h("tbody", {}, v.arms.map((a) => h("tr", {}, h("td", {}, a.arm),
        ...[a.requests, a.errors].map((x) => h("td", { class: "num" }, String(x))),
        ...[a.error_rate, a.p50_ms, a.p95_ms, a.p99_ms, a.mean_cost, a.mean_quality].map((x) => h("td", { class: "num" }, num(x)))))));
  }

  // The alpha of each (arm, metric) in the last evaluation, for its e-value threshold.
  function alphas(health) {
    const out = new Map();
    const ev = health && health.last_evaluation;
    for (const c of (ev && ev.explanation && ev.explanation.comparisons) || []) {
      for (const m of c.metrics || []) out.set(`${c.arm}/${m.metric}`, m.alpha);
    }
    return out;
  }

  function combinedThreshold(health) {
    const ev = health && health.last_evaluation;
    const c = ev && ev.explanation && ev.explanation.comparisons && ev.explanation.comparisons[0];
    return c ? c.log_threshold : NaN;
  }

  function chartCard(title, id, svg, legend) {
    return h("div", { class: "chart", id }, h("h3", {}, title), svg, h("div", { class: "legend" }, legend));
  }

  async function renderRollout(id) {
    const series = new Map(); // "arm/metric" -> [{t, y, lo, hi, margin, loge}]
    let seenAt = null;
    let view = null;
    let health = null;
    let controlsNode = null;
    let controlsKey = "";
    const live = h("span", { class: "live", id: "live" }, "connecting…");
    const body = h("div", { id: "rollout-body" });
    page(`Rollout ${id}`, live, body);

    // The per-metric series come from the stored health history (which spans the whole
    // rollout from its first look); the live view's metrics are added for looks the history
    // does not carry points for (a history written before it kept them).
    const record = () => {
      const hist = (health && health.history) || [];
      if (hist.some((r) => r.metrics && r.metrics.length)) {
        series.clear();
        for (const r of hist) {
          if (!r.arm || !r.metrics) continue;
          const t = Date.parse(r.at);
          for (const p of r.metrics) {
            const k = `${r.arm}/${p.m}`;
            if (!series.has(k)) series.set(k, []);
            series.get(k).push({ t, y: p.e, lo: p.lo, hi: p.hi, margin: p.mg, loge: p.le });
          }
        }
        return;
      }
      const ev = health && health.last_evaluation;
      const at = ev && ev.explanation ? ev.explanation.at : null;
      if (!at || at === seenAt) return;
      seenAt = at;
      const t = Date.parse(at);
      for (const m of view.metrics || []) {
        const k = `${m.arm}/${m.metric}`;
        if (!series.has(k)) series.set(k, []);
        const s = series.get(k);
        s.push({ t, y: m.estimate, lo: m.lower, hi: m.upper, margin: m.margin, loge: m.log_e_total });
        if (s.length > 2000) s.shift();
      }
    };

    const draw = () => {
      const v = view;
      const summary = h("div", { class: "card" },
        h("div", {}, stateBadge(v.state, "state"), ` ${v.strategy} on slot `, h("a", { href: `#/slot/${enc(v.slot)}` }, v.slot),
          ` · candidate v${v.candidate_version}`, v.stable_version ? ` over stable v${v.stable_version}` : "",
          ` · step `, h("span", { id: "step" }, stepText(v)), ` · share `, h("span", { id: "share" }, pct(v.share_percent))),
        v.paused_reason ? h("div", { class: "muted", id: "paused-reason" }, `paused: ${v.paused_reason}`) : null,
        v.awaiting_promotion ? h("div", { class: "muted" }, "the analysis recommends promotion; auto-promotion is off") : null,
        h("div", { id: "last-decision" }, "Last decision: ", lastDecision(v)),
        v.last_decision && v.last_decision.holding ? h("div", { class: "muted" }, `holding: ${v.last_decision.holding}`) : null,
        v.outcome ? h("div", { id: "outcome" }, `Outcome: ${v.outcome}`) : null,
        v.errors.length ? h("div", { class: "error" }, v.errors.join("; ")) : null);
      // The controls are redrawn only when what they allow changes (a button does not move
      // under the pointer at every update); they act on the latest view.
      let controls = null;
      if (mayControl()) {
        const key = ACTIONS.map(([, , ok]) => ok(v)).join();
        if (!controlsNode || key !== controlsKey) { controlsNode = controlsView(() => view); controlsKey = key; }
        controls = controlsNode;
      }
      const hist = (health && health.history) || [];
      const thr = combinedThreshold(health);
      const combined = chartCard("Combined evidence: ln e-value against its threshold", "chart-combined",
        Charts.series(hist.map((r) => ({ t: Date.parse(r.at), y: r.max_combined_log_e })), [{ y: thr, cls: "threshold", label: "threshold" }]),
        `${hist.length} looks from the health history`);
      const al = alphas(health);
      const charts = [];
      for (const [k, s] of series) {
        const a = al.get(k);
        const last = s[s.length - 1];
        charts.push(chartCard(`${k}: estimate with its interval`, `chart-est-${k.replace(/[^A-Za-z0-9]+/g, "-")}`,
          Charts.series(s, [{ y: last.margin, cls: "margin", label: "margin" }]), "band: the confidence sequence; dashed: the margin"));
        charts.push(chartCard(`${k}: ln e-value`, `chart-e-${k.replace(/[^A-Za-z0-9]+/g, "-")}`,
          Charts.series(s.map((p) => ({ t: p.t, y: p.loge })), [{ y: Number.isFinite(a) && a > 0 ? -Math.log(a) : NaN, cls: "threshold", label: "ln(1/α)" }]),
          "dashed: the threshold ln(1/α)"));
      }
      const decisions = hist.slice(-30).reverse();
      // `replaceChildren` would write a left-out part (null) as the text "null".
      const parts = [summary, controls,
        h("h2", {}, "Step plan"), planView(v),
        h("h2", {}, "Arms"), armsView(v),
        h("h2", {}, "Evidence"), h("div", { class: "charts", id: "charts" }, combined, ...charts),
        series.size === 0 ? h("p", { class: "muted" }, "Per-metric charts start with the next look.") : null,
        h("h2", {}, "Decisions"), h("table", { id: "decisions" },
          h("thead", {}, h("tr", {}, ["At", "Step", "Decision", "Rule", "Samples"].map((t) => h("th", {}, t)))),
          h("tbody", {}, decisions.map((r) => h("tr", {}, h("td", {}, when(r.at)), h("td", {}, String(r.phase)),
            h("td", {}, typeof r.decision === "string" ? r.decision : (r.decision && r.decision.kind) || "–"), h("td", {}, r.rule), h("td", { class: "num" }, String(r.samples)))))),
        h("h2", {}, "Transitions"), h("table", { id: "transitions" },
          h("thead", {}, h("tr", {}, ["At", "From", "To", "Why"].map((t) => h("th", {}, t)))),
          h("tbody", {}, v.transitions.slice().reverse().map((t) => h("tr", {}, h("td", {}, when(t.at)),
            h("td", {}, stateBadge(t.from)), h("td", {}, stateBadge(t.to)), h("td", {}, t.reason))))),
        v.rollbacks.length ? h("h2", {}, "Rollbacks") : null,
        v.rollbacks.length ? h("pre", { id: "rollbacks" }, JSON.stringify(v.rollbacks, null, 2)) : null];
      body.replaceChildren(...parts.filter((p) => p !== null && p !== undefined));
    };

    const update = (data) => {
      view = data.view;
      health = data.health;
      record();
      draw();
    };

    update({ view: await api(`/v1/rollouts/${enc(id)}`), health: await api(`/v1/rollouts/${enc(id)}/health`) });
    const stop = follow(`/v1/rollouts/${enc(id)}/events`, (name, data) => { if (name === "rollout") update(data); },
      (on, err) => {
        live.className = on ? "live on" : "live";
        live.textContent = on ? "live" : err ? `not live: ${err.message}` : "reconnecting…";
      });
    stopPage = stop;
    renderRollout.apply = update; // the controls show the answer at once
  }

  const ACTIONS = [
    ["pause", "Pause", (v) => ["pending", "validating", "rolling_out", "monitoring"].includes(v.state)],
    ["resume", "Resume", (v) => v.state === "paused"],
    ["promote", "Promote", (v) => !TERMINAL.includes(v.state) && v.state !== "rolling_back"],
    ["abort", "Abort", (v) => !TERMINAL.includes(v.state)],
    ["rollback", "Roll back", (v) => !TERMINAL.includes(v.state) || (v.state === "completed" && v.rollback_window_until && Date.parse(v.rollback_window_until) > Date.now())],
  ];

  // current() is the latest view of the rollout.
  function controlsView(current) {
    const v = current();
    return h("div", { class: "card controls", id: "controls" }, ACTIONS.map(([action, label, ok]) =>
      h("button", { type: "button", id: `ctl-${action}`, disabled: !ok(v), onclick: () => confirmAction(current(), action, label) }, label)));
  }

  function confirmAction(v, action, label) {
    const dlg = document.getElementById("confirm");
    const reason = document.getElementById("confirm-reason");
    const err = document.getElementById("confirm-error");
    document.getElementById("confirm-title").textContent = `${label} rollout ${v.id}?`;
    document.getElementById("confirm-text").textContent = `Slot ${v.slot}, state ${v.state.replace(/_/g, " ")}, candidate share ${pct(v.share_percent)}.`;
    document.getElementById("confirm-ok").textContent = label;
    reason.value = "";
    err.textContent = "";
    const form = document.getElementById("confirm-form");
    const cancel = document.getElementById("confirm-cancel");
    const done = () => { form.onsubmit = null; cancel.onclick = null; dlg.close(); };
    cancel.onclick = done;
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      const why = reason.value.trim();
      if (!why) { err.textContent = "A reason is required."; return; }
      try {
        const view = await api(`/v1/rollouts/${enc(v.id)}/${action}`, { method: "POST", body: { reason: why } });
        done();
        if (renderRollout.apply) {
          const health = await api(`/v1/rollouts/${enc(v.id)}/health`).catch(() => null);
          renderRollout.apply({ view, health });
        }
      } catch (e) {
        err.textContent = e.message;
      }
    };
    dlg.showModal();
    reason.focus();
  }

  // ------------------------------------------------------------------ slots

  async function renderSlots() {
    const list = items(await api("/v1/slots?limit=100"));
    page("Slots", h("table", { id: "slots" },
      h("thead", {}, h("tr", {}, ["Slot", "Active", "Latest", "Description"].map((t) => h("th", {}, t)))),
      h("tbody", {}, list.map((s) => h("tr", {}, h("td", {}, h("a", { href: `#/slot/${enc(s.name)}` }, s.name)),
        h("td", {}, s.active_version ? `v${s.active_version}` : "–"), h("td", {}, `v${s.latest_version || 0}`), h("td", {}, s.description || ""))))));
  }

  function pretty(doc) { return JSON.stringify(doc, null, 2) || ""; }

  async function renderSlot(name, from, to) {
    const slot = await api(`/v1/slots/${enc(name)}`);
    const versions = items(await api(`/v1/slots/${enc(name)}/versions?limit=100`));
    const latest = slot.latest_version || 0;
    const b = Number(to) || latest;
    const a = Number(from) || Math.max(1, b - 1);
    const pick = (id, sel) => h("select", { id }, versions.map((v) => h("option", { value: v.version, selected: v.version === sel }, `v${v.version}`)));
    const selA = pick("diff-from", a), selB = pick("diff-to", b);
    const go = () => { location.hash = `#/slot/${enc(name)}/${selA.value}/${selB.value}`; };
    selA.addEventListener("change", go); selB.addEventListener("change", go);
    const table = h("table", { id: "versions" },
      h("thead", {}, h("tr", {}, ["Version", "Author", "Message", "Created"].map((t) => h("th", {}, t)))),
      h("tbody", {}, versions.map((v) => h("tr", {}, h("td", {}, `v${v.version}${v.version === slot.active_version ? " (active)" : ""}`),
        h("td", {}, v.author || ""), h("td", {}, v.message || ""), h("td", {}, when(v.created_at))))));
    const content = [h("p", { class: "muted" }, slot.description || ""), h("h2", {}, "Versions"), table];
    if (versions.length > 0 && latest > 0) {
      const [va, vb, diff] = await Promise.all([
        api(`/v1/slots/${enc(name)}/versions/${a}`), api(`/v1/slots/${enc(name)}/versions/${b}`),
        api(`/v1/slots/${enc(name)}/diff?from=${a}&to=${b}`)]);
      const changes = [].concat(
        diff.added.map((c) => h("li", { class: "add" }, `+ ${c.path || "/"}: ${JSON.stringify(c.value)}`)),
        diff.removed.map((c) => h("li", { class: "del" }, `- ${c.path || "/"}: ${JSON.stringify(c.value)}`)),
        diff.changed.map((c) => h("li", { class: "chg" }, `~ ${c.path || "/"}: ${JSON.stringify(c.from)} → ${JSON.stringify(c.to)}`)));
      content.push(h("h2", {}, "Compare ", selA, " with ", selB),
        h("ul", { id: "diff-changes", class: "diff-list" }, changes.length ? changes : [h("li", { class: "muted" }, "identical")]),
        h("div", { class: "diff", id: "diff" }, h("pre", { id: "diff-left" }, pretty(va.document)), h("pre", { id: "diff-right" }, pretty(vb.document))));
    }
    page(`Slot ${name}`, ...content);
  }

  // ------------------------------------------------------------------ snapshots and audit

  async function renderSnapshots() {
    const list = items(await api("/v1/snapshots?limit=100"));
    page("Snapshots", h("table", { id: "snapshots" },
      h("thead", {}, h("tr", {}, ["Id", "Slot", "Version", "Label", "By", "Created"].map((t) => h("th", {}, t)))),
      h("tbody", {}, list.length === 0 ? [h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No snapshot yet."))]
        : list.map((s) => h("tr", {}, h("td", {}, s.id.slice(0, 8)), h("td", {}, h("a", { href: `#/slot/${enc(s.slot)}` }, s.slot)),
          h("td", {}, `v${s.version}`), h("td", {}, s.label || ""), h("td", {}, s.created_by), h("td", {}, when(s.created_at)))))));
  }

  async function renderAudit(cursor) {
    const q = cursor ? `&cursor=${enc(cursor)}` : "";
    const list = await api(`/v1/audit?limit=50${q}`);
    const status = h("div", { class: "card", id: "audit-status" }, "Checking the chain…");
    const more = list.next_cursor ? h("a", { href: `#/audit/${enc(list.next_cursor)}`, id: "audit-more" }, "Older entries →") : null;
    page("Audit log", status, h("table", { id: "audit" },
      h("thead", {}, h("tr", {}, ["#", "At", "Actor", "Action", "Target", "Outcome"].map((t) => h("th", {}, t)))),
      h("tbody", {}, items(list).map((e) => h("tr", {}, h("td", { class: "num" }, String(e.seq)), h("td", {}, when(e.at)),
        h("td", {}, e.actor), h("td", {}, e.action), h("td", {}, e.target),
        h("td", { class: e.outcome === "success" ? "" : "error" }, e.error ? `${e.outcome}: ${e.error}` : String(e.outcome)))))), more);
    try {
      const r = await api("/v1/audit/verify");
      status.replaceChildren(h("span", { class: r.ok ? "verified" : "broken" }, r.ok ? "✔ verified" : "✖ problems found"),
        ` ${r.message} (${r.entries_checked} entries checked${r.incremental ? " since the last verified head" : ""})`);
    } catch (e) {
      status.replaceChildren(h("span", { class: "muted" }, e.status === 403 ? "Verifying the chain needs an admin token." : `Verification unavailable: ${e.message}`));
    }
  }

  // ------------------------------------------------------------------ routing

  async function route() {
    stopPage();
    stopPage = () => {};
    renderRollout.apply = null;
    const parts = (location.hash.replace(/^#\/?/, "") || "rollouts").split("/").map(decodeURIComponent);
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === parts[0] || `${a.dataset.page}` === `${parts[0]}s`);
    if (parts[0] === "signin") { renderSignIn(pendingMessage); pendingMessage = ""; return; }
    try {
      if (!who) await whoAmI();
      switch (parts[0]) {
        case "rollout": await renderRollout(parts[1]); break;
        case "slots": await renderSlots(); break;
        case "slot": await renderSlot(parts[1], parts[2], parts[3]); break;
        case "snapshots": await renderSnapshots(); break;
        case "audit": await renderAudit(parts[1]); break;
        default: await renderRollouts();
      }
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) { signOut(token() ? `Your token was refused: ${e.message}` : ""); return; }
      showError(e);
    }
  }

  document.getElementById("signout").addEventListener("click", () => signOut("Signed out."));
  window.addEventListener("hashchange", route);
  route();
})();
