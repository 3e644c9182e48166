"""The commits the orchestrator makes: who they are by, and what their messages say.

Who: the user, as git would name them committing in the host repository (its ``user.name`` and
``user.email``, else the global or system ones; ``author.*`` and ``GIT_AUTHOR_*`` count too),
author and committer both, as Claude Code commits; the orchestrator's own identity only where the
user has none (``identity_of``, which reads the host's config and writes nothing). The AI that did
the work is credited by a ``Co-authored-by:`` trailer (its adapter's ``co_author``), not by a name
of its own in the author line: GitHub and ``git shortlog`` then count the work as the user's, and
show the AI beside them.

What: a subject cut at a word's end, under 72 characters; the trailers that name the job and the
worker (one ``Orchestrator-Worker:`` value, the worker's name, on a worker's own commits and on the
squashed commits of a result or integration branch); and on a squashed commit an
``Orchestrator-Commit:`` trailer naming the worker's commit it took (``squashed_in`` reads them
back: how a merge knows who is in a branch when no worker commit is an ancestor of it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .invocation import IDENTITY_ENV, run_git

# The trailer that names the worker on every commit the orchestrator makes for one, valued with
# the worker's name; and the one that names the worker's commit a squashed commit took
# (``trailers(..., commit=...)`` writes it).
WORKER_TRAILER = "Orchestrator-Worker"
SOURCE_TRAILER = "Orchestrator-Commit"
CO_AUTHOR_TRAILER = "Co-authored-by"
# Characters of a commit subject, cut at a word's end: under the 72 that ``git log`` and GitHub's
# commit lists show whole.
SUBJECT_WIDTH = 71
_IDENT = re.compile(r"^(?P<name>.+) <(?P<email>[^<>]*)> \d+ [+-]\d{4}$")


@dataclass(frozen=True)
class Identity:
    """Who a commit is by: a name and an email, as git's ident lines hold them."""

    name: str
    email: str

    def env(self) -> dict[str, str]:
        """The environment that makes git commit as this identity, author and committer."""
        return {
            "GIT_AUTHOR_NAME": self.name,
            "GIT_AUTHOR_EMAIL": self.email,
            "GIT_COMMITTER_NAME": self.name,
            "GIT_COMMITTER_EMAIL": self.email,
        }

    def ident(self, when: str) -> str:
        """A commit's ``author``/``committer`` value: ``Name <email> <seconds> <zone>``."""
        return f"{self.name} <{self.email}> {when}"


ORCHESTRATOR = Identity(IDENTITY_ENV["GIT_AUTHOR_NAME"], IDENTITY_ENV["GIT_AUTHOR_EMAIL"])


def identity_of(repo: str | Path) -> Identity:
    """The user's git identity in ``repo`` (``git var GIT_AUTHOR_IDENT`` with
    ``user.useConfigOnly``: configured, never guessed from the host name), else ``ORCHESTRATOR``.
    Reads the config; writes nothing."""
    done = run_git(repo, "-c", "user.useConfigOnly=true", "var", "GIT_AUTHOR_IDENT", check=False)
    found = _IDENT.match(done.stdout.strip()) if done.returncode == 0 else None
    return Identity(found["name"], found["email"]) if found else ORCHESTRATOR


def subject_line(text: str, width: int = SUBJECT_WIDTH) -> str:
    """``text`` as a commit subject: one line, at most ``width`` characters, no closing period;
    a longer text is cut at the end of a word, with "…". The word the cut falls in is dropped,
    unless that leaves less than half the subject: then a long word (a path) is cut after a
    ``/``, ``.``, ``_`` or ``-`` inside it (``src/humanize/…``); one with none, where it must."""
    words = " ".join(text.split()).rstrip(".")
    if len(words) <= width:
        return words
    head = words[: width - 1]
    if words[width - 1] != " ":  # the cut falls inside a word
        start = head.rfind(" ") + 1  # where that word begins (0: it is the first)
        inside = max(head.rfind(mark, start) for mark in "/._-")  # its last separator that fits
        if start and (start > width // 2 or inside <= start):
            head = head[:start]
        elif inside > start:
            head = head[: inside + 1]
    return head.rstrip(" ,;:.-") + "…"


def trailers(job: str, worker: str, co_author: str | None = None, **more: str) -> str:
    """The trailer block of an orchestrator commit: the job, the worker (``WORKER_TRAILER``), then
    ``more`` (``attempt=1`` becomes ``Orchestrator-Attempt: 1``), then ``Co-authored-by:
    co_author`` when the work was an AI's (None: a script's, the simulated worker's, a setup's)."""
    lines = [f"Orchestrator-Job: {job}", f"{WORKER_TRAILER}: {worker}"]
    lines += [f"Orchestrator-{name.capitalize()}: {value}" for name, value in more.items()]
    lines += [f"{CO_AUTHOR_TRAILER}: {co_author}"] if co_author else []
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Source:
    """A worker's commit squashed onto a result, and what that commit's message says."""

    worker: str
    branch: str
    commit: str
    task: str = ""  # the subject's text (default: the worker's name and branch)
    co_author: str | None = None  # the AI that did the work (an adapter's ``co_author``)

    def message(self, root_id: str, strategy: str, into: str | None) -> str:
        subject = subject_line(self.task or f"The work of {self.worker} on {self.branch}")
        return (
            f"{subject}\n\nThe work of worker {self.worker} ({self.branch} at {self.commit[:12]}) merged into "
            f"{into or 'job ' + root_id} as one commit; its branch keeps its own history.\n\n"
            + trailers(root_id, self.worker, self.co_author, strategy=strategy, commit=self.commit)
        )


def squashed_in(repo: str | Path, since: str, head: str) -> set[str]:
    """The workers' commits squashed into ``head`` after ``since`` (their ``Orchestrator-Commit:`` trailers)."""
    fmt = f"--format=%(trailers:key={SOURCE_TRAILER},valueonly,separator=%x20)"
    return set(run_git(repo, "log", fmt, f"{since}..{head}", "--").stdout.split())
