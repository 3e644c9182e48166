"""Workers on several machines (``distributed.executor: rq``): the server enqueues each worker
attempt on Redis through RQ, and ``python -m orchestrator node`` processes on any machine that
mounts the workspace run them with the same local runner as a single server does.

- ``names``: every Redis key and queue name, under ``distributed.queue_prefix``;
- ``connect``: a Redis connection from a URL, with errors that say what is wrong;
- ``nodes``: the node registry (``NodeInfo``), written by nodes, read by the server;
- ``attempts``: the attempt protocol (claim, lease, fencing, lost) as Lua scripts;
- ``marker``: the shared-workspace check a node makes before it takes work.
"""
