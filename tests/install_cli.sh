#!/usr/bin/env bash
# Install the real Claude Code CLI for the tests (tests/test_real_cli.py) into .cli/ at the repo root.
# Idempotent: does nothing when the pinned version is already there. Prints the binary's path.
# Never fails the caller: without npm (or when the install fails) it prints a note and exits 0,
# and the real-CLI tests skip themselves.
set -uo pipefail

VERSION="${CLAUDE_CLI_VERSION:-2.1.329}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="$ROOT/.cli"
BIN="$PREFIX/node_modules/.bin/claude"

note() { echo "install_cli: $*" >&2; }

installed_version() {
    # "2.1.329 (Claude Code)" -> "2.1.329"; empty if the binary is missing or broken.
    [ -x "$BIN" ] || return 0
    DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_TELEMETRY=1 \
        timeout 60 "$BIN" --version 2>/dev/null | awk 'NR==1 {print $1}'
}

if [ "$(installed_version)" = "$VERSION" ]; then
    note "claude $VERSION already installed"
    echo "$BIN"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    note "npm not found: not installing the claude CLI; the real-CLI tests will be skipped"
    exit 0
fi

mkdir -p "$PREFIX"
note "installing @anthropic-ai/claude-code@$VERSION into $PREFIX"
if ! timeout 600 npm install --prefix "$PREFIX" --no-audit --no-fund --no-save --loglevel=error \
        "@anthropic-ai/claude-code@$VERSION" >&2; then
    note "npm install failed: the real-CLI tests will be skipped"
    exit 0
fi

got="$(installed_version)"
if [ "$got" != "$VERSION" ]; then
    note "installed, but '$BIN --version' gave '${got:-nothing}' (wanted $VERSION): the real-CLI tests may skip"
    exit 0
fi
note "claude $got installed"
echo "$BIN"
