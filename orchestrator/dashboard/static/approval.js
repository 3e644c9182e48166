// A person in the loop: a job waiting for approval (approval: before_merge) shows
// Approve (an optional note) and Reject (a reason, required) buttons that call
// POST /api/v1/jobs/<id>/approve and /reject with the key the dashboard already holds.
"use strict";

const ApprovalView = (() => {
  const { setText, json, ApiError } = Dash;
  const $ = (id) => document.getElementById(id);
  let base = "";  // /api/v1/jobs/<id>
  let busy = false;

  function job(doc) {
    const waiting = Boolean(doc && doc.status === "waiting");
    $("approval-card").hidden = !waiting && $("approval-answer").hidden;
    $("approve-button").disabled = !waiting || busy;
    $("reject-button").disabled = !waiting || busy;
  }

  async function decide(action) {
    const answer = $("approval-answer");
    const body = {};
    if (action === "approve") {
      const note = $("approve-note").value.trim();
      if (note) body.note = note;
    } else {
      const reason = $("reject-reason").value.trim();
      if (!reason) {
        answer.hidden = false;
        answer.className = "error";
        setText(answer, "Say why you reject it: the reason goes in the job's record and report.");
        $("reject-reason").focus();
        return;
      }
      body.reason = reason;
    }
    busy = true;
    $("approve-button").disabled = true;
    $("reject-button").disabled = true;
    answer.hidden = false;
    answer.className = "muted";
    setText(answer, action === "approve" ? "approving: landing its result…" : "rejecting…");
    try {
      const doc = await json(base + "/" + action, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      answer.className = "info";
      setText(answer, (action === "approve" ? "Approved" : "Rejected") + ": the job is now " + String(doc && doc.status) + ".");
    } catch (error) {
      answer.className = "error";
      setText(answer, error instanceof ApiError ? "Refused (" + error.status + "): " + error.message : "Connection lost");
    } finally {
      busy = false;
    }
  }

  function init(jobBase) {
    base = jobBase;
    $("approve-button").addEventListener("click", () => decide("approve"));
    $("reject-button").addEventListener("click", () => decide("reject"));
  }

  return { init, job };
})();
