"""Resolvers for ``merge_strategy: resolve``'s tests (tests/test_resolving.py, tests/test_nesting.py)
and its benchmark (bench/bench_resolve.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# Keeps both sides of every conflict hunk (ours, then theirs) in each file git left unmerged.
BOTH_SIDES = """
import re, subprocess, sys
names = subprocess.run(["git", "diff", "--name-only", "--diff-filter=U"], capture_output=True, text=True, check=True)
for name in names.stdout.split():
    text = open(name).read()
    text = re.sub(r"<<<<<<< [^\\n]*\\n(.*?)=======\\n(.*?)>>>>>>> [^\\n]*\\n", r"\\1\\2", text, flags=re.S)
    open(name, "w").write(text)
print("resolved", names.stdout.split())
"""

# A stand-in for claude as the resolver: keeps both sides (BOTH_SIDES), then prints claude's result
# object with tokens and no cost, so its cost is estimated from workers.prices.
FAKE_CLAUDE = """#!{python}
import json
{both}
print(json.dumps({{"type": "result", "subtype": "success", "is_error": False, "result": "resolved",
                  "usage": {{"input_tokens": 1000, "output_tokens": 500}}}}))
"""
PRICE = {"input": 10.0, "output": 20.0, "cache_write": 0.0, "cache_read": 0.0}  # 1000 in, 500 out: $0.02


def fake_claude_resolver(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """The settings (by section) of a claude resolver with model fake-model, run by FAKE_CLAUDE."""
    fake = tmp_path / "fake-claude"
    fake.write_text(FAKE_CLAUDE.format(python=sys.executable, both=BOTH_SIDES))
    fake.chmod(0o755)
    return {
        "git": {"resolver_kind": "claude", "resolver_model": "fake-model"},
        "orchestrator": {"claude_command": str(fake)},
        "workers": {"prices": {"fake-model": PRICE}},
    }
