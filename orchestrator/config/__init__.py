"""Settings: read once at the edge, validated, passed down.

Precedence: built-in defaults < ``config.yaml`` < environment
(``ORCHESTRATOR__SECTION__KEY``) < a job's own ``config``, which may lower but
never raise the server's limits. This package is the only reader of YAML and of
the settings part of the environment.

Modules:

- ``keys``: ``Key`` (one setting's description), the ``setting`` field maker, ``check_value``;
- ``schema``: every setting, once (one frozen dataclass per section) and ``SCHEMA``, derived from them;
- ``settings``: ``Settings`` and ``load_settings`` (defaults, file, environment, overrides);
- ``job``: ``JobConfig``, a job's typed config, and ``job_config``, which builds it at submission;
- ``quality``, ``choice``, ``score_weights``, ``hooks``, ``prices``: the shapes of structured settings
  (gates and roles, candidates' selection, scoring weights, webhooks, prices);
- ``reference``: the configuration page's reference part, generated from ``SCHEMA``;
- ``edit``: keys of ``config.yaml`` changed in place; ``live``: a running server's changed ``config.yaml``;
- ``documents``: how deep a parsed body or config file nests, which string holds a NUL or a lone surrogate;
- ``plugins``: what may come from outside the package (entry point groups, plugin kind names and settings).
"""

from __future__ import annotations

from .choice import Select
from .job import ACCEPTED_ONLY, ENV_REQUEST_KEYS, JOB_CEILINGS, JOB_KEYS, JobConfig, job_config
from .keys import ENV_NAME, RESERVED_ENV, Key, Section
from .plugins import AUTO_KIND, SIMULATED_KIND
from .schema import (
    PLANNERS,
    SCHEMA,
    SECTIONS,
    TEMPLATE_HEADER,
    WORKER_KINDS,
    ApiSettings,
    ApprovalMode,
    ExecutorKind,
    Isolation,
    LoggingSettings,
    MergeStrategy,
    OnFailure,
    OrchestratorSettings,
    Ownership,
    PullRequestForge,
    RecursionSettings,
    SandboxMode,
    SandboxNetwork,
    SimulatedSettings,
    WorkersSettings,
    render_template,
)
from .settings import ENV_PREFIX, Settings, default_base_dir, load_settings

__all__ = [
    "AUTO_KIND",
    "SIMULATED_KIND",
    "ACCEPTED_ONLY",
    "ENV_NAME",
    "ENV_PREFIX",
    "ENV_REQUEST_KEYS",
    "JOB_CEILINGS",
    "JOB_KEYS",
    "PLANNERS",
    "RESERVED_ENV",
    "SCHEMA",
    "SECTIONS",
    "TEMPLATE_HEADER",
    "WORKER_KINDS",
    "ApiSettings",
    "ApprovalMode",
    "ExecutorKind",
    "OnFailure",
    "Ownership",
    "PullRequestForge",
    "Isolation",
    "JobConfig",
    "Key",
    "LoggingSettings",
    "MergeStrategy",
    "OrchestratorSettings",
    "RecursionSettings",
    "SandboxMode",
    "SandboxNetwork",
    "Section",
    "Select",
    "Settings",
    "SimulatedSettings",
    "WorkersSettings",
    "default_base_dir",
    "job_config",
    "load_settings",
    "render_template",
]
