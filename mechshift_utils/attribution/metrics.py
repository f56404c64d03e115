"""Metrics read at the first answer slot (logits at slot - 1), one value per example.

A metric is ``metric(slot_logits [batch, vocab], index [batch]) -> [batch]``,
where ``index`` picks the examples of the task data the batch holds.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..tasks import EncodedTask

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def logit_diff(data: EncodedTask) -> Metric:
    """logit(correct) - logit(counterfactual) at the first answer slot."""
    correct, counter = data.correct_ids[:, 0], data.counterfactual_ids[:, 0]

    def metric(logits, index):
        rows = torch.arange(len(index), device=logits.device)
        idx = index.to("cpu")
        return (logits[rows, correct[idx].to(logits.device)] - logits[rows, counter[idx].to(logits.device)])

    return metric


def prob_diff(data: EncodedTask) -> Metric:
    """P(right answers) - P(answers right only for the corrupted sequence), at the first slot.

    For Greater-Than this is P(years after the start year) - P(years 02..start),
    the reference's probability difference (which counts 00 and 01 as below too).
    """
    right = [sorted({v[0] for v in s}) for s in data.valid_ids]
    wrong = [sorted({v[0] for v in c} - {v[0] for v in s})
             for s, c in zip(data.valid_ids, data.corrupted_valid_ids)]

    def metric(logits, index):
        probs = logits.float().softmax(-1)
        return torch.stack([probs[row, right[i]].sum() - probs[row, wrong[i]].sum()
                            for row, i in enumerate(index.tolist())])

    return metric


def first_slot_accuracy(data: EncodedTask) -> Metric:
    """1.0 where the argmax at the first answer slot starts a right answer, else 0.0."""
    right = [{v[0] for v in s} for s in data.valid_ids]

    def metric(logits, index):
        top = logits.argmax(-1).tolist()
        return torch.tensor([float(t in right[i]) for t, i in zip(top, index.tolist())], device=logits.device)

    return metric
