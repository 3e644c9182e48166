#!/usr/bin/env bash
# ./check-status.sh [JOB_ID [api_url]]
# A status table for a job (the newest one when no JOB_ID is given): from this folder's own API
# server when it runs, else from the workspace files. Works from any folder.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$HERE/orchestrator.sh" check-status "$@"
