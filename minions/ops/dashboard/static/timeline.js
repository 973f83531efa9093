"use strict";
/*
 * The timeline of the dashboard: the lifecycle events of the system (crashes, restarts, stops,
 * give-ups, redeploys), as marks on one lane per component over the last minutes, and as a
 * list, newest first, each with its cause. "starting" and "stopping" are left out: the
 * "started" and "stopped" that follow them say the same, with the outcome.
 */
const MinionsTimeline = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const SPAN = 600;
  const LANE_H = 18;
  const LABEL_W = 130;
  const AXIS_H = 16;
  const MAX_LISTED = 200;
  const SHOWN = new Set(["crashed", "restarting", "started", "stopped", "completed", "given_up", "redeploying"]);
  const WORDS = { given_up: "given up" };

  function who(event) {
    return event.replica != null ? `${event.component} #${event.replica}` : event.component;
  }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
  }

  function describe(event) {
    switch (event.kind) {
      case "crashed":
        return `${event.cause || "crash"}: ${event.reason || ""}`;
      case "restarting":
        return `${event.reason || ""}${event.delay != null ? ` (after ${event.delay.toFixed(2)} s)` : ""}`;
      case "started":
        return event.pid != null ? `pid ${event.pid}` : "";
      case "redeploying":
        return "its module's code is loaded anew";
      default:
        return event.reason || "";
    }
  }

  function element(tag, attributes, parent) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    parent.appendChild(node);
    return node;
  }

  /** Draw the lanes: one per component, the last SPAN seconds before ``now``. */
  function lanes(svg, events, components, now) {
    const width = Math.max(svg.clientWidth || 0, 320);
    const height = AXIS_H + Math.max(1, components.length) * LANE_H;
    svg.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("height", String(height));
    const span = width - LABEL_W - 8;
    const xOf = (t) => LABEL_W + span * (1 - (now - t) / SPAN);
    for (let minutes = 0; minutes <= SPAN / 60; minutes += 2) {
      const x = xOf(now - minutes * 60);
      element("text", { class: "axis", x, y: 11, "text-anchor": "middle" }, svg).textContent =
        minutes ? `-${minutes} min` : "now";
    }
    const laneOf = new Map(components.map((name, i) => [name, AXIS_H + i * LANE_H + LANE_H / 2]));
    components.forEach((name) => {
      const y = laneOf.get(name);
      element("line", { class: "lane", x1: LABEL_W, x2: width - 8, y1: y, y2: y }, svg);
      element("text", { class: "lane-label", x: LABEL_W - 6, y: y + 3, "text-anchor": "end" }, svg)
        .textContent = name;
    });
    for (const event of events) {
      if (!SHOWN.has(event.kind) || now - event.at > SPAN || !laneOf.has(event.component)) continue;
      const severe = event.kind === "crashed" || event.kind === "given_up";
      const mark = element(
        "circle",
        { class: `mark k-${event.kind}`, cx: xOf(event.at), cy: laneOf.get(event.component), r: severe ? 5 : 3.5 },
        svg,
      );
      element("title", {}, mark).textContent =
        `${clock(event.at)} ${who(event)} ${WORDS[event.kind] || event.kind}: ${describe(event)}`;
    }
  }

  /** Fill the list, newest first. */
  function list(ol, events) {
    const items = [];
    for (let i = events.length - 1; i >= 0 && items.length < MAX_LISTED; i--) {
      const event = events[i];
      if (!SHOWN.has(event.kind)) continue;
      const li = document.createElement("li");
      li.className = `k-${event.kind}`;
      li.dataset.kind = event.kind;
      li.dataset.component = event.component;
      li.dataset.seq = String(event.seq);
      const cells = [
        ["when", clock(event.at)],
        ["who", who(event)],
        ["what", WORDS[event.kind] || event.kind],
        ["why", describe(event)],
      ];
      for (const [name, text] of cells) {
        const span = document.createElement("span");
        span.className = name;
        span.textContent = text;
        if (name === "why") span.title = text;
        li.appendChild(span);
      }
      items.push(li);
    }
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "No crash or restart yet.";
      items.push(li);
    }
    ol.replaceChildren(...items);
  }

  return { lanes, list, describe };
})();
