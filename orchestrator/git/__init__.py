"""Git, run as plain commands: the command runner, the job's refs, the host repository, the
commits the orchestrator makes, merges in the object store, and unified diffs.

Imports ``process`` and below; knows nothing of workers or checkouts.
"""
