"""The generated hostile suite's parts that need no server (tests/hostile/): the seeded generator,
the primitives' registry and the defences' switch (orchestrator/defences.py)."""

from __future__ import annotations

import pytest

from orchestrator import defences, protocol
from orchestrator.workers.environment import base_env

from .conftest import make_settings
from .hostile import generator, primitives


def test_the_same_seed_gives_the_same_trees_and_another_seed_others():
    first, again, other = generator.trees(200, 7), generator.trees(200, 7), generator.trees(200, 8)
    shape = lambda trees: [(t.context, [[a.id for a in w] for w in t.workers]) for t in trees]  # noqa: E731
    assert shape(first) == shape(again)
    assert [[a.primitive.name for a in t.attacks] for t in first] != [[a.primitive.name for a in t.attacks] for t in other]


def test_every_pair_is_used_before_any_is_used_twice_and_trees_hold_about_ten_attacks():
    pairs = generator.pairs()
    made = generator.attacks(len(pairs), 3)
    assert sorted((a.primitive.name, a.context.value) for a in made) == sorted((p.name, c.value) for p, c in pairs)
    trees = generator.trees(200, 7)
    assert 15 <= len(trees) <= 25 and sum(len(t.attacks) for t in trees) == 200
    assert len(generator.trees(1000, 7)) >= 80


def test_a_backends_two_set_ups_together_use_every_pair():
    from .test_hostile_generated import ATTACKS, SEED, USERS

    for backend in ("bubblewrap", "landlock"):
        tried = primitives.runnable(backend)
        stretches = [generator.attacks(ATTACKS, SEED, tried, skip=k * ATTACKS) for k in range(len(USERS))]
        used = [(a.primitive.name, a.context) for stretch in stretches for a in stretch]
        assert set(used) == {(p.name, c) for p, c in generator.pairs(tried)}, backend
        assert len(used) == 2 * ATTACKS and min(used.count(pair) for pair in set(used)) >= 1


def test_a_gap_is_not_tried_where_docs_name_it_and_none_is_left():
    assert all("landlock" not in p.gaps for p in primitives.runnable("landlock"))
    # (another tree's branches read through git was Landlock's last, until a worker got a git dir of its own there)
    assert primitives.runnable("bubblewrap") == primitives.runnable("landlock") == primitives.RUNNABLE
    assert not any(p.gaps for p in primitives.RUNNABLE)


def test_every_category_and_every_context_has_a_runnable_primitive():
    assert {p.category for p in primitives.RUNNABLE} == set(primitives.Category)
    assert {c for p in primitives.RUNNABLE for c in p.contexts} == set(primitives.Context)


def test_an_attack_that_needs_a_conflict_is_in_two_workers_of_its_tree():
    for tree in generator.trees(300, 5):
        for attack in tree.attacks:
            holding = sum(attack in group for group in tree.workers)
            assert holding >= (2 if attack.primitive.pair or tree.context is primitives.Context.RESOLVE else 1), tree


@pytest.mark.parametrize("primitive", primitives.PRIMITIVES, ids=lambda p: p.name)
def test_each_attack_is_python_that_compiles(primitive):
    compile(primitives.source(primitive, "a1", {"x": 1}), primitive.name, "exec")


def test_the_defences_switch_names_only_defences_it_has():
    assert defences.parse(" sandbox, terminal ,") == {"sandbox", "terminal"}
    with pytest.raises(ValueError, match="no defence is named sandbx"):
        defences.parse("sandbx")
    assert not any(defences.off(name) for name in defences.NAMES)  # off only when the suite asks
    assert {p.defence for p in primitives.PRIMITIVES} <= defences.NAMES


def test_a_worker_never_inherits_the_defences_switch(tmp_path, monkeypatch):
    monkeypatch.setenv(protocol.DEFENCES_OFF, "sandbox")
    monkeypatch.setenv(protocol.FAILPOINTS, "after_spawn=1")
    env = base_env(make_settings(tmp_path, workers={"inherit_env": True}))
    assert protocol.DEFENCES_OFF not in env and protocol.FAILPOINTS not in env
