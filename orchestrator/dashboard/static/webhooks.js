// The jobs page's webhook panel: the last deliveries from GET /api/v1/webhooks/deliveries
// (admin key), refreshed every few seconds; hidden while there are none. jobs.js starts it.
"use strict";

const HooksPanel = (() => {
  const { el, badge, when, json } = Dash;
  const REFRESH_MS = 5000;

  async function refresh() {
    try {
      const page = await json("/api/v1/webhooks/deliveries?limit=10");
      document.getElementById("hooks").hidden = page.total === 0;
      document.getElementById("hooks-count").textContent = page.total + " in the outbox";
      const rows = page.deliveries.map((d) => el("tr", {},
        el("td", { text: when(d.created_at) }),
        el("td", {}, badge(d.status)),
        el("td", { className: "ellipsis", text: d.type + " → " + d.url, title: d.delivery_id }),
        el("td", { className: "num", text: String(d.attempts) }),
        el("td", { className: "ellipsis", text: d.last_error || (d.last_status ? "HTTP " + d.last_status : "—") }),
      ));
      document.getElementById("hooks-body").replaceChildren(...rows);
    } catch (error) {
      if (!(error instanceof Dash.ApiError)) throw error;  // a worker key, or an older server: no panel
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  return { start: refresh };
})();
