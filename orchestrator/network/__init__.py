"""The sandboxed workers' one way out: an allow-list of destinations (``policy``) and the proxy that
enforces it (``proxy``: HTTP CONNECT, plain HTTP and SOCKS5 on a Unix socket or a loopback port per
worker, every refusal counted and reported).

Imports only the standard library and psutil; knows nothing of settings, workers or jobs: the caller
hands it the list ``workers.sandbox_allow`` holds and the endpoints the orchestrator itself names.
"""
