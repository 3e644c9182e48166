#!/usr/bin/env bash
# ./quick-start.sh "request" [max_workers] [timeout_seconds]
# ./quick-start.sh --stop      stop the API server it started
# Starts the API server in the background if /health does not answer, submits the request,
# follows the job live until it ends, prints a summary and the path of FINAL_RESULT.md.
# Exit code: 0 completed, 3 partial, 1 failed, 4 cancelled, 2 usage, 5 server could not start.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

if [ "${1:-}" = "--stop" ]; then
  exec .venv/bin/python -m orchestrator stop-server
fi
if [ $# -lt 1 ] || [ -z "${1// }" ]; then
  echo "usage: ./quick-start.sh \"request\" [max_workers] [timeout_seconds]" >&2
  echo "  e.g. ./quick-start.sh \"Build a REST API with authentication, user management, and data CRUD operations\"" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  echo "quick-start.sh: no .venv here yet; run ./install.sh first" >&2
  exit 2
fi
exec .venv/bin/python -m orchestrator quick-start "$@"
