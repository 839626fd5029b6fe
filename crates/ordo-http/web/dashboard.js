// The dashboard: one page of orders (filters, search, sort, paging, all in the page's
// URL), the summary, top customers and the last 30 days as charts, and the projections'
// state. Refreshes itself from the live event stream.
"use strict";

(() => {
  const { api, el, replace, problemText, money, amount } = ordo;
  const $ = (id) => document.getElementById(id);

  const FILTERS = ["status", "customerEmail", "minTotal", "maxTotal", "createdFrom", "createdTo"];
  const SORTS = ["-createdAt", "createdAt", "-totalAmount", "totalAmount"];
  const DATE = /^\d{4}-\d{2}-\d{2}$/;
  const LIMIT = 20;
  const TOKEN_KEY = "ordo.adminToken";

  /** The view: what the page URL's query string says. */
  let view = readUrl();
  let listRequest = null;

  function readUrl() {
    const p = new URLSearchParams(location.search);
    const v = { q: (p.get("q") || "").slice(0, 200), sort: p.get("sort") || "-createdAt", page: Number(p.get("page")) || 1 };
    if (!SORTS.includes(v.sort)) v.sort = "-createdAt";
    if (!Number.isInteger(v.page) || v.page < 1) v.page = 1;
    for (const name of FILTERS) v[name] = p.get(name) || "";
    for (const name of ["createdFrom", "createdTo"]) if (!DATE.test(v[name])) v[name] = "";
    return v;
  }

  function urlOf(v) {
    const p = new URLSearchParams();
    if (v.q) p.set("q", v.q);
    for (const name of FILTERS) if (v[name]) p.set(name, v[name]);
    if (v.sort !== "-createdAt") p.set("sort", v.sort);
    if (v.page > 1) p.set("page", String(v.page));
    const s = p.toString();
    return location.pathname + (s ? `?${s}` : "");
  }

  /** The API request for a view: search when there is a term, else the filtered list. */
  function apiPathOf(v) {
    const p = new URLSearchParams();
    if (v.q) {
      p.set("q", v.q);
    } else {
      for (const name of ["status", "customerEmail", "minTotal", "maxTotal"]) if (v[name]) p.set(name, v[name]);
      if (v.createdFrom) p.set("createdFrom", `${v.createdFrom}T00:00:00Z`);
      if (v.createdTo) p.set("createdTo", `${v.createdTo}T23:59:59.999Z`);
    }
    p.set("sort", v.sort);
    p.set("page", String(v.page));
    p.set("limit", String(LIMIT));
    return (v.q ? "/api/v1/orders/search?" : "/api/v1/orders?") + p.toString();
  }

  function fillForm(v) {
    $("q").value = v.q;
    for (const name of FILTERS) $(name).value = v[name];
    $("sort").value = v.sort;
    $("list-filters").disabled = Boolean(v.q);
    $("search-note").hidden = !v.q;
    for (const th of document.querySelectorAll("th[data-sort]")) {
      const key = th.dataset.sort;
      th.setAttribute("aria-sort", v.sort === key ? "ascending" : v.sort === `-${key}` ? "descending" : "none");
    }
  }

  function formView() {
    const v = { q: $("q").value.trim(), sort: $("sort").value, page: 1 };
    for (const name of FILTERS) v[name] = $(name).value.trim();
    return v;
  }

  /** Shows a new view: the URL first (so it can be shared), then its orders. */
  function go(v, push = true) {
    view = v;
    const url = urlOf(v);
    if (url !== location.pathname + location.search) {
      if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
    }
    fillForm(v);
    loadOrders();
  }

  async function loadOrders(token) {
    if (listRequest) listRequest.abort();
    const controller = new AbortController();
    listRequest = controller;
    const tbody = document.querySelector("#orders tbody");
    $("orders").setAttribute("aria-busy", "true");
    let answer;
    try {
      answer = await query(apiPathOf(view), token, controller.signal);
    } catch (_) {
      return; // superseded by a newer request
    }
    if (listRequest !== controller) return;
    listRequest = null;
    $("orders").removeAttribute("aria-busy");
    if (!answer.ok) {
      replace(tbody);
      $("list-message").textContent = problemText(answer.problem);
      $("list-message").dataset.kind = "error";
      pager(0, 1);
      return;
    }
    const { orders, total } = answer.body;
    replace(tbody, orders.map(row));
    const pages = Math.max(1, Math.ceil(total / LIMIT));
    $("list-message").dataset.kind = "";
    $("list-message").textContent = total === 0
      ? (view.q ? `No order matches “${view.q}”.` : "No orders match these filters.")
      : `${total.toLocaleString()} ${total === 1 ? "order" : "orders"}${view.q ? ` matching “${view.q}”` : ""}.`;
    pager(total, pages);
  }

  function row(o) {
    return el("tr", null,
      el("td", null, el("a", { href: `/orders/${encodeURIComponent(o.orderId)}`, class: "mono", title: o.orderId }, ordo.shortId(o.orderId))),
      el("td", null, el("div", null, o.customerName ?? "(erased)"), el("div", { class: "sub" }, o.customerEmail ?? "")),
      el("td", null, ordo.statusBadge(o.status)),
      el("td", { class: "num" }, money(o.totalAmount, o.currency)),
      el("td", null, ordo.time(o.createdAt)));
  }

  function pager(total, pages) {
    $("page-info").textContent = total === 0 ? "" : `Page ${view.page.toLocaleString()} of ${pages.toLocaleString()}`;
    $("prev").disabled = view.page <= 1;
    $("next").disabled = view.page >= pages;
  }

  function consistency(token) {
    return token ? { "X-Consistency-Token": token, "X-Consistency-Timeout-Ms": "5000" } : {};
  }

  /** A query that waits for the read models to include `token`; when they do not catch
   * up in time (503), the answer they can give now. */
  async function query(path, token, signal) {
    const answer = await api(path, { signal, headers: consistency(token) });
    if (token && (answer.status === 503 || answer.status === 400)) return api(path, { signal });
    return answer;
  }

  async function loadSummary(token) {
    const answer = await query("/api/v1/orders/summary", token);
    $("status-chart").removeAttribute("aria-busy");
    if (!answer.ok) {
      replace($("status-chart"), el("p", { class: "message", "data-kind": "error" }, problemText(answer.problem)));
      return;
    }
    const s = answer.body;
    $("total-orders").textContent = Number(s.totalOrders).toLocaleString();
    $("total-revenue").textContent = money(s.totalRevenue);
    $("average-order").textContent = money(s.averageOrderValue);
    replace($("last-updated"), s.lastUpdated ? ordo.time(s.lastUpdated) : "never");
    const counts = s.ordersByStatus || {};
    replace($("status-chart"), ordo.barsChart({
      title: "Orders by status",
      valueHeading: "Orders",
      items: ordo.STATUSES.map((status) => ({ label: status, value: Number(counts[status]) || 0, text: String(Number(counts[status]) || 0), className: `status-${status}` })),
    }));
  }

  async function loadTopCustomers(token) {
    const answer = await query("/api/v1/orders/top-customers?limit=10", token);
    $("top-chart").removeAttribute("aria-busy");
    if (!answer.ok) {
      replace($("top-chart"), el("p", { class: "message", "data-kind": "error" }, problemText(answer.problem)));
      return;
    }
    replace($("top-chart"), ordo.barsChart({
      title: "Top customers by total spent",
      valueHeading: "Total spent",
      emptyText: "No customers yet.",
      items: answer.body.customers.map((c) => ({
        label: c.customerName || c.customerEmail || "(erased)",
        value: Number(c.totalSpent) || 0,
        text: `${money(c.totalSpent)} (${c.orderCount} ${c.orderCount === 1 ? "order" : "orders"})`,
      })),
    }));
  }

  async function loadDaily(token) {
    const answer = await query("/api/v1/orders/daily?days=30", token);
    const box = $("daily-chart");
    box.removeAttribute("aria-busy");
    if (answer.status === 404) {
      replace(box, el("p", { class: "empty" }, "This server does not offer daily figures."));
      return;
    }
    if (!answer.ok) {
      replace(box, el("p", { class: "message", "data-kind": "error" }, problemText(answer.problem)));
      return;
    }
    const days = answer.body.days || [];
    const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
    const tick = (d) => {
      const day = new Date(`${d.date}T00:00:00Z`);
      return Number.isNaN(day.getTime()) ? d.date : dayFormat.format(day);
    };
    replace(box,
      el("div", null, el("h3", null, "Orders per day"), ordo.columnsChart({
        title: `Orders per day, ${answer.body.from} to ${answer.body.to}`,
        valueHeading: "Orders",
        tickEvery: 7,
        points: days.map((d) => ({ label: d.date, tick: tick(d), value: Number(d.orders) || 0, text: String(d.orders) })),
      })),
      el("div", null, el("h3", null, "Revenue per day"), ordo.columnsChart({
        title: `Revenue per day, ${answer.body.from} to ${answer.body.to}`,
        valueHeading: "Revenue",
        tickEvery: 7,
        className: "revenue",
        points: days.map((d) => ({ label: d.date, tick: tick(d), value: Number(d.revenue) || 0, text: amount(d.revenue) })),
      })));
  }

  /** Projection state from /ready and /metrics (both open without a token). */
  async function loadProjections() {
    const [ready, metrics] = await Promise.all([api("/ready"), api("/metrics", { headers: { Accept: "text/plain" } })]);
    const message = $("ready");
    if (ready.ok) {
      message.textContent = ready.body?.projections === "elsewhere"
        ? "Ready: the stores answer. The projections run in other processes; this one answers from the read models they keep."
        : "Ready: the stores answer and the projections run.";
      message.dataset.kind = "ok";
    } else {
      message.textContent = `Not ready: ${problemText(ready.problem)}`;
      message.dataset.kind = "error";
    }
    const tbody = document.querySelector("#projections tbody");
    if (!metrics.ok || typeof metrics.body !== "string") {
      replace(tbody, el("tr", null, el("td", { colspan: 4 }, "Metrics are unavailable.")));
      return;
    }
    const samples = parseMetrics(metrics.body);
    const names = [...new Set(Object.values(samples).flatMap((m) => [...m.keys()]))].sort();
    replace(tbody, names.length ? names.map((name) => {
      const lag = samples.ordo_projection_lag_seconds?.get(name);
      const parked = samples.ordo_projection_parked_events?.get(name);
      return el("tr", null,
        el("th", { scope: "row" }, name),
        el("td", { class: "num" }, (samples.ordo_projection_position?.get(name) ?? 0).toLocaleString()),
        el("td", { class: "num" }, lag === undefined ? "–" : `${lag.toFixed(lag < 10 ? 2 : 0)} s`),
        // A process that runs no projection reports no parked events: "–", not 0.
        el("td", { class: "num", "data-kind": parked ? "error" : "" }, parked === undefined ? "–" : String(parked)));
    }) : el("tr", null, el("td", { colspan: 4 }, "No projection reported.")));
  }

  /** {metric: Map(projection → value)} for the projection gauges in Prometheus text. */
  function parseMetrics(text) {
    const wanted = ["ordo_projection_position", "ordo_projection_lag_seconds", "ordo_projection_parked_events"];
    const out = {};
    for (const line of text.split("\n")) {
      const m = /^([a-z_]+)\{projection="([^"]*)"\}\s+(\S+)$/.exec(line.trim());
      if (!m || !wanted.includes(m[1])) continue;
      (out[m[1]] ||= new Map()).set(m[2], Number(m[3]));
    }
    return out;
  }

  async function loadAdmin() {
    const box = $("admin-details");
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) { replace(box); return; }
    const answer = await api("/api/v1/admin/projections", { headers: { Authorization: `Bearer ${token}` } });
    if (!answer.ok) {
      replace(box, el("p", { class: "message", "data-kind": "error", role: "alert" }, problemText(answer.problem)));
      return;
    }
    replace(box, answer.body.projections.map((p) => el("div", { class: "admin-projection" },
      el("h3", null, `Projection ${p.name}`),
      el("dl", { class: "facts" },
        fact("State", p.state), fact("Position", String(p.position)), fact("Checkpoint", p.checkpoint ?? "–"),
        fact("Lag", `${Number(p.lagSeconds).toFixed(2)} s`), fact("Events applied", String(p.eventsApplied)),
        fact("Generation", p.generation ?? "–"), fact("Loading generation", p.loadingGeneration ?? "–"),
        fact("Last error", p.lastError ?? "none")),
      shardTable(p.shards),
      (p.parked || []).length === 0 ? el("p", null, "No parked events.") :
        el("div", { class: "table-wrap" }, el("table", { class: "data" },
          el("caption", null, `Parked events (${p.parked.length})`),
          el("thead", null, el("tr", null, ["Position", "Event", "Order", "Version", "Error", "Parked at"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", null, p.parked.map((e) => el("tr", null,
            el("td", { class: "mono" }, e.position), el("td", null, e.eventType),
            el("td", null, el("a", { href: `/orders/${encodeURIComponent(e.streamId)}`, class: "mono" }, e.streamId)),
            el("td", { class: "num" }, String(e.version)), el("td", null, e.error), el("td", null, ordo.time(e.parkedAt))))))))));
  }

  /** Each shard's holder, position and backlog, where the projection is divided into
   *  shards between processes (null where one process projects everything). */
  function shardTable(shards) {
    if (!shards) return null;
    const now = Date.now();
    return el("div", { class: "table-wrap" }, el("table", { class: "data shards" },
      el("caption", null, `Shards (${shards.length}), each projected by the process holding its lease`),
      el("thead", null, el("tr", null, ["Shard", "Projector", "Position", "Behind", "Lease"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", null, shards.map((s) => {
        const expires = s.leaseExpiresAt ? Date.parse(s.leaseExpiresAt) : null;
        const lapsed = expires !== null && expires < now;
        const lease = s.owner === null ? ["free"]
          : [lapsed ? "lapsed " : "until ", ordo.time(s.leaseExpiresAt)];
        return el("tr", null,
          el("th", { scope: "row", class: "num" }, String(s.shard)),
          el("td", { class: "mono" }, s.owner === null ? "–" : `${s.owner}${s.here ? " (this process)" : ""}`),
          el("td", { class: "mono" }, s.position ?? "–"),
          el("td", { class: "num", "data-kind": s.eventsBehind > 0 ? "warn" : "" },
            s.eventsBehind === null ? "–" : s.eventsBehind.toLocaleString()),
          el("td", { "data-kind": s.owner === null || lapsed ? "error" : "" }, ...lease));
      }))));
  }

  function fact(term, value) {
    return el("div", null, el("dt", null, term), el("dd", null, value));
  }

  // Live updates: at most one refresh a second, asking the read models to have caught up
  // with the newest event seen (they are updated asynchronously).
  let pendingToken = null, refreshTimer = null, lastRefresh = 0;
  function onEvent(_type, _data, id) {
    pendingToken = id || pendingToken;
    if (refreshTimer) return;
    const wait = Math.max(0, 1000 - (Date.now() - lastRefresh));
    refreshTimer = setTimeout(() => {
      const token = pendingToken;
      refreshTimer = null;
      pendingToken = null;
      lastRefresh = Date.now();
      refreshAll(token);
    }, wait);
  }

  function refreshAll(token) {
    loadOrders(token);
    loadSummary(token);
    loadTopCustomers(token);
    loadDaily(token);
  }

  function wire() {
    $("filters").addEventListener("submit", (e) => { e.preventDefault(); go(formView()); });
    $("q").addEventListener("input", () => {
      const searching = Boolean($("q").value.trim());
      $("list-filters").disabled = searching;
      $("search-note").hidden = !searching;
    });
    $("sort").addEventListener("change", () => go(Object.assign({}, view, { sort: $("sort").value, page: 1 })));
    $("clear").addEventListener("click", () => go(emptyView()));
    for (const th of document.querySelectorAll("th[data-sort]")) {
      th.querySelector("button").addEventListener("click", () => {
        const key = th.dataset.sort;
        const sort = view.sort === `-${key}` ? key : `-${key}`;
        go(Object.assign({}, view, { sort, page: 1 }));
      });
    }
    $("prev").addEventListener("click", () => go(Object.assign({}, view, { page: Math.max(1, view.page - 1) })));
    $("next").addEventListener("click", () => go(Object.assign({}, view, { page: view.page + 1 })));
    window.addEventListener("popstate", () => { view = readUrl(); fillForm(view); loadOrders(); });
    $("admin-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const token = $("admin-token").value.trim();
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      $("admin-token").value = "";
      loadAdmin();
    });
    $("admin-forget").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); loadAdmin(); });
  }

  function emptyView() {
    const v = { q: "", sort: "-createdAt", page: 1 };
    for (const name of FILTERS) v[name] = "";
    return v;
  }

  wire();
  go(view, false);
  loadSummary();
  loadTopCustomers();
  loadDaily();
  loadProjections();
  loadAdmin();
  setInterval(loadProjections, 5000);
  const stream = ordo.liveStream(onEvent, $("live"));
  ordo.liveToggle($("live-toggle"), stream);
})();
