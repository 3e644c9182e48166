"""The engine: jobs, their workers and every state change. ``core.Engine`` is the facade; its parts
are submission, a worker's thread (``worker_thread``) and its attempts (``attempts``), scheduling,
choosing among candidates, nesting, finishing, and taking over after a restart (``recovery``
decides, ``takeover`` acts).

Imports every layer below it (``cluster``, ``webhooks``, ``index``, ``quality`` and down), never
``api`` or ``cli``.
"""
