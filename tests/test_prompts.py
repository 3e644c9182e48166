"""Worker and planner prompts: what an AI worker is told, and user templates."""

from __future__ import annotations

import json
import os

import pytest

from orchestrator.errors import ConfigError
from orchestrator.workers.prompts import (
    MAX_SUBTASKS,
    MIN_SUBTASKS,
    SPAWN_COMMAND,
    PromptFacts,
    check_template,
    prompt_template_path,
    render_planner_prompt,
    render_worker_prompt,
)
from tests.conftest import ROOT, make_settings

SPAWN_LINE = 'orchestrator-spawn --wait "subtask A" "subtask B"'
# The shared goal is a field, rendered on its own line (not a " for: a shop" suffix on each task).
TASKS = ["Build the auth service", "Build the orders service", "Build the payments service"]
GOAL = "Build a shop"


def prompt(**kw):
    args = dict(
        task=TASKS[1],
        goal=GOAL,
        request="Build a shop with auth, orders and payments services",
        siblings=TASKS,
        index=2,
        depth=0,
        max_recursion_depth=2,
        recursion_enabled=True,
        worker_dir="/ws/job_x/depth_0/worker_2",
        job_id="job_x",
        worker_id="worker_2",
        children_left=3,
    )
    args.update(kw)
    template, shared = args.pop("template", None), args.pop("shared", None)
    return render_worker_prompt(PromptFacts(**args), template=template, shared=shared)


def test_prompt_states_the_task_the_request_and_the_siblings():
    # The request and every subtask (with its id, its own too) are in the job's
    # shared block, first; the worker's own subtask follows it and names its id in that list.
    text = prompt()
    shared, own = text.split("\n---\n", 1)
    assert own.startswith("\n# Your subtask\n\nBuild the orders service\n\nIt is part of: Build a shop\n\nYou are worker")
    assert "your subtask is t2 in the list above" in own
    assert "Build a shop with auth, orders and payments services" in shared
    assert "- t1: Build the auth service\n- t2: Build the orders service\n- t3: Build the payments service\n" in shared
    assert "Build the orders service" not in shared.replace("- t2: Build the orders service\n", ""), "listed once"
    assert "Build the auth service" not in own and "Build the payments service" not in own


def test_prompt_without_a_goal_has_no_goal_line():
    # Explicit tasks, an AI plan, and records written before the goal field (whose task still
    # carries the old " for: <goal>" suffix) have no goal: the task is shown as it is.
    text = prompt(task="Auth for: Build a shop", goal=None)
    assert "\n# Your subtask\n\nAuth for: Build a shop\n\nYou are worker" in text
    assert "It is part of" not in text


def test_user_template_gets_the_goal(tmp_path):
    path = tmp_path / "goal.md.j2"
    path.write_text("{{ task }} / {{ goal }}")
    assert prompt(template=path) == "Build the orders service / Build a shop"


def test_prompt_states_identity_depth_and_folder():
    text = prompt(depth=1, max_recursion_depth=3)
    assert "worker worker_2 of job job_x, at depth 1 (max depth 3)" in text
    assert "/ws/job_x/depth_0/worker_2" in text
    assert "relative paths" in text
    assert "short summary" in text and "files you created" in text


def test_prompt_gives_the_exact_spawn_line_and_when_to_use_it():
    text = prompt(children_left=2)
    assert f"\n    {SPAWN_COMMAND}\n" in text
    assert text.count(SPAWN_LINE) == 1
    assert "0 completed, 3 partial, 1 failed, 4 cancelled" in text
    assert "5 or more independent parts" in text and f"give {MIN_SUBTASKS} to {MAX_SUBTASKS} subtasks" in text
    assert "Never start a child job for the same task" in text
    assert "at most 2 child job(s)" in text
    assert "depth 1" in text


def test_prompt_asks_for_a_shell_timeout_covering_the_workers_own():
    # CLIs cut a shell command off after their default limit (claude: 2 minutes; a child job of AI
    # workers takes minutes), so the spawn call must ask for the worker's own timeout.
    assert '`"timeout": 1800000`' in prompt(timeout=1800) and "1800000 ms" in prompt(timeout=1800)
    assert '`"timeout": 600000`' in prompt()  # unknown: 10 minutes
    assert "Never leave it in the background" in prompt() and "keep waiting for it" in prompt()


def test_one_subtask_rule_in_the_prompt_and_readme_for_ai():
    guide = (ROOT / "README_FOR_AI.md").read_text(encoding="utf-8")
    rule = f"{MIN_SUBTASKS} to {MAX_SUBTASKS}"
    assert rule in prompt() and rule in guide
    for other in ("3-7", "3 to 7", "2-7", "3–7"):
        assert other not in prompt() and other not in guide, other


@pytest.mark.parametrize(
    "kw, reason",
    [
        ({"depth": 2, "max_recursion_depth": 2}, "you are at the maximum depth (2)"),
        ({"depth": 3, "max_recursion_depth": 2}, "you are at the maximum depth (2)"),
        ({"recursion_enabled": False}, "recursion is disabled for this job"),
        ({"children_left": 0}, "this worker may start no more child jobs"),
    ],
)
def test_prompt_without_recursion_says_to_do_the_work_itself(kw, reason):
    text = prompt(**kw)
    assert "spawn" not in text
    assert f"You cannot start child jobs: {reason}. Do all of the work yourself." in text


def test_single_task_job_has_no_context_or_sibling_section():
    # (the request is the shared block's; a short one is repeated as the subtask,
    # a long one is not)
    text = prompt(task="Write a haiku", request="Write a haiku", siblings=["Write a haiku"], index=1)
    assert "whole request" not in text
    assert "Other workers" not in text and "subtasks, in plan order" not in text
    assert text.count("Write a haiku") == 2 and "\n# Your subtask\n\nWrite a haiku\n" in text
    long = "Write a haiku about " + "autumn leaves " * 40
    text = prompt(task=long, request=long, siblings=[long], index=1)
    assert text.count(long) == 1 and "\n# Your subtask\n\nAll of the request above.\n" in text


def test_special_characters_in_tasks_are_kept_verbatim():
    nasty = 'Fix `rm -rf $HOME` & "quotes" | {{ not_jinja }} {% raw %} <b>x</b> \\n 100%'
    text = prompt(task=nasty, siblings=[TASKS[0], nasty], index=2, request=f"Request: {nasty}")
    assert f"# Your subtask\n\n{nasty}\n" in text
    assert f"Request: {nasty}" in text


def test_long_sibling_lists_are_capped():
    siblings = [f"Part {i}" for i in range(1, 51)]
    text = prompt(task="Part 7", siblings=siblings, index=7)
    assert "- t21: Part 21" in text and "- t22: Part 22" not in text  # its own and 20 others
    assert "- ... and 29 more" in text
    assert len(text.splitlines()) < 70  # (60 before the shared block's headings)


def test_rendered_prompt_stays_short():
    assert len(prompt().splitlines()) < 60
    assert len(prompt(depth=2).splitlines()) < 40


def test_index_outside_the_siblings_is_a_bug():
    with pytest.raises(ValueError, match="index 4"):
        prompt(index=4)


def test_user_template_overrides_the_shipped_one(tmp_path):
    path = tmp_path / "mine.md.j2"
    path.write_text("TASK={{ task }} DEPTH={{ depth }}/{{ max_depth }} SPAWN={{ can_spawn }} {{ others | length }}\n")
    assert prompt(template=path) == "TASK=Build the orders service DEPTH=0/2 SPAWN=True 2\n"


def test_user_template_is_reread_when_it_changes(tmp_path):
    path = tmp_path / "mine.md.j2"
    path.write_text("one {{ task }}")
    assert prompt(template=path).startswith("one")
    path.write_text("two, longer {{ task }}")
    mtime = path.stat().st_mtime + 5  # coarse file clocks: make the change visible
    os.utime(path, (mtime, mtime))
    assert prompt(template=path).startswith("two")


def test_missing_user_template_is_a_clear_error(tmp_path):
    path = tmp_path / "nope.md.j2"
    with pytest.raises(ConfigError, match=r"prompt template not found: .*nope\.md\.j2 \(orchestrator\.prompt_template\)"):
        prompt(template=path)


def test_broken_user_template_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.md.j2"
    path.write_text("ok\n{% if task %}\nno endif\n")
    with pytest.raises(ConfigError, match=r"broken\.md\.j2: line \d+"):
        check_template(path)
    with pytest.raises(ConfigError, match="broken.md.j2"):
        prompt(template=path)


def test_user_template_with_an_unknown_variable_names_it(tmp_path):
    path = tmp_path / "typo.md.j2"
    path.write_text("{{ taks }}")
    with pytest.raises(ConfigError, match=r"typo\.md\.j2: .*'taks' is undefined"):
        prompt(template=path)


def test_prompt_template_path_resolves_against_the_config_folder(tmp_path):
    assert prompt_template_path(make_settings(tmp_path)) is None
    settings = make_settings(tmp_path, orchestrator={"prompt_template": "prompts/w.md.j2"})
    assert prompt_template_path(settings) == tmp_path.resolve() / "prompts" / "w.md.j2"


def test_planner_prompt_asks_for_only_a_json_graph():
    # A graph of tasks (id, task, depends_on, role, owns), not a JSON array of strings
    text = render_planner_prompt('Build a CLI with "init", `sync` and {{ status }}', 5, roles=["backend", "docs"])
    assert "ONLY a JSON object" in text
    assert "1 to 5 tasks; 3 to 5 is typical" in text
    assert '"maxItems": 5' in text and '"maxLength": 2000' in text
    schema = json.loads(next(line for line in text.splitlines() if line.startswith("Schema: "))[len("Schema: ") :])
    item = schema["properties"]["tasks"]["items"]
    assert set(item["properties"]) == {"id", "task", "depends_on", "role", "owns"}
    assert item["properties"]["role"] == {"enum": ["backend", "docs"]} and "one of backend, docs" in text
    example = json.loads(text.split("Answer:\n", 1)[1].split("\n", 1)[0])
    assert [t.get("depends_on", []) for t in example["tasks"]] == [[], [], ["auth", "orders"]]
    assert text.rstrip().endswith('Build a CLI with "init", `sync` and {{ status }}')


def test_planner_prompt_without_roles_offers_none():
    text = render_planner_prompt("Do a thing", 5)
    schema = json.loads(next(line for line in text.splitlines() if line.startswith("Schema: "))[len("Schema: ") :])
    assert "role" not in schema["properties"]["tasks"]["items"]["properties"] and "one of" not in text


def test_planner_prompt_for_a_small_limit_does_not_suggest_more():
    text = render_planner_prompt("Do a thing", 2)
    assert "1 to 2 tasks." in text and "typical" not in text


def test_a_worktree_worker_is_told_its_children_s_work_arrives_in_its_checkout():
    # A child job's work is merged into the parent's branch and checkout before
    # spawn --wait returns; a folder worker's children keep their files in their own folders.
    text = prompt(branch="orchestrator/job_x/worker_2")
    assert "Your work so far is committed before the children start from it." in text
    assert "the children's work has been merged into your branch and is in your checkout" in text
    assert '"Merged into your branch" section lists what was merged, each conflicting file' in text
    assert "the children's files stay in their own folders" not in text
    folder = prompt()
    assert "the children's files stay in their own folders" in folder and "Merged into your branch" not in folder


def test_a_graph_tasks_prompt_says_what_was_done_before_it_and_in_its_checkout():
    # orders waits on auth: auth is listed as done before (in its checkout), payments as another's
    # (the subtasks are listed once, in the shared block; the prerequisites by id)
    text = prompt(before=[1], branch="orchestrator/job_x/worker_2")
    assert "These subtasks were done before yours, and their work is in your checkout: t1. Build on them" in text
    assert text.index("- t1: Build the auth service") < text.index("Other workers do these subtasks (some beside yours")
    assert "at the same time" not in text and text.count("Build the auth service") == 1
    # a graph task with no prerequisite: no "before" section, and no claim that all run at once
    first = prompt(before=[], branch=None)
    assert "done before yours" not in first and "(some beside yours, some after it)" in first
    # a job without dependencies reads as always
    assert "Other workers do these subtasks at the same time" in prompt()
