"""The workspace: the on-disk layout of job trees (every path in it), their records, and how files
reach the disk (atomic and durable writes, group commit, structured logs).

Imports only the top level and ``config``; everything above reads and writes job trees through it.
"""
