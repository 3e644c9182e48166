"""A verifiable record of a run: ``RECORD.json`` in a root job's folder, signed with this folder's
Ed25519 key.

Modules:

- ``record``: RECORD.json built from the tree's records: its facts, log digests and their chain,
  canonical bytes, the signature;
- ``signing_key``: the workspace's Ed25519 key, made once, mode 0600;
- ``verify``: a record checked against the key, its logs and the repository (``verify JOB``).
"""
