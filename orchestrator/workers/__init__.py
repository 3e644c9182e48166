"""The workers: one adapter per kind (argv, environment, output parsing), the environment a worker
starts with, which sandbox it runs in, roles, the shared context block, the prompts it is given,
and the AI CLIs found on this machine.

Imports ``reports``, ``git``, ``process`` and below.
"""
