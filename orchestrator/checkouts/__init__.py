"""Where a worker works: the ``Checkout`` seam, the folder and worktree checkouts, a worktree's
bootstrap, how long worktrees and branches live, and deleting old job trees.

Imports ``workers``, ``git``, ``process`` and below.
"""
