"""Keep the garbage collector's full passes short in long-running processes.

A full (generation 2) collection walks every container object the process
holds. The panel holds a few hundred thousand after its imports (modules,
classes, pydantic and SQLAlchemy metadata), the agent and the supervisor fewer,
but on a loaded machine one walk took 100-300 ms, and while it runs the event
loop stops: every console line in flight waits. Those objects live as long as
the process, so after start-up they are moved out of the collector's sight
(:func:`gc.freeze`) and full passes walk only what was created since.
"""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Collect what start-up left behind, then exempt the survivors from
    later collections. Call once, when the process has imported and built
    what it keeps for its lifetime."""
    gc.collect()
    gc.freeze()
