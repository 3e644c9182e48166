#!/usr/bin/env bash
# Set up the orchestrator in this folder: a .venv beside this script with pinned dependencies,
# and a config.yaml with a freshly generated API key. Safe to run again (idempotent).
#   ./install.sh          runtime dependencies
#   ./install.sh --dev    also the test tools (pytest, responses)
# Choose the interpreter with PYTHON=/path/to/python3 ./install.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (use --dev for the test tools)" >&2; exit 2 ;;
  esac
done

new_enough() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; }

find_python() {
  for py in python3.13 python3.12 python3.11 python3.10 python3 python; do
    command -v "$py" >/dev/null 2>&1 || continue
    if new_enough "$py"; then
      command -v "$py"; return 0
    fi
  done
  return 1
}

# PYTHON, when set, is the interpreter to use, or an error: never silently another one.
if [ -n "${PYTHON:-}" ]; then
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "install.sh: PYTHON=$PYTHON is not an executable Python (not found); point PYTHON at a Python 3.10 or newer, or unset it." >&2
    exit 1
  fi
  if ! new_enough "$PYTHON"; then
    echo "install.sh: PYTHON=$PYTHON is $("$PYTHON" --version 2>&1 || echo 'not a working Python'); Python 3.10 or newer is required." >&2
    echo "  Point PYTHON at a newer one (e.g. PYTHON=/usr/bin/python3.12 ./install.sh), or unset PYTHON to let install.sh pick one." >&2
    exit 1
  fi
  if [ -x .venv/bin/python ]; then
    want="$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
    have="$(.venv/bin/python -c 'import sys; print(sys.version.split()[0])')"
    if [ "$want" != "$have" ]; then
      echo "install.sh: .venv already exists with Python $have, not PYTHON=$PYTHON (Python $want)." >&2
      echo "  To rebuild it with $PYTHON: rm -rf .venv && PYTHON=$PYTHON ./install.sh" >&2
      exit 1
    fi
  fi
fi

if [ ! -x .venv/bin/python ]; then
  if [ -n "${PYTHON:-}" ]; then
    PY="$(command -v "$PYTHON")"
  elif ! PY="$(find_python)"; then
    found="$(command -v python3 >/dev/null 2>&1 && python3 --version 2>&1 || echo 'no python3 on PATH')"
    echo "install.sh: Python 3.10 or newer is required (found: $found)." >&2
    echo "  Install it (e.g. 'apt-get install python3' or 'brew install python@3.12'), or point PYTHON at one:" >&2
    echo "  PYTHON=/path/to/python3.12 ./install.sh" >&2
    exit 1
  fi
  if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "install.sh: $PY has no working 'venv' module." >&2
    echo "  On Debian/Ubuntu: apt-get install python3-venv   (then run ./install.sh again)" >&2
    exit 1
  fi
  echo "creating .venv with $("$PY" --version 2>&1) ($PY)"
  if ! "$PY" -m venv .venv; then
    rm -rf .venv
    echo "install.sh: '$PY -m venv .venv' failed; on Debian/Ubuntu install python3-venv." >&2
    exit 1
  fi
fi

VPY="$HERE/.venv/bin/python"
REQ="requirements.txt"; [ "$DEV" = 1 ] && REQ="requirements-dev.txt"
STAMP=".venv/.installed-$(basename "$REQ" .txt)"
SUM="$(cat requirements.txt "$REQ" | "$VPY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$SUM" ]; then
  echo "installing dependencies from $REQ"
  "$VPY" -m pip install --disable-pip-version-check -q -r "$REQ"
  echo "$SUM" > "$STAMP"
else
  echo "dependencies up to date ($REQ)"
fi

# config.yaml: created from the template once; an empty api_key gets a random one.
if [ ! -f config.yaml ]; then
  cp config.template.yaml config.yaml
  echo "created config.yaml from config.template.yaml"
fi
chmod 600 config.yaml
if grep -Eq '^  api_key: ""' config.yaml; then
  KEY="$("$VPY" -c 'import secrets; print(secrets.token_urlsafe(32))')"
  "$VPY" - "$KEY" <<'PY'
import re, sys
path = "config.yaml"
text = open(path, encoding="utf-8").read()
text = re.sub(r'^  api_key: ""', f'  api_key: "{sys.argv[1]}"', text, count=1, flags=re.M)
open(path, "w", encoding="utf-8").write(text)
PY
  echo "generated an API key into config.yaml (api.api_key; the file is readable by you only)"
fi
mkdir -p workspace
chmod +x quick-start.sh check-status.sh orchestrator.sh 2>/dev/null || true
"$VPY" -m orchestrator config >/dev/null
# The key RECORD.json is signed with (audit/signing_key.py): workspace/.keys/record-ed25519.pem, mode 0600, made once.
"$VPY" -m orchestrator verify --key >/dev/null
echo "ready: ./quick-start.sh \"Build a REST API with authentication, user management, and data CRUD operations\""
