"""How many CPU cores this process may use (no torch import: the notebook runner needs it too)."""
from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS reports one), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
