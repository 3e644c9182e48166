"""execution_mode: only `native` exists; wsl and windows are refused with what works."""

from __future__ import annotations

import pytest

from orchestrator.config import load_settings
from orchestrator.errors import ConfigError

WHAT_WORKS = "On Windows, install and run the orchestrator inside WSL, where your CLIs live, with execution_mode: native"


@pytest.mark.parametrize("mode", ["wsl", "windows"])
def test_config_refuses_a_mode_that_does_nothing_and_says_what_works(tmp_path, mode):
    (tmp_path / "config.yaml").write_text(f'orchestrator:\n  execution_mode: "{mode}"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(base_dir=tmp_path, environ={})
    assert f"orchestrator.execution_mode={mode!r} is not allowed" in caught.value.message
    assert WHAT_WORKS in caught.value.message


def test_native_is_the_default_and_accepted(tmp_path):
    assert load_settings(base_dir=tmp_path, environ={}).orchestrator.execution_mode == "native"
    (tmp_path / "config.yaml").write_text('orchestrator:\n  execution_mode: "native"\n')
    assert load_settings(base_dir=tmp_path, environ={}).orchestrator.execution_mode == "native"


@pytest.mark.slow
def test_a_request_asking_for_wsl_is_a_422_that_says_what_works(live):
    answer = live.submit(request="x", config={"execution_mode": "wsl"})
    assert answer.status_code == 422, answer.text
    assert WHAT_WORKS in answer.json()["message"]
