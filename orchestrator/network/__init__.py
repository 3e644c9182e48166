"""The sandboxed workers' one way out: an allow-list of destinations (``policy``) and the proxy that
enforces it (``proxy``: HTTP CONNECT, plain HTTP and SOCKS5 on a Unix socket or a loopback port per
worker, every refusal counted and reported).

Imports only the standard library and psutil; knows nothing of settings, workers or jobs: the caller
hands it the list ``workers.sandbox_allow`` holds and the endpoints the orchestrator itself names.

Modules:

- ``policy``: ``workers.sandbox_allow``'s entries, the endpoints the orchestrator names, what no wildcard opens;
- ``proxy``: the asyncio proxy (HTTP CONNECT, plain HTTP, SOCKS5), one listener per attempt, its refusals;
- ``egress``: an attempt's listeners, the worker's proxy variables, its network record;
- ``direct``: a sandboxed worker's every ``connect()``, handed over by its seccomp filter and answered.
"""
