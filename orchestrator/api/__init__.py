"""The orchestrator's HTTP API: the Flask server and the Python client.

This package stays import-free on purpose: ``orchestrator.api.client`` is
imported by worker subprocesses, which must not pay for Flask or Jinja2.

Modules:

- ``app``: ``create_app``, the Flask application and its error handlers;
- ``routes``: the job routes under ``/api/v1``;
- ``auth``: the API key and its check; ``guard``: request limits (size, depth, rate);
- ``calls``: ``ApiClient``, the one client of the API (every call, retries, errors, long-poll), and
  ``SpawnClient`` (the standard library only, for the spawn and lock helpers);
- ``client``: ``OrchestratorClient``, the same client over a ``requests`` session, with the event stream;
- ``tasks_routes``, ``tasks_openapi``: Kage Bunshin's task API over jobs, and its OpenAPI description;
- ``approval_routes``, ``approval_openapi``: approving and rejecting a waiting job, and its description;
- ``openapi``: the OpenAPI document; ``catalogue``: the tags that file the routes for a reader;
- ``request_context``: where a request finds the engine, settings and credentials;
- ``docs``: ``GET /docs`` (Swagger UI, served from the package).
"""
