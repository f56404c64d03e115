"""Scoring sharded over processes (``torch.distributed``, e.g. under ``torchrun``): each process decodes
and scores a contiguous shard of every task's examples, and every process ends with the table one
process makes (the same rows in the same order; the examples' numbers are their numbers in the whole
data). Without ``torch.distributed`` initialised these are :func:`.scoring.score_models` and
:func:`.accuracy.evaluate_models` themselves.

Every process must hold the same models and data and call the functions the same number of times (the
data is checked: every rank stops with the same message when the ranks hold different examples). A
failure on one rank stops every rank with a message naming it. Running it: as
``mechshift_utils.attribution.distributed`` (``torchrun --nproc-per-node N script.py``; on the CPU the
gloo backend and ``OMP_NUM_THREADS=1``).
"""
from __future__ import annotations

import pandas as pd
import torch.distributed as dist

from ..core.distributed import check_same_data, gather_objects, guarded, is_distributed, shard_bounds
from ..tasks import EncodedTask
from .accuracy import chance_levels
from .scoring import accuracy_table, score_models


def score_models_distributed(models: dict, decodings: dict, data: EncodedTask, tokenizer=None, shift: bool = True,
                             batch_size: int = 256, group=None) -> pd.DataFrame:
    """:func:`~mechshift_utils.evaluation.scoring.score_models` with the examples sharded over the
    processes of ``group`` (default: all); every process returns the whole table."""
    if not is_distributed():
        return score_models(models, decodings, data, tokenizer, shift, batch_size)
    check_same_data(data, group)
    start, stop = shard_bounds(len(data), dist.get_world_size(group))[dist.get_rank(group)]

    def work():
        if stop == start:
            return None
        table = score_models(models, decodings, data.subset(range(start, stop)), tokenizer, shift, batch_size)
        table["example"] += start  # the example's number in the whole data
        return table

    pieces = [p for p in gather_objects(guarded(work, group, "scoring"), group) if p is not None]
    order = {name: i for i, name in enumerate(models)}  # one process's rows: model by model, then examples
    whole = pd.concat(pieces, ignore_index=True)
    whole = whole.assign(_model=whole.model.map(order)).sort_values(["_model", "example"], kind="stable")
    return whole.drop(columns="_model").reset_index(drop=True)


def evaluate_models_distributed(models: dict, decodings: dict, data: dict[str, EncodedTask], tokenizer=None,
                                shift: bool = True, group=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`~mechshift_utils.evaluation.accuracy.evaluate_models` with every task's examples sharded
    over the processes (see :func:`score_models_distributed`)."""
    scores = pd.concat([score_models_distributed(models, decodings, d, tokenizer, shift, group=group)
                        for d in data.values()], ignore_index=True)
    return scores, accuracy_table(scores).merge(chance_levels(data), on="task")
