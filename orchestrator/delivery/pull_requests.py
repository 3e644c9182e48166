"""The forges a root job's result is proposed on, by ``git.pull_request``'s value: one registry that
GitHub and GitLab (forge.py, pr_checks.py, pr_review.py) are in, and a plugin's forge joins
(docs/plugins.md): an installed ``orchestrator.forges`` entry point, or ``git.pull_request:
package.module:Forge``.

A ``Forge`` opens or updates a draft pull request (``propose``), and may read its checks for a
pushed commit (``checks``: the watch of ``git.check_rounds``) and its review comments on lines
(``review_comments``). It runs in the server on the server's token, and what it is given of the
workers' work is data (the branch, the summary); a ``ForgeError`` says what the forge answered. A
forge that does not load, is no ``Forge`` or takes a shipped forge's name stops the server's start
(``load_forges``), naming the plugin, its distribution and the fix.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import requests

from ..config import Settings, plugins
from ..config.schema import DEFAULT_TOKEN_ENV
from . import forge, pr_checks, pr_review
from .forge import ForgeError, ForgeProject, Proposal, PullRequest
from .pr_checks import ChecksReading
from .pr_review import ReviewComment


class Forge(ABC):
    """Where a draft pull request is proposed. ``name`` is what records show (``PullRequestRecord.forge``)."""

    name: str = ""
    default_api: str = ""  # its API when git.forge_api_url is empty

    @abstractmethod
    def propose(self, project: ForgeProject, proposal: Proposal, http: requests.Session | None = None) -> PullRequest:
        """Open a draft pull request, or update ``proposal.number`` (or the one open for its head)."""

    def checks(
        self, project: ForgeProject, commit: str, number: int | None, http: requests.Session | None = None
    ) -> ChecksReading:
        """The checks of ``commit`` (on pull request ``number``); a forge that reads none says so."""
        raise ForgeError(f"the {self.name} forge reads no checks: set git.check_rounds: 0")

    def review_comments(self, project: ForgeProject, number: int, http: requests.Session | None = None) -> list[ReviewComment]:
        """The line comments of the repository's writers on pull request ``number``, oldest first."""
        return []


class ShippedForge(Forge):
    """GitHub or GitLab, through their documented REST endpoints (forge.py, pr_checks.py, pr_review.py)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.default_api = forge.DEFAULT_API[name]

    def propose(self, project: ForgeProject, proposal: Proposal, http: requests.Session | None = None) -> PullRequest:
        return forge.propose(project, proposal, http)

    def checks(
        self, project: ForgeProject, commit: str, number: int | None, http: requests.Session | None = None
    ) -> ChecksReading:
        return pr_checks.read(project, commit, number, http)

    def review_comments(self, project: ForgeProject, number: int, http: requests.Session | None = None) -> list[ReviewComment]:
        return pr_review.read(project, number, http)


# The registry: every forge this server can propose on, by git.pull_request's value.
FORGES: dict[str, Forge] = {name: ShippedForge(name) for name in plugins.SHIPPED_FORGES}


def forge_of(value: str) -> Forge:
    """The forge ``git.pull_request`` names (loaded at the start: ``load_forges``)."""
    found = FORGES.get(value)
    if found is None:
        raise ForgeError(f"no forge {value!r} is loaded: the server loads git.pull_request's at its start (docs/plugins.md)")
    return found


def token_env(settings: Settings) -> str:
    """The server's variable holding the forge's token: git.forge_token_env, else the shipped forge's own."""
    return settings.git.forge_token_env or DEFAULT_TOKEN_ENV.get(settings.git.pull_request, "")


def project_of(settings: Settings, token: str) -> ForgeProject:
    g = settings.git
    return ForgeProject(g.pull_request, g.forge_api_url or forge_of(g.pull_request).default_api, g.forge_repo, token)


def load_forges(settings: Settings) -> list[str]:
    """Register every installed ``orchestrator.forges`` entry point and ``git.pull_request``'s dotted
    path: a line per forge for the server's log, or ``ConfigError`` naming the bad plugin and the fix."""
    declared = list(plugins.entry_points(plugins.Group.FORGES))
    value = settings.git.pull_request
    if ":" in value:
        declared.append(plugins.config_forge(value))
    found = [(d, _forge_of(d)) for d in declared]
    if ":" in value and not settings.git.forge_token_env:
        raise plugins.config_forge(value).error(
            "a plugin's forge has no token variable of its own", "set git.forge_token_env to the variable holding its token"
        )
    for d, made in found:
        FORGES[d.name] = made
    return [f"forge {d.name} from {d.where} ({d.target})" for d, _ in found]


def _forge_of(declared: plugins.Declared) -> Forge:
    if declared.name in FORGES and isinstance(FORGES[declared.name], ShippedForge) or declared.name == plugins.NO_FORGE:
        raise declared.error(
            f"{declared.name!r} is a forge the orchestrator ships",
            f"uninstall {declared.distribution} or ask its authors for another name" if declared.distribution else "rename it",
        )
    found = declared.load()
    if isinstance(found, type) and issubclass(found, Forge):
        try:
            found = found()
        except Exception as exc:
            raise declared.error(
                f"{declared.target}() raised {type(exc).__name__}: {exc}", "make the forge's class take no argument"
            ) from None
    if not isinstance(found, Forge):
        raise declared.error(
            f"{declared.target} is a {type(found).__name__}, not a Forge",
            "point it at a subclass of orchestrator.delivery.pull_requests.Forge (docs/plugins.md)",
        )
    return found
