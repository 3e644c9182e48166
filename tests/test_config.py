"""Settings: defaults, the template, precedence, errors that name the fix, and a job's own config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from orchestrator.config import SCHEMA, JobConfig, job_config, load_settings
from orchestrator.errors import ConfigError

from .conftest import ROOT

TEMPLATE = ROOT / "config.template.yaml"


def load(tmp_path, environ=None, **overrides):
    """Settings from tmp_path (no config.yaml unless the test wrote one) and an explicit environ."""
    return load_settings(base_dir=tmp_path, environ=environ or {}, overrides=overrides or None)


def write_config(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path, text):
    """The ConfigError that loading ``text`` as config.yaml raises."""
    write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    return info.value.message


def defaults():
    return {section: {key: spec.default for key, spec in keys.items()} for section, keys in SCHEMA.items()}


# -- defaults and the template -------------------------------------------------


def test_defaults_load_with_no_file_and_an_empty_environment(tmp_path):
    settings = load(tmp_path)
    assert settings.to_dict() == defaults()
    assert settings.source == "defaults"


def test_sections_and_keys_read_as_attributes(tmp_path):
    settings = load(tmp_path)
    assert settings.workers.max_workers == 5
    assert settings.recursion.enable is True
    assert settings.api.host == "127.0.0.1"
    with pytest.raises(AttributeError):
        settings.nope  # noqa: B018
    with pytest.raises(AttributeError):
        settings.workers.nope  # noqa: B018


def test_relative_paths_resolve_against_the_base_dir(tmp_path):
    settings = load(tmp_path)
    assert settings.workspace_root == tmp_path.resolve() / "workspace"
    assert settings.log_dir == tmp_path.resolve() / "logs"
    assert settings.templates_dir is None


def test_template_lists_exactly_every_key_of_the_schema():
    data = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
    assert list(data) == list(SCHEMA)
    for section, keys in SCHEMA.items():
        assert list(data[section]) == list(keys), f"section {section}"


def test_every_key_in_the_template_has_its_help_as_a_comment_on_its_line():
    lines = TEMPLATE.read_text(encoding="utf-8").splitlines()
    for section, keys in SCHEMA.items():
        assert f"{section}:" in lines, f"section {section} missing"
        start = lines.index(f"{section}:") + 1
        end = next((i for i in range(start, len(lines)) if lines[i] and not lines[i].startswith(" ")), len(lines))
        for key, spec in keys.items():  # looked for in its own section: two sections may share a key's name
            line = next((ln for ln in lines[start:end] if re.match(rf"  {key}:", ln)), None)
            assert line is not None, f"{section}.{key} missing"
            assert "#" in line and spec.help in line.split("#", 1)[1], f"{section}.{key} comment"


def test_loading_the_template_as_config_gives_the_defaults(tmp_path):
    settings = load_settings(TEMPLATE, base_dir=tmp_path, environ={})
    assert settings.to_dict() == defaults()
    assert str(TEMPLATE) in settings.source


# -- precedence ------------------------------------------------------------------


def test_config_yaml_in_the_base_dir_overrides_defaults(tmp_path):
    write_config(tmp_path, "workers:\n  max_workers: 3\n")
    settings = load(tmp_path)
    assert settings.workers.max_workers == 3
    assert settings.workers.max_retries == 2  # untouched keys keep their default


def test_orchestrator_config_names_the_file_to_read(tmp_path):
    # Given a config.yaml in the base dir and another file named by ORCHESTRATOR_CONFIG
    write_config(tmp_path, "workers:\n  max_workers: 3\n")
    other = write_config(tmp_path, "workers:\n  max_workers: 7\n", name="other.yaml")
    # Then the named file wins
    settings = load(tmp_path, {"ORCHESTRATOR_CONFIG": str(other)})
    assert settings.workers.max_workers == 7


def test_environment_overrides_the_config_file_and_is_typed(tmp_path):
    write_config(tmp_path, "workers:\n  max_workers: 3\n  retry_on_timeout: false\n")
    environ = {"ORCHESTRATOR__WORKERS__MAX_WORKERS": "4", "ORCHESTRATOR__WORKERS__RETRY_ON_TIMEOUT": "true"}
    settings = load(tmp_path, environ)
    assert settings.workers.max_workers == 4
    assert settings.workers.retry_on_timeout is True
    assert settings.source.endswith("< environment")


def test_overrides_beat_the_environment(tmp_path):
    write_config(tmp_path, "workers:\n  max_workers: 3\n")
    settings = load(tmp_path, {"ORCHESTRATOR__WORKERS__MAX_WORKERS": "4"}, workers={"max_workers": 2})
    assert settings.workers.max_workers == 2


def test_environment_variables_without_the_double_underscore_prefix_are_not_settings(tmp_path):
    settings = load(tmp_path, {"ORCHESTRATOR_HOME": "/x", "ORCHESTRATOR_WORKERS_MAX_WORKERS": "4"})
    assert settings.workers.max_workers == 5


def test_a_string_setting_from_the_environment_keeps_its_text(tmp_path):
    environ = {"ORCHESTRATOR__ORCHESTRATOR__WORKSPACE_ROOT": "2024", "ORCHESTRATOR__SIMULATED__FAIL_MATCHING": "yes"}
    settings = load(tmp_path, environ)
    assert settings.orchestrator.workspace_root == "2024"
    assert settings.simulated.fail_matching == "yes"


# -- errors name the key, the value and what is allowed ----------------------------------


def test_unknown_section_names_it_and_the_known_ones(tmp_path):
    message = config_error(tmp_path, "wokers:\n  max_workers: 3\n")
    assert "unknown section 'wokers'" in message
    assert "workers" in message.split("Known sections:")[1]


def test_a_typo_in_a_key_names_it_and_the_known_keys(tmp_path):
    message = config_error(tmp_path, "workers:\n  max_worker: 3\n")
    assert "workers.max_worker" in message
    assert "max_workers" in message.split("Known keys")[1]


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        ("workers", "max_workers", "'4'", "a whole number"),
        ("workers", "max_workers", "true", "a whole number"),
        ("orchestrator", "workspace_root", "[a, b]", "a string"),
        ("workers", "retry_on_timeout", "1", "true or false"),
    ],
)
def test_wrong_type_names_the_key_the_value_and_the_type(tmp_path, section, key, value, expected):
    message = config_error(tmp_path, f"{section}:\n  {key}: {value}\n")
    assert f"{section}.{key}=" in message
    assert "wrong type" in message and expected in message


def test_a_list_setting_refuses_items_that_are_not_strings(tmp_path):
    message = config_error(tmp_path, "orchestrator:\n  command: [1, 2]\n")
    assert "orchestrator.command" in message and "a list of strings" in message


@pytest.mark.parametrize("value", ["0", "-3", "100000000000000000000"])
def test_out_of_range_names_the_key_the_value_and_the_range(tmp_path, value):
    message = config_error(tmp_path, f"workers:\n  max_workers: {value}\n")
    assert f"workers.max_workers={int(value)}" in message
    assert "out of range: allowed 1 to 1024" in message


def test_nan_is_refused(tmp_path):
    message = config_error(tmp_path, "workers:\n  default_timeout: .nan\n")
    assert "workers.default_timeout is NaN" in message


def test_a_bad_choice_names_the_value_and_the_choices(tmp_path):
    message = config_error(tmp_path, "orchestrator:\n  worker: nope\n")
    assert "orchestrator.worker='nope' is not allowed" in message
    assert "simulated" in message and "claude" in message


def test_invalid_yaml_names_the_file(tmp_path):
    message = config_error(tmp_path, "workers:\n  max_workers: [1,\n")
    assert "config.yaml is not valid YAML" in message


def test_a_list_at_top_level_is_refused(tmp_path):
    message = config_error(tmp_path, "- workers\n- api\n")
    assert "must be a mapping of sections" in message and "list" in message


def test_a_section_that_is_not_a_mapping_is_refused(tmp_path):
    message = config_error(tmp_path, "workers: 3\n")
    assert "section 'workers' must be a mapping" in message


def test_an_empty_config_file_gives_the_defaults(tmp_path):
    write_config(tmp_path, "# nothing yet\n")
    assert load(tmp_path).to_dict() == defaults()


def test_a_missing_config_path_is_named_with_the_fix(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "missing.yaml", base_dir=tmp_path, environ={})
    assert "config file not found" in info.value.message
    assert "missing.yaml" in info.value.message and "config.template.yaml" in info.value.message


def test_a_missing_file_named_by_orchestrator_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path, {"ORCHESTRATOR_CONFIG": str(tmp_path / "missing.yaml")})


def test_a_malformed_environment_variable_name_is_explained(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {"ORCHESTRATOR__WORKERS": "4"})
    assert "ORCHESTRATOR__WORKERS" in info.value.message
    assert "ORCHESTRATOR__SECTION__KEY" in info.value.message


def test_an_unknown_key_from_the_environment_names_the_variable(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {"ORCHESTRATOR__WORKERS__MAX_WORKER": "4"})
    message = info.value.message
    assert message.startswith("environment variable ORCHESTRATOR__WORKERS__MAX_WORKER: unknown key 'workers.max_worker'")
    assert "ORCHESTRATOR__WORKERS__MAX_WORKERS" in message, "the known variables are listed by name"
    assert info.value.details["variable"] == "ORCHESTRATOR__WORKERS__MAX_WORKER"


def test_an_unknown_section_from_the_environment_names_the_variable(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {"ORCHESTRATOR__WORKRES__MAX_WORKERS": "4"})
    assert info.value.message.startswith("environment variable ORCHESTRATOR__WORKRES__MAX_WORKERS: unknown section 'workres'")


def test_a_bad_value_from_the_environment_names_the_variable(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {"ORCHESTRATOR__WORKERS__MAX_WORKERS": "lots"})
    assert info.value.message.startswith("environment variable ORCHESTRATOR__WORKERS__MAX_WORKERS: workers.max_workers='lots'")
    assert info.value.details["key"] == "workers.max_workers"


def test_errors_carry_the_key_and_value_as_details(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, workers={"max_workers": 0})
    assert info.value.details["key"] == "workers.max_workers"
    assert info.value.details["value"] == 0


# -- a job's own config ----------------------------------------------------------------


def test_a_request_without_config_gets_the_settings(settings):
    cfg, notes = job_config(settings, None)
    assert cfg.max_workers == settings.workers.max_workers
    assert cfg.default_timeout == settings.workers.default_timeout
    assert cfg.enable_recursion is True and cfg.max_recursion_depth == 3
    assert notes == []


def test_a_root_request_may_lower_max_workers(settings):
    cfg, notes = job_config(settings, {"max_workers": 2})
    assert cfg.max_workers == 2 and notes == []


def test_a_root_request_may_raise_max_workers_up_to_the_limit(settings):
    cfg, _ = job_config(settings, {"max_workers": settings.workers.max_workers_limit})
    assert cfg.max_workers == 16


def test_a_root_request_above_the_limit_names_the_limit_and_the_setting(settings):
    with pytest.raises(ConfigError) as info:
        job_config(settings, {"max_workers": 17})
    assert "config.max_workers=17" in info.value.message
    assert "limit 16" in info.value.message and "workers.max_workers_limit" in info.value.message
    assert info.value.details["limit"] == 16


def test_default_timeout_may_be_raised_up_to_max_timeout(settings):
    # The original spec's troubleshooting advice ("Worker timeout") raises the timeout to 600
    cfg, _ = job_config(settings, {"default_timeout": 600})
    assert cfg.default_timeout == 600.0 and isinstance(cfg.default_timeout, float)
    job_config(settings, {"default_timeout": settings.workers.max_timeout})
    with pytest.raises(ConfigError, match="workers.max_timeout"):
        job_config(settings, {"default_timeout": settings.workers.max_timeout + 1})


def test_max_recursion_depth_is_capped_by_max_depth_limit(settings):
    assert settings.recursion.max_depth_limit == 5
    cfg, _ = job_config(settings, {"max_recursion_depth": 5})
    assert cfg.max_recursion_depth == 5
    with pytest.raises(ConfigError, match="recursion.max_depth_limit"):
        job_config(settings, {"max_recursion_depth": 6})


def test_an_unknown_request_key_is_refused_listing_the_allowed_keys(settings):
    with pytest.raises(ConfigError) as info:
        job_config(settings, {"max_worker": 2})
    assert "unknown config key(s): max_worker" in info.value.message
    allowed = info.value.message.split("Allowed:")[1]
    assert "max_workers" in allowed and "enable_recursion" in allowed and "current_depth" in allowed


def test_current_depth_is_no_setting_of_the_job_config(settings):
    """It sets an admin job's depth (Submission.submit, tested in test_worker_env_and_depth.py), not a setting."""
    cfg, notes = job_config(settings, {"current_depth": 2})
    assert cfg == job_config(settings, {})[0]
    assert notes == []


@pytest.mark.parametrize("value", [-1, "1", True])
def test_a_bad_current_depth_is_refused(settings, value):
    with pytest.raises(ConfigError, match="config.current_depth"):
        job_config(settings, {"current_depth": value})


@pytest.mark.parametrize(
    "key, value", [("max_workers", "3"), ("enable_recursion", "yes"), ("default_timeout", True), ("worker", "nope")]
)
def test_a_bad_value_in_a_request_is_a_config_error_naming_it(settings, key, value):
    with pytest.raises(ConfigError) as info:
        job_config(settings, {key: value})
    assert f"config.{key}=" in info.value.message


@pytest.mark.parametrize("requested", ["max_workers=2", [1, 2]])
def test_a_request_config_that_is_not_a_mapping_is_a_config_error(settings, requested):
    with pytest.raises(ConfigError, match="JSON object"):
        job_config(settings, requested)


def parent_config(settings, **values):
    cfg, _ = job_config(settings, values)
    return cfg


def test_a_child_inherits_its_parents_config(settings):
    parent = parent_config(settings, max_workers=2, max_recursion_depth=1)
    child, notes = job_config(settings, None, parent)
    assert child == parent and notes == []


def test_a_child_value_above_the_parents_is_lowered_with_a_note(settings):
    parent = parent_config(settings, max_workers=2)
    child, notes = job_config(settings, {"max_workers": 4}, parent)
    assert child.max_workers == 2
    assert len(notes) == 1 and "max_workers=4 lowered to 2" in notes[0]


@pytest.mark.parametrize(
    "parent_planner, asked, kept",
    [
        ("heuristic", "ai", "heuristic"),
        ("heuristic", "auto", "heuristic"),
        ("auto", "ai", "auto"),
        ("ai", "ai", "ai"),
        ("ai", "heuristic", "heuristic"),
        ("auto", "heuristic", "heuristic"),
    ],
)
def test_a_child_job_may_not_widen_its_parents_planner(settings, parent_planner, asked, kept):
    """A worker's request may ask for the AI planner only where its root's config allows it (the
    server's setting or the admin key's request): heuristic < auto < ai, lowered with a note."""
    parent = parent_config(settings, planner=parent_planner)
    child, notes = job_config(settings, {"planner": asked}, parent)
    assert child.planner == kept
    widened = asked != kept
    assert notes == ([f"planner={asked} lowered to {kept}, the parent job's (a child job may not widen it)"] if widened else [])


def test_a_child_may_lower_its_parents_value(settings):
    parent = parent_config(settings, default_timeout=600)
    child, notes = job_config(settings, {"default_timeout": 60}, parent)
    assert child.default_timeout == 60.0 and notes == []


def test_a_child_cannot_reenable_recursion_under_a_parent_with_it_off(settings):
    parent = parent_config(settings, enable_recursion=False)
    child, notes = job_config(settings, {"enable_recursion": True}, parent)
    assert child.enable_recursion is False
    assert any("enable_recursion stays false" in note for note in notes)


def test_job_config_round_trips_through_a_dict(settings):
    cfg, _ = job_config(settings, {"max_workers": 3})
    assert JobConfig.from_dict({**cfg.to_dict(), "unknown": 1}) == cfg


# -- Settings.replace -------------------------------------------------------------------


def test_replace_returns_a_changed_copy(settings):
    changed = settings.replace(workers={"max_workers": 2})
    assert changed.workers.max_workers == 2
    assert settings.workers.max_workers == 5
    assert changed.simulated.duration == settings.simulated.duration


@pytest.mark.parametrize(
    "changes", [{"workers": {"max_workers": 0}}, {"workers": {"max_workers": "2"}}, {"orchestrator": {"worker": "nope"}}]
)
def test_replace_validates_values(settings, changes):
    with pytest.raises(ConfigError):
        settings.replace(**changes)


@pytest.mark.parametrize("changes", [{"workers": {"max_worker": 2}}, {"wrkers": {"max_workers": 2}}])
def test_replace_refuses_unknown_keys_and_sections(settings, changes):
    with pytest.raises(ConfigError):
        settings.replace(**changes)


def test_raising_a_default_above_its_limit_raises_the_limit_with_it(tmp_path):
    settings = load(tmp_path, workers={"max_workers": 20, "default_timeout": 7200}, recursion={"max_depth": 8})
    assert settings.workers.max_workers_limit == 20
    assert settings.workers.max_timeout == 7200.0
    assert settings.recursion.max_depth_limit == 8


def test_settings_base_dir_is_resolved(tmp_path):
    settings = load_settings(base_dir=Path(tmp_path) / "." / "sub" / "..", environ={})
    assert settings.base_dir == tmp_path.resolve()


def test_the_shipped_template_is_the_one_generated_from_the_schema():
    from orchestrator.config import render_template

    shipped = (Path(__file__).resolve().parent.parent / "config.template.yaml").read_text()
    assert shipped == render_template(), "regenerate: python -m orchestrator config --template > config.template.yaml"


def test_the_command_key_help_names_every_placeholder_the_command_kind_fills():
    from orchestrator.workers.adapters.command import PLACEHOLDERS

    help_text = SCHEMA["orchestrator"]["command"].help
    line = next(line for line in TEMPLATE.read_text().splitlines() if line.strip().startswith("command:"))
    for placeholder in PLACEHOLDERS:
        assert placeholder in help_text and placeholder in line, placeholder


# -- typed sections and the typed job config --------------------------------------------


def test_a_section_and_the_settings_refuse_assignment(settings):
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.workers.max_workers = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.workers = settings.workers
    assert settings.workers.max_workers == 5


def test_the_schema_is_read_from_the_section_dataclasses():
    import dataclasses

    from orchestrator.config import SECTIONS, Key, Settings, WorkersSettings

    # the field's annotation gives the type; its metadata the rest
    assert SCHEMA["workers"]["max_workers"] == Key(int, 5, "default workers running at once per job", min=1, max=1024)
    assert SECTIONS["workers"] is WorkersSettings and list(SCHEMA) == list(SECTIONS)
    assert SCHEMA["orchestrator"]["prompt_template"].nullable and SCHEMA["orchestrator"]["prompt_template"].type is str
    assert SCHEMA["workers"]["env"].type is dict and SCHEMA["workers"]["env"].secret
    assert SCHEMA["api"]["allowed_hosts"].type is list and SCHEMA["api"]["allowed_hosts"].default == []
    # Settings holds one typed field per section, in the same order
    assert [f.name for f in dataclasses.fields(Settings) if f.name in SECTIONS] == list(SECTIONS)


def test_a_list_default_is_never_shared_between_two_loads(tmp_path):
    first, second = load(tmp_path), load(tmp_path)
    first.workers.env_passthrough.append("MINE")
    assert "MINE" not in second.workers.env_passthrough
    assert "MINE" not in SCHEMA["workers"]["env_passthrough"].default


def test_public_dict_masks_every_secret_setting(tmp_path):
    settings = load(tmp_path, api={"api_key": "k3y"}, workers={"env": {"TOKEN": "s3cret"}})
    public = settings.public_dict()
    assert public["api"]["api_key"] == "(set)" and public["workers"]["env"] == {"TOKEN": "(set)"}
    assert "k3y" not in repr(settings) and "s3cret" not in repr(settings)
    assert settings.to_dict()["api"]["api_key"] == "k3y"  # to_dict is the unmasked one
    assert load(tmp_path).public_dict()["api"]["api_key"] == ""  # an unset key is shown as unset


def test_job_config_fields_name_the_setting_they_default_from(settings):
    from orchestrator.config import JOB_CEILINGS, JOB_KEYS

    assert JOB_KEYS["max_recursion_depth"] == ("recursion", "max_depth")
    assert JOB_CEILINGS == {
        "max_workers": ("workers", "max_workers_limit"),
        "default_timeout": ("workers", "max_timeout"),
        "max_recursion_depth": ("recursion", "max_depth_limit"),
        "max_children_per_worker": ("recursion", "max_children_per_worker"),
    }
    # with no request, a job's config is the server's settings
    cfg, _ = job_config(settings.replace(workers={"max_workers": 4}), None)
    assert cfg.max_workers == 4 and cfg.max_recursion_depth == settings.recursion.max_depth


def test_a_job_record_written_before_the_typed_config_loads_into_one():
    """job.json holds the config as a dict; a record from an older server may lack newer keys
    (max_cost_usd, planner, worker) and hold a null: each takes its setting's default."""
    from orchestrator.models import JobRecord

    old = {
        "id": "a1b2c3d4e5f6",
        "root_id": "a1b2c3d4e5f6",
        "request": "r",
        "status": "completed",
        "duration": 1.0,
        "config": {
            "max_workers": 2,
            "default_timeout": 60.0,
            "max_retries": 1,
            "execution_mode": "native",
            "enable_recursion": False,
            "max_recursion_depth": 1,
            "max_children_per_worker": 3,
            "max_cost_usd": None,
            "gone_key": 7,
        },
    }
    job = JobRecord.from_dict(old)
    assert isinstance(job.config, JobConfig)
    assert (job.config.max_workers, job.config.default_timeout, job.config.enable_recursion) == (2, 60.0, False)
    assert (job.config.worker, job.config.planner, job.config.max_cost_usd) == ("auto", "auto", 0.0)
    # written back, it is the same JSON shape as ever: a plain dict of every job key
    data = job.to_dict()["config"]
    assert isinstance(data, dict) and list(data) == list(JobConfig().to_dict()) and data["max_workers"] == 2
    assert JobRecord.from_dict({**old, "config": {}}).config == JobConfig()


@pytest.mark.slow
def test_mypy_types_a_section_read_and_refuses_a_write(tmp_path):
    """The sections are typed for mypy (no ``__getattr__ -> Any``): a read has the key's type,
    an assignment or an unknown key is an error."""
    import subprocess
    import sys

    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        "from orchestrator.config import load_settings\n"
        "from orchestrator.models import JobRecord\n"
        "settings = load_settings()\n"
        "reveal_type(settings.workers.default_timeout)\n"
        "reveal_type(settings.orchestrator.prompt_template)\n"
        "reveal_type(JobRecord(id='a', root_id='a', request='r').config.max_recursion_depth)\n"
        "settings.workers.max_workers = 3\n"
        "settings.workers.no_such_key\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", str(snippet)], cwd=ROOT, capture_output=True, text=True, timeout=120
    ).stdout
    lines = [line.split(": ", 1)[1].replace("builtins.", "") for line in out.splitlines()]  # older mypy: builtins.int
    assert lines == [
        'note: Revealed type is "float"',
        'note: Revealed type is "str | None"',
        'note: Revealed type is "int"',
        'error: Property "max_workers" defined in "WorkersSettings" is read-only  [misc]',
        'error: "WorkersSettings" has no attribute "no_such_key"  [attr-defined]',
    ], out


def test_a_mistyped_secret_is_refused_without_echoing_it(tmp_path):
    message = config_error(tmp_path, "api:\n  api_key: 123456789\n")
    assert "api.api_key has the wrong type: expected a string" in message and "123456789" not in message


def test_reserved_threads_must_leave_streams_a_thread(tmp_path):
    """Streams and long-polls hold api.threads less api.reserved_threads: none left is refused, naming both."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, api={"threads": 4, "reserved_threads": 4})
    assert "api.reserved_threads=4" in info.value.message and "api.threads=4" in info.value.message
    assert load(tmp_path, api={"threads": 5, "reserved_threads": 4}).api.reserved_threads == 4


@pytest.mark.slow
def test_an_environment_value_nested_past_the_parsers_depth_is_an_error_naming_the_variable(tmp_path):
    """It was a RecursionError traceback."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {"ORCHESTRATOR__API__ALLOWED_HOSTS": "[" * 5000 + "]" * 5000})
    assert "ORCHESTRATOR__API__ALLOWED_HOSTS" in info.value.message
