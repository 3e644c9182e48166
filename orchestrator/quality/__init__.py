"""What judges a worker's work: after-attempt steps, quality gates, file ownership, and whether a
test command ran any test. (Landing, integration, resolving and approval are in ``delivery/``.)

Imports ``checkouts``, ``planner``, ``workers`` and below.

Modules:

- ``steps``: ``Step``, ``Verdict``, ``run_steps``: after-attempt steps (pass, fail or retry), failing closed;
- ``gates``: quality gates run on the commit to merge, fail closed (``GateStep``, ``merge_block``);
- ``ownership``: a diff touching another task's ``owns``;
- ``testruns``: did a test command run no test.
"""
