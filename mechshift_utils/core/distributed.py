"""What the data-parallel paths share (attribution: ``attribution.distributed``; scoring:
``evaluation.distributed``): whether ``torch.distributed`` is running, contiguous shards of the examples,
a fingerprint of the data every rank must hold, gathering Python objects, and running a piece of work
so that a failure on one rank stops every rank with its message instead of leaving the others waiting.
"""
from __future__ import annotations

import hashlib

import torch.distributed as dist

DATA_FIELDS = ("clean_ids", "corrupted_ids", "answer_positions", "correct_ids", "counterfactual_ids")


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is available and initialised (e.g. under ``torchrun``)."""
    return dist.is_available() and dist.is_initialized()


def shard_bounds(n: int, world_size: int) -> list[tuple[int, int]]:
    """Contiguous shards of ``n`` examples over ``world_size`` ranks, [(start, stop)] in rank order; sizes
    differ by at most one, the first ranks the larger (a rank gets none when n < world_size)."""
    base, extra = divmod(n, world_size)
    bounds, start = [], 0
    for rank in range(world_size):
        stop = start + base + (rank < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def data_fingerprint(data) -> str:
    """A digest of an EncodedTask's tensors, to check that every rank holds the same data."""
    digest = hashlib.sha256()
    for name in DATA_FIELDS:
        t = getattr(data, name)
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def gather_objects(obj, group=None) -> list:
    """``obj`` of every rank, in rank order, on every rank."""
    out = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def check_same_data(data, group=None) -> None:
    """Stop every rank with the same message when the ranks hold different examples."""
    from .validation import ParameterError

    prints = gather_objects(data_fingerprint(data), group)
    if len(set(prints)) > 1:
        differ = [r for r, p in enumerate(prints) if p != prints[0]]
        raise ParameterError(f"data: every process must hold the same examples; ranks {differ} differ from "
                             f"rank 0 ({len(data)} examples here, on rank {dist.get_rank(group)})")


def guarded(work, group, what: str):
    """``work()`` on this rank; when it fails on any rank, every rank stops (no rank left waiting)."""
    try:
        value, failure = work(), None
    except Exception as err:  # noqa: BLE001 - re-raised below, on this rank and reported on the others
        value, failure = None, err
    failures = gather_objects(None if failure is None else f"{type(failure).__name__}: {failure}", group)
    if failure is not None:
        raise failure
    bad = [(r, f) for r, f in enumerate(failures) if f is not None]
    if bad:
        raise RuntimeError(f"distributed {what} failed on rank(s) " + "; ".join(f"{r}: {f}" for r, f in bad))
    return value
