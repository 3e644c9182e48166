// The jobs page's Nodes card: the machines that run workers, from GET /api/v1/nodes (admin
// key), refreshed every few seconds. Under the local executor it says this server runs every
// worker; with a worker key (403) or an older server the card stays hidden. jobs.js starts it.
"use strict";

const NodesPanel = (() => {
  const { el, badge, duration, json } = Dash;
  const REFRESH_MS = 5000;

  async function refresh() {
    const card = document.getElementById("nodes");
    try {
      const doc = await json("/api/v1/nodes");
      const local = doc.executor === "local";
      document.getElementById("nodes-local").hidden = !local;
      document.getElementById("nodes-table").hidden = local;
      document.getElementById("nodes-empty").hidden = local || doc.nodes.length > 0;
      const alive = doc.nodes.filter((n) => n.alive).length;
      document.getElementById("nodes-count").textContent = local ? "" : alive + " of " + doc.nodes.length + " alive";
      const rows = doc.nodes.map((n) => el("tr", { dataset: { node: n.name } },
        el("td", { className: "mono", text: n.name, title: n.host + " (pid " + n.pid + ")" }),
        el("td", {}, badge(n.alive ? "alive" : "dead")),
        el("td", { text: n.kinds.join(", ") || "—" }),
        el("td", { className: "num", text: n.running + " / " + n.slots }),
        el("td", { className: "num", text: duration(n.heartbeat_age) + " ago" }),
      ));
      document.getElementById("nodes-body").replaceChildren(...rows);
      card.hidden = false;
    } catch (error) {
      if (!(error instanceof Dash.ApiError)) throw error;
      card.hidden = true;
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  return { start: refresh };
})();
