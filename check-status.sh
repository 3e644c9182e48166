#!/usr/bin/env bash
# ./check-status.sh [JOB_ID [api_url]]
# A status table for a job (the newest one when no JOB_ID is given): from this folder's own API
# server when it runs, else from the workspace files. Works from any folder.
# Exits as quick-start does for the job's status now (0 completed, 3 partial, 1 failed, 4 cancelled,
# 6 completed or partial but no worker changed a file, 7 waiting for approval), 8 while it is still pending or
# running (or its pull request's checks are still watched: its result may still move), 2 for a malformed or unknown job id.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$HERE/orchestrator.sh" check-status "$@"
