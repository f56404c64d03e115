"""Scoring the ARM and the MDM on the same sequences.

The convention (shared by DiffuGPT, DiffuLLaMA and Dream, and by every ARM):
the logits that predict the token at answer slot ``i`` are read at position
``i - 1``. Both models get the identical token sequence with the mask token in
the answer slots; the ARM cannot see past ``i - 1`` anyway, the MDM can.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from ..core.validation import ParameterError, check_positive_int
from ..models import Decoding, ModelPair
from ..tasks import EncodedTask

DECODING_ORDERS = ("left_to_right", "confidence")


def read_positions(answer_positions: torch.Tensor, shift: bool = True) -> torch.Tensor:
    """Where the logits for each answer slot are read: ``slot - 1`` under the shift."""
    return answer_positions - 1 if shift else answer_positions


@torch.no_grad()
def slot_logits(model, input_ids: torch.Tensor, answer_positions: torch.Tensor, shift: bool = True,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits for every answer slot, shape [batch, slots, vocab]."""
    if answer_positions.ndim != 2 or answer_positions.shape[0] != input_ids.shape[0]:
        raise ParameterError("answer_positions: expected shape [batch, slots] matching input_ids")
    read = read_positions(answer_positions, shift)
    if read.min() < 0 or answer_positions.max() >= input_ids.shape[1]:
        raise ParameterError(f"answer_positions: expected slots in [1, {input_ids.shape[1] - 1}] "
                             f"(slot - 1 must exist), got {answer_positions.min().item()}..{answer_positions.max().item()}")
    device = next(model.parameters()).device
    logits = model(input_ids=input_ids.to(device),
                   attention_mask=None if attention_mask is None else attention_mask.to(device)).logits
    index = read.to(device)[..., None].expand(-1, -1, logits.shape[-1])
    return logits.gather(1, index).float().cpu()


@torch.no_grad()
def decode(model, input_ids: torch.Tensor, answer_positions: torch.Tensor, decoding: Decoding,
           shift: bool = True, batch_size: int = 256, return_first: bool = False):
    """Fill the answer slots; returns the predicted token ids, shape [batch, slots].

    ``left_to_right`` writes one slot per step in order (the ARM's way);
    ``confidence`` unmasks, over ``decoding.steps`` steps, the still-masked slots
    with the highest max-probability first (the MDM's way).
    ``return_first``: also return the logits at the first slot before anything is filled in
    ([batch, vocab], from the decoding's own first pass: what :func:`logit_difference` reads).
    """
    if decoding.order not in DECODING_ORDERS:
        raise ParameterError(f"decoding.order: expected one of {list(DECODING_ORDERS)}, got {decoding.order!r}")
    check_positive_int("batch_size", batch_size)
    out, firsts = [], []
    for start in range(0, input_ids.shape[0], batch_size):
        ids = input_ids[start:start + batch_size].clone()
        pos = answer_positions[start:start + batch_size]
        pred, first = _decode_batch(model, ids, pos, decoding, shift)
        out.append(pred)
        firsts.append(first)
    return (torch.cat(out), torch.cat(firsts)) if return_first else torch.cat(out)


def _decode_batch(model, ids, pos, decoding, shift):
    """(predictions, the first slot's logits on the unfilled sequences)."""
    n, n_slots = pos.shape
    pred = torch.full((n, n_slots), -1, dtype=torch.long)
    rows = torch.arange(n)
    first = None
    if decoding.order == "left_to_right":
        for s in range(n_slots):
            logits = slot_logits(model, ids, pos[:, s:s + 1], shift)[:, 0]
            first = logits if s == 0 else first
            token = logits.argmax(-1)
            pred[:, s] = token
            ids[rows, pos[:, s]] = token
        return pred, first
    steps = decoding.steps or n_slots
    check_positive_int("decoding.steps", steps)
    open_ = torch.ones(n, n_slots, dtype=torch.bool)
    for k in range(steps):
        remaining = int(open_[0].sum())
        if remaining == 0:
            break
        take = math.ceil(remaining / (steps - k))
        logits = slot_logits(model, ids, pos, shift)
        first = logits[:, 0] if k == 0 else first
        conf, token = logits.softmax(-1).max(-1)
        conf = conf.masked_fill(~open_, -1.0)
        chosen = conf.topk(take, dim=1).indices
        for j in range(take):
            s = chosen[:, j]
            pred[rows, s] = token[rows, s]
            ids[rows, pos[rows, s]] = token[rows, s]
            open_[rows, s] = False
    return pred, first


@torch.no_grad()
def logit_difference(model, input_ids, answer_positions, correct_ids, counterfactual_ids, shift=True):
    """logit(correct) - logit(counterfactual) at the first answer slot, per example."""
    logits = slot_logits(model, input_ids, answer_positions[:, :1], shift)[:, 0]
    return (logits.gather(1, correct_ids[:, :1]) - logits.gather(1, counterfactual_ids[:, :1]))[:, 0]


def is_correct(predictions: torch.Tensor, valid_ids: list[set[tuple[int, ...]]]) -> torch.Tensor:
    return torch.tensor([tuple(p) in v for p, v in zip(predictions.tolist(), valid_ids)])


def token_text(tokenizer, ids: list[int]) -> str:
    """Tokens as text, an id the tokenizer has no token for (an embedding row past its vocabulary,
    as Qwen2.5's and Dream's have) written ``<id>``."""
    return " ".join(t if t is not None else f"<{i}>" for i, t in zip(ids, tokenizer.convert_ids_to_tokens(ids)))


def score_models(models: dict, decodings: dict, data: EncodedTask, tokenizer=None, shift: bool = True,
                 batch_size: int = 256) -> pd.DataFrame:
    """Per example and model (``models``: name -> model, ``decodings``: name -> Decoding): the decoded
    answer (as text when a tokenizer is given), whether it is right, and the logit difference on the
    clean and on the corrupted sequence."""
    rows = []
    for name, model in models.items():
        pred, first = decode(model, data.clean_ids, data.answer_positions, decodings[name], shift, batch_size,
                             return_first=True)
        right = is_correct(pred, data.valid_ids)
        # the logit difference on the clean sequences, from the decoding's first pass (the same input)
        ld = (first.gather(1, data.correct_ids[:, :1]) - first.gather(1, data.counterfactual_ids[:, :1]))[:, 0]
        ld_corrupt = logit_difference(model, data.corrupted_ids, data.answer_positions, data.correct_ids,
                                      data.counterfactual_ids, shift)
        for i in range(len(data)):
            rows.append({"task": data.task, "regime": data.regime, "model": name, "example": i,
                         "prediction": token_text(tokenizer, pred[i].tolist()) if tokenizer is not None else "",
                         "correct": bool(right[i]), "logit_diff": float(ld[i]),
                         "logit_diff_corrupted": float(ld_corrupt[i])})
    return pd.DataFrame(rows)


def score_task(pair: ModelPair, data: EncodedTask, batch_size: int = 256,
               roles: tuple[str, ...] = ("arm", "mdm")) -> pd.DataFrame:
    """Per example and model of the pair: the decoded answer, whether it is right, the logit differences."""
    return score_models({r: pair.model(r) for r in roles}, pair.decoding, data, pair.tokenizer, pair.shift,
                        batch_size)


def accuracy_table(scores: pd.DataFrame, by=("task", "regime", "model")) -> pd.DataFrame:
    """Accuracy and mean logit differences per task and model (and any other ``by`` column) from
    :func:`score_models` rows."""
    return (scores.groupby(list(by), sort=False)
            .agg(accuracy=("correct", "mean"), n=("correct", "size"), mean_logit_diff=("logit_diff", "mean"),
                 mean_logit_diff_corrupted=("logit_diff_corrupted", "mean"))
            .reset_index())


def common_correct(scores: pd.DataFrame) -> list[int]:
    """Indices of the examples that every model of the pair answers correctly."""
    wide = scores.pivot_table(index="example", columns="model", values="correct", aggfunc="first")
    return sorted(int(i) for i in wide.index[wide.all(axis=1)])
