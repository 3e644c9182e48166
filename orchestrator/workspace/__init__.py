"""The workspace: the on-disk layout of job trees (every path in it), their records, and how files
reach the disk (atomic and durable writes, group commit, structured logs).

Imports only the top level and ``config``; everything above reads and writes job trees through it.

Modules:

- ``layout``: ``Workspace``: every path of a job tree, its records;
- ``filesystem``: durable writes; ``groupsync``: group commit;
- ``stages``: which stages after a worker's agent started and which reached their verdict;
- ``logs``: structured logging; ``ids``: job ids and worker names: made, checked, parsed;
- ``checkout_place``: where a worker's worktree lives when no project view shows it.
"""
