// A job's task graph, for jobs whose tasks depend on one another: one node per task,
// laid out in layers by depth (a task sits one layer below its deepest prerequisite), coloured by
// its worker's state, with its gates' results along its foot and an arrow from each prerequisite
// (solid once merged, dashed while its dependents still wait on it). Plain SVG built node by
// node; task ids, texts and gate names come from users and workers and only become text nodes.
"use strict";

const GraphView = (() => {
  const { el, setText, duration } = Dash;
  const SVG = "http://www.w3.org/2000/svg";
  const NODE_W = 190;
  const NODE_H = 62;
  const GAP_X = 26;
  const GAP_Y = 46;
  const PAD = 14;
  const LINE_CHARS = 25;        // monospace characters across a node (11.5px ≈ 7px each)
  const $ = (id) => document.getElementById(id);

  let onSelect = () => {};
  let sig = null;

  const workerKey = (entry) => "depth_" + entry.depth + "_" + entry.worker_id;
  const clip = (text, n) => (text.length <= n ? text : text.slice(0, n - 1) + "…");

  // svg("rect", {x: 1}, child...): attributes set one by one, strings appended as text nodes.
  function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  // Depth of each task: 0 without prerequisites, else one more than its deepest one. A cycle
  // (refused at submission, but records are data) or an unknown id counts as no prerequisite.
  function depths(tasks) {
    const byId = new Map(tasks.map((t) => [t.task_id, t]));
    const memo = new Map();
    const visiting = new Set();
    const depth = (id) => {
      if (memo.has(id)) return memo.get(id);
      if (visiting.has(id) || !byId.has(id)) return -1;
      visiting.add(id);
      let d = 0;
      for (const dep of byId.get(id).depends_on || []) d = Math.max(d, depth(dep) + 1);
      visiting.delete(id);
      memo.set(id, d);
      return d;
    };
    for (const t of tasks) depth(t.task_id);
    return memo;
  }

  function gatesOf(entry) {
    return (entry.gates || []).map((g) => ({
      name: String(g.name),
      result: String(g.status || (g.passed ? "passed" : "failed")),
      exit: g.exit_code,
      required: g.required !== false,
    }));
  }

  function tooltip(entry) {
    const lines = [String(entry.task_id) + " (" + entry.status + ")" + (entry.role ? ", role " + entry.role : ""), entry.task];
    if (entry.depends_on && entry.depends_on.length) lines.push("after: " + entry.depends_on.join(", "));
    if (entry.waits_on && entry.waits_on.length) lines.push("waits on: " + entry.waits_on.join(", "));
    if (entry.gate_summary) lines.push("gates: " + entry.gate_summary);
    if (entry.status === "skipped" && entry.exit_reason) lines.push("skipped: " + entry.exit_reason);
    if (entry.trespass && entry.trespass.length) lines.push("trespass: " + entry.trespass.join(", "));
    if (entry.unblocked && entry.unblocked.length) lines.push("unblocked: " + entry.unblocked.join(", "));
    return lines.join("\n");
  }

  function draw(tasks) {
    const depth = depths(tasks);
    const layers = [];
    for (const t of tasks) {
      const d = Math.max(0, depth.get(t.task_id) || 0);
      (layers[d] = layers[d] || []).push(t);
    }
    const widest = Math.max(...layers.map((l) => (l ? l.length : 0)));
    const width = PAD * 2 + widest * NODE_W + (widest - 1) * GAP_X;
    const height = PAD * 2 + layers.length * NODE_H + (layers.length - 1) * GAP_Y;
    const at = new Map();  // task id -> {x, y} of its box's top left
    // Each layer ordered by where its prerequisites sit (their mean x; plan order on ties), which
    // uncrosses most edges of a layered graph in one pass.
    const centre = (t) => {
      const xs = (t.depends_on || []).map((id) => at.get(id)).filter(Boolean).map((p) => p.x);
      return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
    };
    layers.forEach((tasksAt, d) => {
      const layer = d ? tasksAt.map((t, i) => [centre(t), i, t]).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map((k) => k[2]) : tasksAt;
      const span = layer.length * NODE_W + (layer.length - 1) * GAP_X;
      layer.forEach((t, i) => at.set(t.task_id, { x: (width - span) / 2 + i * (NODE_W + GAP_X), y: PAD + d * (NODE_H + GAP_Y) }));
    });
    const root = svg("svg", { id: "graph-svg", width, height, viewBox: "0 0 " + width + " " + height, role: "img",
      "aria-label": "task graph of " + tasks.length + " tasks" },
    svg("defs", {}, svg("clipPath", { id: "graph-clip" }, svg("rect", { width: NODE_W, height: NODE_H, rx: 6 })), svg("marker", { id: "graph-arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
      svg("path", { d: "M0 0 L10 5 L0 10 z", class: "garrow" }))));
    const byId = new Map(tasks.map((t) => [t.task_id, t]));
    for (const t of tasks) {
      const to = at.get(t.task_id);
      for (const dep of t.depends_on || []) {
        const from = at.get(dep);
        if (!from || !byId.has(dep)) continue;
        const x1 = from.x + NODE_W / 2;
        const y1 = from.y + NODE_H;
        const x2 = to.x + NODE_W / 2;
        const y2 = to.y;
        const bend = Math.max(16, (y2 - y1) / 2);
        const waiting = (t.waits_on || []).includes(dep);
        root.append(svg("path", { class: "gedge" + (waiting ? " waiting" : ""), "data-from": dep, "data-to": t.task_id,
          d: `M${x1} ${y1} C${x1} ${y1 + bend} ${x2} ${y2 - bend} ${x2} ${y2}`, "marker-end": "url(#graph-arrow)" }));
      }
    }
    for (const t of tasks) root.append(node(t, at.get(t.task_id)));
    return root;
  }

  function node(entry, pos) {
    const key = workerKey(entry);
    const status = " · " + String(entry.status).replace("_", " ");
    const group = svg("g", { class: "gnode" + ((entry.waits_on || []).length ? " waiting" : ""), "data-task": entry.task_id,
      "data-status": entry.status, "data-key": key, tabindex: 0, role: "button", transform: `translate(${pos.x} ${pos.y})`,
      "clip-path": "url(#graph-clip)" },  // the whole text is in the tooltip; nothing spills out of the box
    svg("title", {}, tooltip(entry)),
    svg("rect", { class: "gbox", width: NODE_W, height: NODE_H, rx: 6 }),
    svg("text", { class: "ghead", x: 8, y: 16 }, svg("tspan", { class: "gid" }, clip(String(entry.task_id), Math.max(6, LINE_CHARS - status.length))),
      status),
    svg("text", { class: "gtask", x: 8, y: 32 }, clip(String(entry.task).split("\n", 1)[0], LINE_CHARS)));
    // The foot: each gate's result, or what the task still waits on, or that no gate ran.
    group.append(svg("rect", { class: "gfoot", x: 1, y: NODE_H - 20, width: NODE_W - 2, height: 19, rx: 5 }));
    const foot = svg("text", { class: "gates", x: 8, y: NODE_H - 6 });
    const gates = gatesOf(entry);
    if (gates.length) {
      let room = LINE_CHARS;
      gates.forEach((g, i) => {
        const mark = g.result === "passed" ? "✓" : "✗";
        const code = g.result !== "passed" && g.exit !== null && g.exit !== undefined && g.exit !== 0 ? " (" + g.exit + ")" : "";
        const text = (i ? "  " : "") + mark + " " + g.name + code;
        // Each gate keeps at least its mark: a long name is cut, never a later gate's result.
        const shown = text.length <= room ? text : clip(text, Math.max((i ? 4 : 2), room - 2 * (gates.length - i - 1)));
        room -= shown.length;
        foot.append(svg("tspan", { class: "gate " + (g.result === "passed" ? "ok" : g.required ? "bad" : "soft"),
          "data-gate": g.name, "data-result": g.result }, shown));
      });
    } else if ((entry.waits_on || []).length) {
      foot.append(svg("tspan", { class: "gwait" }, "waits on " + entry.waits_on.join(", ")));
    } else {
      foot.append(svg("tspan", { class: "gnone" }, "no gate ran"));
    }
    group.append(foot);
    const choose = () => onSelect(key);
    group.addEventListener("click", choose);
    group.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        choose();
      }
    });
    return group;
  }

  // The card shows for a job with dependencies; redrawn only when a task's state changed.
  function job(doc) {
    const tasks = doc.results.tasks.filter((t) => t.task_id !== null && t.task_id !== undefined);
    const card = $("graph-card");
    const shown = Boolean(doc.has_dependencies) || tasks.some((t) => (t.depends_on || []).length);
    card.hidden = !shown;
    if (!shown) return;
    const next = JSON.stringify(tasks.map((t) => [t.task_id, t.status, t.depends_on, t.waits_on, t.gates, t.unblocked, t.task]));
    if (next === sig) return;
    sig = next;
    const box = $("graph");
    box.textContent = "";
    box.append(draw(tasks));
    const waiting = tasks.filter((t) => (t.waits_on || []).length).length;
    const gated = tasks.filter((t) => (t.gates || []).length);
    const failed = gated.filter((t) => t.gates.some((g) => g.required !== false && (g.status || (g.passed ? "passed" : "failed")) !== "passed")).length;
    setText($("graph-note"), tasks.length + " tasks" + (waiting ? ", " + waiting + " waiting on prerequisites" : "") +
      (gated.length ? ", gates ran on " + gated.length + (failed ? " (" + failed + " failed a required gate)" : "") : "") +
      (doc.integration ? " · merged into " + String(doc.integration).replace("refs/heads/", "") : ""));
  }

  // The worker panel's graph facts: its task id and role, prerequisites, what it still waits on,
  // each gate (result, exit code, duration, log), trespassed paths and what its end unblocked.
  function worker(entry) {
    const box = $("w-graph");
    box.hidden = entry.task_id === null || entry.task_id === undefined ||
      !((entry.depends_on || []).length || (entry.gates || []).length || (entry.unblocked || []).length || (entry.trespass || []).length);
    if (box.hidden) return;
    const list = (items) => (items && items.length ? items.join(", ") : "—");
    setText($("w-task-id"), String(entry.task_id) + (entry.role ? " (" + entry.role + ")" : ""));
    setText($("w-after"), list(entry.depends_on));
    setText($("w-waits"), list(entry.waits_on));
    setText($("w-trespass"), list(entry.trespass));
    setText($("w-unblocked"), list(entry.unblocked));
    const gates = $("w-gates");
    const sig = JSON.stringify(entry.gates || []);
    if (gates.dataset.sig === sig) return;
    gates.dataset.sig = sig;
    gates.textContent = "";
    for (const g of gatesOf(entry)) {
      const raw = entry.gates.find((x) => String(x.name) === g.name) || {};
      gates.append(el("li", { className: "gate-line", dataset: { gate: g.name, result: g.result } },
        el("span", { className: "gate " + (g.result === "passed" ? "ok" : g.required ? "bad" : "soft"), text: g.name + ": " + g.result }),
        el("span", { className: "muted", text: " exit " + (g.exit === null || g.exit === undefined ? "—" : g.exit) +
          ", " + duration(raw.duration) + (g.required ? "" : ", optional") + (raw.log_path ? " · " + String(raw.log_path) : "") })));
    }
    if (!entry.gates || !entry.gates.length) gates.append(el("li", { className: "muted", text: "none ran" }));
  }

  function init(select) {
    onSelect = select;
  }

  return { init, job, worker, depths };
})();
