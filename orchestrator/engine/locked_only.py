"""The engine's lock rule, enforced: a method that reads or changes the engine's memory
(``tables.Tables``) without taking its lock itself runs only where its caller holds that lock,
``with tables.locked():``. ``@locked_only`` on such a method raises AssertionError when the
calling thread does not hold it, so a caller that forgets the lock fails in the tests rather
than racing in production.

The check is one comparison of the lock's owner with the calling thread (the lock's own
``_is_owned``, what ``threading.Condition`` asks too): tens of nanoseconds, so it is always on.
It imports nothing of the engine: ``queries`` uses it without loading the tables.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class LockHolder(Protocol):
    """What owns the engine's lock (``tables.Tables``): it says whether this thread holds it."""

    def held(self) -> bool: ...


class Guarded(Protocol):
    """A part of the engine: its ``tables`` are the engine's, with their lock."""

    @property
    def tables(self) -> LockHolder: ...


G = TypeVar("G", bound=Guarded)
H = TypeVar("H", bound=LockHolder)


def not_held(name: str) -> AssertionError:
    """The error a guarded method raises when its caller does not hold the engine's lock."""
    return AssertionError(f"{name} runs only inside tables.locked(), and this thread does not hold it")


def locked_only(method: Callable[Concatenate[G, P], R]) -> Callable[Concatenate[G, P], R]:
    """A part's method its callers run inside ``self.tables.locked()``."""
    name = method.__qualname__

    @functools.wraps(method)
    def guarded(self: G, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if not self.tables.held():
            raise not_held(name)
        return method(self, *args, **kwargs)

    return guarded


def own_lock_only(method: Callable[Concatenate[H, P], R]) -> Callable[Concatenate[H, P], R]:
    """A method of the lock's owner itself (``Tables``) its callers run inside ``locked()``."""
    name = method.__qualname__

    @functools.wraps(method)
    def guarded(self: H, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if not self.held():
            raise not_held(name)
        return method(self, *args, **kwargs)

    return guarded


def assert_held(holder: LockHolder, what: str) -> None:
    """The same check for a closure run in a caller's lock section (a record change deferred to it)."""
    if not holder.held():
        raise not_held(what)
