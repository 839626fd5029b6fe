// One order's page: its current state (with the version it was read at), the commands
// it can take next (sent with If-Match on that version), its event timeline, and the
// order as it was at any version. Follows the live event stream for this order.
"use strict";

(() => {
  const { api, el, replace, problemText, money } = ordo;
  const $ = (id) => document.getElementById(id);

  const NEXT = { pending: "confirmed", confirmed: "processing", processing: "shipped", shipped: "delivered" };
  const CANCELLABLE = ["pending", "confirmed", "processing"];

  const orderId = decodeURIComponent(location.pathname.replace(/^\/orders\//, "").replace(/\/+$/, ""));
  /** Events oldest first, as the events endpoint shows them. */
  let events = [];
  /** The current state and the version it was read at (its ETag). */
  let current = null;
  let currentVersion = null;
  let deleted = false;
  let loadSeq = 0;
  let busy = false;
  const past = new Map();

  $("order-id").textContent = orderId;

  function lastEvent() { return events[events.length - 1] || null; }
  function lastVersion() { const e = lastEvent(); return e ? e.version : 0; }

  function showProblem(text, offerReload) {
    $("problem-text").textContent = text;
    $("reload").hidden = !offerReload;
    $("problem").hidden = false;
  }

  function hideProblem() {
    $("problem").hidden = true;
  }

  /** Events, then the state the read models hold once they include the newest event. */
  async function loadAll(token) {
    const seq = ++loadSeq;
    const answer = await api(`/api/v1/orders/order/${encodeURIComponent(orderId)}/events`);
    if (seq !== loadSeq) return;
    if (!answer.ok) {
      $("state").removeAttribute("aria-busy");
      if (answer.status === 404) {
        $("title").textContent = "No such order";
        replace($("state"), el("p", null, "There is no order with this id."));
        replace($("timeline"), el("li", { class: "empty" }, "No events are stored for this id."));
        $("commands-panel").hidden = true;
        $("travel-panel").hidden = true;
      } else {
        showProblem(problemText(answer.problem), true);
      }
      return;
    }
    events = answer.body.events;
    deleted = events.some((e) => e.eventType === "OrderDeleted");
    renderTimeline();
    updateTravel();
    await loadState(seq, token || (lastEvent() && lastEvent().position));
  }

  async function loadState(seq, token) {
    if (deleted) {
      current = null;
      currentVersion = null;
      renderState();
      return;
    }
    const headers = token ? { "X-Consistency-Token": token, "X-Consistency-Timeout-Ms": "5000" } : {};
    const path = `/api/v1/orders/order/${encodeURIComponent(orderId)}`;
    let answer = await api(path, { headers });
    // Read models that have not caught up in time: what they hold now, which a command's
    // If-Match then judges.
    if (token && answer.status === 503) answer = await api(path);
    if (seq !== loadSeq) return;
    if (!answer.ok) {
      showProblem(problemText(answer.problem), true);
      return;
    }
    current = answer.body;
    currentVersion = versionOf(answer.headers.get("ETag")) ?? current.version;
    renderState();
  }

  function versionOf(etag) {
    const m = /^(?:W\/)?"(\d+)"$/.exec(etag || "");
    return m ? Number(m[1]) : null;
  }

  function renderState() {
    const box = $("state");
    box.removeAttribute("aria-busy");
    if (deleted) {
      const gone = events.find((e) => e.eventType === "OrderDeleted");
      $("title").replaceChildren("Order ", el("span", { class: "badge status-deleted" }, "deleted"));
      replace(box, el("p", { class: "message", "data-kind": "warn" },
        "This order was deleted", gone ? [" on ", ordo.time(gone.occurredAt), ` (version ${gone.version})`] : "",
        ". It accepts no command; its history stays readable."));
      $("commands-panel").hidden = true;
      document.title = "Deleted order · ordo";
      return;
    }
    if (!current) return;
    document.title = `Order ${ordo.shortId(current.orderId)} · ordo`;
    $("title").replaceChildren(`Order for ${current.customerName ?? "(erased)"} `, ordo.statusBadge(current.status));
    replace(box, orderDetails(current, currentVersion));
    renderCommands();
  }

  /** The facts and items of an order view. */
  function orderDetails(o, version) {
    const address = o.shippingAddress;
    return [
      el("dl", { class: "facts" },
        fact("Status", ordo.statusBadge(o.status)),
        fact("Version", String(version ?? o.version)),
        fact("Customer", o.customerName ?? "(erased)"),
        fact("E-mail", o.customerEmail ?? "(erased)"),
        fact("Total", money(o.totalAmount, o.currency)),
        fact("Created", ordo.time(o.createdAt)),
        fact("Updated", ordo.time(o.updatedAt)),
        o.cancellationReason ? fact("Cancellation reason", o.cancellationReason) : null,
        address ? fact("Ship to", Object.values(address).filter((v) => typeof v === "string" && v).join(", ")) : null,
        o.personalDataErased ? fact("Personal data", "erased") : null),
      el("div", { class: "table-wrap" }, el("table", { class: "data items" },
        el("caption", null, "Items"),
        el("thead", null, el("tr", null,
          el("th", { scope: "col" }, "Product"), el("th", { scope: "col", class: "num" }, "Quantity"),
          el("th", { scope: "col", class: "num" }, "Unit price"), el("th", { scope: "col", class: "num" }, "Line total"))),
        el("tbody", null, (o.items || []).map((i) => el("tr", null,
          el("th", { scope: "row" }, i.productName, el("div", { class: "sub mono" }, i.productId)),
          el("td", { class: "num" }, String(i.quantity)),
          el("td", { class: "num" }, money(i.unitPrice, o.currency)),
          el("td", { class: "num" }, money(Number(i.unitPrice) * Number(i.quantity), o.currency))))),
        el("tfoot", null, el("tr", null,
          el("th", { scope: "row", colspan: 3 }, "Total"),
          el("td", { class: "num" }, money(o.totalAmount, o.currency)))))),
    ];
  }

  function fact(term, value) {
    return el("div", null, el("dt", null, term), el("dd", null, value));
  }

  function renderCommands() {
    const panel = $("commands-panel");
    if (!current || deleted) { panel.hidden = true; return; }
    panel.hidden = false;
    $("if-match-version").textContent = String(currentVersion);
    const next = NEXT[current.status];
    $("advance").hidden = !next;
    if (next) $("advance").textContent = `Mark as ${next}`;
    $("cancel-form").hidden = !CANCELLABLE.includes(current.status);
    for (const id of ["advance", "cancel", "delete", "delete-confirm"]) $(id).disabled = busy;
  }

  async function command(method, path, body, done) {
    if (busy || currentVersion === null) return;
    busy = true;
    renderCommands();
    $("command-result").textContent = "Sending…";
    $("command-result").dataset.kind = "";
    const answer = await api(`/api/v1/orders/order/${encodeURIComponent(orderId)}${path}`, {
      method, body, headers: { "If-Match": `"${currentVersion}"` },
    });
    busy = false;
    if (answer.ok) {
      hideProblem();
      $("command-result").textContent = `${done}: the order is now at version ${answer.body.version}.`;
      $("command-result").dataset.kind = "ok";
      await loadAll(answer.body.consistencyToken);
      return;
    }
    $("command-result").textContent = "";
    renderCommands();
    const reason = {
      409: "The order cannot take this command now",
      410: "This order has been deleted",
      412: "The order changed since this page showed it",
    }[answer.status];
    const text = problemText(answer.problem);
    showProblem(reason ? `${reason}. ${text}. Reload to see its current state.` : text, true);
  }

  function wire() {
    $("advance").addEventListener("click", () => {
      const next = current && NEXT[current.status];
      if (next) command("PUT", "/status", { status: next }, `Marked as ${next}`);
    });
    $("cancel-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const reason = $("cancel-reason").value.trim();
      command("PUT", "/cancel", reason ? { reason } : undefined, "Cancelled");
    });
    const confirming = (on) => {
      $("delete").hidden = on;
      $("delete-confirm").hidden = !on;
      $("delete-keep").hidden = !on;
      (on ? $("delete-keep") : $("delete")).focus();
    };
    $("delete").addEventListener("click", () => confirming(true));
    $("delete-keep").addEventListener("click", () => confirming(false));
    $("delete-confirm").addEventListener("click", () => {
      $("delete").hidden = false;
      $("delete-confirm").hidden = true;
      $("delete-keep").hidden = true;
      command("DELETE", "", undefined, "Deleted");
    });
    $("reload").addEventListener("click", () => {
      hideProblem();
      $("command-result").textContent = "";
      loadAll();
    });
    const slider = $("version");
    slider.addEventListener("input", () => showVersion(Number(slider.value)));
    $("version-prev").addEventListener("click", () => showVersion(Number(slider.value) - 1));
    $("version-next").addEventListener("click", () => showVersion(Number(slider.value) + 1));
  }

  function describe(e) {
    const d = e.data || {};
    switch (e.eventType) {
      case "OrderCreated": {
        const items = Array.isArray(d.items) ? d.items.length : 0;
        return [`Created for ${d.customerName ?? "(erased)"}`, d.customerEmail ? ` <${d.customerEmail}>` : "",
          `: ${items} ${items === 1 ? "item" : "items"}, total ${money(d.totalAmount, d.currency)}`];
      }
      case "OrderStatusChanged":
        return ["Status ", ordo.statusBadge(d.from), " → ", ordo.statusBadge(d.to)];
      case "OrderCancelled":
        return ["Cancelled (was ", ordo.statusBadge(d.previousStatus), ")", d.reason ? `: “${d.reason}”` : ", no reason given"];
      case "OrderDeleted":
        return ["Deleted"];
      default:
        return [JSON.stringify(d)];
    }
  }

  function eventItem(e, fresh) {
    const m = e.metadata || {};
    const ids = [["Correlation", m.correlationId], ["Causation", m.causationId], ["Idempotency key", m.idempotencyKey]]
      .filter(([, v]) => v);
    return el("li", { id: `event-${e.version}`, class: fresh ? "fresh" : null, "data-version": e.version, "data-type": e.eventType },
      el("div", { class: "event-head" },
        el("strong", { class: "event-type" }, e.eventType),
        el("span", { class: "sub" }, ` version ${e.version} · `, ordo.time(e.occurredAt)),
        fresh ? el("span", { class: "badge new" }, "new") : null),
      el("p", { class: "event-what" }, describe(e)),
      el("dl", { class: "ids" },
        ids.map(([k, v]) => el("div", null, el("dt", null, k), el("dd", { class: "mono" }, v))),
        el("div", null, el("dt", null, "Position"), el("dd", { class: "mono" }, e.position))),
      el("button", { type: "button", class: "quiet small", onclick: () => showVersion(e.version) }, `Show version ${e.version}`));
  }

  function renderTimeline() {
    replace($("timeline"), events.map((e) => eventItem(e, false)));
  }

  function updateTravel() {
    const slider = $("version");
    const max = lastVersion();
    $("travel-panel").hidden = max === 0;
    const wasAtEnd = Number(slider.value) >= Number(slider.max);
    slider.max = String(max);
    if (wasAtEnd || Number(slider.value) > max) slider.value = String(max);
    showVersion(Number(slider.value));
  }

  let travelTimer = null;
  function showVersion(version) {
    const max = lastVersion();
    if (max === 0) return;
    const v = Math.min(Math.max(1, version), max);
    const slider = $("version");
    slider.value = String(v);
    $("version-label").textContent = `Version ${v} of ${max}`;
    $("version-prev").disabled = v <= 1;
    $("version-next").disabled = v >= max;
    for (const li of $("timeline").children) {
      if (Number(li.dataset.version) === v) li.setAttribute("aria-current", "step"); else li.removeAttribute("aria-current");
    }
    clearTimeout(travelTimer);
    travelTimer = setTimeout(() => loadPast(v), past.has(v) ? 0 : 120);
  }

  async function loadPast(v) {
    let answer = past.get(v);
    if (!answer) {
      answer = await api(`/api/v1/orders/order/${encodeURIComponent(orderId)}?asOfVersion=${v}`);
      if (answer.ok || answer.status === 404) past.set(v, answer);
    }
    if (Number($("version").value) !== v) return;
    const box = $("past");
    if (!answer.ok) {
      const e = events.find((x) => x.version === v);
      const text = e && e.eventType === "OrderDeleted" ? "At this version the order was deleted." : problemText(answer.problem);
      replace(box, el("p", { class: "message", "data-version": v }, text));
      return;
    }
    replace(box, el("div", { "data-version": v }, orderDetails(answer.body, v)));
  }

  // Live: a new event of this order joins the timeline at once, and the state is read
  // again once the read models include it.
  function onEvent(_type, data, id) {
    if (!data || data.orderId !== orderId) return;
    if (events.some((e) => e.eventId === data.eventId)) return;
    if (data.version !== lastVersion() + 1) {
      loadAll(id);
      return;
    }
    events.push(data);
    if (data.eventType === "OrderDeleted") deleted = true;
    $("timeline").append(eventItem(data, true));
    updateTravel();
    const seq = ++loadSeq;
    loadState(seq, id);
  }

  wire();
  loadAll();
  const stream = ordo.liveStream(onEvent, $("live"));
  ordo.liveToggle($("live-toggle"), stream);
})();
