"""The one door to the operating system: processes (spawn, wait, the kill ladder), the per-worker
shim, the process table, control groups, the sandbox, the executor seam (where an attempt runs,
locally or on a node), memory admission, resource caps and port probes.

Imports the top level, ``config`` and ``workspace``; knows nothing of git, workers or jobs.
"""
