"""The sandboxed workers' one way out: an allow-list of destinations (``policy``) and the proxy that
enforces it (``proxy``: HTTP CONNECT, plain HTTP and SOCKS5 on Unix sockets shared by a server's
bubblewrap attempts or a loopback port per worker, every refusal counted and reported).

Imports only the standard library and psutil; knows nothing of settings, workers or jobs: the caller
hands it the list ``workers.sandbox_allow`` holds and the endpoints the orchestrator itself names.

Modules:

- ``policy``: ``workers.sandbox_allow``'s entries, the endpoints the orchestrator names, what no wildcard opens;
- ``proxy``: the asyncio proxy (HTTP CONNECT, plain HTTP, SOCKS5), its listeners (shared, or one per attempt), its refusals;
- ``egress``: an attempt's way out (its place on the shared sockets, or listeners of its own), the worker's proxy variables, its network record;
- ``peer``: who connected to a shared socket, by the cgroups the kernel names its process in (a pidfd, never a bare pid);
- ``direct``: a sandboxed worker's every ``connect()``, handed over by its seccomp filter and answered.
"""
