// Continue a finished worker: a finished root job's worker with a branch gets your feedback
// (POST /api/v1/jobs/<id>/workers/<name>/continue with the key the dashboard already holds); the
// same CLI goes on in its checkout and branch, re-gated, its work added to the result as a new commit.
// Each worker's rounds (state, feedback, what happened to the result) are listed under the box.
"use strict";

const ContinueView = (() => {
  const { setText, json, ApiError, el } = Dash;
  const $ = (id) => document.getElementById(id);
  const ENDED = new Set(["completed", "partial", "failed", "cancelled"]);
  let base = "";  // /api/v1/jobs/<id>
  let busy = false;

  function job(doc) {
    const tasks = (doc && doc.results && doc.results.tasks) || [];
    const workers = tasks.filter((w) => w.branch && w.status !== "skipped" && w.status !== "pending");
    const ended = Boolean(doc && ENDED.has(doc.status) && !doc.parent_job_id);
    const running = tasks.some((w) => (w.rounds || []).some((r) => r.state === "running"));
    $("continue-card").hidden = !ended || !workers.length;
    const select = $("continue-worker");
    const chosen = select.value;
    const names = workers.map((w) => w.worker_id);
    if ([...select.options].map((o) => o.value).join() !== names.join()) {
      select.replaceChildren(...names.map((name) => el("option", { value: name, text: name })));
      if (names.includes(chosen)) select.value = chosen;
    }
    $("continue-button").disabled = busy || running || !ended;
    const rounds = [];
    for (const w of workers) {
      for (const r of w.rounds || []) {
        rounds.push(el("li", {
          text: w.worker_id + " round " + r.number + ": " + r.state + " (" + (r.resumed_session ? "resumed session" : "new session") +
            ")" + (r.merge_note ? "; " + r.merge_note : "") + " | feedback: " + r.feedback,
        }));
      }
    }
    $("continue-rounds").replaceChildren(...rounds);
  }

  async function send() {
    const answer = $("continue-answer");
    const feedback = $("continue-feedback").value.trim();
    const worker = $("continue-worker").value;
    answer.hidden = false;
    if (!feedback) {
      answer.className = "error";
      setText(answer, "Say what the worker should do next: the feedback is its next prompt.");
      $("continue-feedback").focus();
      return;
    }
    busy = true;
    $("continue-button").disabled = true;
    answer.className = "muted";
    setText(answer, "starting round…");
    try {
      const doc = await json(base + "/workers/" + encodeURIComponent(worker) + "/continue", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ feedback }) });
      const round = (doc && doc.round) || {};
      answer.className = "info";
      setText(answer, worker + " round " + String(round.number) + " started (" +
        (round.resumed_session ? "resuming its session" : "a new session with its previous outcome") + ").");
      $("continue-feedback").value = "";
    } catch (error) {
      answer.className = "error";
      setText(answer, error instanceof ApiError ? "Refused (" + error.status + "): " + error.message : "Connection lost");
    } finally {
      busy = false;
    }
  }

  function init(jobBase) {
    base = jobBase;
    $("continue-button").addEventListener("click", send);
  }

  return { init, job };
})();
