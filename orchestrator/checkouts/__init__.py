"""Where a worker works: the ``Checkout`` seam, the folder and worktree checkouts and the one that
picks between them per job, a worktree's bootstrap, and removing worktrees (a finished worker's, a
deleted job tree's, stale entries).

Imports ``workers``, ``git``, ``process`` and below.
"""
