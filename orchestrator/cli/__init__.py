"""The programs: the ``orchestrator`` command line, its server, the job commands and scripts, the
doctor, prune, the spawn and lock helpers run inside workers, the MCP server, and the installed
wheel's command. (The simulated and Anthropic worker programs are in ``workers/``.)

The top layer. This package stays import-free on purpose: the spawn helper runs once per child
job, and its start-up is most of a hand-off's time.

Modules:

- ``main``: the command line (``python -m orchestrator``, ``./orchestrator.sh``);
- ``failures``: how a command fails: its text, exit code and ``--json`` error object;
- ``commands``: jobs, cancel, delete, approve, reject;
- ``scripts``: what quick-start.sh, check-status.sh and ``watch`` run; ``progress``: a job's live view;
- ``server``: ``serve`` (what api_server.py runs) and the folder's one server;
- ``configure``: ``config get`` and ``config set``; ``doctor``: the checks and ``--write``;
- ``prune``: old job trees, worktrees and branches;
- ``spawn``: ``orchestrator-spawn``, a worker's child job; ``lock``: ``orchestrator-lock``, path locks;
- ``mcpserver``: the tools for AI assistants over MCP;
- ``portable``: the installed wheel's ``orchestrator``: ``init`` writes the folder into a repository,
  any other command runs the folder found from there, of its own version only.
"""
