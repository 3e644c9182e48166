"""Python's cyclic garbage collector, paced for a server that holds a tree's records.

With Python's defaults (a young collection every 700 container allocations, a full one every
tenth of tenth) a 1,000-worker no-op job ran the collector about 200 times, and its one or two
full collections, which walk every object the process holds (the modules, the templates, the
tree's records), cost 85-200 us of the server's CPU a worker: more than any single step of a
worker's bookkeeping, and with the GIL held, so every worker thread waited on them. Two changes,
made once per process at the first engine's start (``pace``):

* what the process holds then (modules, classes, settings: objects it keeps for its life),
  once its garbage is collected, is moved out of the collector's reach (``gc.freeze``): a full
  collection no longer walks it;
* a young collection every YOUNG_THRESHOLD allocations, not 700: a tenth as many passes.

Nothing is left uncollected: garbage made later is collected as before, only in fewer passes
(the young generation holds at most YOUNG_THRESHOLD more objects between them). Reference
counting, which frees almost everything (an object with no cycle), is untouched. A process whose
collector is off (``gc.disable()``) or paced already by its owner (a young threshold above
ours) is left as it is.
"""

from __future__ import annotations

import gc
import threading

YOUNG_THRESHOLD = 5000  # container allocations (net) between young collections; Python's default is 700

_paced = False
_lock = threading.Lock()


def pace() -> bool:
    """Once per process: freeze what it holds now and space the young collections. True when
    this call did it (False: done before, or the collector is off)."""
    global _paced
    with _lock:
        if _paced or not gc.isenabled():
            return False
        _paced = True
    gc.collect()  # its garbage first: what is frozen is never collected
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if young < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return True
