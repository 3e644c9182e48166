// The jobs list: root jobs from GET /api/v1/jobs, each row completed from the job's
// status document (workers done/total and cost cover its whole tree). Finished
// jobs are fetched once; running ones are refreshed every few seconds.
"use strict";

(() => {
  const { el, setText, setBadge, duration, cost, when, elapsed, json, TERMINAL } = Dash;
  const PAGE = 25;
  const REFRESH_MS = 2500;
  const docs = new Map();      // job id -> status document
  const rows = new Map();      // job id -> {tr, cells}
  let offset = 0;
  let roots = [];
  let timer = null;

  async function refresh() {
    clearTimeout(timer);
    try {
      const listing = await json("/api/v1/jobs?limit=500");
      roots = listing.jobs.filter((job) => job.depth === 0);
      document.getElementById("jobs-error").hidden = true;
      const page = roots.slice(offset, offset + PAGE);
      await loadDocs(page.filter((job) => !docs.has(job.job_id) || !TERMINAL.has(docs.get(job.job_id).status)));
      draw(page);
    } catch (error) {
      if (error instanceof Dash.ApiError) {
        const box = document.getElementById("jobs-error");
        box.textContent = "Could not list jobs: " + error.message;
        box.hidden = false;
      }
    } finally {
      timer = setTimeout(refresh, REFRESH_MS);
    }
  }

  // A few at a time: each status document walks the job's whole tree.
  async function loadDocs(jobs) {
    const queue = jobs.slice();
    const worker = async () => {
      while (queue.length) {
        const job = queue.shift();
        try {
          docs.set(job.job_id, await json("/api/v1/jobs/" + encodeURIComponent(job.job_id) + "/status"));
        } catch (error) {
          if (!(error instanceof Dash.ApiError)) throw error;
        }
      }
    };
    await Promise.all([worker(), worker(), worker()]);
  }

  function draw(page) {
    const body = document.getElementById("jobs-body");
    const wanted = new Set(page.map((job) => job.job_id));
    for (const [id, row] of rows) {
      if (!wanted.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    page.forEach((job, index) => {
      const row = rows.get(job.job_id) || makeRow(job);
      fill(row, job, docs.get(job.job_id));
      if (body.children[index] !== row.tr) body.insertBefore(row.tr, body.children[index] || null);
    });
    document.getElementById("jobs-empty").hidden = roots.length > 0;
    setText(document.getElementById("jobs-count"),
      roots.length ? (offset + 1) + "–" + Math.min(offset + PAGE, roots.length) + " of " + roots.length : "");
    document.getElementById("jobs-prev").disabled = offset === 0;
    document.getElementById("jobs-next").disabled = offset + PAGE >= roots.length;
  }

  function makeRow(job) {
    const link = el("a", { href: "/jobs/" + encodeURIComponent(job.job_id), className: "mono", text: job.job_id });
    const cells = {
      status: el("span", { className: "badge" }),
      request: el("td", { className: "wide ellipsis" }),
      workers: el("td", { className: "num" }),
      duration: el("td", { className: "num" }),
      cost: el("td", { className: "num" }),
      started: el("td"),
    };
    const tr = el("tr", { dataset: { jobId: job.job_id } }, el("td", {}, link), el("td", {}, cells.status),
      cells.request, cells.workers, cells.duration, cells.cost, cells.started);
    tr.addEventListener("click", (event) => {
      if (event.target.tagName !== "A") location.href = link.href;
    });
    const row = { tr, cells };
    rows.set(job.job_id, row);
    return row;
  }

  function fill(row, job, doc) {
    const c = row.cells;
    const status = doc ? doc.status : job.status;
    setBadge(c.status, status);
    setText(c.request, job.request);
    c.request.title = job.request;
    setText(c.workers, doc ? doc.tree.completed + "/" + doc.tree.workers : "—/" + job.workers);
    setText(c.duration, duration(doc ? elapsed(doc) : job.duration));
    setText(c.cost, doc ? cost(doc.tree.cost_usd) + (doc.tree.cost_estimated || (doc.tree.resolver || {}).estimated ? " est." : "") : "—");
    setText(c.started, when(doc ? doc.started_at || doc.created_at : job.created_at));
  }

  function page(delta) {
    offset = Math.max(0, offset + delta);
    refresh();
  }

  Dash.start(() => {
    document.getElementById("jobs-prev").addEventListener("click", () => page(-PAGE));
    document.getElementById("jobs-next").addEventListener("click", () => page(PAGE));
    Dash.onReconnect(refresh);
    refresh();
    HooksPanel.start();  // webhooks.js: the last webhook deliveries, when there are any
    NodesPanel.start();  // nodes.js: the machines that run workers (distributed.executor)
  });
})();
