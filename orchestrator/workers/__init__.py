"""The workers: one adapter per kind (argv, environment, output parsing), the environment a worker
starts with, which sandbox it runs in, roles, the shared context block, the prompts it is given,
the AI CLIs found on this machine, and the built-in worker programs.

Imports ``reports``, ``git``, ``process`` and below.

Modules:

- ``adapters/``: one module per worker kind, and the registry of kinds;
- ``environment``: a worker's environment; ``confinement``: which sandbox, and the paths it opens;
- ``package_roots``: where a project's Python packages are (its build backend's declarations, its
  editable installs), put first on a gate's import path where no project view shows the checkout;
- ``cli_configs``: the CLIs' config files as the server found them at its start;
- ``roles``: a task's role; ``sharedcontext``: a job's shared context block; ``prompts``: what it is told;
- ``clis``: the AI CLIs installed here; ``costs``: a cost for tokens a CLI reported without one;
- ``caches``: a job tree's private package caches;
- ``refusals``: what the system refused a worker, apart from what its log says it was refused;
- ``simulated_worker``: the built-in worker's program; ``anthropic_worker``: the ``anthropic`` kind's
  program; ``agent_tools``: the tools that program gives its model, confined to the worker's folder.
"""
