"""What takes work to its result: a graph's integration branch, a root job's landing, conflicts
resolved by a worker, the result gated as a whole, approval, push and pull request, and the forge's
checks and reviews sent back to the worker that caused them.

Imports ``quality``, ``selection``, ``checkouts`` and below.

Modules:

- ``integration``: a graph job's integration branch, the last after-attempt step;
- ``landing``: a root job's branches merged into its result branch, and ``merge_into``;
- ``resolving``: a conflict resolved by a worker, then gated again;
- ``result_gate``: the merged result gated as a whole before its branch moves;
- ``bisection``: which workers of a batch break the merged result;
- ``trusted_drivers``: the user's trusted merge drivers, run in the workers' sandbox;
- ``approval``: a person in the loop: who waits before landing, what a decision does;
- ``publishing``: push and pull request; ``forge``: the GitHub and GitLab APIs;
- ``pull_requests``: the forges by ``git.pull_request``'s value (GitHub, GitLab, a plugin's: docs/plugins.md);
- ``pr_checks``: a pull request's checks read from the forge, with each failed check's log tail;
- ``pr_bisection``: which workers of a pull request break its failed check;
- ``pr_review``: review comments on lines, and the worker ``git blame`` names for each.
"""
