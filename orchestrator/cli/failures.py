"""How a command of the command line fails: its text on stderr, its exit code, and with
``--json`` one JSON object on stdout that a script reads instead of the text:

    {"error": "job_not_found", "message": "job 0123456789ab not found", "status": 404}

``error`` is a stable code. For an error the server sent it is the server's own (errors.py:
``job_not_found``, ``conflict``, ``invalid_parameter``, ... with ``status``, the HTTP status); for
one the command line finds itself that the server names the same way (a malformed job id, a job
not in the workspace, a bad setting) it is that same code; for the rest it is a ``ClientCode``.
``details``, when the error carries some, is an object. The exit code is the command's as without
``--json`` (errors.exit_code_of). Every command that takes ``--json`` answers so, and so does
``orchestrator-spawn --json``: they fail through ``report`` alone.

Imported only when a command fails, or by the full command line's parser: ``spawn``'s fast path
(run by every worker) stays without ``enum``, ``json`` and ``argparse``.
"""

from __future__ import annotations

import argparse
import json
import sys
from enum import Enum
from typing import Any, NoReturn

from ..errors import EXIT_FAILED, EXIT_USAGE, OrchestratorError, ServerUnreachable, exit_code_of

RET_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT (128 + 2)


class ClientCode(str, Enum):
    """The codes of failures found on this side of HTTP (docs/commands.md lists them)."""

    SERVER_UNREACHABLE = "server_unreachable"  # no server answered at the URL (exit 5)
    INVALID_ARGUMENT = "invalid_argument"  # the command line: an unknown option, a bad or missing value (exit 2)
    NOT_FOUND = "not_found"  # something the command needs is not there, e.g. the workspace's signing key (exit 1)
    TIMEOUT = "timeout"  # gave up waiting for a job or a round that still runs (exit 1)
    INTERRUPTED = "interrupted"  # Ctrl-C (exit 130)
    INTERNAL = "internal"  # an unexpected error: a bug, its traceback on stderr (exit 1)


class CommandFailed(OrchestratorError):
    """A command could not do what it was asked, for a reason found on this side of HTTP: its
    ``code`` is a ``ClientCode`` and its exit code is given."""

    def __init__(self, code: ClientCode, message: str, exit_code: int = EXIT_FAILED, **details: object) -> None:
        super().__init__(message, **details)
        self.code = code.value
        self.exit_code = exit_code


class UsageError(CommandFailed):
    """A command line argparse refused; argparse's own lines are already on stderr."""

    def __init__(self, message: str) -> None:
        super().__init__(ClientCode.INVALID_ARGUMENT, message, EXIT_USAGE)


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are raised (``UsageError``) after argparse's usual
    lines on stderr, instead of exiting: the caller then answers ``--json`` with the error's object.
    Subparsers are made of the same class."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise UsageError(message)


def error_document(exc: BaseException) -> dict[str, Any]:
    """The JSON object of a failed command: ``error``, ``message``, and ``status`` and ``details``
    when the error has them."""
    if isinstance(exc, KeyboardInterrupt):
        return {"error": ClientCode.INTERRUPTED.value, "message": "interrupted (Ctrl-C) before the command finished"}
    if not isinstance(exc, OrchestratorError):
        return {
            "error": ClientCode.INTERNAL.value,
            "message": f"{type(exc).__name__}: {exc} (an unexpected error: its traceback is on stderr; please report it)",
        }
    code = ClientCode.SERVER_UNREACHABLE.value if isinstance(exc, ServerUnreachable) else exc.code
    doc: dict[str, Any] = {"error": code, "message": exc.message}
    status = getattr(exc, "status_code", None)  # set on the errors the client rebuilt from a response
    if isinstance(status, int):
        doc["status"] = status
    if exc.details:
        doc["details"] = exc.details
    return doc


def report(exc: BaseException, as_json: bool) -> int:
    """Say that the command failed: ``error: <message>`` on stderr (argparse's lines for a usage
    error, ``interrupted`` for Ctrl-C), and with ``as_json`` the error's object on stdout. Returns
    the command's exit code."""
    if isinstance(exc, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
    elif isinstance(exc, OrchestratorError) and not isinstance(exc, UsageError):
        print(f"error: {exc.message}", file=sys.stderr)
    if as_json:
        print(json.dumps(error_document(exc), indent=2, default=str))
    if isinstance(exc, KeyboardInterrupt):
        return RET_INTERRUPTED
    return exit_code_of(exc)
