"""Every Redis key and RQ queue name the rq executor uses, in one place, under one prefix
(``distributed.queue_prefix``), so that two servers with different prefixes can share a Redis.

======================  ======  =====================================================================
key                     type    what it holds
======================  ======  =====================================================================
``P:attempt:ID``        hash    one attempt: its spec, fencing ``token``, ``state`` (queued, running,
                                ended, cancelled, lost), ``node``, ``pid``, times, ``code``, ``kill_rung``
``P:lease:ID``          string  ``NODE:TOKEN`` while the node that runs attempt ID renews it (PX = lease)
``P:control:ID``        list    what the server asks of an attempt (terminate), JSON, until a node's worker
                                claims it (then on that worker's list), or for a node that claimed it without one
``P:worker-control:W``  list    what the server asks of the attempt node worker W runs (terminate), JSON:
                                read by one kept thread of W's, not a blocking read per attempt
``P:events``            list    what nodes tell the server (started, ended), JSON, read by one thread
``P:fence``             string  the fencing-token counter: a server takes tokens in blocks (INCRBY), every enqueue a new one
``P:tree:ROOT``         hash    attempt id -> tag of root tree ROOT's attempts out on nodes (the server's
                                index for ``find`` after a restart and for ``sweep_prefix``)
``P:nodes``             hash    node name -> its ``NodeInfo`` JSON (registry.py)
``P:node:NAME``         string  present (PX = lease) while node NAME heartbeats
``P:marker``            string  the server's workspace marker token (a node checks the file matches)
``P:lock:ROOT:LOCK``    string  one advisory path lock of root tree ROOT (cluster/locks.py), JSON,
                                PX = its lease
``P:locks:ROOT``        set     the ids of tree ROOT's locks (some may have expired), PX = the longest
``P:locks-freed``       pubsub  a channel: a tree's id, published when one of its locks is released
RQ queue ``P.vN.KIND``  queue   attempts waiting for a node that runs worker kind KIND and speaks protocol N
======================  ======  =====================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}\Z")
# The version of what server and nodes say to each other through Redis (these keys, the attempt
# spec and its signature, cluster/signing.py). A node of another version is refused at its start
# (node.py) and by the server's routing (registry.py); its queues are others (``queue``), so it
# never takes an attempt it would misread. 2: attempts are signed. 3: a terminate goes to the list
# of the node worker that claimed the attempt (``worker_control``), where the hash names one.
PROTOCOL_VERSION = 3


@dataclass(frozen=True)
class Names:
    prefix: str = "orchestrator"

    def attempt(self, attempt_id: str) -> str:
        return f"{self.prefix}:attempt:{_checked(attempt_id)}"

    def lease(self, attempt_id: str) -> str:
        return f"{self.prefix}:lease:{_checked(attempt_id)}"

    def control(self, attempt_id: str) -> str:
        return f"{self.prefix}:control:{_checked(attempt_id)}"

    def worker_control(self, worker: str) -> str:
        return f"{self.prefix}:worker-control:{_checked(worker)}"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def fence(self) -> str:
        return f"{self.prefix}:fence"

    def tree(self, root_id: str) -> str:
        return f"{self.prefix}:tree:{_checked(root_id)}"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    def node(self, name: str) -> str:
        return f"{self.prefix}:node:{_checked(name)}"

    @property
    def marker(self) -> str:
        return f"{self.prefix}:marker"

    def lock(self, root_id: str, lock_id: str) -> str:
        return f"{self.lock_prefix(root_id)}{_checked(lock_id)}"

    def lock_prefix(self, root_id: str) -> str:
        """What each of the tree's lock keys starts with (its lock id follows)."""
        return f"{self.prefix}:lock:{_checked(root_id)}:"

    def locks(self, root_id: str) -> str:
        return f"{self.prefix}:locks:{_checked(root_id)}"

    @property
    def locks_freed(self) -> str:
        """A pub/sub channel, not a key."""
        return f"{self.prefix}:locks-freed"

    def queue(self, kind: str) -> str:
        """The RQ queue (its name, not a key) of attempts of worker kind ``kind``."""
        return f"{self.prefix}.v{PROTOCOL_VERSION}.{_checked(kind)}"


def _checked(part: str) -> str:
    if not ID.match(part):
        raise ValueError(f"{part[:60]!r} is not a valid id for a Redis key (letters, digits, _ . : -)")
    return part
