"""orchestrator: a portable, recursive, hierarchical job orchestrator for AI coding workers.

This module stays import-free on purpose: worker subprocesses (``python -m
orchestrator spawn``, the simulated worker) import the package and must start fast.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
