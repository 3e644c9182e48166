#!/usr/bin/env bash
# Set-up for bench/bench_engine.py: make sure GNU parallel is installed and silence its citation
# notice; install what the sandbox-runtime row needs (socat and ripgrep, then the pinned
# @anthropic-ai/sandbox-runtime from bench/package.json into bench/node_modules, where node is).
# Idempotent: safe to run again.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if command -v parallel >/dev/null 2>&1 && parallel --version 2>/dev/null | head -n1 | grep -q "GNU parallel"; then
    echo "GNU parallel already installed: $(parallel --version | head -n1)"
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing GNU parallel with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y parallel; then
        apt-get update
        apt-get install -y parallel
    fi
    echo "installed: $(parallel --version | head -n1)"
else
    cat >&2 <<'MSG'
GNU parallel is not installed, and this script can only install it as root with apt-get.
Install it yourself, then run this script again:
    Debian/Ubuntu:  sudo apt-get install parallel
    Fedora/RHEL:    sudo dnf install parallel
    macOS:          brew install parallel
    anywhere:       https://www.gnu.org/software/parallel/ (parallel is one Perl script)
The benchmark still runs without it; it prints a SKIPPED line for GNU parallel.
MSG
fi

# GNU parallel prints a citation notice (and may wait for input) until told it is acknowledged.
mkdir -p "$HOME/.parallel"
touch "$HOME/.parallel/will-cite"
echo "citation notice silenced ($HOME/.parallel/will-cite)"

# The sandbox-runtime row: Anthropic's sandbox-runtime runs socat bridges inside bubblewrap and
# lists files with ripgrep. Without node the row prints SKIPPED (n/a).
missing=()
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v rg >/dev/null 2>&1 || missing+=(ripgrep)
if [ "${#missing[@]}" -eq 0 ]; then
    echo "socat and ripgrep already installed"
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y "${missing[@]}"; then
        apt-get update
        apt-get install -y "${missing[@]}"
    fi
else
    echo "the sandbox-runtime row needs ${missing[*]}: install them (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
fi
if command -v npm >/dev/null 2>&1; then
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
    echo "installed: @anthropic-ai/sandbox-runtime $(node -p "require('$here/node_modules/@anthropic-ai/sandbox-runtime/package.json').version") in $here/node_modules"
else
    echo "node/npm not found: bench_engine.py's sandbox-runtime row will print SKIPPED" >&2
fi
