"""A cost for every CLI: where a CLI reports tokens but no cost (codex, gemini, ollama) or only a
rounded one (aider), the cost is estimated from a price table (genai-prices' bundled data, or
``workers.prices``), labelled estimated everywhere, counted in budgets; a model without a known
price says ``cost unknown (model X)``."""

from __future__ import annotations

import json
import sys

import pytest

from orchestrator.models import JobStatus, WorkerStatus
from orchestrator.reports.status_document import cost_line, status_table
from orchestrator.workers import costs
from orchestrator.workers.adapters import get_adapter
from orchestrator.workers.adapters.base import ModelUsage, ParsedResult

from .conftest import run_job

# OpenAI's list prices for gpt-5 (USD per million tokens: input, cached input, output), as the
# provider's pricing page gives them; the bundled table must agree.
GPT5 = (1.25, 0.125, 10.0)


def codex_output(input_tokens: int, cached: int, output_tokens: int, text: str = "done") -> str:
    """What ``codex exec --json`` prints (its documented JSONL events)."""
    events = [
        {"type": "thread.started", "thread_id": "0199a213-81c0-7800-8aa1-bbab2a035a53"},
        {"type": "turn.started"},
        {"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": text}},
        {
            "type": "turn.completed",
            "usage": {"input_tokens": input_tokens, "cached_input_tokens": cached, "output_tokens": output_tokens},
        },
    ]
    return "\n".join(json.dumps(e) for e in events) + "\n"


def gemini_output(models: dict[str, tuple[int, int, int, int]]) -> str:
    """What ``gemini --output-format json`` prints: per model its requests and tokens."""
    stats = {
        name: {
            "api": {"totalRequests": requests, "totalErrors": 0, "totalLatencyMs": 1200},
            "tokens": {"prompt": prompt, "candidates": out, "total": prompt + out, "cached": cached, "thoughts": 0, "tool": 0},
        }
        for name, (requests, prompt, cached, out) in models.items()
    }
    return json.dumps({"session_id": "s1", "response": "ok", "stats": {"models": stats, "tools": {}, "files": {}}})


def estimate(kind: str, text: str, model: str, overrides: dict | None = None) -> ParsedResult:
    adapter = get_adapter(kind)
    parsed = adapter.parse(text, 0, max_chars=4000)
    costs.estimate(parsed, model, kind=kind, overrides=overrides or {}, rounded=adapter.rounded_cost)
    return parsed


def test_a_codex_workers_tokens_are_priced_from_the_table_with_its_cached_input():
    parsed = estimate("codex", codex_output(10_000, 4_000, 2_000), "gpt-5")
    assert (parsed.tokens_in, parsed.tokens_out, parsed.tokens_cache_read) == (10_000, 2_000, 4_000)
    expected = (6_000 * GPT5[0] + 4_000 * GPT5[1] + 2_000 * GPT5[2]) / 1e6
    assert parsed.cost_usd == pytest.approx(expected) and parsed.cost_basis == "estimated" and parsed.cost_note is None


def test_a_gemini_workers_models_are_priced_each_and_a_price_tier_applies_per_request():
    # Given 300k prompt tokens over 2 requests of gemini-2.5-pro (each under its 200k tier) and a flash call
    one_request = estimate("gemini", gemini_output({"gemini-2.5-pro": (1, 300_000, 0, 1_000)}), "")
    two_requests = estimate(
        "gemini", gemini_output({"gemini-2.5-pro": (2, 300_000, 0, 1_000), "gemini-2.5-flash": (1, 1_000, 0, 100)}), ""
    )
    # Then one request of 300k pays the long-prompt tier, two of 150k the standard one (plus flash's share)
    assert one_request.cost_basis == two_requests.cost_basis == "estimated"
    pro_short = (300_000 * 1.25 + 1_000 * 10.0) / 1e6
    pro_long = (300_000 * 2.5 + 1_000 * 15.0) / 1e6
    assert one_request.cost_usd == pytest.approx(pro_long)
    assert pro_short < two_requests.cost_usd < pro_short + 0.001  # flash's 1,100 tokens cost well under $0.001
    assert [u.model for u in two_requests.usage_by_model] == ["gemini-2.5-pro", "gemini-2.5-flash"]


def test_a_model_without_a_known_price_has_an_unknown_cost_that_names_it():
    parsed = estimate("codex", codex_output(1_000, 0, 100), "house-model-9")
    assert parsed.cost_usd is None and parsed.cost_basis is None
    assert parsed.cost_note == "cost unknown (model house-model-9)"
    default = estimate("codex", codex_output(1_000, 0, 100), "")  # no -m: codex's own default, not named in its output
    assert default.cost_note == "cost unknown (model not named: codex's default)"


def test_workers_prices_overrides_the_table_by_the_longest_matching_prefix():
    table = {
        "house-model": {"input": 1.0, "output": 2.0, "cache_write": 1.0, "cache_read": 0.5},
        "house-model-9": {"input": 3.0, "output": 4.0, "cache_write": 3.0, "cache_read": 0.3},
        "gpt-5": {"input": 0.0, "output": 0.0, "cache_write": 0.0, "cache_read": 0.0},  # a negotiated price beats the list
    }
    parsed = estimate("codex", codex_output(1_000_000, 500_000, 1_000_000), "house-model-9b", table)
    assert parsed.cost_usd == pytest.approx(0.5 * 3.0 + 0.5 * 0.3 + 4.0) and parsed.cost_basis == "estimated"
    assert estimate("codex", codex_output(1_000_000, 0, 1_000_000), "gpt-5", table).cost_usd == 0.0
    # provider/model names (aider's, opencode's) match by their model part too
    assert estimate("codex", codex_output(1_000_000, 0, 0), "openai/house-model", table).cost_usd == pytest.approx(1.0)


def test_an_ollama_model_runs_locally_for_nothing_unless_it_is_one_of_ollamas_cloud_models():
    text = "hello\n\ntotal duration: 1.2s\nprompt eval count:    26 token(s)\neval count:           12 token(s)\n"
    local = estimate("ollama", text, "llama3.2")
    assert (local.tokens_in, local.tokens_out) == (26, 12)
    assert local.cost_usd == 0.0 and local.cost_basis == "estimated"
    cloud = estimate("ollama", text, "gpt-oss:120b-cloud")
    assert cloud.cost_usd is None and cloud.cost_note == "cost unknown (model gpt-oss:120b-cloud)"


def test_aiders_rounded_cost_is_refined_from_the_table_and_kept_where_no_price_is_known():
    text = "Tokens: 12k sent, 1.5k received. Cost: $0.03 message, $0.03 session.\n"
    priced = estimate("aider", text, "gpt-5")
    assert (priced.tokens_in, priced.tokens_out) == (12_000, 1_500)
    assert priced.cost_usd == pytest.approx((12_000 * GPT5[0] + 1_500 * GPT5[2]) / 1e6) and priced.cost_basis == "estimated"
    unpriced = estimate("aider", text, "house-model-9")
    assert unpriced.cost_usd == pytest.approx(0.03) and unpriced.cost_basis == "estimated"  # aider's own estimate


def test_a_cost_the_cli_reported_is_kept_as_reported():
    reported = ParsedResult(output="", cost_usd=0.0123, tokens_in=100, tokens_out=20)
    costs.estimate(reported, "claude-sonnet-4-5", kind="claude", overrides={})
    assert reported.cost_usd == 0.0123 and reported.cost_basis is None  # the record says "reported"
    nothing = ParsedResult(output="")  # a command worker: no tokens, nothing to price
    costs.estimate(nothing, "", kind="command", overrides={})
    assert nothing.cost_usd is None and nothing.cost_note is None


def test_the_anthropic_kinds_own_table_decides_its_cost():
    adapter = get_adapter("anthropic")
    result = {"type": "result", "result": "ok", "model": "claude-house-1", "usage": {"input_tokens": 10, "output_tokens": 5}}
    parsed = adapter.parse(json.dumps(result), 0, max_chars=4000)
    costs.estimate(parsed, "claude-house-1", kind="anthropic", overrides={})
    assert parsed.cost_usd is None and parsed.cost_note == "cost unknown (model claude-house-1)"
    priced = adapter.parse(json.dumps({**result, "total_cost_usd": 0.5}), 0, max_chars=4000)
    assert priced.cost_basis == "estimated"  # computed from anthropic.prices: the Messages API reports no cost


def test_the_tree_cost_line_says_what_was_estimated_and_what_is_unknown():
    tree = {"cost_usd": 0.25, "workers": 5, "cost_estimated": 2, "cost_unknown": {"cost unknown (model x)": 1}}
    assert cost_line(tree) == "$0.2500 (estimated for 2 of 5 workers; cost unknown (model x) for 1)"
    assert cost_line({"cost_usd": None, "workers": 1, "cost_estimated": 0, "cost_unknown": {}}) is None
    assert cost_line({"cost_usd": 0.1, "workers": 1, "cost_estimated": 0, "cost_unknown": {}}) == "$0.1000"


def test_the_price_table_names_its_source_and_date():
    assert costs.price_table_source().startswith("genai-prices 0.2.3 (its bundled data, released 2026-11-10")


FAKE_CODEX = """#!{python}
import json, sys
# codex exec --json: its documented events; tokens, never a cost
print(json.dumps({{"type": "thread.started", "thread_id": "t-1"}}))
print(json.dumps({{"type": "item.completed", "item": {{"id": "item_0", "type": "agent_message", "text": "did it"}}}}))
print(json.dumps({{"type": "turn.completed", "usage": {{"input_tokens": {tokens_in}, "cached_input_tokens": 0, "output_tokens": {tokens_out}}}}}))
"""


def fake_codex(tmp_path, tokens_in: int, tokens_out: int):
    script = tmp_path / "fake-codex"
    script.write_text(FAKE_CODEX.format(python=sys.executable, tokens_in=tokens_in, tokens_out=tokens_out))
    script.chmod(0o755)
    return script


@pytest.mark.slow
def test_estimated_costs_are_recorded_as_such_and_count_toward_the_budget(tmp_path, make_engine):
    # Given codex workers (gpt-5) that each report 1M input and 1M output tokens: $11.25 each by the table
    script = fake_codex(tmp_path, 1_000_000, 1_000_000)
    engine = make_engine(orchestrator={"worker": "codex", "codex_command": str(script), "model": "gpt-5"})
    # When they run one at a time under a $15 budget
    job = run_job(engine, "x", tasks=[f"task {i}" for i in range(4)], config={"max_workers": 1, "max_cost_usd": 15.0})
    _, workers = engine.queries.snapshot(job.root_id)
    ran = sorted(workers, key=lambda w: w.index)
    # Then each ran worker's cost is the estimate, labelled so, and the budget stopped the rest
    assert [w.status for w in ran] == [WorkerStatus.SUCCESS] * 2 + [WorkerStatus.SKIPPED] * 2
    for w in ran[:2]:
        assert w.cost_usd == pytest.approx(1.25 + 10.0) and w.cost_basis == "estimated" and w.cost_note is None
    assert "reached its budget max_cost_usd=$15.0000" in ran[-1].exit_reason
    # And the status document and the final report say which costs are estimates
    doc = engine.queries.status_document(job.id)
    assert doc["tree"]["cost_estimated"] == 2 and doc["tree"]["cost_unknown"] == {}
    entry = next(t for t in doc["results"]["tasks"] if t["worker_id"] == ran[0].name)
    assert entry["cost_basis"] == "estimated"
    assert "cost:      $22.5000 (estimated for 2 of 4 workers)" in status_table(doc)  # check-status.sh
    final = (engine.workspace.job_dir(job.id) / "FINAL_RESULT.md").read_text()
    assert "$11.2500 (estimated)" in final
    assert "- Cost: $22.5000 (reported by 0 of 4 workers, estimated from a price table for 2)" in final


@pytest.mark.slow
def test_a_worker_whose_model_has_no_price_says_so_in_its_record_and_the_report(tmp_path, make_engine):
    script = fake_codex(tmp_path, 1_000, 100)
    engine = make_engine(orchestrator={"worker": "codex", "codex_command": str(script), "model": "house-model-9"})
    job = run_job(engine, "x", tasks=["task"])
    _, workers = engine.queries.snapshot(job.root_id)
    (worker,) = workers
    assert job.status is JobStatus.COMPLETED
    assert worker.cost_usd is None and worker.cost_note == "cost unknown (model house-model-9)"
    doc = engine.queries.status_document(job.id)
    assert doc["tree"]["cost_unknown"] == {"cost unknown (model house-model-9)": 1}
    final = (engine.workspace.job_dir(job.id) / "FINAL_RESULT.md").read_text()
    assert "cost unknown (model house-model-9)" in final


def test_usage_by_model_defaults_to_the_configured_model():
    parsed = ParsedResult(output="", tokens_in=1_000_000, tokens_out=0)
    costs.estimate(parsed, "gpt-5", kind="codex", overrides={})
    assert parsed.cost_usd == pytest.approx(GPT5[0])
    assert ModelUsage("m").requests is None
