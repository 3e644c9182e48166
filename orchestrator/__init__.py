"""orchestrator: a portable, recursive, hierarchical job orchestrator for AI coding workers.

This module stays import-free on purpose (``os`` is loaded with the interpreter): worker
subprocesses (``python -m orchestrator spawn``, the simulated worker) import the package and must
start fast.

Modules:

- ``models``: records; ``outcomes``: the merge, gate, integration and refusal records they hold;
- ``states``: statuses, transitions, the one writer; ``events``: the per-tree event log;
- ``gate_output``: a failed gate's output tail, and how every surface shows it;
- ``protocol``: every ``ORCHESTRATOR_*`` name; ``clock``: time; ``errors``: the error tree and exit codes;
- ``failpoints``: crash points for the chaos tests; ``defences``: the hostile suite's switches;
- ``descriptors``: descriptors received over a Unix socket, close-on-exec as they arrive;
- ``testing``: fakes for users' own tests (an executor that starts no process, a clock, an engine);
- ``network/``, ``config/``, ``workspace/``, ``process/``, ``git/``, ``audit/``, ``reports/``,
  ``workers/``, ``planner/``, ``selection/``, ``checkouts/``, ``retention/``, ``quality/``,
  ``delivery/``, ``index/``, ``webhooks/``, ``cluster/``, ``engine/``, ``dashboard/``, ``api/``,
  ``cli/``: the layers, lowest first (docs/architecture.md follows a job through them).
"""

import os as _os

# A source checkout that was never built records no version: a wheel's build writes _version.py
# beside this file from the orchestrator's own git tags (setup.py), and `orchestrator init` copies it
# into the folders it writes. It is read as text, and never from a repository at run time.
UNRECORDED = "0.0.0+unrecorded"


def folder_version(package: str) -> str:
    """The version recorded in the package folder ``package`` (the ``VERSION = '...'`` line of its
    _version.py), or UNRECORDED."""
    try:
        with open(_os.path.join(package, "_version.py"), encoding="utf-8") as file:
            lines = file.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return UNRECORDED
    for line in lines:
        name, _, value = (part.strip() for part in line.partition("="))
        if name == "VERSION" and len(value) > 2 and value[0] == value[-1] and value[0] in "'\"":
            return value[1:-1]
    return UNRECORDED


__version__ = folder_version(_os.path.dirname(_os.path.abspath(__file__)))
__all__ = ["UNRECORDED", "__version__", "folder_version"]
