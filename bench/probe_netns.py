"""Whether the orchestrator could listen inside a sandboxed worker's own network namespace itself,
with no bridge process in the sandbox, and what a start would cost that way (a probe: nothing
here is in the product).

    .venv/bin/python bench/probe_netns.py [--starts 200] [--repeat 3]

Today (``workers.sandbox_network: allow``) the Perl shim inside bubblewrap listens on the
namespace's 127.0.0.1:3128 and forks a bridge that carries each connection to the proxy's Unix
socket bound into the sandbox. The way probed here: bubblewrap reports its child's pid
(``--info-fd``) and holds it before its exec (``--block-fd``); a helper forked from this
single-threaded process joins the sandbox's user namespace (an ordinary user owns the one
bubblewrap made, so it holds every capability there; as root there is none to join) and network
namespace (``setns``), makes the listening socket there and passes it back (``SCM_RIGHTS``: a
socket stays in the namespace it was made in); then the child is let go. The proxy would accept
on that socket directly.

First a check that the way works: the sandboxed command connects to 127.0.0.1:3128 and reads
what this process's accept wrote. Then ``--starts`` sandboxed starts, one at a time, four ways,
``--repeat`` rounds interleaved, the median per start printed:

* bubblewrap alone: the default sandbox argv (a network namespace of its own) around ``true``;
* shim + bridge: the same around the Perl shim listening and forking its bridge (today's way);
* held + joined: the same with ``--info-fd``/``--block-fd`` around ``true``, the listening socket
  made from outside by the helper, before the child is let go;
* held + shim: held + joined around the Perl shim with no bridge (it still records the exit status
  and installs the seccomp filter): what a start would be with the listener made from outside.

Linux with bubblewrap and Perl only; elsewhere it says so and exits 0. Exit 1 when the check fails.

What it found (bench/README.md): the way works, as root and as an ordinary user, but holding the
child and joining its namespaces costs more per start (about 1.8 ms) than the shim's bridge
(about 0.4 ms); it would save only the bridge's per-connection hop.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator import protocol  # noqa: E402
from orchestrator.process import backends, sandbox, shim  # noqa: E402

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
NS_GET_USERNS = 0xB701  # ioctl: the user namespace owning a namespace
PORT = 3128
WAIT = 30.0  # seconds any one step may take before the probe says which one hung, instead of hanging
libc = ctypes.CDLL(None, use_errno=True)


def argv_of(folder: Path, command: list[str], *, held: tuple[int, int] | None = None) -> list[str]:
    """The default sandbox's argv around ``command``; ``held``: (info fd, block fd) for ``--info-fd``
    and ``--block-fd``."""
    support = backends.probe()
    assert support.bwrap is not None
    spec = sandbox.SandboxSpec(
        bwrap=support.bwrap, writable=(str(folder),), chdir=str(folder), network=sandbox.SandboxNetwork.ALLOW
    )
    argv = spec.bubblewrap_argv(command)
    if held is None:
        return argv
    return [argv[0], "--info-fd", str(held[0]), "--block-fd", str(held[1]), *argv[1:]]


def listen_inside(pid: int) -> socket.socket:
    """A socket listening on 127.0.0.1:PORT in the network namespace of ``pid``, made by a forked
    helper that joins its user namespace (where it is not ours) and network namespace."""
    parent, child = socket.socketpair()
    helper = os.fork()
    if helper == 0:  # the helper: single-threaded, as setns into a user namespace needs
        code = 1
        try:
            parent.close()
            net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            # The user namespace that owns it (bubblewrap may already have moved its child into a
            # nested one, where joining gives no capability over the network namespace).
            owner = fcntl.ioctl(net, NS_GET_USERNS)
            if os.fstat(owner).st_ino != os.stat("/proc/self/ns/user").st_ino:
                _setns(owner, CLONE_NEWUSER, "its user namespace")
            _setns(net, CLONE_NEWNET, "its network namespace")
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", PORT))
            listener.listen(128)
            socket.send_fds(child, [b"ok"], [listener.fileno()])
            code = 0
        except BaseException as exc:  # noqa: BLE001 - said to the parent, which raises it
            child.sendall(f"error: {exc}".encode())
        finally:
            os._exit(code)
    child.close()
    parent.settimeout(WAIT)
    try:
        message, fds, _, _ = socket.recv_fds(parent, 1024, 1)
    except TimeoutError:
        os.kill(helper, 9)
        raise OSError(f"the helper said nothing in {WAIT:.0f} s (killed)") from None
    finally:
        parent.close()
        os.waitpid(helper, 0)
    if not fds:
        raise OSError(f"the helper could not listen in the sandbox: {message.decode(errors='replace')}")
    return socket.socket(fileno=fds[0])


def _setns(fd: int, kind: int, what: str) -> None:
    if libc.setns(fd, kind) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into {what}: {os.strerror(err)}")


def start_held(folder: Path, command: list[str], *, serve: bool = False) -> int:
    """One held start: bubblewrap, its child's pid, the listener made inside, the child let go;
    with ``serve`` one connection is accepted and answered. Returns the exit status."""
    info_r, info_w = os.pipe()
    block_r, block_w = os.pipe()
    proc = subprocess.Popen(argv_of(folder, command, held=(info_w, block_r)), pass_fds=(info_w, block_r))
    os.close(info_w)
    os.close(block_r)
    try:
        with os.fdopen(info_r, "rb", buffering=0) as info:
            said = b""
            while b"}" not in said:  # bubblewrap's JSON object, written once its namespaces are made
                if not select.select([info], [], [], WAIT)[0]:
                    raise OSError(f"bubblewrap said no child pid in {WAIT:.0f} s")
                chunk = info.read(4096)
                if not chunk:
                    raise OSError(f"bubblewrap said no child pid: {said!r}")
                said += chunk
        pid = int(json.loads(said[: said.index(b"}") + 1])["child-pid"])
        listener = listen_inside(pid)
    except BaseException:
        proc.kill()  # before its block fd reads as closed, which would let the child go
        proc.wait()
        os.close(block_w)
        raise
    with listener:
        os.write(block_w, b"x")
        os.close(block_w)
        if serve:
            listener.settimeout(WAIT)
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"from outside\n")
    return _wait(proc, command)


def start_plain(folder: Path, command: list[str], env: dict[str, str] | None = None) -> int:
    return _wait(subprocess.Popen(argv_of(folder, command), env=env), command)


def _wait(proc: subprocess.Popen[bytes], command: list[str]) -> int:
    try:
        return proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise OSError(f"a sandboxed {command[0]} did not exit in {WAIT:.0f} s (killed)") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=200, help="sandboxed starts per way per round (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, interleaved (default 3)")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux") or backends.probe().bwrap is None or shim.PERL is None:
        print("probe_netns: this machine has no bubblewrap or no perl: nothing to probe")
        return 0
    true = "/usr/bin/true" if os.path.exists("/usr/bin/true") else "/bin/true"
    with tempfile.TemporaryDirectory(prefix="probe-netns-") as tmp:
        folder = Path(tmp)
        check = folder / "check"
        reader = ["/bin/bash", "-c", f'exec 5<>/dev/tcp/127.0.0.1/{PORT} && head -n1 <&5 > "$0"', str(check)]
        code = start_held(folder, reader, serve=True)
        said = check.read_text() if check.exists() else ""
        if code != 0 or said != "from outside\n":
            print(f"CHECK FAILED: the sandboxed command exited {code} and read {said!r} from 127.0.0.1:{PORT}")
            return 1
        print(
            f"check: a sandboxed command reached 127.0.0.1:{PORT} in its own namespace, listened on from outside (uid {os.getuid()})"
        )
        sock = folder / "proxy.sock"
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(str(sock))
        unix.listen(128)
        bridged = shimmed = [shim.PERL, "-e", shim.PERL_SHIM, shim.SHIM_NAME, str(folder / "exit"), true]
        env = {k: v for k, v in os.environ.items() if k not in shim.SHIM_START_ENV}
        env.update({k: v for k, v in shim.SHIM_START_ENV.items() if v is not None})
        env[f"{protocol.SHIM_STASH}BRIDGE"] = f"127.0.0.1:{PORT}={sock}"
        ways = {
            "bubblewrap alone": lambda: start_plain(folder, [true]),
            "shim + bridge": lambda: start_plain(folder, bridged, env),
            "held + joined": lambda: start_held(folder, [true]),
            "held + shim": lambda: start_held(folder, shimmed),
        }
        times: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.repeat):
            for way, start in ways.items():
                began = time.perf_counter()
                for _ in range(args.starts):
                    if start() != 0:
                        print(f"CHECK FAILED: a start {way} did not exit 0")
                        return 1
                times[way].append((time.perf_counter() - began) / args.starts)
        unix.close()
    floor = statistics.median(times["bubblewrap alone"])
    print(f"{'way':<20}{'ms/start':>10}{'x alone':>10}   (median of {args.repeat}, {args.starts} starts one at a time)")
    for way, values in times.items():
        per = statistics.median(values)
        print(f"{way:<20}{per * 1000:>10.3f}{per / floor:>9.2f}x")
    bridge, held = statistics.median(times["shim + bridge"]), statistics.median(times["held + shim"])
    print(
        f"RESULT held + shim/shim + bridge = {held / bridge:.2f}x (the same shim, the listener made from outside "
        "instead of its bridge)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
