"""The tools of the ``anthropic`` worker (``orchestrator.workers.anthropic_worker``), confined to its folder.

Every path a tool takes is relative to the worker's folder (its worktree), resolved with its
symlinks followed, and refused when it lands outside that folder: ``../x``, ``/etc/passwd`` and a
link planted inside the folder that points out are all refused the same way. A write never
follows a link at its last step either (``O_NOFOLLOW``), and never touches ``.git``.

``run_command`` takes an argv list (never a shell string), runs it in the folder with a timeout
and gives back its exit code and output, capped. Its program is not sandboxed (as the claude
CLI's Bash tool is not): it runs in the worker's process group, so the kill ladder, the resource
caps and the sweep reach it. ``start_child_job`` runs the orchestrator's spawn command with the
worker's own credential (``ORCHESTRATOR_API_KEY`` in its environment) and waits for the child.

Standard library only: the worker imports this before the SDK.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import protocol

READ_LIMIT = 4 * 1024 * 1024  # bytes of a file read_file and search look at
LIST_LIMIT = 2000  # entries list_files returns
MATCH_LIMIT = 200  # lines search returns
SKIPPED_DIRS = {".git"}
SPAWN_PROGRAM = "orchestrator-spawn"  # the prompt's way to start a child job, which run_command never times out


class ToolError(Exception):
    """What the model is told when a tool call is refused or fails (an ``is_error`` tool result)."""


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


_PATH = {"type": "string", "description": "a path relative to your working folder"}
# The tool definitions sent with every request (byte-identical each time: they are part of the
# cached prefix).
TOOL_SPECS: list[dict[str, Any]] = [
    {
        "name": "read_file",
        "description": "Read a text file in your working folder.",
        "input_schema": _schema({"path": _PATH}, ["path"]),
    },
    {
        "name": "write_file",
        "description": "Create or overwrite a file in your working folder with the given content.",
        "input_schema": _schema({"path": _PATH, "content": {"type": "string"}}, ["path", "content"]),
    },
    {
        "name": "edit_file",
        "description": "Replace an exact string in a file. old_string must occur exactly once unless replace_all is true.",
        "input_schema": _schema(
            {
                "path": _PATH,
                "old_string": {"type": "string"},
                "new_string": {"type": "string"},
                "replace_all": {"type": "boolean"},
            },
            ["path", "old_string", "new_string"],
        ),
    },
    {
        "name": "list_files",
        "description": "List the files under a folder (default: your working folder), recursively; folders end with /.",
        "input_schema": _schema({"path": _PATH}, []),
    },
    {
        "name": "search",
        "description": "Search files for a regular expression (Python syntax); answers path:line: text.",
        "input_schema": _schema({"pattern": {"type": "string"}, "path": _PATH}, ["pattern"]),
    },
    {
        "name": "run_command",
        "description": "Run a program in your working folder: argv is a list (program, then each argument), never a shell line. Answers its exit code and output.",
        "input_schema": _schema(
            {
                "argv": {"type": "array", "items": {"type": "string"}},
                "timeout": {"type": "number", "description": "seconds (default and maximum: the worker's setting)"},
            },
            ["argv"],
        ),
    },
    {
        "name": "start_child_job",
        "description": "Start a child job of the orchestrator with these subtasks (one subtask: a request it splits), wait for it and answer its results.",
        "input_schema": _schema(
            {"tasks": {"type": "array", "items": {"type": "string"}}, "request": {"type": "string"}}, ["tasks"]
        ),
    },
]


class Tools:
    """The tools of one worker, acting inside ``root`` (its folder)."""

    def __init__(self, root: Path, *, command_timeout: float, output_chars: int, env: Mapping[str, str]) -> None:
        self.root = Path(root).resolve()
        self.command_timeout = command_timeout
        self.output_chars = output_chars
        self.env = dict(env)
        self._by_name: dict[str, Callable[[dict[str, Any]], str]] = {
            "read_file": self.read_file,
            "write_file": self.write_file,
            "edit_file": self.edit_file,
            "list_files": self.list_files,
            "search": self.search,
            "run_command": self.run_command,
            "start_child_job": self.start_child_job,
        }

    def run(self, name: str, args: Any) -> tuple[str, bool]:
        """(the tool's answer, whether it is an error) for one tool_use block."""
        tool = self._by_name.get(name)
        if tool is None:
            return f"unknown tool {name!r}; the tools are: {', '.join(self._by_name)}", True
        if not isinstance(args, dict):
            return f"{name}: the input must be a JSON object", True
        try:
            return self._cap(tool(args)), False
        except ToolError as exc:
            return self._cap(f"{name}: {exc}"), True
        except OSError as exc:
            return f"{name}: {exc.strerror or exc}", True

    # -- paths ---------------------------------------------------------------------------
    def path(self, value: Any, *, writing: bool = False) -> Path:
        """``value`` resolved inside the folder (links followed), or ToolError."""
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            raise ToolError("give a path (a non-empty string) relative to your working folder")
        given = Path(value)
        resolved = (given if given.is_absolute() else self.root / given).resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise ToolError(f"{value!r} is outside your working folder ({self.root}); every path must stay inside it")
        parts = resolved.relative_to(self.root).parts
        if writing and (not parts or parts[0] in SKIPPED_DIRS):
            raise ToolError(f"{value!r}: not a file you may write (git's own files are off limits)")
        return resolved

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() or "."

    # -- files ---------------------------------------------------------------------------
    def read_file(self, args: dict[str, Any]) -> str:
        path = self.path(args.get("path"))
        if not path.is_file():
            raise ToolError(f"{args.get('path')!r} is not a file")
        with open(path, "rb") as handle:
            data = handle.read(READ_LIMIT + 1)
        text = data[:READ_LIMIT].decode("utf-8", "replace")
        return text + (f"\n[... read stopped at {READ_LIMIT} bytes]" if len(data) > READ_LIMIT else "")

    def write_file(self, args: dict[str, Any]) -> str:
        content = args.get("content")
        if not isinstance(content, str):
            raise ToolError("content must be a string")
        path = self.path(args.get("path"), writing=True)
        self._write(path, content)
        return f"wrote {self._rel(path)} ({len(content.encode('utf-8'))} bytes)"

    def edit_file(self, args: dict[str, Any]) -> str:
        old, new = args.get("old_string"), args.get("new_string")
        if not isinstance(old, str) or not old or not isinstance(new, str):
            raise ToolError("old_string (non-empty) and new_string must be strings")
        path = self.path(args.get("path"), writing=True)
        if not path.is_file():
            raise ToolError(f"{args.get('path')!r} is not a file")
        text = path.read_text(encoding="utf-8")
        count = text.count(old)
        if count == 0:
            raise ToolError("old_string was not found in the file (it must match exactly, whitespace included)")
        if count > 1 and not args.get("replace_all"):
            raise ToolError(f"old_string occurs {count} times; give more context, or set replace_all")
        self._write(path, text.replace(old, new))
        return f"edited {self._rel(path)} ({count} replacement{'s' if count > 1 else ''})"

    def _write(self, path: Path, content: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path(str(path.parent))  # a folder created through a link would have left the folder
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(content)

    def list_files(self, args: dict[str, Any]) -> str:
        start = self.path(args.get("path") or ".")
        if not start.is_dir():
            raise ToolError(f"{args.get('path')!r} is not a folder")
        found: list[str] = []
        for folder, dirs, files in os.walk(start):  # links are listed as names, never followed
            here = Path(folder)
            links = [d for d in dirs if (here / d).is_symlink()]
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and d not in links)
            found += [self._rel(here / d) + "/" for d in dirs]
            found += [self._rel(here / f) for f in sorted([*files, *links])]
            if len(found) > LIST_LIMIT:
                return "\n".join(sorted(found)[:LIST_LIMIT]) + f"\n[... more than {LIST_LIMIT} entries]"
        return "\n".join(sorted(found)) or "(empty)"

    def search(self, args: dict[str, Any]) -> str:
        pattern = args.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise ToolError("pattern must be a non-empty regular expression")
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolError(f"bad regular expression: {exc}") from None
        start = self.path(args.get("path") or ".")
        lines: list[str] = []
        for file in self._files(start):
            try:
                with open(file, "rb") as handle:
                    data = handle.read(READ_LIMIT)
            except OSError:
                continue
            if b"\0" in data[:8192]:
                continue  # binary
            for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
                if regex.search(line):
                    lines.append(f"{self._rel(file)}:{number}: {line[:300]}")
                    if len(lines) >= MATCH_LIMIT:
                        return "\n".join(lines) + f"\n[... stopped at {MATCH_LIMIT} matches]"
        return "\n".join(lines) or "no match"

    def _files(self, start: Path) -> Iterator[Path]:
        if start.is_file():
            yield start
            return
        for folder, dirs, files in os.walk(start):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            for name in sorted(files):
                file = Path(folder) / name
                if not file.is_symlink() and file.is_file():
                    yield file

    # -- processes -------------------------------------------------------------------------
    def run_command(self, args: dict[str, Any]) -> str:
        argv = args.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv) or not argv[0]:
            raise ToolError('argv must be a non-empty list of strings, e.g. ["python", "-m", "pytest", "-q"]')
        limit: float | None = self.command_timeout
        asked = args.get("timeout")
        if isinstance(asked, (int, float)) and not isinstance(asked, bool) and 0 < asked < self.command_timeout:
            limit = float(asked)
        if Path(argv[0]).name == SPAWN_PROGRAM:
            limit = None  # a child job takes as long as it takes: the worker's own timeout bounds it
        return self._run(argv, limit)

    def start_child_job(self, args: dict[str, Any]) -> str:
        tasks = args.get("tasks")
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) and t.strip() for t in tasks):
            raise ToolError("tasks must be a non-empty list of subtasks (strings)")
        if not self.env.get(protocol.API_URL):
            raise ToolError("child jobs are not available to this worker (recursion is off, or no server runs)")
        argv = [SPAWN_PROGRAM, "--wait"]  # on the worker's PATH (``python`` there is the user's, not ours)
        if isinstance(args.get("request"), str) and args["request"].strip():
            argv += ["--request", args["request"]]
        # Waits as long as the child runs: the worker's own timeout (the kill ladder) bounds it.
        return self._run([*argv, "--", *tasks], None)

    def _run(self, argv: list[str], timeout: float | None) -> str:
        """Run ``argv`` in a process group of its own, so a timeout (or the worker's end) kills
        everything it started, and a grandchild holding the pipe cannot keep the tool waiting."""
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise ToolError(f"program not found: {argv[0]!r}") from None
        except PermissionError:
            raise ToolError(f"not executable: {argv[0]!r}") from None
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            output = _kill(proc)
            text = output.decode("utf-8", "replace")
            raise ToolError(f"timed out after {timeout:g}s and was killed; its output so far:\n{text}") from None
        except BaseException:  # the worker is being stopped (a signal): take the command with it
            _kill(proc)
            raise
        return f"exit code {proc.returncode}\n{output.decode('utf-8', 'replace')}"

    def _cap(self, text: str) -> str:
        """At most output_chars: the start and the end of a long answer, with the cut said."""
        limit = self.output_chars
        if len(text) <= limit:
            return text
        head = limit // 2
        cut = len(text) - limit
        return f"{text[:head]}\n[... {cut} characters cut ...]\n{text[len(text) - (limit - head) :]}"


def _kill(proc: subprocess.Popen[bytes]) -> bytes:
    """SIGKILL a command's whole group; what it printed so far (not waiting on a pipe a
    daemonised grandchild may still hold)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        output, _ = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return b""
    return output or b""
