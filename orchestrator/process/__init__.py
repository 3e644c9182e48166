"""The one door to the operating system: processes (spawn, wait, the kill ladder), the per-worker
shim, the process table, control groups, the sandbox, the executor seam (where an attempt runs,
locally or on a node), memory admission, resource caps and port probes.

Imports the top level, ``config`` and ``workspace``; knows nothing of git, workers or jobs.

Modules:

- ``runner``: spawn, wait, the kill ladder; ``shim``: the per-worker shim and the exit file;
- ``supervisor``: the process that starts a server's workers and records their ends, and its client;
- ``executor``: ``Executor``, where an attempt runs (``LocalExecutor`` here); ``interpreter``: a child's Python;
- ``procscan``: ``/proc``; ``cgroups``: an attempt's cgroup and limits; ``monitor``: resource caps;
- ``sandbox``: the probe, the decision and bubblewrap's argv; ``backends``: which backend confines a worker;
- ``userns``: what refuses bubblewrap's user namespace here; ``landlock``: the Landlock fallback;
- ``seatbelt``: macOS's profile (untested here); ``admission``: a worker starts where its memory fits;
- ``ports``: can a port be listened on; ``plaintext``: program output without terminal codes;
- ``arenas``: how many malloc arenas the server's threads share; ``prctl``: a parent-death signal, subreaping.
"""
