"""anthropic.prices: what the ``anthropic`` worker kind pays per token, by model (its default table
and its check)."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

# Anthropic's list prices, USD per million tokens (input, output, 5-minute cache write, cache
# read), by model name prefix, from platform.claude.com/docs/en/about-claude/pricing (November
# 2026; the 5.5 and Sonnet 5 cache prices by the documented 1.25x write and 0.1x read multipliers).
# anthropic.prices replaces this table: check it against that page.
ANTHROPIC_PRICES: dict[str, dict[str, float]] = {
    "claude-opus-5-5": {"input": 4.0, "output": 20.0, "cache_write": 5.0, "cache_read": 0.4},
    "claude-sonnet-5-5": {"input": 2.0, "output": 10.0, "cache_write": 2.5, "cache_read": 0.2},
    "claude-opus-5": {"input": 5.0, "output": 25.0, "cache_write": 6.25, "cache_read": 0.5},
    "claude-sonnet-5": {"input": 2.0, "output": 10.0, "cache_write": 2.5, "cache_read": 0.2},
    "claude-opus-4-8": {"input": 5.0, "output": 25.0, "cache_write": 6.25, "cache_read": 0.5},
    "claude-opus-4-7": {"input": 5.0, "output": 25.0, "cache_write": 6.25, "cache_read": 0.5},
    "claude-opus-4-6": {"input": 5.0, "output": 25.0, "cache_write": 6.25, "cache_read": 0.5},
    "claude-opus-4-5": {"input": 5.0, "output": 25.0, "cache_write": 6.25, "cache_read": 0.5},
    "claude-opus-4-1": {"input": 15.0, "output": 75.0, "cache_write": 18.75, "cache_read": 1.5},
    "claude-opus-4": {"input": 15.0, "output": 75.0, "cache_write": 18.75, "cache_read": 1.5},
    "claude-sonnet-4": {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.3},
    "claude-haiku-4-5": {"input": 1.0, "output": 5.0, "cache_write": 1.25, "cache_read": 0.1},
}
PRICE_KEYS = ("input", "output", "cache_write", "cache_read")


def parse_prices(value: Any, where: str) -> dict[str, dict[str, float]]:
    """anthropic.prices: model (or model name prefix) -> the four prices, USD per million tokens."""
    example = "{claude-sonnet-4-5: {input: 3, output: 15, cache_write: 3.75, cache_read: 0.3}}"
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of model names to prices, e.g. {example}", key=where)
    table: dict[str, dict[str, float]] = {}
    for model, prices in value.items():
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"{where}: {model!r} is not a model name", key=where)
        if not isinstance(prices, dict) or set(prices) != set(PRICE_KEYS):
            raise ConfigError(
                f"{where}.{model}: give exactly {', '.join(PRICE_KEYS)} (USD per million tokens), e.g. {example}",
                key=f"{where}.{model}",
            )
        for name, price in prices.items():
            if isinstance(price, bool) or not isinstance(price, (int, float)) or not 0 <= price < 1e6:
                raise ConfigError(
                    f"{where}.{model}.{name}={price!r}: give a number of USD per million tokens, 0 or more",
                    key=f"{where}.{model}.{name}",
                )
        table[model] = {name: float(prices[name]) for name in PRICE_KEYS}
    return table
