"""The ``scoring`` section's shapes: the weights of ``select: best``, checked once into a plain
mapping with an error that names the measure and what is allowed.

A weight is points for one measure. Positive: a higher value is better; negative: a lower value
is better (diff size, cost, duration, failures); 0: recorded, not scored. A candidate's value is
first normalised across the eligible candidates of its task (the best gets 1, the others their
ratio to it), then multiplied by the weight's size; the score is 100 times the points over the
sizes of the weights of the measures at least one candidate has, so a candidate best at
everything scores 100 whatever was measured.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from ..errors import ConfigError

# The measures the orchestrator knows itself (gates_passed, diff_lines, cost_usd, duration)
# and the ones a scoring command is expected to print; the sizes add up to 100.
DEFAULT_WEIGHTS: dict[str, float] = {
    "gates_passed": 20.0,  # the fraction of the candidate's gates (required and optional) that passed
    "tests_passed": 15.0,  # scoring command
    "tests_failed": -15.0,  # scoring command
    "coverage": 10.0,  # scoring command (percent or fraction: normalised anyway)
    "lint_warnings": -5.0,  # scoring command
    "diff_lines": -15.0,  # lines added plus lines removed against the task's base
    "cost_usd": -10.0,  # what its runs cost, reported or estimated (unknown: the known ones' median)
    "duration": -10.0,  # its seconds of work
}
# Measures the orchestrator computes: a scoring command's key of the same name is not used.
BUILTIN = ("gates_passed", "diff_lines", "cost_usd", "duration")
MEASURE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
MAX_WEIGHT = 1000.0
MAX_MEASURES = 64


def parse_weights(value: object, where: str = "scoring.weights") -> dict[str, float]:
    """The default weights with the given ones changed (a measure left out keeps its default;
    0 turns one off; a new name scores a scoring command's key of that name)."""
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where} must be a mapping of measure names to numbers, e.g. {{coverage: 20, diff_lines: -5}}", key=where
        )
    if len(value) > MAX_MEASURES:
        raise ConfigError(f"{where} names {len(value)} measures; at most {MAX_MEASURES}", key=where)
    weights = dict(DEFAULT_WEIGHTS)
    for name, weight in value.items():
        if not isinstance(name, str) or not MEASURE.match(name):
            raise ConfigError(
                f"{where}: {str(name)[:60]!r} is not a measure name (letters, digits, _ . -; at most 64, not starting with a digit)",
                key=where,
            )
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not math.isfinite(weight)
            or abs(weight) > MAX_WEIGHT
        ):
            raise ConfigError(
                f"{where}.{name} must be a number from -{MAX_WEIGHT:g} to {MAX_WEIGHT:g} "
                "(positive: higher is better; negative: lower is better; 0: not scored)",
                key=f"{where}.{name}",
            )
        weights[name] = float(weight)
    return weights
