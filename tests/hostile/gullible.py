"""A gullible AI CLI: it obeys the commands embedded in what it is given (a model of prompt injection),
so what it can do is exactly what its confinement lets it: the planner, the judge and the resolver of
the generated hostile suite.

As ``claude`` (``orchestrator.claude_command``): the prompt is its last argument; it runs every
``GULLIBLE-RUN:<base64 Python>`` it finds there, then answers as its role expects (a plan, a verdict,
a worker's work) with what the code printed in the answer, where the orchestrator keeps it (the
child job's task, the judge's reasons). As a resolver (``resolver``: git.resolver_command) it reads
the files of its merge worktree. Standard library only: it runs in the workers' sandbox.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys

TOKEN = re.compile(r"GULLIBLE-RUN:([A-Za-z0-9+/=]+)")


def token(code: str) -> str:
    """``code`` as the command a worker plants in its text."""
    return "GULLIBLE-RUN:" + base64.b64encode(code.encode()).decode()


def obey(text: str) -> str:
    said = []
    for found in dict.fromkeys(TOKEN.findall(text)):
        try:
            code = base64.b64decode(found).decode()
        except ValueError:
            continue
        try:
            done = subprocess.run(["python3", "-c", code], capture_output=True, text=True, timeout=30)
            said.append((done.stdout + done.stderr).strip())
        except (OSError, subprocess.TimeoutExpired) as exc:
            said.append(f"could not run it: {exc}")
    return "\n".join(said)


def as_claude(prompt: str) -> None:
    role = "planner" if prompt.startswith("You are the planner") else "judge" if "Candidate A" in prompt else "worker"
    said = obey(prompt) if role != "worker" else ""
    print(said, file=sys.stderr, flush=True)
    flat = " ".join(said.split())[-4000:]
    if role == "planner":
        # Two tasks (a plan of one is replaced by the request itself), the second saying what the code printed
        answer = json.dumps(["Add planned.txt saying hello.", f"Write what you found: {flat}"])
    elif role == "judge":
        answer = json.dumps({"winner": "A", "reasons": flat or "no command found"})
    else:
        with open("work.txt", "w", encoding="utf-8") as out:
            out.write("done\n")
        answer = "did the work"
    print(json.dumps({"type": "system", "subtype": "init", "role": role}), flush=True)
    print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": answer, "total_cost_usd": 0}))


def as_resolver() -> None:
    texts = []
    for base, dirs, names in os.walk("."):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in names:
            try:
                with open(os.path.join(base, name), encoding="utf-8", errors="replace") as f:
                    texts.append(f.read())
            except OSError:
                continue
    print(obey("\n".join(texts)), flush=True)
    sys.exit(1)  # it resolves nothing: the markers stay, the resolution is refused


if __name__ == "__main__":
    if sys.argv[1:2] == ["resolver"]:
        as_resolver()
    else:
        as_claude(sys.argv[-1])
