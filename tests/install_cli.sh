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

# --- The real Gemini CLI and opencode (tests/test_real_gemini.py, test_real_opencode.py), into the same prefix:
# .cli/node_modules/.bin/gemini and .cli/node_modules/.bin/opencode. Same rules as codex: pinned, saved in
# .cli/package.json (so later installs keep them), idempotent, never fails the caller.
(
    GEMINI_VERSION="${GEMINI_CLI_VERSION:-0.61.0}"
    OPENCODE_VERSION="${OPENCODE_CLI_VERSION:-1.18.33}"
    pkg_version() {
        # The version an installed package's package.json names; empty when it is not installed.
        [ -f "$PREFIX/node_modules/$1/package.json" ] || return 0
        node -p "require(process.argv[1]).version" "$PREFIX/node_modules/$1/package.json" 2>/dev/null
    }
    want=()
    [ "$(pkg_version @google/gemini-cli)" = "$GEMINI_VERSION" ] && [ -x "$PREFIX/node_modules/.bin/gemini" ] \
        || want+=("@google/gemini-cli@$GEMINI_VERSION")
    [ "$(pkg_version opencode-ai)" = "$OPENCODE_VERSION" ] && [ -x "$PREFIX/node_modules/.bin/opencode" ] \
        || want+=("opencode-ai@$OPENCODE_VERSION")
    if [ "${#want[@]}" -eq 0 ]; then
        note "gemini $GEMINI_VERSION and opencode $OPENCODE_VERSION already installed"
        exit 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        note "npm not found: not installing ${want[*]}; their real-CLI tests will be skipped"
        exit 0
    fi
    mkdir -p "$PREFIX"
    claude_version="$(pkg_version @anthropic-ai/claude-code)"   # unsaved (see claude below): keep it
    [ -n "$claude_version" ] && want+=("@anthropic-ai/claude-code@$claude_version")
    note "installing ${want[*]} into $PREFIX"
    if ! timeout 900 npm install --prefix "$PREFIX" --no-audit --no-fund --save-exact --loglevel=error \
            "${want[@]}" >&2; then
        note "npm install of gemini/opencode failed: their real-CLI tests will be skipped"
        exit 0
    fi
    note "gemini $(pkg_version @google/gemini-cli), opencode $(pkg_version opencode-ai) installed"
) || true

# --- opencode's plugin folder, .cli/opencode-config: on a first run opencode npm-installs @opencode-ai/plugin
# into its config folder (~/.config/opencode). tests/test_real_opencode.py copies this one into each fresh
# XDG_CONFIG_HOME, so that opencode installs nothing and its runs stay on 127.0.0.1. Same rules as above.
(
    OPENCODE_VERSION="${OPENCODE_CLI_VERSION:-1.18.33}"
    CONFIG="$PREFIX/opencode-config"
    plugin="$CONFIG/node_modules/@opencode-ai/plugin/package.json"
    if [ -f "$plugin" ] && [ "$(node -p "require(process.argv[1]).version" "$plugin" 2>/dev/null)" = "$OPENCODE_VERSION" ]; then
        note "opencode plugin folder $OPENCODE_VERSION already there"
        exit 0
    fi
    command -v npm >/dev/null 2>&1 || { note "npm not found: no opencode plugin folder"; exit 0; }
    mkdir -p "$CONFIG"
    timeout 600 npm install --prefix "$CONFIG" --no-audit --no-fund --save-exact --loglevel=error \
        "@opencode-ai/plugin@$OPENCODE_VERSION" >&2 || note "npm install of @opencode-ai/plugin failed: the real-opencode tests will skip"
) || true

# --- aider (tests/test_real_aider.py): PyPI's aider-chat in a venv of its own, .cli/aider-venv (never the
# project's .venv: aider pins its many dependencies exactly), made with the interpreter the project's .venv
# was made with; exposed as .cli/bin/aider. Idempotent and never fails the caller.
(
    AIDER_VERSION="${AIDER_CLI_VERSION:-0.86.2}"
    VENV="$PREFIX/aider-venv"
    aider_version() {
        [ -x "$VENV/bin/python" ] || return 0
        "$VENV/bin/python" -c 'from importlib.metadata import version; print(version("aider-chat"))' 2>/dev/null
    }
    if [ "$(aider_version)" = "$AIDER_VERSION" ] && [ -x "$PREFIX/bin/aider" ]; then
        note "aider $AIDER_VERSION already installed"
        exit 0
    fi
    py="python3"
    if [ -x "$ROOT/.venv/bin/python" ]; then
        py="$("$ROOT/.venv/bin/python" -c 'import sys; print(sys._base_executable)' 2>/dev/null || echo python3)"
    fi
    mkdir -p "$PREFIX/bin"
    note "installing aider-chat==$AIDER_VERSION into $VENV (with $py)"
    if ! { [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV" >&2; } ||
       ! timeout 900 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "aider-chat==$AIDER_VERSION" >&2; then
        note "pip install of aider-chat failed: the real-aider tests will be skipped"
        exit 0
    fi
    ln -sf "$VENV/bin/aider" "$PREFIX/bin/aider"
    note "aider $(aider_version) installed"
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
