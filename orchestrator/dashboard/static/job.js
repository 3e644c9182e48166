// One job's page: the whole tree (root -> workers -> child jobs -> their workers),
// kept live by the SSE stream read with fetch() (EventSource cannot send the key
// header) and resynchronised from the status document after every (re)connection.
"use strict";

(() => {
  const { el, setText, setBadge, duration, cost, when, elapsed, api, json, TERMINAL, ApiError } = Dash;
  const jobId = document.body.dataset.jobId;
  const base = "/api/v1/jobs/" + encodeURIComponent(jobId);
  const COLLAPSE_OVER = 60;      // a tree bigger than this starts with its child jobs collapsed
  // Events trigger a snapshot, and a running tree's timeline is redrawn, at most this often;
  // both grow with the tree, as the server's work for each does.
  const resyncMs = () => Math.max(700, 2 * (doc ? doc.tree.workers : 0));
  // A silent worker publishes no event: while workers run, the snapshot is asked for again at least
  // this often, so "no output for N s" (the status document's "quiet") appears without one.
  const QUIET_RESYNC_MS = 5000;
  let syncedAt = 0;
  const timelineMs = () => Math.max(4000, 20 * (doc ? doc.tree.workers : 0));
  const LOG_KEEP = 300000;       // characters of log kept in the page
  const FILES_SHOWN = 200;
  const STATUS_ORDER = ["running", "pending", "success", "recursive_success", "child_incomplete", "failed", "timeout", "cancelled", "skipped"];

  let doc = null;
  let lastSeq = 0;
  let ended = false;
  let currentReport = "final";
  let selected = null;           // key of the worker shown in the panel
  let follower = null;           // AbortController of the log being followed
  let logChars = 0;
  let wake = null;               // resolves a reconnect wait early when the server is back
  let streamAbort = null;        // aborts the event stream to reconnect at once
  const blocks = new Map();      // job id -> collapsible block
  const rows = new Map();        // worker key -> rendered row
  const entries = new Map();     // worker key -> its latest entry: every worker, rendered or not
  const started = new Map();     // worker key -> epoch its running attempt started (from events)
  const $ = (id) => document.getElementById(id);

  const workerKey = (entry) => "depth_" + entry.depth + "_" + entry.worker_id;

  // -- snapshot -> DOM ---------------------------------------------------------------
  function sync(next) {
    doc = next;
    syncedAt = Date.now();
    entries.clear();
    walk(doc.results.tasks);
    summary();
    let root = blocks.get(doc.job_id);
    if (!root) {
      root = makeBlock(doc.job_id, true, true);
      $("tree").append(root.el);
    }
    root.entries = doc.results.tasks;
    root.jobStatus = doc.status;
    fillBlock(root);
    treeCounts();
    if (selected) showWorker(selected);
    if (!TERMINAL.has(doc.status) && Date.now() - timelineAt > timelineMs()) refreshTimeline();
  }

  function walk(list) {
    for (const entry of list) {
      entries.set(workerKey(entry), entry);
      if (entry.child_results) walk(entry.child_results);
    }
  }

  // Nesting shows as indentation of the name column only, so every column stays aligned.
  function indent(node, level) {
    node.style.setProperty("--lvl", String(level));
  }

  function makeBlock(id, isRoot, expanded, level = 0) {
    const toggle = el("button", { type: "button", className: "toggle", title: "expand or collapse" });
    const status = el("span", { className: "badge" });
    const count = el("span", { className: "muted" });
    const head = el("div", { className: "jobhead" }, toggle, el("span", { text: isRoot ? "job" : "child job" }),
      el("a", { href: "/jobs/" + encodeURIComponent(id), className: "mono", text: id }), status, count);
    const body = el("div", { className: "wrows" });
    const block = { id, el: el("div", { className: "jobblock", dataset: { jobId: id } }, head, body),
      toggle, status, count, body, expanded, entries: [], jobStatus: "pending", isRoot };
    toggle.addEventListener("click", () => setExpanded(block, !block.expanded));
    indent(head, level);
    blocks.set(id, block);
    setExpanded(block, expanded);
    return block;
  }

  function setExpanded(block, open) {
    block.expanded = open;
    block.toggle.setAttribute("aria-expanded", String(open));
    setText(block.toggle, open ? "▾" : "▸");
    block.body.hidden = !open;
    if (open) fillBlock(block);
  }

  // Rows are built only for expanded blocks; a collapsed block updates its header alone.
  function fillBlock(block) {
    const done = block.entries.filter((e) => TERMINAL.has(e.status)).length;
    setBadge(block.status, block.jobStatus);
    setText(block.count, done + "/" + block.entries.length + " workers done" +
      (block.entries.length ? "" : " (planning…)"));
    if (!block.expanded) return;
    for (const entry of block.entries) {
      const key = workerKey(entry);
      const row = rows.get(key) || makeRow(key, entry.depth - doc.depth);
      updateRow(row, entry);
      if (row.el.parentNode !== block.body) block.body.append(row.el);
      if (entry.child_job_ids) fillChildren(row, entry);
    }
  }

  function fillChildren(row, entry) {
    const byJob = new Map(entry.child_job_ids.map((id) => [id, []]));
    const statusOf = new Map();
    for (const sub of entry.child_results || []) {
      if (!byJob.has(sub.job_id)) byJob.set(sub.job_id, []);
      byJob.get(sub.job_id).push(sub);
      statusOf.set(sub.job_id, sub.job_status);
    }
    for (const [id, workers] of byJob) {
      const block = blocks.get(id) || makeBlock(id, false, doc.tree.workers <= COLLAPSE_OVER, entry.depth + 1 - doc.depth);
      block.entries = workers;
      block.jobStatus = statusOf.get(id) || block.jobStatus;
      if (block.el.parentNode !== row.kids) row.kids.append(block.el);
      fillBlock(block);
    }
  }

  function makeRow(key, level) {
    const cells = {
      name: el("span", { className: "c-name mono" }),
      status: el("span", { className: "badge" }),
      node: el("span", { className: "c-node mono", hidden: "" }),  // its node (distributed.executor rq)
      task: el("span"),
      time: el("span", { className: "num" }),
      tries: el("span", { className: "num" }),
      cost: el("span", { className: "num" }),
      files: el("span", { className: "num" }),
    };
    const line = el("div", { className: "wrow", role: "button", tabindex: "0", dataset: { key } },
      cells.name, el("span", {}, cells.status), el("span", { className: "c-task" }, cells.node, cells.task),
      cells.time, cells.tries, cells.cost, cells.files);
    line.addEventListener("click", () => select(key));
    line.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        select(key);
      }
    });
    indent(line, level);
    const kids = el("div", { className: "kids" });
    const row = { key, el: el("div", { className: "wnode" }, line, kids), line, kids, cells, entry: null };
    rows.set(key, row);
    return row;
  }

  function updateRow(row, entry) {
    const c = row.cells;
    row.entry = entry;
    // A task's candidate: its task and number, a star once selected (the Candidates card compares them).
    const tag = entry.candidate ? " · " + entry.task_id + " #" + entry.candidate + (entry.selected ? " ★" : "") : "";
    setText(c.name, entry.worker_id + tag);
    setBadge(c.status, entry.status);
    row.line.dataset.status = entry.status;
    // A worker whose checkout is as it found it says so first: it is never merged.
    // Beside its status: a running worker silent for workers.quiet_after, and what the system refused it.
    const quiet = entry.status === "running" && entry.quiet ? entry.quiet + " · " : "";
    const refused = entry.refusals_total ? entry.refusals_total + " refused · " : "";
    const task = quiet + refused + (entry.no_changes ? "no changes · " : "") + entry.task.split("\n", 1)[0];
    setText(c.task, task);
    row.line.classList.toggle("quiet", Boolean(quiet));
    row.line.classList.toggle("refused", Boolean(refused));
    if (c.task.title !== entry.task) c.task.title = entry.task;
    c.node.hidden = !entry.node;
    setText(c.node, entry.node || "");
    c.node.title = entry.node ? "runs on node " + entry.node : "";
    setText(c.time, rowTime(row.key, entry));
    setText(c.tries, String(entry.attempts));
    setText(c.cost, cost(entry.cost_usd, entry));
    setText(c.files, entry.files ?? String(entry.files_created.length));
  }

  function rowTime(key, entry) {
    if (entry.duration !== null && entry.duration !== undefined) return duration(entry.duration);
    if (entry.status === "running" && started.has(key)) return duration(Date.now() / 1000 - started.get(key)) + "…";
    return "—";
  }

  function summary() {
    const tree = doc.tree;
    setBadge($("job-status"), doc.status);
    setText($("job-request"), doc.request);
    $("progress-bar").style.width = (tree.workers ? 100 * tree.completed / tree.workers : 0).toFixed(1) + "%";
    $("progress-bar").className = "progress-bar s-" + doc.status;
    setText($("f-workers"), tree.completed + "/" + tree.workers + " done, " + tree.succeeded + " succeeded" +
      (tree.child_incomplete ? ", " + tree.child_incomplete + " child_incomplete (a child job it started did not complete)" : ""));
    setText($("f-jobs"), String(tree.jobs));
    setText($("f-duration"), duration(elapsed(doc)));
    const resolver = tree.resolver || {};  // merge_strategy resolve's share of the cost
    setText($("f-cost"), cost(tree.cost_usd) + (tree.cost_estimated ? " (" + tree.cost_estimated + " estimated)" : "")
      + (typeof resolver.cost_usd === "number" ? " · resolver " + cost(resolver.cost_usd) + (resolver.estimated ? " est." : "") : "")
      + (tree.cost_unknown && Object.keys(tree.cost_unknown).length ? " · " + Object.keys(tree.cost_unknown).join(", ") : ""));
    setText($("f-started"), when(doc.started_at || doc.created_at));
    setText($("f-depth"), doc.depth + (tree.max_depth > doc.depth ? " (tree reaches depth " + tree.max_depth + ")" : ""));
    if (doc.parent_job_id) {
      const parent = $("f-parent");
      if (!parent.firstChild) {
        parent.append(el("a", { href: "/jobs/" + encodeURIComponent(doc.parent_job_id), className: "mono", text: doc.parent_job_id }),
          " " + (doc.parent_worker || ""));
      }
      $("f-parent-box").hidden = false;
    }
    $("cancel").hidden = TERMINAL.has(doc.status);
    GitView.job(doc);  // git.js: the merge state and action of a worktree job
    ApprovalView.job(doc);  // approval.js: Approve / Reject on a job waiting for approval
    ContinueView.job(doc);  // continue.js: a finished worker answered with feedback, its rounds
    GraphView.job(doc);  // graph.js: the task graph of a job whose tasks depend on one another
    CandidatesView.job(doc);  // candidates.js: each task's candidates side by side, with their diffs
    if (doc.error && doc.error !== "cancelled") message(doc.error, "error");
    else if (doc.status === "cancelled") message("", "info");  // the badge says it
  }

  function treeCounts() {
    const counts = Object.fromEntries(STATUS_ORDER.map((s) => [s, 0]));
    for (const entry of entries.values()) counts[entry.status] = (counts[entry.status] || 0) + 1;
    setText($("tree-counts"), Object.entries(counts).filter(([, n]) => n).map(([s, n]) => n + " " + s.replace("_", " ")).join(" · "));
  }

  function message(text, kind) {
    const box = $("job-message");
    box.className = kind;
    setText(box, text);
    box.hidden = !text;
  }

  // -- snapshots and the event stream ----------------------------------------------------
  let resyncTimer = null;
  let inflight = null;

  function scheduleResync(delay = resyncMs()) {
    if (resyncTimer === null) resyncTimer = setTimeout(() => { resyncTimer = null; resync(); }, delay);
  }

  async function resync() {
    if (inflight) return inflight;
    inflight = (async () => {
      try {
        sync(await json(base + "/status"));
      } catch (error) {
        if (error instanceof ApiError) message("Cannot load the job: " + error.message, "error");
      } finally {
        inflight = null;
      }
    })();
    return inflight;
  }

  function onEvent(type, data) {
    if (type === "worker") {
      const key = "depth_" + data.depth + "_" + data.worker;
      if (data.status === "running" && /^attempt \d+ started/.test(data.message)) started.set(key, data.time);
      const row = rows.get(key);
      if (row) {
        setBadge(row.cells.status, data.status);
        row.line.dataset.status = data.status;
      }
      if (key === selected) setBadge($("w-status").firstChild || $("w-status").appendChild(el("span")), data.status);
    } else if (type === "job") {
      const block = blocks.get(data.job_id);
      if (block) setBadge(block.status, data.status);
      if (data.job_id === jobId) setBadge($("job-status"), data.status);
    } else if (type === "end") {  // sent once the job's reports are written
      ended = true;
      resync().then(() => {
        loadReports();
        refreshTimeline();
      });
      return;
    }
    scheduleResync();
  }

  function parseFrame(frame) {
    let type = "message";
    const data = [];
    for (const line of frame.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
      else if (field === "id" && /^\d+$/.test(value)) lastSeq = Number(value);
    }
    if (data.length) onEvent(type, JSON.parse(data.join("\n")));
  }

  async function readStream(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        parseFrame(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
  }

  function streamState(text, kind) {
    const node = $("stream-state");
    node.className = kind || "muted";
    setText(node, text);
  }

  // Reconnects with backoff (1s doubling to 15s), or at once when the heartbeat sees
  // the server again; every successful connection resyncs from the snapshot.
  async function stream() {
    let backoff = 1000;
    while (!ended) {
      streamAbort = new AbortController();
      try {
        const response = await api(base + "/events", { headers: { "Last-Event-ID": String(lastSeq) }, signal: streamAbort.signal });
        streamState("● live", "live");
        backoff = 1000;
        await resync();
        await readStream(response);
        continue;  // the server bounds a stream (api.long_poll_max): pick it up again
      } catch (error) {
        if (error.name === "AbortError") continue;  // reconnected(): start over at once
        if (error instanceof ApiError && ![429, 500, 502, 503, 504].includes(error.status)) {
          streamState("not following: " + error.message, "error");
          return;
        }
        if (!(error instanceof ApiError)) Dash.connectionLost();
      }
      streamState("reconnecting…", "error");
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, backoff);
      });
      wake = null;
      backoff = Math.min(backoff * 2, 15000);
    }
    streamState("finished", "muted");
  }

  // A stream open when the server went away may never end by itself: start it over.
  function reconnected() {
    if (wake) wake();
    else if (streamAbort && !ended) streamAbort.abort();
    else resync();
    if (selected) {
      if (follower) follower.abort();
      follower = new AbortController();
      followLog(selected, follower);
    }
  }

  // -- worker panel and its live log ---------------------------------------------------
  function select(key) {
    if (selected && rows.has(selected)) rows.get(selected).line.classList.remove("selected");
    if (rows.has(key)) rows.get(key).line.classList.add("selected");
    selected = key;
    $("w-hint").hidden = true;
    $("w-body").hidden = false;
    showWorker(key);
    if (follower) follower.abort();
    follower = new AbortController();
    followLog(key, follower);
  }

  function showWorker(key) {
    const entry = entries.get(key);
    setText($("w-title"), key);
    const statusBox = $("w-status");
    if (!entry) return;
    if (!statusBox.firstChild) statusBox.append(el("span"));
    setBadge(statusBox.firstChild, entry.status);
    setText($("w-task"), entry.task);
    setText($("w-exit"), (entry.exit_reason || "—") + (entry.no_changes ? " · no changes (not merged)" : "")
      + (entry.status === "running" && entry.quiet ? " · " + entry.quiet : ""));
    showRefused(entry, key);
    setText($("w-error"), entry.error || "—");
    setText($("w-logpath"), entry.log || "—");
    const nodes = entry.attempt_nodes || [];  // each attempt's node, when one ran elsewhere than its last
    const moved = nodes.some((n) => n !== entry.node) ? " (attempts: " + nodes.map((n) => n || "this server").join(", ") + ")" : "";
    setText($("w-node"), (entry.node || "this server") + moved);
    const files = $("w-files");
    const shown = entry.files_created.slice(0, FILES_SHOWN);
    if (files.dataset.sig !== entry.files_created.length + ":" + key) {
      files.dataset.sig = entry.files_created.length + ":" + key;
      files.textContent = "";
      for (const name of shown) files.append(el("li", { className: "mono", text: name }));
      if (entry.files_created.length > FILES_SHOWN) {
        files.append(el("li", { className: "muted", text: "+" + (entry.files_created.length - FILES_SHOWN) + " more" }));
      }
      if (!entry.files_created.length) files.append(el("li", { className: "muted", text: "none" }));
    }
    GitView.worker(entry, key);  // git.js: branch, commit, diffstat, changed files, diff
    GraphView.worker(entry);  // graph.js: its task id, prerequisites, waits, gates, unblocked
  }

  // What the system refused the worker, from records it cannot write: one line each; then what its log
  // says it was refused, which nothing outside it recorded: its own words, marked so, never counted.
  function showRefused(entry, key) {
    const list = $("w-refused");
    const refusals = entry.refusals || [];
    const said = entry.said_refused || [];
    const sig = (entry.refusals_total || 0) + ":" + refusals.length + ":" + (entry.said_refused_total || 0) + ":" + key;
    if (list.dataset.sig === sig) return;
    list.dataset.sig = sig;
    list.textContent = "";
    for (const r of refusals) {
      list.append(el("li", { className: "mono", text: r.kind + (r.path ? " " + r.path : "") + ": " + r.line }));
    }
    const more = (entry.refusals_total || 0) - refusals.length;
    if (more > 0) list.append(el("li", { className: "muted", text: "+" + more + " more refused" }));
    if (!refusals.length) list.append(el("li", { className: "muted", text: "none" }));
    for (const r of said) {
      list.append(el("li", { className: "mono muted", text: "its log says (its own words): " + r.kind + (r.path ? " " + r.path : "") + ": " + r.line }));
    }
    const unsaid = (entry.said_refused_total || 0) - said.length;
    if (unsaid > 0) list.append(el("li", { className: "muted", text: "+" + unsaid + " more such lines in its log" }));
  }

  function appendLog(text) {
    if (!text) return;
    const log = $("w-log");
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 16;
    log.append(text);
    logChars += text.length;
    if (logChars > LOG_KEEP) {
      const kept = log.textContent.slice(-Math.floor(LOG_KEEP / 2));
      log.textContent = "[… earlier lines trimmed; the whole log is in the file …]\n" + kept;
      logChars = log.textContent.length;
    }
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  // The last lines first, then new bytes from the file size on, until the worker ends.
  async function followLog(key, controller) {
    const path = base + "/workers/" + encodeURIComponent(key) + "/log";
    const signal = controller.signal;
    const log = $("w-log");
    log.textContent = "";
    logChars = 0;
    let offset = 0;
    try {
      const first = await api(path + "?tail=500", { signal });
      const text = await first.text();
      offset = Number(first.headers.get("X-Log-Size") || 0);
      if (offset > new TextEncoder().encode(text).length) appendLog("[… showing the last 500 lines …]\n");
      appendLog(text);
      while (!signal.aborted && !finished(key)) {
        setText($("w-follow"), "following log…");
        const response = await api(path + "?follow=1&offset=" + offset, { signal });
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let got = 0;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          got += value.byteLength;
          offset += value.byteLength;
          appendLog(decoder.decode(value, { stream: true }));
        }
        appendLog(decoder.decode());
        if (!got) await Dash.sleep(1000);  // ended with nothing new: let the snapshot catch up
      }
      if (!signal.aborted) setText($("w-follow"), finished(key) ? "log complete" : "");
    } catch (error) {
      if (signal.aborted) return;
      setText($("w-follow"), error instanceof ApiError ? "log: " + error.message : "log paused (connection lost)");
    }
  }

  function finished(key) {
    const entry = entries.get(key);
    return Boolean(entry && TERMINAL.has(entry.status));
  }

  // -- timeline and reports ------------------------------------------------------------
  let timelineUrl = null;
  let timelineAt = 0;

  async function refreshTimeline() {
    const box = $("timeline");
    timelineAt = Date.now();
    try {
      const response = await api(base + "/timeline.svg");
      // Shown through a blob URL in an <img>: an SVG there is an image, so no script in it runs.
      const blob = new Blob([await response.arrayBuffer()], { type: "image/svg+xml" });
      const url = URL.createObjectURL(blob);
      let img = box.querySelector("img");
      if (!img) {
        box.textContent = "";
        img = el("img", { alt: "timeline of the job tree", id: "timeline-img" });
        box.append(img);
      }
      const old = timelineUrl;
      timelineUrl = url;
      img.addEventListener("load", () => { if (old) URL.revokeObjectURL(old); }, { once: true });
      img.src = url;
      setText($("timeline-note"), "updated " + when(Date.now() / 1000));
    } catch (error) {
      if (!(error instanceof ApiError)) return;
      box.textContent = "";
      box.append(el("p", { className: "muted", id: "timeline-missing",
        text: error.status === 404 ? "timeline not available" : "timeline: " + error.message }));
    }
  }

  function timelineTick() {
    if (doc && !TERMINAL.has(doc.status) && Dash.isOnline() && Date.now() - timelineAt > timelineMs()) refreshTimeline();
  }

  function loadReports() {
    const tabs = $("report-tabs");
    tabs.textContent = "";
    const names = [["final", "FINAL_RESULT.md"]];
    for (let d = doc.depth; d <= doc.tree.max_depth; d += 1) names.push(["level_" + d, "LEVEL_" + d + "_REPORT.md"]);
    for (const [name, label] of names) {
      tabs.append(el("button", { type: "button", className: "tab small", dataset: { report: name }, text: label,
        onclick: () => showReport(name) }));
    }
    showReport(currentReport);
  }

  async function showReport(name, retry = true) {
    currentReport = name;
    for (const tab of $("report-tabs").children) tab.classList.toggle("active", tab.dataset.report === name);
    const box = $("report");
    try {
      const text = await (await api(base + "/report?name=" + encodeURIComponent(name))).text();
      box.textContent = "";
      box.append(Markdown.render(text));
    } catch (error) {
      if (!(error instanceof ApiError)) return;
      // A child job's level report is written just after it ends: look once more.
      if (error.status === 404 && retry) setTimeout(() => { if (currentReport === name) showReport(name, false); }, 2000);
      box.textContent = "";
      box.append(el("p", { className: "muted", text: error.status === 404 ? "Not written yet: reports appear when the job ends." : error.message }));
    }
  }

  // -- actions -------------------------------------------------------------------------
  async function cancelJob() {
    if (!window.confirm("Cancel job " + jobId + " and every child job under it? Running workers are stopped.")) return;
    const button = $("cancel");
    button.disabled = true;
    try {
      const answer = await json(base + "/cancel", { method: "POST" });
      message("Cancelling: " + answer.message, "info");
      scheduleResync(0);
    } catch (error) {
      message("Cancel failed: " + error.message, "error");
      button.disabled = false;
    }
  }

  function tick() {
    if (!doc) return;
    if (!TERMINAL.has(doc.status) && Date.now() - syncedAt > QUIET_RESYNC_MS) scheduleResync(0);
    if (!TERMINAL.has(doc.status)) setText($("f-duration"), duration(elapsed(doc)));
    for (const [key, row] of rows) {
      if (row.entry && row.entry.status === "running" && started.has(key)) setText(row.cells.time, rowTime(key, row.entry));
    }
  }

  Dash.start(async () => {
    $("cancel").addEventListener("click", cancelJob);
    GitView.init(base, () => doc);
    ApprovalView.init(base);
    ContinueView.init(base);
    GraphView.init(select);
    CandidatesView.init(base, select);
    $("expand-all").addEventListener("click", () => { for (const block of blocks.values()) setExpanded(block, true); });
    $("collapse-all").addEventListener("click", () => {
      for (const block of blocks.values()) if (!block.isRoot) setExpanded(block, false);
    });
    Dash.onReconnect(reconnected);
    setInterval(tick, 1000);
    setInterval(timelineTick, 4000);
    await resync();
    if (doc && TERMINAL.has(doc.status)) {
      // Already over (maybe under an earlier server run): nothing will stream, show what it left.
      ended = true;
      streamState("finished", "muted");
      loadReports();
      refreshTimeline();
    } else if (doc) {
      stream();
    }
  });
})();
