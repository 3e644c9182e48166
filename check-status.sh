#!/usr/bin/env bash
# ./check-status.sh JOB_ID [api_url]
# A status table for a job: from the API when it answers, else from the workspace files.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
if [ $# -lt 1 ]; then
  echo "usage: ./check-status.sh JOB_ID [api_url]" >&2
  exit 2
fi
PY=.venv/bin/python
[ -x "$PY" ] || PY="$(command -v python3)"
exec "$PY" -m orchestrator check-status "$@"
