"""Git, run as plain commands: the command runner, the job's refs, the host repository, the
commits the orchestrator makes, merges in the object store, and unified diffs.

Imports ``process`` and below; knows nothing of workers or checkouts.

Modules:

- ``invocation``: run git (argv only, no prompt, no hook, fsmonitor or submodule command);
- ``sandboxed``: git on a checkout a worker can write, run in that worker's sandbox;
- ``tree_checks``: git fsck's rules for a worker's trees, no new submodule;
- ``job_refs``: a job's refs: atomic moves under the branch prefix, fast-forward, deletion;
- ``repository``: the host repository, the repository lock, the host checks;
- ``commits``: who the job's commits are by, their subjects and trailers;
- ``merging``: workers' branches merged in git's object store; ``drivers``: the user's merge drivers;
- ``objects``: commits and trees written by Python as git writes them; ``refstore``: refs read from files;
- ``worker_objects``: a job tree's sandboxed object store; ``worker_refs``: a worker's view of branches;
- ``worker_gitdir``: a Landlock worker's git dir of its own;
- ``diffs``: unified diffs, size-capped; ``conflicts``: how a merge conflict is worded.
"""
