"use strict";
/*
 * The dependency graph of the dashboard: a layered drawing of the components, written for this
 * page (a system has a handful to a few dozen components, so a small layout does).
 *
 * A component's column is the length of the longest chain of dependencies below it: what
 * depends on nothing is on the left, what depends on it further right, and an arrow points from
 * a component to each of its dependencies. Within a column, components are ordered by the mean
 * row of their neighbours, sweeping right and left a few times, so that fewer edges cross.
 */
const MinionsGraph = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const NODE_H = 40;
  const GAP_X = 64;
  const GAP_Y = 14;
  const PAD = 12;
  const CHAR_W = 7.4;
  const MIN_W = 150; // room for the second line: "restarting · 12 restarts"

  function layout(nodes) {
    const names = new Set(nodes.map((n) => n.name));
    const deps = new Map(
      nodes.map((n) => [n.name, n.dependencies.filter((d) => names.has(d) && d !== n.name)]),
    );
    const column = new Map();
    const depth = (name, path) => {
      if (column.has(name)) return column.get(name);
      if (path.has(name)) return 0; // the runtime refuses cycles; never loop on one
      path.add(name);
      const below = deps.get(name).map((d) => depth(d, path));
      path.delete(name);
      const value = below.length ? 1 + Math.max(...below) : 0;
      column.set(name, value);
      return value;
    };
    nodes.forEach((n) => depth(n.name, new Set()));
    const columns = [];
    nodes.forEach((n) => (columns[column.get(n.name)] ||= []).push(n.name));
    const dependents = new Map(nodes.map((n) => [n.name, []]));
    deps.forEach((list, name) => list.forEach((d) => dependents.get(d).push(name)));
    const row = new Map();
    const number = () => columns.forEach((c) => c.forEach((name, i) => row.set(name, i)));
    number();
    const mean = (name, neighbours) => {
      const near = neighbours.get(name);
      if (!near.length) return row.get(name);
      return near.reduce((sum, other) => sum + row.get(other), 0) / near.length;
    };
    for (let sweep = 0; sweep < 6; sweep++) {
      const rightwards = sweep % 2 === 0;
      const neighbours = rightwards ? deps : dependents;
      const order = [...columns.keys()];
      if (!rightwards) order.reverse();
      for (const i of order.slice(1)) {
        columns[i].sort((a, b) => mean(a, neighbours) - mean(b, neighbours));
        number();
      }
    }
    return { columns, deps };
  }

  function element(tag, attributes, parent) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (parent) parent.appendChild(node);
    return node;
  }

  function subtitle(row) {
    const restarts = row.restarts ? ` · ${row.restarts} restart${row.restarts === 1 ? "" : "s"}` : "";
    return `${row.state}${restarts}`;
  }

  /** Draw the graph of ``rows`` (status rows) into ``svg``; ``onSelect(name)`` on a click. */
  function draw(svg, rows, onSelect) {
    const { columns, deps } = layout(rows);
    const byName = new Map(rows.map((r) => [r.name, r]));
    const widths = columns.map((c) =>
      Math.max(MIN_W, ...c.map((name) => Math.ceil(name.length * CHAR_W) + 28)),
    );
    const tallest = Math.max(1, ...columns.map((c) => c.length));
    const drawnW = widths.reduce((sum, w) => sum + w, 0) + GAP_X * (columns.length - 1) + 2 * PAD;
    const drawnH = tallest * NODE_H + (tallest - 1) * GAP_Y + 2 * PAD;
    const boxW = Math.max(drawnW, svg.clientWidth || 0);
    const boxH = Math.max(drawnH, svg.clientHeight || 0);
    const offsetX = (boxW - drawnW) / 2;
    const place = new Map();
    let x = PAD + offsetX;
    columns.forEach((names, i) => {
      const height = names.length * NODE_H + (names.length - 1) * GAP_Y;
      let y = (boxH - height) / 2;
      for (const name of names) {
        place.set(name, { x, y, w: widths[i] });
        y += NODE_H + GAP_Y;
      }
      x += widths[i] + GAP_X;
    });
    svg.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${boxW} ${boxH}`);
    const defs = element("defs", {}, svg);
    const marker = element(
      "marker",
      { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto" },
      defs,
    );
    element("path", { d: "M0,0 L10,5 L0,10 z" }, marker);
    const edges = element("g", {}, svg);
    const nodes = element("g", {}, svg);
    for (const [name, list] of deps) {
      const from = place.get(name);
      for (const dep of list) {
        const to = place.get(dep);
        const x1 = from.x;
        const y1 = from.y + NODE_H / 2;
        const x2 = to.x + to.w;
        const y2 = to.y + NODE_H / 2;
        const bend = Math.max(24, (x1 - x2) / 2);
        element(
          "path",
          { class: "edge", d: `M${x1},${y1} C${x1 - bend},${y1} ${x2 + bend},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)" },
          edges,
        );
      }
    }
    for (const [name, at] of place) {
      const row = byName.get(name);
      const group = element("g", { class: `node s-${row.state}`, "data-name": name, "data-state": row.state }, nodes);
      if (row.isolated) group.classList.add("isolated");
      element("rect", { x: at.x, y: at.y, width: at.w, height: NODE_H, rx: "6" }, group);
      element("text", { x: at.x + 10, y: at.y + 16 }, group).textContent = name;
      element("text", { class: "sub", x: at.x + 10, y: at.y + 31 }, group).textContent = subtitle(row);
      element("title", {}, group).textContent = `${name}: ${row.state}`;
      group.addEventListener("click", () => onSelect(name));
    }
  }

  /** Recolour the drawn nodes from fresh status ``rows`` (the structure is unchanged). */
  function paint(svg, rows) {
    for (const row of rows) {
      const group = svg.querySelector(`g.node[data-name="${CSS.escape(row.name)}"]`);
      if (!group) continue;
      group.setAttribute("class", `node s-${row.state}${row.isolated ? " isolated" : ""}`);
      group.setAttribute("data-state", row.state);
      group.querySelector("text.sub").textContent = subtitle(row);
      group.querySelector("title").textContent = `${row.name}: ${row.state}`;
    }
  }

  /** A key that changes when the graph must be drawn anew (components or dependencies). */
  function shape(rows) {
    return JSON.stringify(rows.map((r) => [r.name, r.dependencies, r.isolated]));
  }

  return { draw, paint, shape, layout };
})();
