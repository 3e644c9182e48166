"""The orchestrator's error tree.

Every error carries a stable ``code`` (sent over the wire as JSON) and an HTTP
status; the API maps errors to responses from these two attributes alone, and
the client rebuilds the same class from ``code``, so ``except JobNotFound``
works on both sides of HTTP.
"""

from __future__ import annotations

import errno


class OrchestratorError(Exception):
    """Base class for all orchestrator errors."""

    code = "internal"
    http_status = 500

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class ConfigError(OrchestratorError):
    """A setting is unknown, of the wrong type or out of range."""

    code = "invalid_config"
    http_status = 422


class ValidationError(OrchestratorError):
    """A request is malformed: empty, too large, wrong types."""

    code = "invalid_request"
    http_status = 400


class InvalidParameter(ValidationError):
    """A query parameter has a value the route does not know; the message names it."""

    code = "invalid_parameter"
    http_status = 422


class InvalidId(ValidationError):
    """An id that would become a path does not match the strict id pattern."""

    code = "invalid_id"


class InvalidGraph(ValidationError):
    """A task graph that cannot run: a cycle, an unknown or duplicate id, a self-dependency,
    a role that does not exist, an ``owns`` glob that escapes the repository."""

    code = "invalid_graph"
    http_status = 422


class JobNotFound(OrchestratorError):
    """No job with that id exists in the workspace."""

    code = "job_not_found"
    http_status = 404


class WorkerNotFound(OrchestratorError):
    """No worker with that name exists in the job."""

    code = "worker_not_found"
    http_status = 404


class Conflict(OrchestratorError):
    """The job is in a state that does not allow the operation."""

    code = "conflict"
    http_status = 409


class RecursionLimit(OrchestratorError):
    """A child job was refused: depth, fan-out or tree-size cap reached."""

    code = "recursion_limit"
    http_status = 422


class AuthenticationError(OrchestratorError):
    """The API key is missing or wrong."""

    code = "unauthorized"
    http_status = 401


class Forbidden(OrchestratorError):
    """The credential is valid but not for this job tree or route."""

    code = "forbidden"
    http_status = 403


class PayloadTooLarge(OrchestratorError):
    """The request body is over the configured cap."""

    code = "payload_too_large"
    http_status = 413


class RateLimited(OrchestratorError):
    """Too many requests for this credential; retry after a pause."""

    code = "rate_limited"
    http_status = 429


class Unavailable(OrchestratorError):
    """The server is shutting down or out of capacity."""

    code = "unavailable"
    http_status = 503


class WorkspaceError(OrchestratorError):
    """The workspace cannot be written (permissions, full disk)."""

    code = "workspace_error"
    http_status = 507


class NoSpace(WorkspaceError):
    """The workspace's file system is full (ENOSPC, or the user's quota: EDQUOT); over the wire a
    ``workspace_error`` like any other."""


NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def no_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a full file system."""
    seen: BaseException | None = exc
    for _ in range(8):  # (a chain is short; a loop in it must not hang the caller)
        if seen is None:
            return False
        if isinstance(seen, NoSpace) or (isinstance(seen, OSError) and seen.errno in NO_SPACE_ERRNOS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class RefusedPath(WorkspaceError):
    """A file the API will not open: a link, FIFO or device a worker planted, or a path out of the workspace."""

    code = "refused_path"
    http_status = 403


class ServerUnreachable(OrchestratorError):
    """The client could not reach the API server."""

    code = "unreachable"
    http_status = 503


ERRORS_BY_CODE: dict[str, type[OrchestratorError]] = {
    cls.code: cls
    for cls in (
        OrchestratorError,
        ConfigError,
        ValidationError,
        InvalidId,
        InvalidParameter,
        JobNotFound,
        WorkerNotFound,
        Conflict,
        RecursionLimit,
        AuthenticationError,
        Forbidden,
        PayloadTooLarge,
        RateLimited,
        Unavailable,
        WorkspaceError,
        RefusedPath,
        ServerUnreachable,
    )
}


EXIT_UNREACHABLE, EXIT_USAGE, EXIT_FAILED = 5, 2, 1
EXIT_OK, EXIT_PARTIAL, EXIT_CANCELLED = 0, 3, 4
# A job's terminal statuses (models.JobStatus's), each with the exit code of a command that waited
# for the job (the CLI's run/wait, the spawn helper, the shell scripts' status command). Here, in a
# module that imports nothing, so the light clients (api/calls.py, cli/spawn.py) derive from it too.
EXIT_BY_STATUS = {"completed": EXIT_OK, "partial": EXIT_PARTIAL, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
TERMINAL_STATUSES = tuple(EXIT_BY_STATUS)  # where a waiting client (or a webhook's job.<status>) stops


def exit_code_of(exc: BaseException) -> int:
    """The command line's exit code for an error: 5 server unreachable, 2 bad input or unknown
    job/worker, 1 anything else (the CLI and the spawn helper's fast path share it); an error that
    carries its own ``exit_code`` (cli/failures.py's ``CommandFailed``) exits with that."""
    own = getattr(exc, "exit_code", None)
    if isinstance(own, int):
        return own
    if isinstance(exc, ServerUnreachable):
        return EXIT_UNREACHABLE
    if isinstance(exc, (ConfigError, ValidationError, JobNotFound, WorkerNotFound)):
        return EXIT_USAGE
    return EXIT_FAILED
