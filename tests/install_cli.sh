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

# --- The real OpenAI Codex CLI (tests/test_real_codex.py), into the same prefix: .cli/node_modules/.bin/codex.
# It runs first, in a subshell, because the claude part below ends the script with `exit 0` on every path.
# Same rules: idempotent (nothing to do when the pinned version answers --version), never fails the caller.
(
    CODEX_VERSION="${CODEX_CLI_VERSION:-0.169.0}"
    CODEX_BIN="$PREFIX/node_modules/.bin/codex"
    codex_version() {
        # "codex-cli 0.169.0" -> "0.169.0"; empty if the binary is missing or broken.
        [ -x "$CODEX_BIN" ] || return 0
        timeout 60 "$CODEX_BIN" --version 2>/dev/null </dev/null | awk 'NR==1 {print $NF}'
    }
    if [ "$(codex_version)" = "$CODEX_VERSION" ]; then
        note "codex $CODEX_VERSION already installed"
        echo "$CODEX_BIN"
        exit 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        note "npm not found: not installing the codex CLI; the real-codex tests will be skipped"
        exit 0
    fi
    mkdir -p "$PREFIX"
    note "installing @openai/codex@$CODEX_VERSION into $PREFIX"
    # npm prunes what .cli/package.json does not list, and the claude part below installs with --no-save:
    # so codex is saved there (pinned), together with a claude already installed, and neither install
    # removes the other.
    pkgs=("@openai/codex@$CODEX_VERSION")
    claude_pkg="$PREFIX/node_modules/@anthropic-ai/claude-code/package.json"
    if [ -f "$claude_pkg" ]; then
        claude_version="$(node -p "require(process.argv[1]).version" "$claude_pkg" 2>/dev/null)"
        [ -n "$claude_version" ] && pkgs+=("@anthropic-ai/claude-code@$claude_version")
    fi
    if ! timeout 600 npm install --prefix "$PREFIX" --no-audit --no-fund --save-exact --loglevel=error \
            "${pkgs[@]}" >&2; then
        note "npm install of codex failed: the real-codex tests will be skipped"
        exit 0
    fi
    got="$(codex_version)"
    if [ "$got" != "$CODEX_VERSION" ]; then
        note "installed, but '$CODEX_BIN --version' gave '${got:-nothing}' (wanted $CODEX_VERSION): the real-codex tests may skip"
        exit 0
    fi
    note "codex $got installed"
    echo "$CODEX_BIN"
) || true

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
