"""The orchestrator's HTTP API: the Flask server and the Python client.

This package stays import-free on purpose: ``orchestrator.api.client`` is
imported by worker subprocesses, which must not pay for Flask or Jinja2.
"""
