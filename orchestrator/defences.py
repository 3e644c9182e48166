"""Defences the generated hostile suite switches off, one at a time, to prove it can see an escape
(tests/hostile/): a suite whose every attack is refused proves nothing until each attack is seen
to get out with the defence that stops it gone.

``ORCHESTRATOR_DEFENCES_OFF="sandbox,terminal"`` turns the named defences off in this process, read
once at import like orchestrator/failpoints.py. Test-only (docs/sandbox.md): never set it on a server
anyone uses. Workers never inherit it (the engine strips ``ORCHESTRATOR*`` from their environment).
Each name is switched at the one place its defence is made:

- ``sandbox``: workers/confinement.Confinement.spec_at (every worker, gate, setup, resolver and
  helper CLI runs unconfined, while the server still says they are sandboxed);
- ``helper_refusal``: an AI CLI on a worker's text (judge, child-job planner) that no sandbox runs is
  started anyway instead of refused (selection/judge.py, engine/submission.py);
- ``object_check``: git/worker_objects.py takes a loose object whatever its content hashes to;
- ``inflated_size``: git/tree_checks.py does not count a commit's blobs inflated against the caps;
- ``merge_drivers``: git/drivers.py leaves the user's merge drivers in place for the host's merges;
- ``terminal``: reports/terminal.visible passes control characters through;
- ``api_scope``: api/auth.Principal.check_tree lets a worker's credential reach any job tree.
"""

from __future__ import annotations

import os

from . import protocol

VARIABLE = protocol.DEFENCES_OFF
NAMES = frozenset({"sandbox", "helper_refusal", "object_check", "inflated_size", "merge_drivers", "terminal", "api_scope"})


def parse(text: str) -> frozenset[str]:
    """The names in ``text`` (comma-separated); a name no defence has is a ValueError naming them."""
    names = frozenset(filter(None, (part.strip() for part in text.split(","))))
    unknown = sorted(names - NAMES)
    if unknown:
        raise ValueError(f"{VARIABLE}: no defence is named {', '.join(unknown)} (known: {', '.join(sorted(NAMES))})")
    return names


_OFF = parse(os.environ.get(VARIABLE, ""))


def off(name: str) -> bool:
    """Whether the defence ``name`` is switched off in this process (never, outside the hostile suite)."""
    assert name in NAMES, name
    return name in _OFF
