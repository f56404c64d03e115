"""Accuracy of a pair (and of the embedded organism's controls) per task, on held-out and train
examples and along post-training, the effects of each corruption, and the pools the circuits are
traced on."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm  # text bars: visible in run_all.sh logs and in JupyterLab alike

from .. import tasks as task_lib
from ..core.files import file_problem, write_with
from ..core.validation import ParameterError, check_non_negative_int, check_positive_int
from ..models import ModelPair, load_checkpoint
from ..tasks import EVAL_STREAM, HELDOUT, EncodedTask, encode_for, encode_rows, task_examples
from ..tasks.pools import save_pool
from ..tasks.real import get_real_task, is_real
from .scoring import accuracy_table, common_correct, logit_difference, score_models, score_task


def eval_sets(tokenizer, n: int, seed: int, task_names=task_lib.TASK_NAMES,
              mask_token_id: int | None = None, split: str = HELDOUT) -> dict[str, EncodedTask]:
    """n evaluation examples per task from ``split`` (held-out by default), encoded (the same for every
    model; with a subword tokenizer fewer, see ``EncodedTask.dropped``)."""
    check_positive_int("n", n)
    check_non_negative_int("seed", seed)
    return {name: encode_for(task_examples(name, n, seed + EVAL_STREAM, tokenizer, split), tokenizer, mask_token_id)
            for name in task_names}


def dropped_table(data: dict[str, EncodedTask]) -> pd.DataFrame:
    """Per task: examples kept, and examples dropped by reason (subword tokenizers only)."""
    rows = [{"task": name, "kept": len(d), "dropped": d.n_dropped,
             "reasons": "; ".join(f"{r}: {c}" for r, c in d.dropped.items())} for name, d in data.items()]
    return pd.DataFrame(rows)


def task_of(data: EncodedTask):
    """The generator of an encoded task set (real-text or embedded)."""
    return get_real_task(data.task) if is_real(data.examples[0]) else task_lib.get_task(data.task)


def chance_levels(data: dict[str, EncodedTask]) -> pd.DataFrame:
    """Accuracy of a uniform guess among each task's format candidates, averaged over the examples."""
    rows = []
    for name, d in data.items():
        task = task_of(d)
        rows.append({"task": name, "chance": sum(task.chance(e) for e in d.examples) / len(d)})
    return pd.DataFrame(rows)


def evaluate_pair(pair: ModelPair, data: dict[str, EncodedTask]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-example scores, accuracy table with chance levels) for both models of the pair."""
    scores = pd.concat([score_task(pair, d) for d in tqdm(data.values(), desc="scoring tasks")],
                       ignore_index=True)
    table = accuracy_table(scores).merge(chance_levels(data), on="task")
    return scores, table


def evaluate_models(models: dict, decodings: dict, data: dict[str, EncodedTask], tokenizer=None,
                    shift: bool = True, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-example scores, accuracy table with chance levels) for named models (name -> model)."""
    scores = pd.concat([score_models(models, decodings, d, tokenizer, shift)
                        for d in tqdm(data.values(), desc="scoring tasks", disable=not progress)],
                       ignore_index=True)
    return scores, accuracy_table(scores).merge(chance_levels(data), on="task")


def pool_indices(scores: pd.DataFrame, data: EncodedTask, max_size: int | None = None) -> list[int]:
    """The examples of a task's pool: those that every model its task names (``pool_roles``: both models
    for most tasks, the MDM for in-place infilling, which an ARM cannot solve) answers correctly."""
    roles = getattr(task_of(data), "pool_roles", ("arm", "mdm"))
    sub = scores[(scores.task == data.task) & scores.model.isin(roles)]
    if set(sub.model) != set(roles):
        raise ParameterError(f"scores: the {data.task} pool needs the scores of {list(roles)}, got {sorted(set(sub.model))}")
    return common_correct(sub)[:max_size]


def build_pools(scores: pd.DataFrame, data: dict[str, EncodedTask], out_dir, max_size: int | None = None
                ) -> pd.DataFrame:
    """Save each task's pool (the examples its ``pool_roles`` all answer correctly, the first ``max_size``
    when given; the paper uses 500) as ``<out_dir>/<task>.jsonl``; returns the pool sizes."""
    if max_size is not None:
        check_positive_int("max_size", max_size)
    rows = []
    for name, d in data.items():
        keep = pool_indices(scores, d, max_size)
        path = save_pool(d, keep, Path(out_dir) / f"{name}.jsonl")
        rows.append({"task": name, "regime": d.regime, "pool_size": len(keep), "evaluated": len(d),
                     "solved_by": "+".join(getattr(task_of(d), "pool_roles", ("arm", "mdm"))), "path": str(path)})
    return pd.DataFrame(rows)


def _curve_key(checkpoints: dict[int, Path], data: dict[str, EncodedTask], decoding, shift: bool) -> str:
    """What a curve depends on: the checkpoints (their weights' files), the examples, the decoding."""
    digest = hashlib.sha256(repr((sorted((k, str(Path(p).resolve())) for k, p in checkpoints.items()),
                                  decoding, shift)).encode())
    for step, path in sorted(checkpoints.items()):
        for f in sorted(Path(path).glob("*.safetensors")):
            digest.update(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    for name, d in data.items():
        digest.update(name.encode())
        for t in (d.clean_ids, d.corrupted_ids, d.answer_positions, d.correct_ids, d.counterfactual_ids):
            digest.update(t.contiguous().numpy().tobytes())
        digest.update(repr(d.valid_ids).encode())
    return digest.hexdigest()[:16]


def accuracy_along_post_training(checkpoints: dict[int, Path], data: dict[str, EncodedTask], decoding,
                                 device="cpu", shift: bool = True, progress: bool = True,
                                 cache_dir=None) -> pd.DataFrame:
    """Accuracy and logit differences per task at every checkpoint of one post-training run (each read
    as it was saved: bidirectional for the MDM, causal for the causal controls).

    ``cache_dir``: keep the table there (``curve-<key>.csv``, the key a hash of the checkpoints' files,
    the examples and the decoding) and read it back when the same curve is asked for again (notebooks
    01 and 06 score the same checkpoints on the same examples)."""
    if not checkpoints:
        raise ParameterError("checkpoints: expected at least one post-training checkpoint, got none")
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"curve-{_curve_key(checkpoints, data, decoding, shift)}.csv"
        if file_problem(cache) is None:
            return pd.read_csv(cache)
    table = _along_post_training(checkpoints, data, decoding, device, shift, progress)
    if cache is not None:
        write_with(cache, lambda p: table.to_csv(p, index=False))
    return table


def _along_post_training(checkpoints, data, decoding, device, shift, progress) -> pd.DataFrame:
    rows = []
    for step, path in tqdm(sorted(checkpoints.items()), desc="checkpoints", disable=not progress):
        model = load_checkpoint(path, device)
        for d in data.values():
            table = accuracy_table(score_models({"m": model}, {"m": decoding}, d, shift=shift))
            for r in table.itertuples():
                rows.append({"step": step, "task": r.task, "regime": r.regime, "accuracy": r.accuracy,
                             "mean_logit_diff": r.mean_logit_diff,
                             "mean_logit_diff_corrupted": r.mean_logit_diff_corrupted})
    return pd.DataFrame(rows)


@torch.no_grad()
def variant_logit_diffs(models: dict, data: EncodedTask, variants: dict[str, list[list[str]]], tokenizer,
                        shift: bool = True) -> pd.DataFrame:
    """Mean logit difference (correct - counterfactual, first slot) of each model on the clean sequences
    and on each variant of them (``variants``: name -> word sequences, one per example; e.g. Countdown's
    target changed before the answer only, after it only, or both). One row per (model, variant)."""
    ids = {"clean": data.clean_ids}
    for name, rows in variants.items():
        if len(rows) != len(data):
            raise ParameterError(f"variants: {name!r} has {len(rows)} sequences for {len(data)} examples")
        ids[name] = torch.tensor(encode_rows(tokenizer, rows), dtype=torch.long)
    out = []
    for model_name, model in models.items():
        for name, x in ids.items():
            ld = logit_difference(model, x, data.answer_positions, data.correct_ids, data.counterfactual_ids, shift)
            out.append({"task": data.task, "model": model_name, "variant": name, "mean_logit_diff": float(ld.mean()),
                        "n": len(data)})
    return pd.DataFrame(out)
