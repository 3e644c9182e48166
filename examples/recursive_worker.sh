#!/usr/bin/env bash
# A worker for the `command` kind that recurses while depth allows, else does its own work.
#
#   config.yaml:  orchestrator:
#                   worker: command
#                   command: ["bash", "/abs/path/to/orchestrator/examples/recursive_worker.sh", "{task}"]
#
# Its subtask arrives as one argument ("{task}" is replaced inside that one argv element; no shell
# ever parses it). A subtask listing parts separated by ";" ("auth; orders; payments") is split
# into a child job, one worker per part, when ORCHESTRATOR_DEPTH < ORCHESTRATOR_MAX_DEPTH and the
# API is there to ask; anything else is done here: a file written into the worker's own directory
# (its cwd). Exit 0 on success; when a child job does not complete, spawn's exit code
# (3 partial, 1 failed or refused, 4 cancelled) is passed on, so this worker fails too.
set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "${1//[[:space:]]/}" ]; then
  echo "usage: recursive_worker.sh \"subtask\" (got $# argument(s))" >&2
  exit 2
fi
task="$1"
depth="${ORCHESTRATOR_DEPTH:-0}"
max_depth="${ORCHESTRATOR_MAX_DEPTH:-0}"

# The parts of the subtask: split on ";", trimmed, empty ones dropped. read -a neither globs nor evals.
parts=()
IFS=';' read -r -d '' -a pieces <<< "$task" || true  # -d '': newlines stay inside a part
for piece in "${pieces[@]}"; do
  piece="${piece#"${piece%%[![:space:]]*}"}"
  piece="${piece%"${piece##*[![:space:]]}"}"
  if [ -n "$piece" ]; then parts+=("$piece"); fi
done

echo "worker ${ORCHESTRATOR_WORKER_ID:-?} at depth $depth of $max_depth: $task"
if [ -n "${ORCHESTRATOR_API_URL:-}" ] && [ "$depth" -lt "$max_depth" ] && [ "${#parts[@]}" -ge 2 ]; then
  echo "recursing: a child job with ${#parts[@]} subtasks at depth $((depth + 1))"
  # "--" ends the options, so a part starting with "-" is still a subtask. The Markdown results
  # go to stdout (this worker's output) and into CHILD_RESULTS.md in this worker's directory.
  status=0
  orchestrator-spawn --wait -- "${parts[@]}" > CHILD_RESULTS.md || status=$?
  cat CHILD_RESULTS.md
  exit "$status"
fi

# The work itself: here, a small deliverable. A real worker would run a tool or an AI CLI.
{
  printf '# %s\n\n' "$task"
  printf 'Done by %s (job %s) at depth %s, attempt %s.\n' \
    "${ORCHESTRATOR_WORKER_ID:-?}" "${ORCHESTRATOR_JOB_ID:-?}" "$depth" "${ORCHESTRATOR_ATTEMPT:-1}"
} > result.md
echo "RESULT: wrote result.md"
