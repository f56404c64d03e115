"""Seeds: one for the global generators, and stable seeds derived from names (streams, steps)."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

from .validation import check_non_negative_int


def set_seed(seed: int) -> None:
    check_non_negative_int("seed", seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stable_seed(*parts: object) -> int:
    """A seed derived from parts (e.g. base seed, stream name, step), the same on every run and platform."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63
