#!/usr/bin/env bash
# ./orchestrator.sh COMMAND [args]   the orchestrator's command line, from any folder:
#   run | status | logs | watch | jobs | cancel | delete | approve | reject | merge | continue | prune | doctor | config | serve | restart-server | ...  (--help lists them)
# It runs this folder's .venv/bin/python (made by ./install.sh) with this folder's package first on
# sys.path, so neither the current folder nor the Python on PATH matters.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="$HERE/.venv/bin/python"
if [ ! -x "$PY" ]; then
  printf '%s: no .venv in %s yet; run %q first\n' "$(basename "$0")" "$HERE" "$HERE/install.sh" >&2
  exit 2
fi
# sys.path[0] is the folder (not the caller's cwd, where another "orchestrator" could shadow ours).
exec "$PY" -c 'import sys; sys.path[0] = sys.argv.pop(1); from orchestrator.cli.main import main; sys.exit(main())' "$HERE" "$@"
