// Shared by the dashboard and the order page: API calls, DOM building, formatting,
// charts as inline SVG, and the live event stream. Plain browser JavaScript, no build.
"use strict";

const ordo = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const API_TOKEN_KEY = "ordo.apiToken";

  /** The API token the user gave in this tab ("" when none). */
  function apiToken() {
    try { return sessionStorage.getItem(API_TOKEN_KEY) || ""; } catch (_) { return ""; }
  }

  /** The API's data routes: behind the API token when the server has access control on.
   * The admin routes take the admin token instead. */
  function guarded(path) {
    return path.startsWith("/api/v1/") && !path.startsWith("/api/v1/admin/");
  }

  /**
   * Shows the page's token box (#api-token-box) after the API answered 401: the token is
   * missing or was refused. Saving or forgetting a token reloads the page, so every panel
   * and the live stream start again with it.
   */
  function askForToken(problem) {
    const box = document.getElementById("api-token-box");
    if (!box) return;
    const message = document.getElementById("api-token-message");
    message.textContent = apiToken()
      ? "The server refused this tab's API token: enter another one."
      : "This server needs an API token to show its data.";
    if (problem && problem.detail) message.title = problem.detail;
    document.getElementById("api-token-forget").hidden = !apiToken();
    if (box.hidden) {
      box.hidden = false;
      document.getElementById("api-token").focus();
    }
  }

  function setUpTokenBox() {
    const form = document.getElementById("api-token-form");
    if (!form) return;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const token = document.getElementById("api-token").value.trim();
      if (!token) return;
      try { sessionStorage.setItem(API_TOKEN_KEY, token); } catch (_) { return; }
      location.reload();
    });
    document.getElementById("api-token-forget").addEventListener("click", () => {
      try { sessionStorage.removeItem(API_TOKEN_KEY); } catch (_) { /* nothing kept */ }
      location.reload();
    });
  }
  setUpTokenBox();

  /** An API call. Resolves to {ok, status, headers, body, problem}; never throws. */
  async function api(path, options = {}) {
    const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
    const token = apiToken();
    if (token && guarded(path) && !headers.Authorization) headers.Authorization = `Bearer ${token}`;
    const init = { method: options.method || "GET", headers, cache: "no-store" };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    if (options.signal) init.signal = options.signal;
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (error && error.name === "AbortError") throw error;
      return {
        ok: false, status: 0, headers: new Headers(), body: null,
        problem: { title: "Network error", detail: "the server could not be reached" },
      };
    }
    const type = response.headers.get("Content-Type") || "";
    let body = null;
    if (type.includes("json")) {
      try { body = await response.json(); } catch (_) { body = null; }
    } else {
      body = await response.text();
    }
    const problem = response.ok ? null : problemOf(response, body);
    if (response.status === 401 && guarded(path)) askForToken(problem);
    return { ok: response.ok, status: response.status, headers: response.headers, body, problem };
  }

  function problemOf(response, body) {
    if (body && typeof body === "object" && typeof body.detail === "string") return body;
    return { title: response.statusText || "Error", status: response.status, detail: `the server answered ${response.status}` };
  }

  /** A problem document in words, with each invalid field. */
  function problemText(problem) {
    if (!problem) return "";
    let text = problem.detail || problem.title || "error";
    if (Array.isArray(problem.errors) && problem.errors.length) {
      text += ": " + problem.errors.map((e) => `${e.field} ${e.message}`).join("; ");
    }
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  /** el("td", {class: "x"}, "text", child): builds DOM without parsing HTML. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on") && typeof value === "function") {
        node.addEventListener(name.slice(2), value);
      } else {
        node.setAttribute(name, value === true ? "" : String(value));
      }
    }
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function replace(node, ...children) {
    node.replaceChildren();
    append(node, children);
  }

  const number = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const currencies = new Map();

  function amount(value) {
    const n = Number(value);
    return Number.isFinite(n) ? n.toFixed(2) : "–";
  }

  function money(value, currency) {
    const n = Number(value);
    if (!Number.isFinite(n)) return "–";
    if (!currency) return number.format(n);
    if (!currencies.has(currency)) {
      try {
        currencies.set(currency, new Intl.NumberFormat(undefined, { style: "currency", currency }));
      } catch (_) {
        currencies.set(currency, null);
      }
    }
    const format = currencies.get(currency);
    return format ? format.format(n) : `${n.toFixed(2)} ${currency}`;
  }

  function dateTime(value) {
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleString();
  }

  /** A <time> element: local time shown, the exact instant in datetime and title. */
  function time(value) {
    return el("time", { datetime: value, title: value }, dateTime(value));
  }

  const STATUSES = ["pending", "confirmed", "processing", "shipped", "delivered", "cancelled"];

  function statusBadge(status) {
    return el("span", { class: `badge status-${STATUSES.includes(status) ? status : "unknown"}` }, status);
  }

  /** The end of an id: order ids (UUIDv7) begin with their creation time, alike for
   * orders made together, and end in random digits. */
  function shortId(id) {
    return "…" + String(id).slice(-8);
  }

  /** A visually hidden data table: the text alternative of a chart. */
  function dataTable(caption, headings, rows) {
    return el("table", { class: "visually-hidden" },
      el("caption", null, caption),
      el("thead", null, el("tr", null, headings.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", null, rows.map((r) => el("tr", null, r.map((c, i) => i === 0 ? el("th", { scope: "row" }, c) : el("td", null, c))))));
  }

  /**
   * Horizontal bars: items [{label, value, text, href?}], one row each, the value's text
   * at the bar's end. Returns a figure with the SVG and its data table.
   */
  function barsChart({ title, items, valueHeading, emptyText }) {
    if (!items.length) return el("p", { class: "empty" }, emptyText || "Nothing to show yet.");
    const row = 26, labelWidth = 150, width = 560, valueWidth = 150;
    const height = items.length * row + 4;
    const max = Math.max(...items.map((i) => i.value), 0) || 1;
    const barSpace = width - labelWidth - valueWidth;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img", "aria-label": title, focusable: "false" });
    items.forEach((item, n) => {
      const y = n * row + 2;
      const w = item.value > 0 ? Math.max(2, (item.value / max) * barSpace) : 0;
      chart.append(
        svg("text", { x: labelWidth - 8, y: y + row / 2 + 1, class: "label", "text-anchor": "end", "dominant-baseline": "middle" }, clip(item.label, 20)),
        svg("rect", { x: labelWidth, y: y + 3, width: w, height: row - 8, rx: 3, class: `bar ${item.className || ""}` },
          svg("title", null, `${item.label}: ${item.text}`)),
        svg("text", { x: labelWidth + w + 6, y: y + row / 2 + 1, class: "value", "dominant-baseline": "middle" }, item.text));
    });
    return el("figure", { class: "chart" }, chart,
      dataTable(title, ["", valueHeading], items.map((i) => [i.label, i.text])));
  }

  /**
   * Columns over a series (e.g. days): points [{label, value, text}], a few axis labels,
   * the highest value marked. Returns a figure with the SVG and its data table.
   */
  function columnsChart({ title, points, valueHeading, tickEvery, className }) {
    const width = 560, height = 170, left = 44, right = 24, bottom = 22, top = 10;
    const max = Math.max(...points.map((p) => p.value), 0);
    const scale = max > 0 ? max : 1;
    const plot = height - bottom - top;
    const step = (width - left - right) / Math.max(points.length, 1);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img", "aria-label": title, focusable: "false" });
    for (const fraction of [0, 0.5, 1]) {
      const y = top + plot - fraction * plot;
      chart.append(svg("line", { x1: left, x2: width - right, y1: y, y2: y, class: "grid" }));
      // With nothing to show, only the zero line is labelled (three labels of 0 say nothing).
      if (fraction === 0 || max > 0) {
        chart.append(svg("text", { x: left - 6, y, class: "axis", "text-anchor": "end", "dominant-baseline": "middle" }, compact(fraction * max)));
      }
    }
    const last = points.length - 1;
    points.forEach((p, n) => {
      const h = (p.value / scale) * plot;
      const x = left + n * step;
      chart.append(svg("rect", { x: x + step * 0.15, y: top + plot - h, width: step * 0.7, height: Math.max(h, p.value > 0 ? 1 : 0), class: `bar ${className || ""}` },
        svg("title", null, `${p.label}: ${p.text}`)));
      // Labelled from the newest point back, so the newest always has its label.
      if ((last - n) % (tickEvery || 1) === 0) {
        chart.append(svg("text", { x: x + step / 2, y: height - 6, class: "axis", "text-anchor": "middle" }, p.tick || p.label));
      }
    });
    return el("figure", { class: "chart" }, chart,
      dataTable(title, ["", valueHeading], points.map((p) => [p.label, p.text])));
  }

  function compact(n) {
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (n >= 1e5) return Math.round(n / 1e3) + "k";
    if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
    return Number.isInteger(n) ? String(n) : n.toFixed(1);
  }

  function clip(text, max) {
    const s = String(text);
    return s.length > max ? s.slice(0, max - 1) + "…" : s;
  }

  /**
   * The live event stream (GET /api/v1/events/stream). Calls onEvent(type, data, id) for
   * each message and keeps `indicator` (an element with role=status) saying whether
   * updates arrive. Reconnects with backoff, resuming after the last id seen; when the
   * server has no stream (404) it says so and stops; when it wants an API token (401) it
   * asks for one and stops. EventSource cannot send headers: the token goes in the
   * `access_token` query parameter, which the stream alone accepts. Returns
   * {pause(), resume(), paused}.
   */
  function liveStream(onEvent, indicator) {
    const TYPES = ["OrderCreated", "OrderStatusChanged", "OrderCancelled", "OrderDeleted"];
    let source = null, lastId = null, retry = 1000, timer = null, paused = false, gone = false;

    function show(state, text) {
      indicator.dataset.state = state;
      indicator.textContent = text;
    }

    function open() {
      if (paused || gone) return;
      const query = new URLSearchParams();
      if (lastId) query.set("after", lastId);
      if (apiToken()) query.set("access_token", apiToken());
      const search = query.toString();
      const url = "/api/v1/events/stream" + (search ? `?${search}` : "");
      show("connecting", "Connecting…");
      source = new EventSource(url);
      source.onopen = () => { retry = 1000; show("live", "Live"); };
      const handle = (message) => {
        lastId = message.lastEventId || lastId;
        let data = null;
        try { data = JSON.parse(message.data); } catch (_) { return; }
        onEvent(message.type === "message" ? (data && data.eventType) : message.type, data, message.lastEventId);
      };
      for (const type of TYPES) source.addEventListener(type, handle);
      source.onmessage = handle;
      source.onerror = () => {
        if (source.readyState === EventSource.CONNECTING) {
          show("reconnecting", "Reconnecting…");
          return;
        }
        source.close();
        source = null;
        probe();
      };
    }

    // EventSource does not say why it gave up; a plain request does.
    async function probe() {
      const controller = new AbortController();
      let status = 0;
      const headers = apiToken() ? { Authorization: `Bearer ${apiToken()}` } : {};
      try {
        const response = await fetch("/api/v1/events/stream", { signal: controller.signal, cache: "no-store", headers });
        status = response.status;
        controller.abort();
      } catch (_) { /* unreachable or aborted */ }
      if (status === 404) {
        gone = true;
        show("off", "Live updates unavailable");
        return;
      }
      if (status === 401) {
        gone = true;
        show("off", "Live updates need an API token");
        askForToken(null);
        return;
      }
      show("reconnecting", "Reconnecting…");
      timer = setTimeout(open, retry);
      retry = Math.min(retry * 2, 30000);
    }

    const control = {
      get paused() { return paused; },
      get available() { return !gone; },
      pause() {
        paused = true;
        clearTimeout(timer);
        if (source) { source.close(); source = null; }
        show("paused", "Paused");
      },
      resume() {
        paused = false;
        open();
      },
    };
    open();
    return control;
  }

  /** A button that pauses and resumes a live stream. */
  function liveToggle(button, stream) {
    const label = () => {
      button.textContent = stream.paused ? "Resume live updates" : "Pause live updates";
      button.setAttribute("aria-pressed", stream.paused ? "true" : "false");
    };
    button.addEventListener("click", () => {
      if (stream.paused) stream.resume(); else stream.pause();
      label();
    });
    label();
  }

  return {
    api, problemText, el, svg, replace, amount, money, dateTime, time, STATUSES,
    statusBadge, shortId, barsChart, columnsChart, liveStream, liveToggle,
  };
})();
