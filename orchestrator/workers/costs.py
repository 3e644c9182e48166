"""A worker's cost where its CLI reports tokens but no cost (codex, gemini, ollama) or only a rounded
one (aider): an estimate from a price table, labelled so in every view.

The table is genai-prices' (Pydantic's maintained table of model API prices: per model, input,
output and cache reads, with each provider's pricing pages as its source), the data bundled with
the pinned package; the orchestrator never downloads newer prices. ``workers.prices`` overrides it
per model (name or prefix, the longest wins). A model neither knows has no cost: the worker's
record says ``cost unknown (model X)`` and ``select: best`` counts it as the median of the known
costs (selection/scoring.py). An ollama model runs on this machine, so it is priced at 0 unless
its name marks it as one of ollama's cloud models.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from importlib import metadata
from typing import TYPE_CHECKING, Any

from ..outcomes import CostBasis
from .adapters import KINDS
from .adapters.base import Adapter, ModelUsage, ParsedResult

if TYPE_CHECKING:
    from ..config import Settings


PRICE_PACKAGE = "genai-prices"
PRICE_TABLE_TAKEN = "2026-11-10"  # the release of the pinned genai-prices (requirements.txt) whose data is bundled
# A model name prefix (aider's and opencode's ``provider/model``) -> genai-prices' provider id.
_PROVIDERS = {"openai": "openai", "gemini": "google", "google": "google", "vertex_ai": "google", "anthropic": "anthropic"}
_load_lock = threading.Lock()
_calc: Any = None  # genai_prices' (Usage, calc_price), imported on first use: the import takes about a second


def price_table_source() -> str:
    """The default table, as the status document and the docs name it."""
    try:
        version = metadata.version(PRICE_PACKAGE)
    except metadata.PackageNotFoundError:
        version = "not installed"
    return f"{PRICE_PACKAGE} {version} (its bundled data, released {PRICE_TABLE_TAKEN}; github.com/pydantic/genai-prices)"


def estimate_for(parsed: ParsedResult, adapter: Adapter, settings: Settings, model: str | None) -> None:
    """``estimate`` for a call of ``adapter``'s CLI whose role names ``model`` (None: the job's)."""
    estimate(
        parsed,
        adapter.model_for(settings, model),
        kind=adapter.name,
        overrides=settings.workers.prices,
        rounded=adapter.rounded_cost,
    )


def estimate(
    parsed: ParsedResult,
    model: str,
    *,
    kind: str,
    overrides: dict[str, dict[str, float]],
    rounded: bool = False,
) -> None:
    """Fill ``parsed``'s cost from its tokens where the CLI gave none (or only a ``rounded`` one),
    labelled estimated; where no price is known, say so in ``cost_note`` and leave the cost unknown.
    ``model`` is the worker's configured model ("" for the CLI's default)."""
    if (parsed.cost_usd is not None and not rounded) or parsed.cost_note:
        return  # the CLI's own figure, or the adapter already said why the cost is unknown
    usages = parsed.usage_by_model or _configured(parsed, model)
    if not usages:
        return  # no tokens reported (a command worker): nothing to price
    total = 0.0
    for usage in usages:
        price = _price(usage, kind=kind, overrides=overrides)
        if price is None:
            if parsed.cost_usd is not None:  # aider's own rounded figure is better than none
                parsed.cost_basis = CostBasis.ESTIMATED
                return
            named = f"model {usage.model}" if usage.model else f"model not named: {kind}'s default"
            parsed.cost_note = f"cost unknown ({named})"
            return
        total += price
    parsed.cost_usd = round(total, 10)
    parsed.cost_basis = CostBasis.ESTIMATED
    parsed.cost_note = None


def _configured(parsed: ParsedResult, model: str) -> list[ModelUsage]:
    if parsed.tokens_in is None and parsed.tokens_out is None:
        return []
    return [ModelUsage(model, parsed.tokens_in or 0, parsed.tokens_out or 0, parsed.tokens_cache_read or 0)]


def _price(usage: ModelUsage, *, kind: str, overrides: dict[str, dict[str, float]]) -> float | None:
    """USD for one model's tokens, or None when its price is not known."""
    if not usage.model:
        return None
    own = _override(overrides, usage.model)
    if own is not None:
        cached = min(usage.tokens_cache_read, usage.tokens_in)
        return ((usage.tokens_in - cached) * own["input"] + cached * own["cache_read"] + usage.tokens_out * own["output"]) / 1e6
    declared = KINDS.get(kind)
    if declared is not None and declared.local_models:  # its models run on this machine: no per-token price
        return None if "cloud" in usage.model.lower() else 0.0
    provider, name = _provider_and_name(usage.model, kind)
    requests = usage.requests if usage.requests and usage.requests > 1 else 1
    # A price tier (Gemini's above 200k prompt tokens) applies per request: price the average one.
    per_request = replace(
        usage,
        tokens_in=usage.tokens_in // requests,
        tokens_out=usage.tokens_out // requests,
        tokens_cache_read=min(usage.tokens_cache_read, usage.tokens_in) // requests,
    )
    one = _genai_price(per_request, name, provider)
    if one is None:
        return None
    if requests == 1:
        return one
    rest = replace(  # what the integer division left over, at the same rate as the average request
        usage,
        tokens_in=usage.tokens_in - per_request.tokens_in * requests,
        tokens_out=usage.tokens_out - per_request.tokens_out * requests,
        tokens_cache_read=min(usage.tokens_cache_read, usage.tokens_in) - per_request.tokens_cache_read * requests,
    )
    return one * requests + (_genai_price(rest, name, provider) or 0.0)


def _override(overrides: dict[str, dict[str, float]], model: str) -> dict[str, float] | None:
    bare = model.rsplit("/", 1)[-1]
    for name in (model, bare):
        if name in overrides:
            return overrides[name]
    prefixes = [p for p in overrides if model.startswith(p) or bare.startswith(p)]
    return overrides[max(prefixes, key=len)] if prefixes else None


def _provider_and_name(model: str, kind: str) -> tuple[str | None, str]:
    if "/" in model:
        prefix, _, rest = model.partition("/")
        if prefix.lower() in _PROVIDERS:
            return _PROVIDERS[prefix.lower()], rest
        return None, model
    declared = KINDS.get(kind)  # the provider its CLI's bare model names belong to
    return (declared.cost_provider if declared is not None else None), model


def _genai_price(usage: ModelUsage, model: str, provider: str | None) -> float | None:
    global _calc
    if _calc is None:
        with _load_lock:
            if _calc is None:
                from genai_prices import Usage, calc_price

                _calc = (Usage, calc_price)
    usage_type, calc_price = _calc
    counts = usage_type(
        input_tokens=usage.tokens_in,
        output_tokens=usage.tokens_out,
        cache_read_tokens=min(usage.tokens_cache_read, usage.tokens_in),
    )
    for hint in (provider, None) if provider else (None,):
        try:
            return float(calc_price(counts, model_ref=model, provider_id=hint).total_price)
        except (LookupError, ValueError):  # no such model (for this provider); counts it cannot price
            continue
    return None
