#!/usr/bin/env bash
# ./check-status.sh JOB_ID [api_url]
# A status table for a job: from this folder's own API server when it runs, else from the
# workspace files. Works from any folder.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -lt 1 ]; then
  echo "usage: ./check-status.sh JOB_ID [api_url]" >&2
  exit 2
fi
exec "$HERE/orchestrator.sh" check-status "$@"
