"""The user's merge drivers, which git would run on the workers' files in the host repository.

A ``merge.<name>.driver`` the user configured (npm-merge-driver, a ``python -m`` driver) runs when
``git merge-tree`` merges a path whose ``merge`` attribute names it (or any path, with
``merge.default``): in the user's checkout, with the server's rights, on contents a worker wrote. So
the orchestrator's merges in the host run with every configured driver replaced by one that fails
(:data:`REFUSING`: git marks the path conflicted and keeps its three stages) and with
``merge.renormalize`` off (with it on, merge-tree reads the ``.gitattributes`` of the merged trees,
which workers wrote). A conflicting path whose attribute names a configured driver is reported as
such (:meth:`MergeDrivers.refused`), never as a plain content conflict.

A driver the user lists in ``git.trusted_merge_drivers`` still never runs in the host: git refuses it
as any other, and the merge then hands each such path to a :class:`DriverRunner` (the caller's:
delivery/trusted_drivers.py runs the driver's own command line on the three versions in the
workers' sandbox, with their caps) whose merged file is taken for that path (:func:`expand` gives
the command line git would run, its ``%O %A %B %L %P %S %X %Y`` filled in). A driver that fails,
or that no runner is there to run, leaves the path a conflict that says why.

The overrides go through ``GIT_CONFIG_PARAMETERS`` (what ``git -c`` sets), each key quoted, so a
driver name holding ``=`` (which ``-c`` would split) is overridden too; appended to whatever the
server's environment already holds there, so they come last and win.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .. import defences
from .invocation import run_git

REFUSING = "exit 1"  # the driver every configured one is replaced by: no program of the user's runs
NOT_RUN = "merge driver {name} not run"  # a refused path's conflict kind (git/conflicts.py shows it)
FAILED = "merge driver {name} {why}"  # a trusted driver's path it did not merge: "... exited with code 3"
_PARAMETERS = "GIT_CONFIG_PARAMETERS"


@dataclass(frozen=True)
class MergeDrivers:
    """The merge drivers the host repository's config defines (``merge.<name>.driver``, any scope)
    and ``merge.default`` (None: unset)."""

    names: frozenset[str]
    default: str | None = None
    commands: Mapping[str, str] = field(default_factory=dict)  # name -> its ``merge.<name>.driver`` line

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment entries that pin every merge of the host: each driver refused, no
        renormalizing. ``base``: the environment git would otherwise get (default: this process's)."""
        pins = {"merge.renormalize": "false", **{f"merge.{name}.driver": REFUSING for name in sorted(self.names)}}
        if defences.off("merge_drivers"):  # (the hostile suite's switch: orchestrator/defences.py)
            pins = {}
        before = (base if base is not None else os.environ).get(_PARAMETERS, "").strip()
        added = " ".join(f"{_quoted(key)}={_quoted(value)}" for key, value in pins.items())
        return {_PARAMETERS: f"{before} {added}".strip()}

    def driver_of(self, attribute: str) -> str | None:
        """The configured driver a path's ``merge`` attribute (as ``check-attr`` prints it) makes git
        run, or None (text, binary, a built-in, or a name no config defines: git's text merge)."""
        if attribute in ("set", "unset"):
            return None
        name = self.default if attribute == "unspecified" else attribute
        return name if name in self.names else None

    def refused(self, repo: str | Path, paths: Iterable[str]) -> dict[str, str]:
        """path -> the configured driver git would have run to merge it, for ``paths`` (the
        conflicts of a merge run with :meth:`env`): read by ``git check-attr`` from the attributes
        merge-tree reads (the user's checkout, ``info/attributes``, the global and system files)."""
        listed = [p for p in paths if "\0" not in p]
        if not self.names or not listed:
            return {}
        stdin = "".join(f"{p}\0" for p in listed)
        out = run_git(repo, "check-attr", "-z", "--stdin", "merge", input=stdin).stdout.split("\0")
        found = {}
        for at in range(0, len(out) - 2, 3):
            driver = self.driver_of(out[at + 2])
            if driver is not None:
                found[out[at]] = driver
        return found


NONE = MergeDrivers(frozenset())


@dataclass(frozen=True)
class DriverRun:
    """One path's merge by the user's driver ``name`` (``command``: its configured line): the three
    versions as git hands them to a driver, ``%O`` (``base``), ``%A`` (``ours``: where the driver
    writes its result) and ``%B`` (``theirs``); ``labels``: ``%S %X %Y``, as ``git merge`` names
    the three."""

    name: str
    command: str
    path: str
    base: bytes
    ours: bytes
    theirs: bytes
    labels: tuple[str, str, str] = ("base", "ours", "theirs")
    marker_size: int = 7
    git_dir: str = ""  # the repository's common git dir, which a driver (three files in, one out) is not shown


@dataclass(frozen=True)
class DriverResult:
    """A driver's answer: the merged file (None: it did not merge the path) and why not, as what
    follows "merge driver <name>" ("exited with code 3", "not run: ...")."""

    merged: bytes | None
    reason: str = ""


class DriverRunner(Protocol):
    """Runs the drivers in ``trusted`` (``git.trusted_merge_drivers``) somewhere that is not the host:
    the caller's sandbox (delivery/trusted_drivers.py)."""

    trusted: frozenset[str]

    def __call__(self, run: DriverRun) -> DriverResult: ...


def expand(command: str, files: Sequence[str], run: DriverRun) -> str:
    """``command`` (a ``merge.<name>.driver`` line) as git's ll-merge expands it for a shell: ``%O``,
    ``%A``, ``%B`` the three ``files``, ``%L`` the marker size, ``%P`` the path, ``%S %X %Y`` the
    labels, ``%%`` a ``%``; each file and text shell-quoted (a path a worker named is data)."""
    values = {
        "O": shlex.quote(files[0]),
        "A": shlex.quote(files[1]),
        "B": shlex.quote(files[2]),
        "L": str(run.marker_size),
        "P": shlex.quote(run.path),
        "S": shlex.quote(run.labels[0]),
        "X": shlex.quote(run.labels[1]),
        "Y": shlex.quote(run.labels[2]),
        "%": "%",
    }
    out, at = [], 0
    while at < len(command):
        char = command[at]
        if char == "%" and at + 1 < len(command) and command[at + 1] in values:
            out.append(values[command[at + 1]])
            at += 2
            continue
        out.append(char)
        at += 1
    return "".join(out)


def configured(repo: str | Path) -> MergeDrivers:
    """The merge drivers ``repo``'s git would find (one ``git config`` read)."""
    done = run_git(repo, "config", "-z", "--get-regexp", r"^merge\.", check=False)
    names, default, commands = set(), None, {}
    for entry in filter(None, done.stdout.split("\0")):
        key, _, value = entry.partition("\n")
        section, dot, rest = key.partition(".")
        if key == "merge.default":
            default = value
        elif section == "merge" and dot and rest.endswith(".driver") and len(rest) > len(".driver"):
            names.add(rest.removesuffix(".driver"))
            commands[rest.removesuffix(".driver")] = value
    return MergeDrivers(frozenset(names), default, commands) if names else NONE


def _quoted(text: str) -> str:
    """``text`` in git's single quotes (quote.c's sq_quote), as GIT_CONFIG_PARAMETERS holds it."""
    return "'" + text.replace("'", "'\\''").replace("!", "'\\!'") + "'"


__all__ = [
    "FAILED",
    "NONE",
    "NOT_RUN",
    "REFUSING",
    "DriverResult",
    "DriverRun",
    "DriverRunner",
    "MergeDrivers",
    "configured",
    "expand",
]
