#!/usr/bin/env bash
# The confinement tests as an ordinary user (what a user who is not root gets: bubblewrap through an
# unprivileged user namespace, no writable cgroup, so caps sampled and labelled so). Run as root:
#     bash tests/run_as_user.sh [pytest args...]
# It makes the user (ORCHESTRATOR_TEST_USER, default orchestrator-test), copies this folder into its
# home (without .venv, .cli, workspace, caches), installs it there with the README's command, and runs the
# confinement tests listed in ``defaults`` below (or the pytest args given) as that user.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
user="${ORCHESTRATOR_TEST_USER:-orchestrator-test}"
if [ "$(id -u)" -ne 0 ]; then
  echo "run_as_user.sh: run it as root (it makes the user and runs the tests as them)" >&2
  exit 2
fi
id -u "$user" >/dev/null 2>&1 || useradd -m "$user"
home="$(getent passwd "$user" | cut -d: -f6)"
copy="$home/orchestrator"
rm -rf "$copy"
mkdir -p "$copy"
tar -C "$here" --exclude=./.venv --exclude=./.cli --exclude=./workspace --exclude=./config.yaml \
  --exclude=__pycache__ --exclude=.pytest_cache --exclude=.mypy_cache --exclude=.ruff_cache -cf - . | tar -C "$copy" -xf -
mkdir -p "$copy/workspace"
chown -R "$user:" "$copy"
# A Python the user can run (a root-only pyenv is not one): the system's, unless PYTHON says otherwise.
python="${PYTHON:-/usr/bin/python3}"
tests=("$@")
# Their fast and slow tiers both (the default run is the fast tier only: pyproject's addopts).
defaults=(
  tests/test_sandbox.py
  tests/test_landlock.py
  tests/test_cgroups.py
  tests/test_hostile.py
  tests/test_hostile_generated.py
  tests/test_no_deputy.py
  tests/test_helper_confinement.py
  tests/test_gate_caps.py
  tests/test_forged_refusals.py
  tests/test_direct_connections.py
  tests/test_supervisor.py
  tests/test_project_view.py
  tests/test_guide_path.py
  tests/test_network_allow.py
  tests/test_egress.py
  tests/test_trusted_drivers.py
  tests/test_sandbox_reach.py
  tests/test_net_guard.py
  tests/test_provider_keys.py
  tests/test_worker_content.py
  tests/test_result_gate_child.py
  tests/test_doctor_host.py
  tests/test_untouched.py
)
[ ${#tests[@]} -gt 0 ] || tests=("${defaults[@]}" -q -m "not chaos and not real_cli")
# HOSTILE_TABLE (a file the user may write): where the generated hostile suite appends its table (docs/sandbox.md).
runuser -u "$user" -- env -i HOME="$home" PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 PYTHON="$python" \
  ${HOSTILE_TABLE:+HOSTILE_TABLE="$HOSTILE_TABLE"} \
  bash -c 'cd "$1" && shift && ./install.sh --dev >install.log 2>&1 || { tail -20 install.log; exit 1; }; exec .venv/bin/python -m pytest -p no:cacheprovider "$@"' \
  run-as-user "$copy" "${tests[@]}"
