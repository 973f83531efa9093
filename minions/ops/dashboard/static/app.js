"use strict";
/*
 * The Minions dashboard page.
 *
 * Access: the address carries the access token in its fragment (#token=...), which browsers
 * never send anywhere. It is moved to this tab's sessionStorage and removed from the address
 * bar; requests send it as "Authorization: Bearer", and the event stream (EventSource cannot
 * set headers) as ?token=.
 *
 * Data: one event stream per page. It opens with a "snapshot" (the latest tick, the last
 * minutes of chart points, the timeline), then brings a "tick" about every second, a
 * "lifecycle" event the moment the runtime takes a step (crash, restart...), and
 * "reachability" when the system stops or starts answering. Nothing is polled.
 *
 * Actions (restart, stop, redeploy) are POSTs to /api/actions after a confirmation; the server
 * performs them as "minions restart|stop|redeploy" do.
 */
(() => {
  const TOKEN_KEY = "minions-dashboard-token";
  const HISTORY_SECONDS = 300;
  const TIMELINE_SIZE = 500;
  const PALETTE = ["#3a66d6", "#d9822b", "#2f9e62", "#a04fc8", "#d24545", "#168f9c", "#8a6d3b", "#5f6b7a"];
  const MIB = 1024 * 1024;

  const $ = (id) => document.getElementById(id);
  const state = {
    token: null,
    stream: null,
    tick: null,
    history: [],
    timeline: [],
    shape: "",
    charts: new Map(),
    cards: new Map(),
    flows: new Map(),
    reachable: null,
    pending: false,
  };

  // -- access --------------------------------------------------------------------------------

  function takeToken() {
    const found = location.hash.match(/(?:^#|&)token=([A-Za-z0-9_-]+)/);
    if (found) {
      sessionStorage.setItem(TOKEN_KEY, found[1]);
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function banner(text) {
    const node = $("banner");
    node.textContent = text || "";
    node.classList.toggle("shown", Boolean(text));
  }

  function link(text, kind) {
    const node = $("link");
    node.textContent = text;
    node.className = kind || "";
  }

  let toastTimer = null;
  function toast(text, bad) {
    const node = $("toast");
    node.textContent = text;
    node.className = `shown${bad ? " bad" : ""}`;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (node.className = ""), bad ? 8000 : 4000);
  }

  // -- formatting ----------------------------------------------------------------------------

  function duration(seconds) {
    if (seconds == null) return "-";
    if (seconds < 0.001) return `${Math.round(seconds * 1e6)} µs`;
    if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1)} ms`;
    return `${seconds.toFixed(2)} s`;
  }

  function uptime(seconds) {
    if (seconds == null) return "-";
    const s = Math.floor(seconds);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
    return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, "0")}h`;
  }

  function bytes(value) {
    if (value == null) return "-";
    return value >= 1024 * MIB ? `${(value / 1024 / MIB).toFixed(2)} GiB` : `${(value / MIB).toFixed(1)} MiB`;
  }

  function rate(value) {
    if (value == null) return "-";
    return value >= 100 ? value.toFixed(0) : value.toFixed(value >= 10 ? 1 : 2);
  }

  function percent(value) {
    return value == null ? "-" : `${value.toFixed(1)} %`;
  }

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  // -- charts (uPlot) ------------------------------------------------------------------------

  /** A small time chart in ``target``, kept by ``key``; made anew when its series change. */
  function chart(target, key, title, labels, width, height) {
    const signature = JSON.stringify([labels, width]);
    let held = state.charts.get(key);
    if (held && (held.signature !== signature || !held.target.isConnected)) {
      held.plot.destroy();
      held = null;
    }
    if (!held) {
      const axis = { size: 20, font: "10px system-ui", stroke: "#6b7280", grid: { stroke: "#eef0f4", width: 1 }, ticks: { show: false } };
      const options = {
        title,
        width,
        height,
        legend: { show: false },
        cursor: { show: false },
        scales: { x: { time: true } },
        axes: [axis, { ...axis, size: 46 }],
        series: [{}, ...labels.map((label, i) => ({ label, stroke: PALETTE[i % PALETTE.length], width: 1.5, points: { show: false } }))],
      };
      target.replaceChildren();
      target.style.width = `${width}px`; // a long legend wraps instead of widening the chart
      held = { plot: new uPlot(options, [[], ...labels.map(() => [])], target), signature, target };
      if (labels.length > 1) {
        const legend = make("div", "chart-legend");
        labels.forEach((label, i) => {
          const item = make("span", "", label);
          item.style.setProperty("--swatch", PALETTE[i % PALETTE.length]);
          legend.appendChild(item);
        });
        target.appendChild(legend);
      }
      state.charts.set(key, held);
    }
    return held.plot;
  }

  function column(read) {
    return state.history.map((point) => {
      const value = read(point.series);
      return value == null ? null : value;
    });
  }

  function times() {
    return state.history.map((point) => point.t);
  }

  function forgetCharts(keep) {
    for (const [key, held] of state.charts) {
      if (!keep(key)) {
        held.plot.destroy();
        state.charts.delete(key);
      }
    }
  }

  // -- the graph and the component cards -----------------------------------------------------

  function dependentsOf(name, rows) {
    const found = [];
    const pending = [name];
    while (pending.length) {
      const current = pending.pop();
      for (const row of rows) {
        if (row.dependencies.includes(current) && !found.includes(row.name)) {
          found.push(row.name);
          pending.push(row.name);
        }
      }
    }
    return found;
  }

  function select(name) {
    const card = state.cards.get(name);
    if (!card) return;
    for (const other of state.cards.values()) other.root.classList.remove("focus");
    card.root.classList.add("focus");
    card.root.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  function confirmation(op, name, rows) {
    const dependents = dependentsOf(name, rows);
    const listed = dependents.join(", ");
    const they = dependents.length === 1 ? "It depends" : "They depend";
    if (op === "restart") {
      return `Restart ${name}?` + (dependents.length ? `\n\n${they} on it and restart after it: ${listed}.` : "");
    }
    if (op === "stop") {
      return `Stop ${name}? It stays stopped until it is restarted.` + (dependents.length ? `\n\n${they} on it and stop too: ${listed}.` : "");
    }
    return `Redeploy ${name}? It restarts in a fresh child that loads its module's code anew.` + (dependents.length ? `\n\n${they} on it and restart after it: ${listed}.` : "");
  }

  async function act(op, name) {
    const rows = state.tick ? state.tick.components : [];
    if (!window.confirm(confirmation(op, name, rows))) return;
    const card = state.cards.get(name);
    if (card) card.busy = true;
    render();
    try {
      const response = await fetch("/api/actions", {
        method: "POST",
        headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ op, component: name }),
      });
      const answer = await response.json();
      if (answer.ok) toast(`${op}: ${name} is ${answer.result.state}`);
      else toast(`${op} ${name}: ${answer.error.message}`, true);
    } catch (error) {
      toast(`${op} ${name}: ${error}`, true);
    } finally {
      if (card) card.busy = false;
      render();
    }
  }

  function makeCard(row) {
    const root = make("div", "card");
    root.dataset.name = row.name;
    const head = make("header");
    const name = make("span", "name", row.name);
    const kind = make("span", "badge", row.kind);
    const isolated = make("span", "badge", "isolated");
    const status = make("span", "state");
    head.append(name, kind, isolated, status);
    const facts = make("div", "facts");
    const replicas = make("div", "replicas");
    const error = make("div", "error");
    const charts = make("div", "charts");
    const cpu = make("div");
    const rss = make("div");
    const note = make("span", "note", "runs in the main process: CPU and memory are in the main process card");
    const actions = make("div", "actions");
    const buttons = {};
    for (const op of ["restart", "stop", "redeploy"]) {
      const button = make("button", op === "stop" ? "danger" : "", op[0].toUpperCase() + op.slice(1));
      button.type = "button";
      button.dataset.op = op;
      button.addEventListener("click", () => act(op, row.name));
      buttons[op] = button;
      actions.appendChild(button);
    }
    root.append(head, facts, replicas, error, charts, actions);
    return { root, kind, isolated, status, facts, replicas, error, charts, cpu, rss, note, buttons, busy: false };
  }

  function updateCard(card, row, chartWidth) {
    card.root.className = `card s-${row.state}${card.root.classList.contains("focus") ? " focus" : ""}`;
    card.root.dataset.state = row.state;
    card.kind.textContent = row.kind;
    card.isolated.hidden = !row.isolated;
    card.status.textContent = row.state;
    const causes = Object.entries(row.crash_causes || {}).map(([cause, n]) => `${n} ${cause}`).join(", ");
    const parts = [
      `${row.restarts} restart${row.restarts === 1 ? "" : "s"}`,
      `${row.crashes} crash${row.crashes === 1 ? "" : "es"}${causes ? ` (${causes})` : ""}`,
    ];
    const replicas = row.replicas || [];
    if (replicas.length) {
      const running = replicas.filter((r) => r.state === "running").length;
      parts.push(`${running}/${replicas.length} replicas running`);
    }
    if (row.pid != null) parts.push(`pid ${row.pid}`);
    if (row.uptime_seconds != null) parts.push(`up ${uptime(row.uptime_seconds)}`);
    card.facts.textContent = parts.join(" · ");
    card.facts.dataset.restarts = String(row.restarts);
    card.replicas.textContent = replicas
      .map((r) => `#${r.index} ${r.state}${r.pid != null ? ` pid ${r.pid}` : ""}${r.node ? ` on ${r.node}` : ""}` +
        `${r.restarts ? `, ${r.restarts} restart${r.restarts === 1 ? "" : "s"}` : ""}` +
        `${r.cpu_percent != null ? `, ${percent(r.cpu_percent)}` : ""}`)
      .join(" · ");
    card.replicas.hidden = !replicas.length;
    card.error.textContent = row.last_error ? `last error: ${row.last_error}` : "";
    card.error.title = row.last_error || "";
    if (row.isolated) {
      if (card.note.isConnected) card.note.remove();
      if (!card.cpu.isConnected) card.charts.append(card.cpu, card.rss);
      const xs = times();
      chart(card.cpu, `cpu:${row.name}`, "CPU %", ["cpu"], chartWidth, 90)
        .setData([xs, column((s) => s.components[row.name] && s.components[row.name][0])]);
      chart(card.rss, `rss:${row.name}`, "RSS MiB", ["rss"], chartWidth, 90)
        .setData([xs, column((s) => s.components[row.name] && s.components[row.name][1] != null ? s.components[row.name][1] / MIB : null)]);
    } else if (!card.note.isConnected) {
      card.charts.replaceChildren(card.note);
    }
    const reachable = state.reachable !== false;
    card.buttons.restart.disabled = card.busy || !reachable;
    card.buttons.stop.disabled = card.busy || !reachable || !["running", "starting", "restarting"].includes(row.state);
    card.buttons.redeploy.disabled = card.busy || !reachable || !row.isolated;
    card.buttons.redeploy.title = row.isolated ? "" : "only isolated components can be redeployed";
  }

  function renderCards(tick) {
    const container = $("cards");
    const rows = tick.components;
    const cardWidth = container.firstElementChild ? container.firstElementChild.clientWidth : 300;
    const width = Math.max(110, Math.floor((cardWidth - 30) / 2));
    let system = state.cards.get("\u0000system");
    if (!system) {
      const root = make("div", "card s-running");
      root.dataset.name = "";
      const head = make("header");
      head.append(make("span", "name", "Main process"), make("span", "badge", "the system"));
      const facts = make("div", "facts");
      const charts = make("div", "charts");
      const cpu = make("div");
      const rss = make("div");
      charts.append(cpu, rss);
      root.append(head, facts, charts);
      system = { root, facts, cpu, rss };
      state.cards.set("\u0000system", system);
    }
    const sys = tick.system;
    system.facts.textContent = `pid ${sys.pid} · up ${uptime(sys.uptime_seconds)} · in-process components run here`;
    const xs = times();
    chart(system.cpu, "cpu:", "CPU %", ["cpu"], width, 90).setData([xs, column((s) => s.system[0])]);
    chart(system.rss, "rss:", "RSS MiB", ["rss"], width, 90)
      .setData([xs, column((s) => (s.system[1] != null ? s.system[1] / MIB : null))]);
    const order = [system.root];
    const names = new Set(rows.map((r) => r.name));
    for (const row of rows) {
      let card = state.cards.get(row.name);
      if (!card) {
        card = makeCard(row);
        state.cards.set(row.name, card);
      }
      updateCard(card, row, width);
      order.push(card.root);
    }
    for (const name of [...state.cards.keys()]) {
      if (name !== "\u0000system" && !names.has(name)) state.cards.delete(name);
    }
    if (order.some((node, i) => container.children[i] !== node) || container.children.length !== order.length) {
      container.replaceChildren(...order);
    }
    $("cards-note").textContent = `${rows.length} component${rows.length === 1 ? "" : "s"}, in start order`;
  }

  // -- calls and workflows -------------------------------------------------------------------

  function table(headers, rows) {
    const node = make("table");
    const head = node.createTHead().insertRow();
    headers.forEach(([text, numeric]) => head.appendChild(make("th", numeric ? "num" : "", text)));
    const body = node.createTBody();
    for (const cells of rows) {
      const tr = body.insertRow();
      cells.forEach((text, i) => tr.appendChild(make("td", headers[i][1] ? "num" : "", text)));
    }
    return node;
  }

  function renderCalls(tick) {
    const container = $("calls");
    if (!tick.measured) {
      forgetCharts((key) => !key.startsWith("calls"));
      container.replaceChildren(make("p", "empty", "Calls are measured when metrics are on: run the system with a metrics port or a dashboard port (minions run --metrics-port 0 or --dashboard-port 0)."));
      return;
    }
    if (!tick.calls.length) {
      forgetCharts((key) => !key.startsWith("calls"));
      container.replaceChildren(make("p", "empty", "No call has crossed an isolation boundary yet."));
      return;
    }
    const label = (call) => `${call.target}.${call.method}${call.component !== call.target ? ` (from ${call.component})` : ""}`;
    const rows = tick.calls.map((call) => [
      label(call),
      call.stream ? `${rate(call.item_rate)} items` : rate(call.rate),
      rate(call.error_rate),
      duration(call.p50),
      duration(call.p90),
      duration(call.p99),
      String(call.stream ? call.items : call.calls),
    ]);
    const tableNode = table(
      [["method", false], ["per s", true], ["errors/s", true], ["p50", true], ["p90", true], ["p99", true], ["total", true]],
      rows,
    );
    let charts = container.querySelector(".chart-row");
    if (!charts) {
      charts = make("div", "chart-row");
      charts.append(make("div"), make("div"));
    }
    container.replaceChildren(tableNode, charts);
    const busiest = [...tick.calls]
      .sort((a, b) => b.calls - a.calls)
      .slice(0, PALETTE.length)
      .sort((a, b) => (a.key < b.key ? -1 : 1)); // a stable order: the charts keep their colours
    const labels = busiest.map(label);
    const width = Math.max(200, Math.floor(((container.clientWidth || 460) - 12) / 2));
    const xs = times();
    chart(charts.children[0], "calls:rate", "calls per second", labels, width, 120)
      .setData([xs, ...busiest.map((c) => column((s) => s.calls[c.key] && s.calls[c.key][0]))]);
    chart(charts.children[1], "calls:p99", "p99 latency, ms", labels, width, 120)
      .setData([xs, ...busiest.map((c) => column((s) => (s.calls[c.key] && s.calls[c.key][2] != null ? s.calls[c.key][2] * 1000 : null)))]);
  }

  function renderWorkflows(tick) {
    const container = $("workflows");
    if (!tick.workflows.length) {
      forgetCharts((key) => !key.startsWith("steps:"));
      state.flows.clear();
      container.replaceChildren(make("p", "empty", "No durable workflow runs in this system."));
      return;
    }
    const width = Math.max(240, (container.clientWidth || 460) - 8);
    const xs = times();
    const order = [];
    const seen = new Set();
    for (const flows of tick.workflows) {
      const name = flows.orchestration;
      seen.add(name);
      let held = state.flows.get(name);
      if (!held) {
        const block = make("div", "workflow");
        block.dataset.orchestration = name;
        held = { block, counters: make("div", "counters"), steps: make("div"), chart: make("div") };
        const title = make("div", "name", flows.minion ? `${flows.minion} \u2190 ${flows.pipeline}` : name);
        if (flows.minion) title.appendChild(make("span", "id", ` orchestration ${name}`));
        block.append(title, held.counters, held.steps, held.chart);
        state.flows.set(name, held);
      }
      const items = [];
      for (const [key, text] of [["in_flight", "in flight"], ["succeeded", "succeeded"], ["failed", "failed"], ["aborted", "aborted"], ["interrupted", "interrupted"], ["resumed", "resumed"]]) {
        const item = make("span", key === "failed" && flows.failed ? "bad" : "");
        item.dataset.counter = key;
        item.append(make("b", "", String(flows[key])), document.createTextNode(` ${text}`));
        items.push(item);
      }
      const per = make("span");
      per.append(make("b", "", rate(flows.rate)), document.createTextNode(" succeeded/s"));
      held.counters.replaceChildren(...items, per);
      held.steps.replaceChildren(
        table(
          [["step", false], ["runs", true], ["mean", true], ["p50", true], ["p95", true]],
          flows.steps.map((s) => [s.step, String(s.runs), duration(s.mean), duration(s.p50), duration(s.p95)]),
        ),
      );
      const steps = flows.steps.map((s) => s.step);
      const read = (step) => (s) => {
        const durations = s.steps[name];
        return durations && durations[step] != null ? durations[step] * 1000 : null;
      };
      chart(held.chart, `steps:${name}`, "mean step duration, ms", steps, width, 110)
        .setData([xs, ...steps.map((step) => column(read(step)))]);
      order.push(held.block);
    }
    for (const name of [...state.flows.keys()]) if (!seen.has(name)) state.flows.delete(name);
    forgetCharts((key) => !key.startsWith("steps:") || seen.has(key.slice(6)));
    if (order.some((node, i) => container.children[i] !== node) || container.children.length !== order.length) {
      container.replaceChildren(...order);
    }
  }

  // -- rendering -----------------------------------------------------------------------------

  function renderHeader(tick) {
    const sys = tick.system;
    $("project").textContent = sys.project;
    $("pid").textContent = String(sys.pid);
    $("uptime").textContent = uptime(sys.uptime_seconds);
    $("cpu").textContent = percent(sys.cpu_percent);
    $("rss").textContent = bytes(sys.rss_bytes);
    document.title = `Minions: ${sys.project.split("/").pop() || sys.project}`;
  }

  function renderTimeline() {
    const rows = state.tick ? state.tick.components : [];
    const now = state.tick ? Math.max(state.tick.t, Date.now() / 1000) : Date.now() / 1000;
    MinionsTimeline.lanes($("lanes"), state.timeline, rows.map((r) => r.name), now);
    MinionsTimeline.list($("events"), state.timeline);
  }

  function render() {
    state.pending = false;
    const tick = state.tick;
    if (!tick) return;
    renderHeader(tick);
    const shape = MinionsGraph.shape(tick.components);
    if (shape !== state.shape) {
      MinionsGraph.draw($("graph"), tick.components, select);
      state.shape = shape;
    } else {
      MinionsGraph.paint($("graph"), tick.components);
    }
    renderCards(tick);
    renderCalls(tick);
    renderWorkflows(tick);
    renderTimeline();
  }

  function schedule() {
    if (state.pending) return;
    state.pending = true;
    requestAnimationFrame(render);
  }

  // -- the event stream ----------------------------------------------------------------------

  function reachability(reachable, problem) {
    state.reachable = reachable;
    if (reachable === false) {
      banner(`The system does not answer: ${problem || "no answer"}. This page follows it again once it runs.`);
      link("system unreachable", "down");
    } else {
      banner("");
      link("live", "live");
    }
  }

  function onSnapshot(data) {
    state.history = data.history;
    state.timeline = data.timeline;
    state.tick = data.tick;
    reachability(data.reachable, data.problem);
    if (!data.tick) banner(data.problem ? `The system does not answer: ${data.problem}` : "Waiting for the first reading of the system…");
    schedule();
  }

  function onTick(tick) {
    state.tick = tick;
    state.history.push({ t: tick.t, series: tick.series });
    while (state.history.length && tick.t - state.history[0].t > HISTORY_SECONDS) state.history.shift();
    schedule();
  }

  function onLifecycle(event) {
    state.timeline.push(event);
    if (state.timeline.length > TIMELINE_SIZE) state.timeline.shift();
    renderTimeline();
  }

  async function whyClosed() {
    try {
      const response = await fetch("/api/state", { headers: { Authorization: `Bearer ${state.token}` } });
      return response.status === 401 ? "token" : "other";
    } catch (error) {
      return "down";
    }
  }

  function connect() {
    const stream = new EventSource(`/api/events?token=${encodeURIComponent(state.token)}`);
    state.stream = stream;
    stream.addEventListener("open", () => link(state.reachable === false ? "system unreachable" : "live", state.reachable === false ? "down" : "live"));
    stream.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
    stream.addEventListener("tick", (e) => onTick(JSON.parse(e.data)));
    stream.addEventListener("lifecycle", (e) => onLifecycle(JSON.parse(e.data)));
    stream.addEventListener("reachability", (e) => {
      const data = JSON.parse(e.data);
      reachability(data.reachable, data.problem);
      schedule();
    });
    stream.addEventListener("error", async () => {
      if (stream.readyState !== EventSource.CLOSED) {
        link("reconnecting", "down");
        return;
      }
      // The browser gave up on this stream (it was refused): find out why.
      const why = await whyClosed();
      if (why === "token") {
        link("no access", "down");
        banner("This dashboard refused the page's access token (the dashboard restarted, or the address was mistyped). Open the address printed by 'minions dashboard', or 'minions dashboard --url'.");
        return;
      }
      link("reconnecting", "down");
      setTimeout(() => { if (state.stream === stream) connect(); }, 3000);
    });
  }

  function start() {
    state.token = takeToken();
    if (!state.token) {
      link("no access", "down");
      banner("Open this dashboard with the address printed by 'minions dashboard' (or 'minions dashboard --url'): it carries the access token.");
      return;
    }
    connect();
    window.addEventListener("pagehide", () => state.stream && state.stream.close());
    window.addEventListener("resize", () => {
      state.shape = "";
      schedule();
    });
    setInterval(renderTimeline, 5000); // the lanes slide even when nothing happens
  }

  start();
})();
