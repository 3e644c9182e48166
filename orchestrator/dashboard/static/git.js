// The git side of a job's page, for jobs in worktree isolation: each worker's
// branch, commit, diffstat, changed files and diff; the job's merge state, its conflicts and
// the merge action. Diffs, paths and branch names come from workers: they only ever become
// text nodes (a diff is split into lines, each a span whose textContent is the line).
"use strict";

const GitView = (() => {
  const { el, setText, api, json, ApiError, TERMINAL } = Dash;
  const FILES_SHOWN = 200;
  const COLOURED_LINES = 20000;  // past this many lines a diff is shown as one text node
  const $ = (id) => document.getElementById(id);

  let base = "";                 // /api/v1/jobs/<id>
  let current = () => null;      // the page's latest status document
  let diffKey = null;            // the worker whose diff is shown (or loading)
  let diffAbort = null;
  let mergeSig = null;
  let merging = false;

  const short = (commit) => (commit ? String(commit).slice(0, 12) : "—");
  const isWorktree = (doc) => Boolean(doc && doc.config && doc.config.isolation === "worktree");

  // -- a worker ----------------------------------------------------------------------------
  function worker(entry, key) {
    const box = $("w-git");
    box.hidden = !isWorktree(current()) && !entry.branch;
    if (box.hidden) return;
    setText($("w-branch"), entry.branch || "— (named once its first attempt's work is committed)");
    const commit = $("w-commit");
    setText(commit, short(entry.commit));
    commit.title = entry.commit || "";
    setText($("w-diffstat"), entry.diffstat || "—");
    const changed = entry.files_changed || [];
    const list = $("w-changed");
    const sig = key + ":" + changed.length + ":" + (entry.commit || "");
    if (list.dataset.sig !== sig) {
      list.dataset.sig = sig;
      list.textContent = "";
      for (const file of changed.slice(0, FILES_SHOWN)) {
        list.append(el("li", { className: "mono" },
          el("span", { className: "chg chg-" + String(file.change), text: String(file.change) }), " ",
          el("span", { className: "path", text: String(file.path) }),
          file.from ? el("span", { className: "muted", text: " (from " + String(file.from) + ")" }) : null));
      }
      if (changed.length > FILES_SHOWN) list.append(el("li", { className: "muted", text: "+" + (changed.length - FILES_SHOWN) + " more" }));
      if (!changed.length) list.append(el("li", { className: "muted", text: entry.commit ? "none" : "— (not committed yet)" }));
    }
    if (diffKey !== key) closeDiff(key);
  }

  function closeDiff(key) {
    if (diffAbort) diffAbort.abort();
    diffAbort = null;
    diffKey = key;
    const pre = $("w-diff");
    pre.textContent = "";
    pre.hidden = true;
    setText($("w-diff-note"), "");
    setText($("w-diff-button"), "Show diff");
  }

  async function showDiff() {
    const key = diffKey;
    if (!key) return;
    const pre = $("w-diff");
    if (!pre.hidden) {  // the button toggles
      closeDiff(key);
      return;
    }
    if (diffAbort) diffAbort.abort();
    const controller = new AbortController();
    diffAbort = controller;
    setText($("w-diff-note"), "loading…");
    try {
      const doc = await json(base + "/workers/" + encodeURIComponent(key) + "/diff", { signal: controller.signal });
      if (controller.signal.aborted || diffKey !== key) return;
      renderDiff(pre, String(doc.diff || ""));
      pre.hidden = false;
      setText($("w-diff-button"), "Hide diff");
      const size = doc.truncated ? "first " + new TextEncoder().encode(doc.diff).length + " of " + doc.bytes + " bytes (cut at max_bytes)"
        : doc.bytes + " bytes";
      setText($("w-diff-note"), short(doc.from) + ".." + short(doc.to) + " · " + (doc.diff ? size : "no changes"));
    } catch (error) {
      if (controller.signal.aborted) return;
      setText($("w-diff-note"), error instanceof ApiError ? "diff: " + error.message : "diff: connection lost");
    }
  }

  function renderDiff(pre, text) {
    pre.textContent = "";
    const lines = text.split("\n");
    if (lines.length > COLOURED_LINES) {
      pre.textContent = text;
      return;
    }
    const fragment = document.createDocumentFragment();
    lines.forEach((line, i) => {
      const last = i === lines.length - 1;
      if (last && !line) return;
      let cls = "";
      if (line.startsWith("diff --git") || line.startsWith("# depth_")) cls = "d-file";
      else if (line.startsWith("@@")) cls = "d-hunk";
      else if (line.startsWith("+") && !line.startsWith("+++")) cls = "d-add";
      else if (line.startsWith("-") && !line.startsWith("---")) cls = "d-del";
      fragment.append(el("span", { className: cls || null, text: line + (last ? "" : "\n") }));
    });
    pre.append(fragment);
  }

  // -- the job: merge state and the merge action ---------------------------------------------
  function job(doc) {
    const card = $("git-card");
    card.hidden = !isWorktree(doc);
    if (card.hidden) return;
    const running = !TERMINAL.has(doc.status);
    const button = $("merge-button");
    button.disabled = running || merging;
    button.title = running ? "the job is still running: merge once it has ended" : "";
    // The pull request, or why publishing failed: the server's words (reports/wording.py), as on every surface.
    const pr = $("merge-pr");
    pr.hidden = !doc.pull_request;
    setText(pr, doc.pull_request ? "pull request: " + doc.pull_request : "");
    const sig = JSON.stringify([doc.merge === undefined ? null : doc.merge, doc.resolutions || []]);
    if (sig !== mergeSig) {
      mergeSig = sig;
      renderMerge(doc.merge || null, doc.resolutions);
    }
  }

  // merge_strategy resolve: each conflict a resolver worker was asked to resolve (the status
  // document's "resolutions": a graph's integration's, then the last merge's), one line each.
  function renderResolutions(box, resolutions) {
    if (!resolutions || !resolutions.length) return;
    const list = el("ul", { className: "resolutions", id: "merge-resolutions" });
    for (const r of resolutions) {
      const tries = (r.attempts || []).length;
      const gates = (r.gates || []).map((g) => String(g.name) + " " + String(g.status)).join(", ");
      const usd = typeof r.cost_usd === "number" ? " · $" + r.cost_usd.toFixed(4) + (r.cost_basis === "estimated" ? " est." : "") : "";
      const logs = (r.attempts || []).map((a) => a.log_path).filter(Boolean);
      list.append(el("li", { className: r.accepted ? "resolution accepted" : "resolution refused",
        text: (r.accepted ? "resolved: " : "refused: ") + String(r.worker) + " in " + (r.files || []).join(", ") +
          " by " + String(r.resolver) + (r.stage === "integration" ? " (integration)" : "") +
          " · " + tries + (tries === 1 ? " attempt" : " attempts") + (gates ? " · gates: " + gates : "") + usd +
          " · " + String(r.reason) + (logs.length ? " · log: " + String(logs[logs.length - 1]) : "") }));
    }
    box.append(el("h3", { text: resolutions.length + " resolution(s)" }), list);
  }

  function renderMerge(merge, resolutions) {
    const box = $("merge-state");
    box.textContent = "";
    if (resolutions === undefined) resolutions = merge && merge.resolutions;  // a merge record alone (POST /merge's)
    if (!merge) {
      box.append(el("p", { className: "muted", text: "Not merged yet: when the job ends its workers' branches are merged into its result branch (or merge them with the action above)." }));
      renderResolutions(box, resolutions);  // a graph's integration's, before the merge
      return;
    }
    if (merge.error) {
      box.append(el("p", { className: "error", text: "Merge failed: " + String(merge.error) }));
      return;
    }
    const names = (list) => (list && list.length ? list.join(", ") : "none");
    const facts = el("dl", { className: "kv", id: "merge-facts" });
    const fact = (label, value, cls) => facts.append(el("dt", { text: label }), el("dd", { className: cls || null, text: value }));
    fact("Strategy", String(merge.strategy));
    fact("Result", String(merge.result_ref || "—") + (merge.result_commit ? " @ " + short(merge.result_commit) : " (none made)"), "mono");
    fact("Merged", names((merge.merged || []).filter((n) => !(merge.unchanged || []).includes(n))), "mono");
    fact("Skipped", names(merge.skipped), "mono");
    if (merge.unchanged && merge.unchanged.length) fact("No changes", names(merge.unchanged) + " (nothing to merge)", "mono");
    const leftOut = merge.left_out || [];
    if (leftOut.length) {  // each its own line: the worker, the workers it broke the result with, and why
      const list = el("ul", { className: "left-out", id: "merge-left-out" });
      for (const w of leftOut) {
        const item = el("li", { className: "mono" }, el("strong", { className: "left-out-worker", text: String(w.worker) }));
        if (w.combination) item.append(el("span", { className: "left-out-combination", text: " · in combination with " + String(w.combination) }));
        item.append(el("span", { className: "left-out-reason", text: " · " + String(w.reason) }));
        list.append(item);
      }
      facts.append(el("dt", { text: "Left out" }), el("dd", {}, list));
    }
    if (merge.removed) fact("Removed", "the result branch of an earlier merge (" + short(merge.previous) + "): manual merges nothing", "mono");
    if (merge.command) fact("Take it", String(merge.command), "mono take");
    if (merge.into) {
      const into = merge.into;
      const how = into.moved ? "moved to the result" : "not moved" + (into.refused ? ": " + String(into.refused) : "");
      fact("Into", String(into.branch) + ": " + how + (into.command && !into.moved ? " · run: " + String(into.command) : ""), "mono");
    }
    if (merge.at) fact("At", Dash.when(merge.at));
    box.append(facts);
    const conflicts = merge.conflicts || [];
    if (!conflicts.length) {
      box.append(el("p", { className: "muted", id: "merge-no-conflicts", text: "No conflicts." }));
      renderResolutions(box, resolutions);
      return;
    }
    const body = el("tbody");
    for (const c of conflicts) {
      body.append(el("tr", { className: "conflict" },
        el("td", { className: "mono", text: String(c.path) }),
        el("td", { className: "mono", text: (c.workers || []).join(", ") }),
        el("td", { className: "num", text: String(c.hunks) }),
        el("td", { text: String(c.kind || "") + (c.predicted ? " (predicted)" : "") }),
        el("td", { className: "mono", text: c.resolved_by ? String(c.resolved_by) : "—" })));
    }
    box.append(el("h3", { text: conflicts.length + " conflicting file(s)" }),
      el("table", { className: "conflicts", id: "merge-conflicts" },
        el("thead", {}, el("tr", {}, ...["File", "Workers", "Hunks", "Kind", "Resolved by"].map((t) => el("th", { text: t })))), body));
    renderResolutions(box, resolutions);
  }

  async function merge() {
    const doc = current();
    if (!doc || !TERMINAL.has(doc.status)) return;
    const body = { strategy: $("merge-strategy").value };
    const into = $("merge-into").value.trim();
    if (into) body.into = into;
    const answer = $("merge-answer");
    merging = true;
    $("merge-button").disabled = true;
    answer.hidden = false;
    answer.className = "muted";
    setText(answer, "merging…");
    try {
      const answered = await json(base + "/merge", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const result = answered && answered.merge;  // {"job_id", "merge"}: the job's new merge record
      answer.className = "info";
      if (result && result.error) {
        answer.className = "error";
        setText(answer, "Merge failed: " + String(result.error));
      } else {
        const conflicts = (result && result.conflicts) || [];
        setText(answer, "Merged with " + String(result.strategy) + ": " + ((result.merged || []).length) + " worker(s) merged, " +
          conflicts.length + " conflicting file(s).");
      }
      mergeSig = JSON.stringify(result);
      renderMerge(result);
    } catch (error) {
      answer.className = "error";
      setText(answer, error instanceof ApiError ? "Merge refused (" + error.status + "): " + error.message : "Merge: connection lost");
    } finally {
      merging = false;
      const now = current();
      $("merge-button").disabled = !now || !TERMINAL.has(now.status);
    }
  }

  function init(jobBase, getDoc) {
    base = jobBase;
    current = getDoc;
    $("w-diff-button").addEventListener("click", showDiff);
    $("merge-button").addEventListener("click", merge);
  }

  return { init, job, worker, renderDiff };  // renderDiff: candidates.js shows diffs side by side
})();
