"""What is kept, and for how long: job trees, worker worktrees and branches, result branches.

Imports ``checkouts``, ``git`` and below.

Modules:

- ``lifetime``: how long worktrees and branches live, and the retention thread;
- ``pruning``: deleting old job trees, online (the server) and offline (``prune``);
- ``results``: the result branches ``prune --results`` deletes.
"""
