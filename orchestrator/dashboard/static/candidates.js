// A job's tasks that ran as several candidates: a panel per task with a column per
// candidate, side by side (status, gates, score and rank, measures, cost, time, branch and
// diffstat, the winner marked), the selection's rule, winner and reason, and each candidate's
// diff loaded from the worker diff route into its column. Read from the status document's
// "candidates" groups (reports/candidates.py); kinds, models, measures, reasons and diffs come
// from workers, scoring commands and judges: they only ever become text nodes.
"use strict";

const CandidatesView = (() => {
  const { el, setText, setBadge, duration, cost, json, ApiError } = Dash;
  const DIFF_BYTES = 200000;     // per candidate: three side by side stay readable and light
  const MEASURES_SHOWN = 20;
  const $ = (id) => document.getElementById(id);

  let base = "";                 // /api/v1/jobs/<id>
  let onSelect = () => {};
  let sig = null;
  const panels = new Map();      // task id -> panel

  const number = (value) => (typeof value === "number" ? String(Math.round(value * 10000) / 10000) : String(value));

  function job(doc) {
    const groups = doc.candidates || {};
    const ids = Object.keys(groups);
    $("candidates-card").hidden = !ids.length;
    const next = JSON.stringify(groups);
    if (next === sig) return;
    sig = next;
    const box = $("candidates");
    for (const [id, panel] of panels) {
      if (!(id in groups)) {
        panel.el.remove();
        panels.delete(id);
      }
    }
    for (const id of ids) {
      const panel = panels.get(id) || makePanel(id);
      fillPanel(panel, groups[id]);
      if (panel.el.parentNode !== box) box.append(panel.el);
    }
    const chosen = ids.filter((id) => groups[id].chosen).length;
    setText($("candidates-note"), ids.length + " task(s) run as candidates, " + chosen + " chosen; only a winner is merged, the others stay as branches for review");
  }

  function makePanel(taskId) {
    const button = el("button", { type: "button", className: "small cand-diffs-button", text: "Show diffs" });
    const panel = {
      id: taskId,
      rule: el("span", { className: "badge cand-rule" }),
      verdict: el("span", { className: "cand-verdict" }),
      reason: el("p", { className: "cand-reason pre-wrap" }),
      cols: el("div", { className: "ccols" }),
      columns: new Map(),        // worker name -> column
      button,
      open: false,
    };
    panel.el = el("div", { className: "cpanel", dataset: { task: taskId } },
      el("div", { className: "card-head" }, el("h3", { className: "mono", text: taskId }), panel.rule, panel.verdict,
        el("span", { className: "spacer" }), button),
      panel.reason, panel.cols);
    button.addEventListener("click", () => toggleDiffs(panel));
    panels.set(taskId, panel);
    return panel;
  }

  function fillPanel(panel, group) {
    setText(panel.rule, String(group.select || "?"));
    let verdict = "not chosen yet";
    if (group.chosen) verdict = group.winner ? "winner: " + String(group.winner) : "no winner: none eligible";
    setText(panel.verdict, verdict);
    panel.el.dataset.winner = group.winner || "";
    setText(panel.reason, group.reason ? String(group.reason) : "");
    panel.reason.hidden = !group.reason;
    const rows = group.rows || [];
    panel.cols.style.setProperty("--n", String(Math.max(1, rows.length)));
    const names = new Set(rows.map((r) => r.worker));
    for (const [name, col] of panel.columns) {
      if (!names.has(name)) {
        col.el.remove();
        panel.columns.delete(name);
      }
    }
    for (const row of rows) {
      let col = panel.columns.get(row.worker);
      if (!col) {
        col = makeColumn(row);
        panel.columns.set(row.worker, col);
      }
      fillColumn(col, row);
      if (col.el.parentNode !== panel.cols) panel.cols.append(col.el);
      if (panel.open && col.diffFor !== (row.commit || "")) loadDiff(col, row);
    }
  }

  function makeColumn(row) {
    const col = {
      name: el("button", { type: "button", className: "cand-name mono link", title: "show this worker in the panel" }),
      winner: el("span", { className: "cand-winner", text: "winner" }),
      status: el("span", { className: "badge" }),
      facts: el("dl", { className: "kv cand-facts" }),
      measures: el("ul", { className: "files cand-measures" }),
      note: el("span", { className: "muted cand-diff-note" }),
      diff: el("pre", { className: "diff cand-diff", tabindex: "0" }),
      key: row.key,
      diffFor: null,
      abort: null,
    };
    col.diff.hidden = true;
    col.el = el("div", { className: "ccol", dataset: { worker: row.worker } },
      el("div", { className: "cand-head" }, col.name, col.status, col.winner), col.facts, col.measures, col.note, col.diff);
    col.name.addEventListener("click", () => onSelect(col.key));
    return col;
  }

  function fillColumn(col, row) {
    col.key = row.key;
    setText(col.name, "#" + row.candidate + " " + row.worker);
    setBadge(col.status, row.status);
    col.el.dataset.status = row.status;
    col.el.dataset.selected = row.selected === null || row.selected === undefined ? "" : String(row.selected);
    col.el.classList.toggle("won", row.selected === true);
    col.winner.hidden = row.selected !== true;
    col.facts.textContent = "";
    const fact = (label, value, cls) => col.facts.append(el("dt", { text: label }), el("dd", { className: cls || null, text: value }));
    fact("Kind", String(row.kind) + (row.model ? " · " + String(row.model) : ""), "cand-kind");
    fact("Gates", row.gates ? String(row.gates) : "—", "cand-gates");
    let score = row.score === null || row.score === undefined ? "—" : number(row.score);
    if (row.rank) score += " (rank " + row.rank + ")";
    if (row.eligible === false) score += " · out";
    fact("Score", score, "cand-score");
    fact("Cost", cost(row.cost_usd, row), "cand-cost");
    fact("Time", row.duration === null || row.duration === undefined ? "—" : duration(row.duration), "cand-time");
    fact("Branch", row.branch ? String(row.branch) : "—", "mono cand-branch");
    fact("Diffstat", row.diffstat ? String(row.diffstat) : "—", "cand-diffstat");
    if (row.reason) fact("Reason", String(row.reason), "cand-why pre-wrap");
    col.measures.textContent = "";
    const measures = Object.entries(row.measures || {});
    for (const [name, value] of measures.slice(0, MEASURES_SHOWN)) {
      const points = row.parts && name in row.parts ? " (" + number(row.parts[name]) + " pts)" : "";
      col.measures.append(el("li", { className: "mono", text: String(name) + ": " + number(value) + points }));
    }
    if (measures.length > MEASURES_SHOWN) col.measures.append(el("li", { className: "muted", text: "+" + (measures.length - MEASURES_SHOWN) + " more" }));
    col.measures.hidden = !measures.length;
  }

  function toggleDiffs(panel) {
    panel.open = !panel.open;
    setText(panel.button, panel.open ? "Hide diffs" : "Show diffs");
    for (const col of panel.columns.values()) {
      if (!panel.open) {
        if (col.abort) col.abort.abort();
        col.diff.hidden = true;
        col.diff.textContent = "";
        col.diffFor = null;
        setText(col.note, "");
      }
    }
    if (panel.open) {
      const group = JSON.parse(sig || "{}")[panel.id] || { rows: [] };
      for (const row of group.rows) {
        const col = panel.columns.get(row.worker);
        if (col) loadDiff(col, row);
      }
    }
  }

  async function loadDiff(col, row) {
    if (col.abort) col.abort.abort();
    const controller = new AbortController();
    col.abort = controller;
    col.diffFor = row.commit || "";
    setText(col.note, "loading diff…");
    try {
      const doc = await json(base + "/workers/" + encodeURIComponent(row.key) + "/diff?max_bytes=" + DIFF_BYTES, { signal: controller.signal });
      if (controller.signal.aborted) return;
      GitView.renderDiff(col.diff, String(doc.diff || ""));
      col.diff.hidden = !doc.diff;
      setText(col.note, doc.diff ? (doc.truncated ? "first " + DIFF_BYTES + " of " + doc.bytes + " bytes" : doc.bytes + " bytes") : "no changes");
    } catch (error) {
      if (controller.signal.aborted) return;
      col.diff.hidden = true;
      col.diffFor = null;
      setText(col.note, error instanceof ApiError ? "no diff: " + error.message : "diff: connection lost");
    }
  }

  function init(jobBase, select) {
    base = jobBase;
    onSelect = select;
  }

  return { init, job };
})();
