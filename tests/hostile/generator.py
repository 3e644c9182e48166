"""Attacks composed into job trees, from a seed: the same seed gives the same trees.

Every (primitive, context) pair the registry allows is used before any is used twice (the pairs are
dealt out in a shuffled order, round after round, until ``count`` attacks are made), then the attacks
of one context are packed into trees of a few workers each: about ten attacks a tree, fewer where each
attack costs more (a judge asked twice per pair of candidates, a planner reading a long request, a
server killed and restarted).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from .primitives import RUNNABLE, Context, Primitive

PER_TREE = {Context.JUDGE: 8, Context.PLANNER: 8, Context.RESOLVE: 10, Context.RESTART: 14}
DEFAULT_PER_TREE = 12


@dataclass(frozen=True)
class Attack:
    id: str  # unique in a run: what its proof looks for
    primitive: Primitive
    context: Context


@dataclass(frozen=True)
class Tree:
    """One root job: its context, and the attacks each of its workers carries (one list per task)."""

    name: str
    context: Context
    workers: tuple[tuple[Attack, ...], ...]

    @property
    def attacks(self) -> list[Attack]:
        seen: dict[str, Attack] = {}
        for group in self.workers:
            seen.update({a.id: a for a in group})
        return list(seen.values())


def pairs(primitives: tuple[Primitive, ...] = RUNNABLE) -> list[tuple[Primitive, Context]]:
    return [(p, c) for p in primitives for c in Context if c in p.contexts]


def attacks(count: int, seed: int, primitives: tuple[Primitive, ...] = RUNNABLE, *, skip: int = 0) -> list[Attack]:
    """``count`` attacks of the seed's stream, after its first ``skip`` (the set-ups of one run each take
    their own stretch of one stream, so together they use every pair even where one set-up is too
    short to)."""
    rng = random.Random(seed)
    made: list[Attack] = []
    while len(made) < skip + count:
        deal = pairs(primitives)
        rng.shuffle(deal)
        for primitive, context in deal[: skip + count - len(made)]:
            made.append(Attack(f"a{seed}x{len(made):04d}", primitive, context))
    return made[skip:]


def trees(count: int, seed: int, primitives: tuple[Primitive, ...] = RUNNABLE, *, skip: int = 0) -> list[Tree]:
    rng = random.Random(seed ^ 0x5EED ^ skip)
    by_context: dict[Context, list[Attack]] = defaultdict(list)
    for attack in attacks(count, seed, primitives, skip=skip):
        by_context[attack.context].append(attack)
    made: list[Tree] = []
    for context in Context:
        found = by_context.get(context, [])
        size = PER_TREE.get(context, DEFAULT_PER_TREE)
        count_of = max(1, round(len(found) / size)) if found else 0  # even trees, none nearly empty
        for index in range(count_of):
            made.append(pack(f"t{len(made):02d}", context, found[index::count_of], rng))
    return made


def pack(name: str, context: Context, chosen: list[Attack], rng: random.Random) -> Tree:
    """``chosen`` spread over two to four workers (a resolve merge: two, each carrying all of them, as
    the two sides of one conflict); an attack that needs a pair is in every worker."""
    if context is Context.RESOLVE:
        return Tree(name, context, (tuple(chosen), tuple(chosen)))
    single = [a for a in chosen if not a.primitive.pair]
    paired = tuple(a for a in chosen if a.primitive.pair)
    width = max(2 if paired else 1, min(rng.randint(2, 4), len(chosen)))
    groups: list[list[Attack]] = [[] for _ in range(width)]
    for index, attack in enumerate(single):
        groups[index % width].append(attack)
    return Tree(name, context, tuple((*paired, *group) for group in groups))
