// sipwasm operator dashboard: polls the control API (/api/v1/…) once a second and
// shows counts, rates, charts of the last 10 minutes, registrations, flows, plugins,
// dialogs and the drain mode. Plain ES2020, no library, nothing from elsewhere (the
// page is served with `Content-Security-Policy: default-src 'self'`).
//
// Every value shown comes from the server and, through it, from SIP clients: it only
// ever goes into the page as text (textContent, attributes), never as markup.
"use strict";

(() => {
  const POLL_MS = 1000;
  const MAX_BACKOFF_MS = 5000;
  const REQUEST_TIMEOUT_MS = 5000;
  const WINDOW_MS = 10 * 60 * 1000;
  const TOKEN_KEY = "sipwasm.admin.token";
  const ENDPOINTS = [
    "/api/v1/status",
    "/api/v1/registrations?limit=500",
    "/api/v1/flows?limit=500",
    "/api/v1/plugins",
    "/api/v1/dialogs?limit=200",
    "/api/v1/drain",
  ];
  const CLASSES = ["2xx", "3xx", "4xx", "5xx", "6xx"];
  const COLORS = {
    flows: "#2563eb",
    bindings: "#059669",
    dialogs: "#d97706",
    requests: "#7c3aed",
    "2xx": "#16a34a",
    "3xx": "#0891b2",
    "4xx": "#d97706",
    "5xx": "#dc2626",
    "6xx": "#6b21a8",
  };

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- formatting

  const dash = "—";
  const num = (n) => (typeof n === "number" && Number.isFinite(n) ? n.toLocaleString("en-US") : dash);
  const rate = (r) => (r == null ? dash : r < 10 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US"));
  const ms = (v) => (v == null ? dash : v.toFixed(v < 10 ? 3 : 1));

  function duration(s) {
    if (typeof s !== "number" || !Number.isFinite(s)) return dash;
    s = Math.max(0, Math.floor(s));
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = s % 60;
    if (d) return `${d}d ${h}h ${m}m`;
    if (h) return `${h}h ${m}m ${sec}s`;
    if (m) return `${m}m ${sec}s`;
    return `${sec}s`;
  }

  function bytes(n) {
    if (typeof n !== "number") return dash;
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) {
      n /= 1000;
      i++;
    }
    return i ? `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}` : `${n} B`;
  }

  const clock = (unix) => (unix ? new Date(unix * 1000).toLocaleTimeString() : dash);

  // ---------------------------------------------------------------- the token

  function storage(op, value) {
    try {
      if (op === "get") return sessionStorage.getItem(TOKEN_KEY) || "";
      if (op === "set") sessionStorage.setItem(TOKEN_KEY, value);
      if (op === "del") sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Storage refused (private mode, policy): the token lives in this page only.
    }
    return "";
  }

  // `#token=…` in the address (then taken out of it).
  function tokenFromAddress() {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (m) {
      let t = m[1];
      try {
        t = decodeURIComponent(t);
      } catch (_) {
        // Not percent-encoded: as written.
      }
      history.replaceState(null, "", location.pathname + location.search);
      if (t) {
        storage("set", t);
        return t;
      }
    }
    return "";
  }

  let token = "";

  // ---------------------------------------------------------------- the API

  async function api(method, path, body) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
    const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    try {
      const res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
        signal: ctl.signal,
      });
      const text = await res.text();
      let data = null;
      try {
        data = text ? JSON.parse(text) : null;
      } catch (_) {
        data = null;
      }
      if (!res.ok) {
        const msg = (data && typeof data.error === "string" && data.error) || text.trim() || `HTTP ${res.status}`;
        const err = new Error(`${res.status}: ${msg}`);
        err.status = res.status;
        err.data = data;
        throw err;
      }
      return data;
    } catch (e) {
      if (e && e.name === "AbortError") throw new Error(`${method} ${path}: no answer in ${REQUEST_TIMEOUT_MS / 1000} s`);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  // ---------------------------------------------------------------- toasts, banner

  function toast(text, kind = "ok") {
    const el = document.createElement("div");
    el.className = `toast toast-${kind}`;
    el.textContent = text;
    $("toasts").append(el);
    setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
  }

  let lastOk = 0;

  function setOnline(ok, err) {
    const banner = $("banner");
    document.body.classList.toggle("stale", !ok);
    if (ok) {
      banner.hidden = true;
      lastOk = Date.now();
      $("h-updated").textContent = `updated ${new Date(lastOk).toLocaleTimeString()}`;
      return;
    }
    const since = lastOk ? ` Last update ${new Date(lastOk).toLocaleTimeString()}.` : "";
    const why = err && err.message ? ` (${err.message})` : "";
    banner.textContent = `Connection to the server lost${why}. Retrying…${since}`;
    banner.hidden = false;
  }

  // ---------------------------------------------------------------- tables

  // A table section: its body, search box, count and empty-state line.
  function tableOf(sectionId) {
    const s = $(sectionId);
    const t = {
      body: s.querySelector("tbody"),
      filter: s.querySelector("input.filter"),
      count: s.querySelector(".count"),
      empty: s.querySelector(".empty"),
      noun: "rows",
      total: null,
    };
    if (t.filter) t.filter.addEventListener("input", () => applyFilter(t));
    return t;
  }

  function setCell(td, v) {
    const o = v !== null && typeof v === "object" ? v : { text: v };
    const text = o.text == null || o.text === "" ? dash : String(o.text);
    if (td.textContent !== text) td.textContent = text;
    const title = o.title || "";
    if (td.title !== title) td.title = title;
    const cls = `${o.num ? "num" : ""} ${o.cls || ""}`.trim();
    if (td.className !== cls) td.className = cls;
  }

  // Brings `t`'s rows in line with `items`, reusing the row of each key (so focus,
  // selection and buttons survive a refresh). `cells(item)` gives the data cells;
  // `make(item, tr)` may add more (buttons) after them, once, when the row is made.
  function syncRows(t, items, key, cells, make) {
    const old = new Map();
    for (const tr of Array.from(t.body.rows)) old.set(tr.dataset.key, tr);
    const seen = new Map();
    let prev = null;
    for (const it of items) {
      let k = String(key(it));
      const n = seen.get(k) || 0;
      seen.set(k, n + 1);
      if (n) k += `#${n}`;
      const values = cells(it);
      let tr = old.get(k);
      if (tr) {
        old.delete(k);
      } else {
        tr = document.createElement("tr");
        tr.dataset.key = k;
        for (let i = 0; i < values.length; i++) tr.insertCell();
        if (make) make(it, tr);
      }
      values.forEach((v, i) => setCell(tr.cells[i], v));
      tr.searchText = values
        .map((v) => (v !== null && typeof v === "object" ? `${v.text} ${v.title || ""}` : String(v)))
        .join("\n")
        .toLowerCase();
      const next = prev ? prev.nextSibling : t.body.firstChild;
      if (next !== tr) t.body.insertBefore(tr, next);
      prev = tr;
    }
    for (const tr of old.values()) tr.remove();
    applyFilter(t);
  }

  function applyFilter(t) {
    const q = t.filter ? t.filter.value.trim().toLowerCase() : "";
    let shown = 0;
    const rows = t.body.rows;
    for (const tr of rows) {
      const hide = q !== "" && !(tr.searchText || "").includes(q);
      if (tr.hidden !== hide) tr.hidden = hide;
      if (!hide) shown++;
    }
    if (t.count) {
      const all = t.total != null && t.total > rows.length ? ` (first ${num(rows.length)} of ${num(t.total)})` : "";
      const noun = rows.length === 1 ? t.noun.replace(/s$/, "") : t.noun;
      t.count.textContent = q ? `${num(shown)} of ${num(rows.length)} ${noun}${all}` : `${num(rows.length)} ${noun}${all}`;
    }
    if (t.empty) {
      t.empty.hidden = shown > 0;
      t.empty.textContent = rows.length ? "Nothing matches the search." : t.emptyText || `No ${t.noun}.`;
    }
  }

  function button(label, cls, onClick, aria) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `btn btn-small ${cls}`;
    b.textContent = label;
    if (aria) b.setAttribute("aria-label", aria);
    b.addEventListener("click", () => onClick(b));
    return b;
  }

  // Runs an action of a button: disabled meanwhile, the answer as a toast, then a refresh.
  async function act(btn, run, done) {
    if (btn) btn.disabled = true;
    try {
      const res = await run();
      if (done) toast(done(res));
    } catch (e) {
      if (e && e.status === 401) return askToken("The token was refused (401).");
      toast(e && e.message ? e.message : String(e), "error");
    } finally {
      if (btn && btn.isConnected) btn.disabled = false;
    }
    refreshNow();
  }

  // ---------------------------------------------------------------- the tables' content

  const T = {};
  const reloadResults = new Map();

  function renderRegistrations(data) {
    const t = T.reg;
    t.total = data.total;
    const items = [];
    for (const r of data.registrations || []) {
      for (const b of r.bindings || []) items.push({ aor: r.aor, b });
    }
    syncRows(
      t,
      items,
      (x) => `${x.aor}\u0000${x.b.id}`,
      ({ aor, b }) => {
        const via = b.reach === "flow" && b.flow != null ? ` (flow ${b.flow})` : "";
        return [
          aor,
          b.contact,
          b.transport,
          b.source ? `${b.source}${via}` : b.reach,
          { text: duration(b.expires_in), num: true },
          b.user_agent,
          { text: b.id, num: true },
        ];
      },
      ({ aor, b }, tr) => {
        tr.className = "registration";
        tr.setAttribute("data-aor", aor);
        tr.setAttribute("data-binding-id", String(b.id));
        const id = b.id;
        tr.insertCell().append(
          button("remove", "btn-danger remove-binding", (btn) => {
            if (!confirm(`Remove binding ${id} of ${aor}?`)) return;
            act(
              btn,
              () => api("DELETE", `/api/v1/registrations/${encodeURIComponent(aor)}/bindings/${encodeURIComponent(id)}`),
              () => `binding ${id} of ${aor} removed`,
            );
          }, `Remove binding ${id} of ${aor}`),
        );
      },
    );
  }

  const closing = new Set();

  function renderFlows(data) {
    const list = data.flows || [];
    T.flows.total = data.total;
    const ids = new Set(list.map((f) => String(f.id)));
    for (const id of closing) if (!ids.has(id)) closing.delete(id);
    for (const tr of T.flows.body.rows) tr.classList.toggle("closing", closing.has(tr.dataset.key));
    syncRows(
      T.flows,
      list,
      (f) => f.id,
      (f) => {
        const identity = Object.entries(f.identity || {}).map(([k, v]) => `${k}=${v}`).join(", ");
        return [
          { text: f.id, num: true },
          f.outgoing ? `${f.transport} (out)` : f.transport,
          { text: f.remote, title: f.local ? `local ${f.local}` : "" },
          { text: identity, title: f.identity_enforced ? "identity enforced" : "" },
          { text: duration(f.age_seconds), num: true },
          { text: bytes(f.bytes_in), num: true },
          { text: bytes(f.bytes_out), num: true },
          { text: num(f.messages_in), num: true },
          { text: num(f.messages_out), num: true },
        ];
      },
      (f, tr) => {
        const id = String(f.id);
        tr.className = "flow";
        tr.setAttribute("data-flow-id", id);
        const b = button("close", "close-flow", (btn) => {
          closing.add(id);
          tr.classList.add("closing");
          const close = () =>
            api("POST", `/api/v1/flows/${encodeURIComponent(id)}/close`, { reason: "closed from the dashboard" }).catch((e) => {
              closing.delete(id);
              tr.classList.remove("closing");
              throw e;
            });
          act(btn, close, () => `flow ${id} closed`);
        }, `Close flow ${id}`);
        b.setAttribute("data-flow-id", id);
        tr.insertCell().append(b);
      },
    );
  }

  function renderPlugins(data) {
    syncRows(
      T.plugins,
      data.plugins || [],
      (p) => p.name,
      (p) => {
        const last = reloadResults.get(p.name);
        return [
          p.name,
          p.world,
          p.source,
          { text: p.hash ? String(p.hash).slice(0, 12) : "", title: p.hash ? `${p.hash}, loaded ${clock(p.loaded_unix)}` : "" },
          { text: num(p.calls), num: true },
          { text: num(p.failures), num: true, cls: p.failures ? "bad" : "" },
          { text: ms(p.p50_ms), num: true },
          { text: ms(p.p99_ms), num: true },
          p.suspended ? { text: "suspended", cls: "badge-cell badge-warn" } : { text: "active", cls: "muted nowrap" },
          last ? { text: last.text, title: last.title, cls: last.ok ? "" : "bad" } : "",
        ];
      },
      (p, tr) => {
        const name = p.name;
        tr.className = "plugin";
        tr.setAttribute("data-plugin", name);
        tr.insertCell().append(
          button("reload", "reload-plugin", (btn) => {
            btn.disabled = true;
            api("POST", `/api/v1/plugins/${encodeURIComponent(name)}/reload`)
              .then(() => {
                reloadResults.set(name, { ok: true, text: `reloaded ${new Date().toLocaleTimeString()}` });
                toast(`plugin ${name} reloaded`);
              })
              .catch((e) => {
                if (e && e.status === 401) return askToken("The token was refused (401).");
                const msg = (e.data && e.data.error) || e.message;
                reloadResults.set(name, { ok: false, text: `failed ${new Date().toLocaleTimeString()}`, title: msg });
                toast(`reload of ${name} failed, the old version stays: ${msg}`, "error");
              })
              .finally(() => {
                if (btn.isConnected) btn.disabled = false;
                refreshNow();
              });
          }, `Reload plugin ${name}`),
        );
      },
    );
  }

  function renderDialogs(data) {
    T.dialogs.total = data.count;
    syncRows(
      T.dialogs,
      data.dialogs || [],
      (d) => `${d.call_id}\u0000${d.from}\u0000${d.to}`,
      (d) => [d.call_id, d.from, d.to, { text: duration(d.age_seconds), num: true }],
    );
  }

  function renderDrain(d) {
    const parts = d.draining
      ? [
          `Draining since ${clock(d.since_unix)}${d.exit_when_empty ? ", exits when empty" : ""}.`,
          `Left: ${num(d.flows)} flows, ${num(d.dialogs)} dialogs, ${num(d.transactions)} transactions;`,
          `${num(d.refused_connections)} connections refused.${d.empty ? " Empty." : ""}`,
        ]
      : ["Not draining: new connections and dialogs are taken."];
    $("drain-state").textContent = parts.join(" ");
    $("drain-start").disabled = !!d.draining;
    $("drain-stop").disabled = !d.draining;
  }

  // ---------------------------------------------------------------- status, rates, samples

  const samples = [];
  let prev = null;

  function perSecond(cur, old, dt) {
    const out = {};
    for (const [k, v] of Object.entries(cur || {})) out[k] = Math.max(0, v - ((old && old[k]) || 0)) / dt;
    return out;
  }

  const sum = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);

  function takeSample(st) {
    const now = Date.now();
    const c = st.counters || {};
    let rates = null;
    if (prev && prev.started === st.started_unix && now - prev.t >= 200) {
      const dt = (now - prev.t) / 1000;
      rates = {
        req: perSecond(c.requests, prev.c.requests, dt),
        resp: perSecond(c.responses, prev.c.responses, dt),
        sipIn: Math.max(0, (c.sip_in || 0) - (prev.c.sip_in || 0)) / dt,
        sipOut: Math.max(0, (c.sip_out || 0) - (prev.c.sip_out || 0)) / dt,
      };
    } else if (prev && now - prev.t < 200) {
      return samples.length ? samples[samples.length - 1] : null; // a refresh right after a poll
    }
    prev = { t: now, started: st.started_unix, c };
    const reg = st.registrations || {};
    const s = { t: now, flows: st.flows, bindings: reg.bindings, dialogs: st.dialogs, rates };
    samples.push(s);
    while (samples.length && (samples[0].t < now - WINDOW_MS - 5000 || samples.length > 1500)) samples.shift();
    return s;
  }

  function renderStatus(st) {
    $("h-version").textContent = st.version || dash;
    const commit = st.commit || "";
    $("h-commit").textContent = commit ? commit.slice(0, 12) : dash;
    $("h-commit").title = commit;
    $("h-node").textContent = st.node || dash;
    $("h-uptime").textContent = duration(st.uptime_seconds);
    $("h-draining").hidden = !st.draining;
    const reg = st.registrations || {};
    const tx = st.transactions || {};
    $("c-flows").textContent = num(st.flows);
    $("c-aors").textContent = num(reg.aors);
    $("c-bindings").textContent = num(reg.bindings);
    $("c-dialogs").textContent = num(st.dialogs);
    $("c-stx").textContent = num(tx.server);
    $("c-ctx").textContent = num(tx.client);

    const s = takeSample(st);
    const r = s && s.rates;
    $("c-sipin").textContent = rate(r && r.sipIn);
    $("c-sipout").textContent = rate(r && r.sipOut);
    $("c-req").textContent = rate(r && sum(r.req));
    $("c-resp").textContent = rate(r && sum(r.resp));

    const c = st.counters || {};
    const methods = Object.keys(c.requests || {}).sort();
    syncRows(T.methods, methods, (m) => m, (m) => [m, { text: rate(r && (r.req[m] || 0)), num: true }, { text: num(c.requests[m]), num: true }]);
    const classes = Object.keys(c.responses || {}).sort();
    syncRows(T.classes, classes, (k) => k, (k) => [k, { text: rate(r && (r.resp[k] || 0)), num: true }, { text: num(c.responses[k]), num: true }]);
  }

  // ---------------------------------------------------------------- charts

  function niceScale(max, integer) {
    if (!(max > 0)) return { top: integer ? 4 : 1, step: integer ? 1 : 0.25 };
    const raw = max / 4;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const norm = raw / mag;
    let step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
    if (integer) step = Math.max(1, Math.round(step));
    return { top: step * Math.ceil(max / step), step };
  }

  function axisNumber(v) {
    if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
    if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
    return String(+v.toFixed(2));
  }

  // Draws `series` ([{label, color, points: [[t, v], …]}]) over the last 10 minutes.
  function drawChart(canvas, series, yTitle, integer) {
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (!w || !h) return;
    const dpr = window.devicePixelRatio || 1;
    const W = Math.round(w * dpr);
    const H = Math.round(h * dpr);
    if (canvas.width !== W || canvas.height !== H) {
      canvas.width = W;
      canvas.height = H;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
    ctx.lineJoin = "round";

    // The legend (with the latest values) on top, wrapping as needed.
    let lx = 48;
    let ly = 10;
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    for (const s of series) {
      const last = s.points.length ? s.points[s.points.length - 1][1] : null;
      const label = `${s.label} ${last == null ? dash : integer ? num(last) : rate(last)}`;
      const width = 14 + ctx.measureText(label).width + 14;
      if (lx + width > w - 8 && lx > 48) {
        lx = 48;
        ly += 16;
      }
      ctx.fillStyle = s.color;
      ctx.fillRect(lx, ly - 4, 10, 8);
      ctx.fillStyle = "#1d2530";
      ctx.fillText(label, lx + 14, ly);
      lx += width;
    }

    const pad = { l: 48, r: 12, t: ly + 14, b: 22 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    if (pw < 20 || ph < 20) return;
    const now = Date.now();
    const t0 = now - WINDOW_MS;
    let max = 0;
    for (const s of series) for (const [t, v] of s.points) if (t >= t0 && v > max) max = v;
    const { top, step } = niceScale(max, integer);
    const X = (t) => pad.l + ((t - t0) / WINDOW_MS) * pw;
    const Y = (v) => pad.t + ph - (v / top) * ph;

    // Grid and axes.
    ctx.strokeStyle = "#e3e7ec";
    ctx.lineWidth = 1;
    ctx.fillStyle = "#5b6470";
    ctx.textAlign = "right";
    for (let v = 0; v <= top + step / 2; v += step) {
      const y = Math.round(Y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.l, y);
      ctx.lineTo(pad.l + pw, y);
      ctx.stroke();
      ctx.fillText(axisNumber(v), pad.l - 6, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let m = 10; m >= 0; m -= pw < 360 ? 5 : 2) {
      const x = Math.round(X(now - m * 60000)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, pad.t + ph);
      ctx.lineTo(x, pad.t + ph + 4);
      ctx.stroke();
      ctx.fillText(m ? `−${m} min` : "now", Math.min(Math.max(x, pad.l + 14), w - 16), pad.t + ph + 6);
    }
    ctx.save();
    ctx.translate(11, pad.t + ph / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textBaseline = "middle";
    ctx.fillText(yTitle, 0, 0);
    ctx.restore();

    // The lines; a gap of more than 5 s between samples (the server unreachable) breaks them.
    ctx.save();
    ctx.beginPath();
    ctx.rect(pad.l, pad.t - 2, pw, ph + 4);
    ctx.clip();
    ctx.lineWidth = 1.75;
    for (const s of series) {
      ctx.strokeStyle = s.color;
      ctx.beginPath();
      let lastT = -Infinity;
      for (const [t, v] of s.points) {
        if (t < t0 - 5000) continue;
        if (t - lastT > 5000) ctx.moveTo(X(t), Y(v));
        else ctx.lineTo(X(t), Y(v));
        lastT = t;
      }
      ctx.stroke();
    }
    ctx.restore();
  }

  function points(get) {
    const out = [];
    for (const s of samples) {
      const v = get(s);
      if (typeof v === "number" && Number.isFinite(v)) out.push([s.t, v]);
    }
    return out;
  }

  function drawCharts() {
    if ($("main").hidden) return;
    drawChart(
      $("chart-load"),
      ["flows", "bindings", "dialogs"].map((k) => ({ label: k, color: COLORS[k], points: points((s) => s[k]) })),
      "count",
      true,
    );
    drawChart(
      $("chart-req"),
      [{ label: "requests/s", color: COLORS.requests, points: points((s) => s.rates && sum(s.rates.req)) }],
      "per second",
      false,
    );
    drawChart(
      $("chart-resp"),
      CLASSES.map((k) => ({ label: k, color: COLORS[k], points: points((s) => s.rates && (s.rates.resp[k] || 0)) })),
      "per second",
      false,
    );
  }

  let resizeFrame = 0;
  window.addEventListener("resize", () => {
    cancelAnimationFrame(resizeFrame);
    resizeFrame = requestAnimationFrame(drawCharts);
  });

  // ---------------------------------------------------------------- polling

  let running = false;
  let inFlight = false;
  let again = false;
  let timer = 0;
  let failures = 0;

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(poll, delay);
  }

  // A refresh as soon as the poll under way (if any) is done.
  function refreshNow() {
    if (!running) return;
    if (inFlight) again = true;
    else schedule(0);
  }

  async function poll() {
    timer = 0;
    if (!running || inFlight) return;
    inFlight = true;
    again = false;
    let delay = POLL_MS;
    try {
      // The status first (when it fails, so would the rest), then the others; all
      // settled: the next poll starts only once each of these is over.
      const first = await Promise.allSettled([api("GET", ENDPOINTS[0])]);
      const rest = first[0].status === "fulfilled" ? await Promise.allSettled(ENDPOINTS.slice(1).map((p) => api("GET", p))) : [];
      const results = first.concat(rest);
      if (!running) return;
      const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason);
      if (failed.some((e) => e && e.status === 401)) {
        askToken("The token was refused (401). Enter the admin token.");
        return;
      }
      if (failed.length) throw failed[0];
      const [status, regs, flows, plugins, dialogs, drain] = results.map((r) => r.value || {});
      renderStatus(status);
      renderRegistrations(regs);
      renderFlows(flows);
      renderPlugins(plugins);
      renderDialogs(dialogs);
      renderDrain(drain);
      drawCharts();
      failures = 0;
      setOnline(true);
    } catch (e) {
      failures++;
      setOnline(false, e);
      drawCharts();
      delay = Math.min(MAX_BACKOFF_MS, POLL_MS * 2 ** Math.min(failures - 1, 4));
    } finally {
      inFlight = false;
    }
    if (running) schedule(again ? 0 : delay);
  }

  function start(t) {
    token = t;
    running = true;
    failures = 0;
    $("login").hidden = true;
    $("main").hidden = false;
    $("logout").hidden = false;
    schedule(0);
  }

  function stop() {
    running = false;
    clearTimeout(timer);
    timer = 0;
  }

  function askToken(message) {
    stop();
    token = "";
    storage("del");
    $("banner").hidden = true;
    document.body.classList.remove("stale");
    $("main").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    const msg = $("login-msg");
    msg.textContent = message || "";
    msg.hidden = !message;
    const input = $("login-token");
    input.value = "";
    input.focus();
  }

  // ---------------------------------------------------------------- wiring

  function init() {
    T.reg = Object.assign(tableOf("s-reg"), { noun: "bindings" });
    T.flows = Object.assign(tableOf("s-flows"), { noun: "flows" });
    T.plugins = Object.assign(tableOf("s-plugins"), { noun: "plugins" });
    T.dialogs = Object.assign(tableOf("s-dialogs"), { noun: "dialogs" });
    for (const [k, id, emptyText] of [
      ["methods", "t-methods", "No requests yet."],
      ["classes", "t-classes", "No responses yet."],
    ]) {
      const table = $(id);
      T[k] = { body: table.tBodies[0], filter: null, count: null, empty: table.parentElement.querySelector(".empty"), emptyText };
    }

    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("login-token").value.trim();
      if (!t) return;
      if (/[^\x20-\x7e]/.test(t)) {
        $("login-msg").textContent = "A token is printable ASCII.";
        $("login-msg").hidden = false;
        return;
      }
      storage("set", t);
      $("login-token").value = "";
      start(t);
    });
    $("logout").addEventListener("click", () => askToken("Token forgotten. Enter it again to reconnect."));

    $("drain-start").addEventListener("click", (ev) => {
      if (!confirm("Drain this server? New connections and new dialogs will be refused; those in progress go on.")) return;
      act(ev.currentTarget, () => api("POST", "/api/v1/drain", {}), () => "draining");
    });
    $("drain-stop").addEventListener("click", (ev) => {
      act(ev.currentTarget, () => api("DELETE", "/api/v1/drain"), () => "drain mode off");
    });

    // A link with `#token=…` followed while the page is open (same document).
    window.addEventListener("hashchange", () => {
      const t = tokenFromAddress();
      if (t) {
        stop();
        start(t);
      }
    });

    const t = tokenFromAddress() || storage("get");
    if (t) start(t);
    else askToken("");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
