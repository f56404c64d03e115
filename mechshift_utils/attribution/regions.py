"""Position-resolved attribution: which part of the sequence an edge's score comes from.

Every position of an example falls in one of four groups, fixed by where the metric is read
(:func:`read_out_positions`) and where the answer slots are:

* ``prefix``: before the read position;
* ``read``: the read position itself (for an ARM the token before the first slot, for an MDM
  the first slot);
* ``slot``: after the read position up to the last answer slot (the slots the ARM has not read yet;
  a multi-token answer's later slots for an MDM);
* ``suffix``: after the last slot: evidence only a bidirectional model can see.

The engine (``attribute(..., by_region=True)``) splits each edge's score by the position of its
source's activation difference: the scores of the four groups add up to the edge's score. A causal
model's ``slot`` and ``suffix`` scores are exactly zero, since nothing at or after a later position
reaches the read position.
"""
from __future__ import annotations

import torch

from ..core.validation import ParameterError

REGIONS = ("prefix", "read", "slot", "suffix")


def read_out_positions(data, shift: bool = True) -> torch.Tensor:
    """Where each example's metric is read: its first answer slot, minus 1 under the shift; stops with a
    clear message when a slot has no such position in the sequence."""
    slots = data.answer_positions[:, 0]
    lowest = 1 if shift else 0
    if slots.min() < lowest or slots.max() >= data.clean_ids.shape[1]:
        raise ParameterError(f"data.answer_positions: expected slots in [{lowest}, {data.clean_ids.shape[1] - 1}], "
                             f"got {slots.min().item()}..{slots.max().item()}")
    return slots - lowest


def position_regions(data, shift: bool = True) -> torch.Tensor:
    """[n_examples, positions]: the index into :data:`REGIONS` of every position of every example."""
    read = read_out_positions(data, shift)[:, None]
    last = data.answer_positions.max(dim=1).values[:, None]
    pos = torch.arange(data.clean_ids.shape[1])[None]
    region = torch.full(data.clean_ids.shape, REGIONS.index("slot"), dtype=torch.long)
    region[pos < read] = REGIONS.index("prefix")
    region[(pos == read).expand_as(region)] = REGIONS.index("read")
    region[(pos > torch.maximum(last, read)).expand_as(region)] = REGIONS.index("suffix")
    return region


def region_masks(regions: torch.Tensor) -> torch.Tensor:
    """[batch, positions] region indices -> [batch, len(REGIONS), positions] float masks."""
    return torch.nn.functional.one_hot(regions, len(REGIONS)).permute(0, 2, 1).float()


def region_shares(scores) -> dict[str, float]:
    """The share of the total |attribution| each group carries: ``scores`` is an Attribution traced with
    ``by_region=True`` or its ``region_edge_scores`` [len(REGIONS), n_up, n_down] (edges summed as
    absolute values of their example-mean scores; the shares add up to 1)."""
    tensor = getattr(scores, "region_edge_scores", scores)
    if tensor is None:
        raise ParameterError("scores: expected an attribution traced with by_region=True, got one without "
                             "region scores")
    if tensor.shape[0] != len(REGIONS):
        raise ParameterError(f"scores: expected {len(REGIONS)} regions first, got shape {tuple(tensor.shape)}")
    mass = tensor.double().abs().flatten(1).sum(1)
    total = mass.sum()
    if total == 0:
        return {r: float("nan") for r in REGIONS}
    return {r: float(m / total) for r, m in zip(REGIONS, mass)}
