"""Workers on several machines (``distributed.executor: rq``): the server enqueues each worker
attempt on Redis through RQ, and ``python -m orchestrator node`` processes on any machine that
mounts the workspace run them with the same local runner as a single server does.

Modules:

- ``names``: every Redis key and queue name, under ``distributed.queue_prefix``;
- ``connect``: a Redis connection from a URL, with errors that say what is wrong;
- ``registry``: the node registry (``NodeInfo``), written by nodes, read by the server;
- ``leases``: the attempt protocol (claim, lease, fencing, lost) as Lua scripts;
- ``signing``: attempts signed by the server with Ed25519, verified by a node with the key its config names;
- ``executor``: ``RQExecutor``, the executor seam over RQ; ``handle``: an attempt's handle on the server's side;
- ``reconcile``: what the server does with attempts whose node was lost;
- ``locks``: path locks in Redis; ``distribution``: what ``distributed.executor`` chooses (executor, locks);
- ``marker``: the shared-workspace check a node makes before it takes work;
- ``node``: ``python -m orchestrator node``; ``attempt``: what a node runs for one attempt;
- ``in_flight``: the attempt each node worker process runs, in one kept file (what a dead node's sweep reads);
- ``secret_file``: the worker's API key on its way to a node, in a private file handed back once read.
"""
