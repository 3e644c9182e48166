"""A streamed model answer read from inside the sandbox, through its way out (``workers.sandbox_network:
allow``), against the same read from outside it: what the whole path adds per chunk.

    .venv/bin/python bench/bench_egress.py [--chunks 200] [--rounds 6]

This process runs a loopback server that streams Server-Sent Events (bench_proxy.py's) and the proxy
(network/proxy.py, as the server does). Each round starts two clients, in alternating order: one
unconfined, straight to the server; one in a real bubblewrap sandbox with a network namespace of its
own, started by the orchestrator's runner with the attempt's listeners (network/egress.py), which
reaches the server through ``HTTPS_PROXY`` (a CONNECT tunnel: the shim's bridge inside, the proxy
outside). Each plays ping-pong ``--chunks`` times: one byte sent, one 98-byte chunk back; a sample
is the time until the whole chunk is in. **Added latency** is the sandboxed p50 less the direct p50
(target: at most 2 ms). Linux with bubblewrap only; elsewhere it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import bench_proxy  # noqa: E402
from orchestrator.network.egress import EgressPlan  # noqa: E402
from orchestrator.process.backends import probe  # noqa: E402
from orchestrator.process.runner import ProcessRunner  # noqa: E402
from orchestrator.process.sandbox import Backend, SandboxMode, SandboxNetwork, decide  # noqa: E402

TARGET_MS = 2.0

# The client: direct, or through the proxy its environment names (CONNECT over TCP to the bridge).
CLIENT = """
import json, os, socket, sys, time, urllib.parse
port, chunks = int(sys.argv[1]), int(sys.argv[2])
proxy = os.environ.get("HTTPS_PROXY")
if proxy:
    where = urllib.parse.urlsplit(proxy)
    conn = socket.create_connection((where.hostname, where.port))
    conn.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\\r\\n\\r\\n" % port)
else:
    conn = socket.create_connection(("127.0.0.1", port))
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def head():
    got = b""
    while not got.endswith(b"\\r\\n\\r\\n"):
        more = conn.recv(1)
        if not more:
            raise SystemExit("closed before the head ended")
        got += more
    return got
if proxy:
    assert head().startswith(b"HTTP/1.1 200"), "the tunnel was not opened"
conn.sendall(b"GET /stream HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n")
assert head().startswith(b"HTTP/1.1 200")
size, samples = int(sys.argv[3]), []
for _ in range(chunks):
    start = time.perf_counter()
    conn.sendall(b".")
    got = 0
    while got < size:
        got += len(conn.recv(65536))
    samples.append(time.perf_counter() - start)
print(json.dumps(samples))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=200, help="SSE chunks per request")
    parser.add_argument("--rounds", type=int, default=6, help="clients each way, alternating")
    args = parser.parse_args(argv)
    support = probe(backend="bubblewrap")
    if not support.available:
        print(f"bench_egress: no bubblewrap here ({support.reason}); nothing measured")
        return 0
    base = decide(SandboxMode.ON, support, network=SandboxNetwork.ALLOW).spec
    assert base is not None and base.backend is Backend.BUBBLEWRAP
    port = bench_proxy.start_server()
    folder = Path(tempfile.mkdtemp(prefix="bench-egress-"))
    runner = ProcessRunner()
    found: dict[str, list[float]] = {"direct": [], "sandboxed": []}
    try:
        spec = replace(base, writable=(str(folder),), egress=EgressPlan(allow=(f"127.0.0.1:{port}",)))
        argv_client = [sys.executable, "-c", CLIENT, str(port), str(args.chunks), str(len(bench_proxy.CHUNK))]
        for turn in range(args.rounds):
            ways = ["direct", "sandboxed"] if turn % 2 == 0 else ["sandboxed", "direct"]
            for way in ways:
                log = folder / f"{way}-{turn}.log"
                env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
                handle = runner.spawn(
                    argv_client,
                    cwd=folder,
                    env=env,
                    log_path=log,
                    tag=f"bench-egress-{os.getpid()}-{way}-{turn}",
                    sandbox=spec if way == "sandboxed" else None,
                    exit_file=folder / f"{way}-{turn}.exit",
                )
                code = runner.wait(handle, 120)
                runner.release(handle)
                if code != 0:
                    print(f"the {way} client failed (exit {code}):\n{log.read_text()}", file=sys.stderr)
                    return 1
                found[way] += json.loads(log.read_text().strip().splitlines()[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ms = {(way, p): bench_proxy.percentile(found[way], p) * 1000 for way in found for p in (0.5, 0.99)}
    added50, added99 = ms["sandboxed", 0.5] - ms["direct", 0.5], ms["sandboxed", 0.99] - ms["direct", 0.99]
    print(
        f"streamed chunks: {len(found['direct'])} each way ({args.rounds} clients of {args.chunks}); load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'way':<11}{'p50 ms':>10}{'p99 ms':>10}")
    for way in ("direct", "sandboxed"):
        print(f"{way:<11}{ms[way, 0.5]:>10.3f}{ms[way, 0.99]:>10.3f}")
    verdict = "met" if added50 <= TARGET_MS else "not met"
    print(
        f"RESULT sandbox egress added latency p50 = {added50:.3f} ms (target <= {TARGET_MS:g} ms) {verdict}; "
        f"p99 = {added99:.3f} ms (bridge + proxy, per streamed chunk)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
