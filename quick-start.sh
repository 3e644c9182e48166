#!/usr/bin/env bash
# ./quick-start.sh "request" [max_workers] [timeout_seconds] [--task TASK ...]
#                              --task: an explicit subtask (repeat it), used instead of the planner's
# ./quick-start.sh --start     start this folder's API server in the background (no job)
# ./quick-start.sh --stop      stop this folder's API server (however it was started)
# ./quick-start.sh --restart   stop it and start it again (on the same port while that is free)
# Starts this folder's API server in the background unless it runs (on a port it keeps when the
# configured one belongs to another program), submits the request, follows the job live until it
# ends, prints a summary and the path of FINAL_RESULT.md. Works from any folder.
# Exit code: 0 completed, 3 partial, 1 failed, 4 cancelled, 5 server unreachable, 6 completed or partial but no worker
# changed a file, 7 waiting for approval, 2 usage, 130 interrupted (the job keeps running).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

case "${1:-}" in
  --stop) exec "$HERE/orchestrator.sh" stop-server ;;
  --start) exec "$HERE/orchestrator.sh" start-server ;;
  --restart) exec "$HERE/orchestrator.sh" restart-server ;;
esac
if [ $# -lt 1 ]; then
  echo "usage: ./quick-start.sh \"request\" [max_workers] [timeout_seconds] [--task TASK ...]" >&2
  echo "  e.g. ./quick-start.sh \"Build a REST API with authentication, user management, and data CRUD operations\"" >&2
  exit 2
fi
if [ ! -x "$HERE/.venv/bin/python" ]; then
  printf 'quick-start.sh: no .venv in %s yet; run %q first\n' "$HERE" "$HERE/install.sh" >&2
  exit 2
fi
# An empty or blank request is refused in Python (a bash pattern over a large request is slow).
exec "$HERE/orchestrator.sh" quick-start "$@"
