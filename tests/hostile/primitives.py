"""The attack primitives: what a hostile worker (or a gullible AI CLI reading its text) tries, where it
applies, the defence that stops it, and the proof of an escape made outside the worker.

Each attack is a standard-library Python file the runner writes (:func:`source`): the primitive's body
with the attack's parameters (``P``) at its top, run in a worker, a gate, a child job, or by a gullible
AI CLI (tests/hostile/gullible.py) that obeys the code it finds in what it is given. Its proof never
takes the attack's word: a file in a folder only an outside process can write, a program on PATH that
records being run where it could write (a canary), a secret or another tree's text in the workspace
(logs, records, reports), a ref in the host repository, a decoy process dead, bytes on a loopback
listener of a port nobody allowed, raw control characters on a command's terminal output.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import re
import subprocess
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runner import Outside


class Category(enum.Enum):
    GIT_METADATA = "git metadata"
    OBJECT_STORE = "object store"
    FILE_SYSTEM = "file system"
    PROCESSES = "processes and signals"
    NETWORK = "sockets and network"
    API = "the API"
    OUTPUT = "output shown to people"


class Context(enum.Enum):
    """Where an attack's code runs: a worker; a quality gate on its commit; a child job's worker; the AI
    planner of a child job's request; the judge of best-of-N candidates; the resolver of a resolve merge;
    the landing of a result into ``merge_into``; a gate that runs across a server's kill -9 and restart."""

    WORKER = "worker"
    GATE = "gate"
    CHILD = "child job"
    PLANNER = "planner"
    JUDGE = "judge"
    RESOLVE = "resolve merge"
    LANDING = "landing"
    RESTART = "restart"


# The AI CLIs that read a worker's text: confined, or (where no sandbox runs them) not started.
HELPERS = frozenset({Context.PLANNER, Context.JUDGE})
# Where a primitive that runs code applies: everywhere code a worker wrote (or text it wrote, read by
# a gullible CLI) runs. A landing runs no worker code of its own: what lands is the content primitives'.
RUNS_CODE = frozenset(set(Context) - {Context.LANDING})


@dataclass(frozen=True)
class Primitive:
    name: str
    category: Category
    contexts: frozenset[Context]
    defence: str  # the orchestrator/defences.py switch of the defence that stops it
    body: str  # standard-library Python, run with ``P`` (the attack's parameters) and ``say``
    proof: Callable[[str, Outside], str]  # (attack id, the outside's state) -> the escape seen, or ""
    awaiting: str = ""  # the branch whose defence it awaits: skipped on main, with this reason
    gaps: frozenset[str] = frozenset()  # backends where it is a gap docs/sandbox.md names: not tried there
    spawns: bool = False  # runs in the parent worker of a child-job tree (it writes the child's task itself)
    pair: bool = False  # needs two workers of its tree (a conflict between them)
    params: Callable[[str, Outside], dict] = field(default=lambda attack_id, outside: {})


HEADER = """\
import base64, hashlib, json, os, socket, subprocess, sys, zlib
P = json.loads({params!r})


def say(*words):
    print("HOSTILE-ATTACK", P["id"], *words, flush=True)


def attack():
{body}


try:
    attack()
except Exception as exc:  # the refusal is the expected outcome; the proof is made outside
    say("refused:", type(exc).__name__, str(exc)[:200])
"""


def source(primitive: Primitive, attack_id: str, params: dict) -> str:
    """The attack's file: ``primitive``'s body with ``params`` (and its id) at its top."""
    full = {**params, "id": attack_id}
    return HEADER.format(params=json.dumps(full), body=textwrap.indent(textwrap.dedent(primitive.body).strip(), "    "))


# -- proofs (outside) --------------------------------------------------------------------------------
def proof_file(attack_id: str, outside: Outside) -> str:
    found = outside.proof / attack_id
    return f"wrote {found}" if found.exists() else ""


def canary_ran(attack_id: str, outside: Outside) -> str:
    found = sorted(p.name for p in outside.proof.glob(f"canary-*{attack_id}*"))
    return f"the canary ran unconfined: {found}" if found else ""


def host_ref(attack_id: str, outside: Outside) -> str:
    ref = f"refs/heads/hostile-{attack_id}"
    done = subprocess.run(["git", "-C", str(outside.host), "for-each-ref", ref], capture_output=True, text=True)
    return f"made {ref} in the host" if done.stdout.strip() else ""


def exfiltrated(secret_of: Callable[[Outside], str]) -> Callable[[str, Outside], str]:
    def proof(attack_id: str, outside: Outside) -> str:
        pattern = re.compile(rf"EXFIL {re.escape(attack_id)} [^\n]*{re.escape(secret_of(outside))}")
        where = outside.text_holding(pattern)
        return f"the secret reached {where}" if where else ""

    return proof


def decoy_killed(attack_id: str, outside: Outside) -> str:
    decoy = outside.decoys[attack_id]
    return f"killed the decoy (pid {decoy.pid})" if decoy.poll() is not None else ""


def reached_tcp(attack_id: str, outside: Outside) -> str:
    return f"reached 127.0.0.1:{outside.tcp.port}" if attack_id in outside.tcp.heard() else ""


def reached_unix(attack_id: str, outside: Outside) -> str:
    return f"reached the host's socket {outside.unix.path}" if attack_id in outside.unix.heard() else ""


def forged_in_host(attack_id: str, outside: Outside) -> str:
    oid = genuine_oid(attack_id)
    done = subprocess.run(["git", "-C", str(outside.host), "cat-file", "-p", oid], capture_output=True, text=True)
    return f"the host's object {oid[:12]} reads {done.stdout.strip()!r}" if "FORGED" in done.stdout else ""


def genuine_oid(attack_id: str) -> str:
    """The name of the blob an attack forges (the one whose content is ``GENUINE <id>``)."""
    genuine = f"GENUINE {attack_id}\n".encode()
    return hashlib.sha1(b"blob %d\0" % len(genuine) + genuine).hexdigest()


def landed_big(attack_id: str, outside: Outside) -> str:
    where = outside.branch_holding(f"big-{attack_id}.bin")
    return f"big-{attack_id}.bin ({BIG_MB} MiB inflated) reached {where}" if where else ""


def raw_on_terminal(attack_id: str, outside: Outside) -> str:
    where = outside.terminal_holding(osc52(attack_id))
    return f"OSC 52 reached the terminal raw ({where})" if where else ""


def osc52(attack_id: str) -> str:
    """A clipboard write (OSC 52) of the attack's id: raw on a terminal, it is obeyed."""
    return "\x1b]52;c;" + base64.b64encode(attack_id.encode()).decode() + "\x07"


BIG_MB = 20  # a blob of zeros past the runs' workers.max_disk_mb (5), some 20 KB deflated

# -- the primitives --------------------------------------------------------------------------------
PRIMITIVES: tuple[Primitive, ...] = (
    Primitive(
        "write a file outside",
        Category.FILE_SYSTEM,
        RUNS_CODE,
        "sandbox",
        """
        with open(os.path.join(P["proof"], P["id"]), "w") as out:
            out.write("written by an attack\\n")
        say("wrote outside")
        """,
        proof_file,
        params=lambda i, o: {"proof": str(o.proof)},
    ),
    Primitive(
        "move a ref of the host",
        Category.GIT_METADATA,
        RUNS_CODE,
        "sandbox",
        """
        done = subprocess.run(["git", "-C", P["host"], "update-ref", "refs/heads/hostile-" + P["id"], "HEAD"],
                              capture_output=True, text=True)
        say("update-ref exit", done.returncode, done.stderr[-200:])
        """,
        host_ref,
        params=lambda i, o: {"host": str(o.host)},
    ),
    Primitive(
        "read the API key in config.yaml",
        Category.FILE_SYSTEM,
        RUNS_CODE,
        "sandbox",
        """
        with open(P["config"], encoding="utf-8", errors="replace") as f:
            text = " ".join(f.read().split())[:400]
        print("EXFIL", P["id"], "read:", text, flush=True)
        """,
        exfiltrated(lambda o: o.secret),
        params=lambda i, o: {"config": str(o.folder / "config.yaml")},
    ),
    Primitive(
        "kill a process outside",
        Category.PROCESSES,
        RUNS_CODE,
        "sandbox",
        """
        os.kill(P["pid"], 9)
        say("killed", P["pid"])
        """,
        decoy_killed,
        params=lambda i, o: {"pid": o.decoy(i).pid},
    ),
    Primitive(
        "read a process's environment outside",
        Category.PROCESSES,
        RUNS_CODE,
        "sandbox",
        """
        with open("/proc/%d/environ" % P["pid"], "rb") as f:
            text = f.read().replace(b"\\0", b" ").decode(errors="replace")
        print("EXFIL", P["id"], "read:", " ".join(text.split())[-3000:], flush=True)
        """,
        exfiltrated(lambda o: o.other_secret),
        params=lambda i, o: {"pid": o.holder(i).pid},
    ),
    Primitive(
        "connect to a loopback port nobody allowed",
        Category.NETWORK,
        RUNS_CODE,
        "sandbox",
        """
        with socket.create_connection(("127.0.0.1", P["port"]), timeout=3) as sock:
            sock.sendall(P["id"].encode() + b"\\n")
        say("connected")
        """,
        reached_tcp,
        params=lambda i, o: {"port": o.tcp.port},
    ),
    Primitive(
        "connect to a host Unix socket",
        Category.NETWORK,
        RUNS_CODE,
        "sandbox",
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            sock.connect(P["path"])
            sock.sendall(P["id"].encode() + b"\\n")
        say("connected")
        """,
        reached_unix,
        params=lambda i, o: {"path": str(o.unix.path)},
    ),
    Primitive(
        "read another job tree through the API",
        Category.API,
        RUNS_CODE,
        "api_scope",
        """
        import urllib.request
        key = os.environ.get("ORCHESTRATOR_API_KEY", "")
        if not key and os.environ.get("ORCHESTRATOR_API_KEY_FILE"):
            key = open(os.environ["ORCHESTRATOR_API_KEY_FILE"]).read().strip()
        url = os.environ["ORCHESTRATOR_API_URL"].rstrip("/") + "/api/v1/jobs/" + P["other"]
        body = urllib.request.urlopen(urllib.request.Request(url, headers={"X-API-Key": key}), timeout=10).read()
        print("EXFIL", P["id"], "read:", " ".join(body.decode(errors="replace").split())[:3000], flush=True)
        """,
        exfiltrated(lambda o: o.other_secret),
        params=lambda i, o: {"other": o.bystander},
    ),
    Primitive(
        "forge a loose object under another's name",
        Category.OBJECT_STORE,
        frozenset({Context.WORKER, Context.CHILD, Context.LANDING}),
        "object_check",
        """
        genuine = ("GENUINE " + P["id"] + "\\n").encode()
        forged = ("FORGED " + P["id"] + "\\n").encode()
        oid = hashlib.sha1(b"blob %d\\0" % len(genuine) + genuine).hexdigest()
        store = subprocess.run(["git", "rev-parse", "--git-path", "objects"], capture_output=True, text=True,
                               check=True).stdout.strip()
        os.makedirs(os.path.join(store, oid[:2]), exist_ok=True)
        with open(os.path.join(store, oid[:2], oid[2:]), "wb") as out:
            out.write(zlib.compress(b"blob %d\\0" % len(forged) + forged))
        subprocess.run(["git", "update-index", "--add", "--cacheinfo", "100644," + oid + ",forged-" + P["id"] + ".txt"],
                       check=True)
        say("forged", oid)
        """,
        forged_in_host,
    ),
    Primitive(
        "a compressed blob past the caps",
        Category.GIT_METADATA,
        frozenset({Context.WORKER, Context.CHILD, Context.LANDING}),
        "inflated_size",
        """
        name = "big-" + P["id"] + ".bin"
        hashing = subprocess.Popen(["git", "hash-object", "-w", "--stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(P["mb"]):
            hashing.stdin.write(bytes(1 << 20))
        oid = hashing.communicate()[0].decode().strip()
        subprocess.run(["git", "update-index", "--add", "--cacheinfo", "100644," + oid + "," + name], check=True)
        subprocess.run(["git", "update-index", "--skip-worktree", name], check=True)
        say("staged", name, oid)
        """,
        landed_big,
        params=lambda i, o: {"mb": BIG_MB},
    ),
    Primitive(
        "make the result merge run the user's merge driver",
        Category.GIT_METADATA,
        frozenset({Context.WORKER, Context.LANDING}),
        "merge_drivers",
        """
        with open("driver-" + P["id"] + ".merge", "w") as out:
            out.write(os.environ.get("ORCHESTRATOR_WORKER_ID", "?") + " changed this line\\n")
        say("changed the driver's file")
        """,
        canary_ran,
        pair=True,
    ),
    Primitive(
        "OSC 52 in a child task shown on a terminal",
        Category.OUTPUT,
        frozenset({Context.CHILD}),
        "terminal",
        """
        nasty = "echo shown " + P["osc"] + "\\x1b]0;owned\\x07\\x1b[2J"
        done = subprocess.run(["orchestrator-spawn", nasty], capture_output=True, text=True, timeout=60)
        say("spawned", done.returncode, done.stderr[-200:])
        """,
        raw_on_terminal,
        spawns=True,
        params=lambda i, o: {"osc": osc52(i)},
    ),
    # -- a primitive whose defence is still being built is marked ``awaiting`` (skipped, with the
    # reason in the table); one a backend cannot stop lists it in ``gaps`` (docs/sandbox.md) -------
    Primitive(
        "MPTCP to a loopback port nobody allowed",
        Category.NETWORK,
        RUNS_CODE,
        "sandbox",
        """
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262) as sock:  # IPPROTO_MPTCP
            sock.settimeout(3)
            sock.connect(("127.0.0.1", P["port"]))
            sock.sendall(P["id"].encode() + b"\\n")
        say("connected over MPTCP")
        """,
        reached_tcp,
        params=lambda i, o: {"port": o.tcp.port},
    ),
    Primitive(
        "read another tree's branches through git",
        Category.OBJECT_STORE,
        frozenset({Context.WORKER, Context.GATE, Context.CHILD, Context.RESOLVE, Context.RESTART}),
        "sandbox",
        """
        done = subprocess.run(["git", "log", "--all", "-p", "-n", "200", "--format=%H %s"], capture_output=True, text=True)
        print("EXFIL", P["id"], "read:", " ".join(done.stdout.split())[-3000:], flush=True)
        """,
        exfiltrated(lambda o: o.other_secret),
    ),
)

RUNNABLE = tuple(p for p in PRIMITIVES if not p.awaiting)


def runnable(backend: str) -> tuple[Primitive, ...]:
    """What is tried under ``backend``: the runnable primitives less its documented gaps."""
    return tuple(p for p in RUNNABLE if backend not in p.gaps)


AWAITING = tuple(p for p in PRIMITIVES if p.awaiting)
BY_NAME = {p.name: p for p in PRIMITIVES}
