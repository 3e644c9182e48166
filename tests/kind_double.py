"""A throwaway worker kind declared in one module, as a new kind is: its adapter and its ``KIND``.
tests/test_worker_kinds.py registers it and finds it in every table derived from the registry."""

from __future__ import annotations

from orchestrator.workers.adapters.aicli import AICLIAdapter, cli_args_of
from orchestrator.workers.adapters.base import WorkerContext
from orchestrator.workers.adapters.kind import LoginFacts, StoredLogin, WorkerKind


class ThrowawayAdapter(AICLIAdapter):
    name = "throwaway"
    co_author_name = "Throwaway"
    co_author_email = "noreply@throwaway.invalid"
    network_hosts = ("api.throwaway.invalid",)
    cli = "throwaway"
    command_key = "orchestrator.throwaway_command"

    def build_argv(self, ctx: WorkerContext) -> list[str]:
        return [self.program(ctx), "--print", *cli_args_of(ctx), "--", ctx.prompt]


KIND = WorkerKind(
    ThrowawayAdapter,
    rank=65,  # between aider and ollama
    auto=True,
    memory_peak_mb=123,
    cost_provider="openai",
    npm_package="@throwaway/cli",
    login=LoginFacts(
        variables=("THROWAWAY_API_KEY", "THROWAWAY_BASE_URL"),
        fix="set THROWAWAY_API_KEY in workers.env (config.yaml)",
        stored=(StoredLogin("THROWAWAY_HOME", ".throwaway", "auth.json"),),
    ),
    aliases=("throwaway-cli",),
)
