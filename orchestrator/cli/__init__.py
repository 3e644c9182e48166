"""The programs: the ``orchestrator`` command line (``main``), its server, the job commands and
scripts, the doctor, prune, the spawn and lock helpers run inside workers, the MCP server, and
the simulated and Anthropic worker programs.

The top layer. This package stays import-free on purpose: the spawn helper runs once per child
job, and its start-up is most of a hand-off's time.
"""
