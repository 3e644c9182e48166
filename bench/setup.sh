#!/usr/bin/env bash
# Set-up for bench/bench_engine.py: make sure GNU parallel is installed and
# silence its citation notice. Idempotent: safe to run again.
set -euo pipefail

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
