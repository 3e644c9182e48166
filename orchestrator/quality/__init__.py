"""What judges and lands a worker's work: after-attempt steps, quality gates, file ownership,
shared-checkout locks, a graph job's integration branch, landing a root job's work, and the
person-in-the-loop approval.

Imports ``checkouts``, ``planner``, ``workers`` and below.
"""
