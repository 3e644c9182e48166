"""The ``changed-lines`` after-attempt step: counts the lines of the files a worker changed, and
records the count as the worker's ``findings["changed-lines"]``.

It counts with ``wc -l`` run through ``ctx.run`` (the worker's sandbox, as a gate): the files are
the worker's, so no program of this server's reads them outside it. It never fails a worker; a
step that should would return ``fail(reason)`` or ``retry(reason)``.
"""

from __future__ import annotations

from orchestrator.quality.steps import PASS, Step, StepContext, Verdict


class ChangedLinesStep(Step):
    name = "changed-lines"

    def run(self, ctx: StepContext) -> Verdict:
        files = [f["path"] for f in ctx.changes().files_changed if f.get("path") and f.get("change") != "deleted"]
        if not files:
            ctx.updates.found(self.name, "no file changed")
            return PASS
        counted = ctx.run(["wc", "-l", "--", *files], timeout=60)
        if not counted.ok:
            ctx.updates.found(self.name, f"not counted: {counted.reason}")
            return PASS
        total = counted.output.strip().splitlines()[-1].split()[0]  # wc's last line: the total (or the one file's)
        ctx.updates.found(self.name, f"{total} lines in {len(files)} changed file(s)")
        return PASS
