"""Where a worker works: the ``Checkout`` seam, the folder and worktree checkouts and the one that
picks between them per job, a worktree's bootstrap, and removing worktrees (a finished worker's, a
deleted job tree's, stale entries).

Imports ``workers``, ``git``, ``process`` and below.

Modules:

- ``checkout``: ``Checkout`` (prepare, reset, changes, cleanup of a worker's directory) and ``FolderCheckout``;
- ``worktree``: ``WorktreeCheckout``, a git worktree, branch and commits per worker;
- ``isolated``: ``IsolatedCheckout`` (folder or worktree per job), ``make_checkout``, ``resolve_isolation``;
- ``retiring``: ``Retirer``, finished and deleted trees' worktrees and branches removed, stale entries pruned;
- ``bootstrap``: a new worktree's ``.worktreeinclude`` copies, port, ``git.setup`` and ``git.teardown``;
- ``untouched``: what a worker's checkout held before it ran;
- ``locks``: path locks in a shared folder (``cluster/locks`` is their Redis variant).
"""
