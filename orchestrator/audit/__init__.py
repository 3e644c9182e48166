"""A verifiable record of a run: ``RECORD.json`` in a root job's folder, signed with this folder's
Ed25519 key (keys.py), built from the tree's records (record.py), checked by ``verify`` (verify.py)."""
