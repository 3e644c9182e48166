"""A check by hand (not collected by pytest): the reports' Mermaid blocks, hostile task texts
included, parse and render in real Mermaid in headless Chromium, with each label shown exactly as
``reports.taskgraph`` wrote it (no markup read, no directive obeyed, no script). Mermaid is not a
dependency of the project; fetch it into a scratch folder first:

    mkdir -p /tmp/mm && (cd /tmp/mm && npm install --no-audit --no-fund mermaid@11)
    .venv/bin/python tests/mermaid_check.py /tmp/mm

Prints one line per text and exits 1 if any is not shown as written.
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.models import JobStatus, WorkerStatus  # noqa: E402
from orchestrator.reports.taskgraph import mermaid  # noqa: E402
from tests.helpers.task_views import DIAMOND, HOSTILE, gate, graph_job, node_worker  # noqa: E402

TEXTS = [
    HOSTILE,
    "&lt;b&gt; &#60; #quot; #9829; %{x}% %%%",
    string.punctuation,
    "end",
    "graph LR\nA-->B",
    "<script>alert(1)</script>",
    "a;b|c{d}[e](f)#g&amp;",
    "ünï€ødé 🎉",
    "`md` **bold**",
    "subgraph\nend",
    "%%{init: {'theme':'dark', 'securityLevel':'loose'}}%%",
]
STATUSES = [WorkerStatus.SUCCESS, WorkerStatus.FAILED, WorkerStatus.RECURSIVE_SUCCESS, WorkerStatus.SKIPPED]
RENDER = """
const [blocks, done] = arguments;
mermaid.initialize({startOnLoad: false, securityLevel: 'strict'});
(async () => { const out = [];
  for (const [i, b] of blocks.entries()) {
    try { const {svg} = await mermaid.render('g' + i, b);
      const doc = new DOMParser().parseFromString(svg, 'image/svg+xml');
      out.push({ok: true, nodes: doc.querySelectorAll('g.node').length, edges: doc.querySelectorAll('.edgePaths path').length,
        labels: [...doc.querySelectorAll('g.node')].map(n => n.textContent), scripts: doc.querySelectorAll('script').length});
    } catch (e) { out.push({ok: false, error: String(e && e.message || e)}); } }
  done(out); })();"""


def blocks() -> list[str]:
    found = []
    for text in TEXTS:
        job = graph_job(status=JobStatus.PARTIAL, end=20)
        workers = [
            node_worker(
                node,
                i,
                status,
                None if status is WorkerStatus.SKIPPED else 0,
                3,
                task=text,
                gates=[gate(text if i == 1 else "tests", "failed", 1)] if i < 3 else [],
            )  # fmt: skip
            for i, (node, status) in enumerate(zip(DIAMOND, STATUSES), 1)
        ]
        found.append(mermaid(job, workers))
    return found


def main(folder: str) -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    page = Path(folder) / "mermaid_check.html"
    page.write_text('<html><body><script src="node_modules/mermaid/dist/mermaid.min.js"></script></body></html>')
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.set_script_timeout(60)
        driver.get(page.resolve().as_uri())
        version = driver.execute_script("return document.querySelector('script').src")
        made = blocks()
        results = driver.execute_async_script(RENDER, made)
    finally:
        driver.quit()
    bad = 0
    for text, block, r in zip(TEXTS, made, results):
        want = [line.split('["', 1)[1][:-2] for line in block.splitlines() if '["' in line]
        ok = r.get("ok") and r["nodes"] == 4 and r["edges"] == 4 and r["scripts"] == 0 and r["labels"] == want
        bad += not ok
        print("OK " if ok else "BAD", repr(text)[:50], "" if ok else json.dumps(r, ensure_ascii=False)[:400])
    print(f"{len(TEXTS) - bad}/{len(TEXTS)} shown as written ({version})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
