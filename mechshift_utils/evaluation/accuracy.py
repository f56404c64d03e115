"""Accuracy of a pair per task, along post-training, and the common-correct pools."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
from tqdm import tqdm  # text bars: visible in run_all.sh logs and in JupyterLab alike

from .. import tasks as task_lib
from ..core.validation import ParameterError, check_non_negative_int, check_positive_int
from ..models import ModelPair, load_checkpoint
from ..tasks import EVAL_STREAM, EncodedTask, encode_for, task_examples
from ..tasks.pools import save_pool
from ..tasks.real import get_real_task, is_real
from .scoring import accuracy_table, common_correct, score_task


def eval_sets(tokenizer, n: int, seed: int, task_names=task_lib.TASK_NAMES,
              mask_token_id: int | None = None) -> dict[str, EncodedTask]:
    """n evaluation examples per task, encoded (the same for every model of the pair; with a subword
    tokenizer fewer, see ``EncodedTask.dropped``)."""
    check_positive_int("n", n)
    check_non_negative_int("seed", seed)
    return {name: encode_for(task_examples(name, n, seed + EVAL_STREAM, tokenizer), tokenizer, mask_token_id)
            for name in task_names}


def dropped_table(data: dict[str, EncodedTask]) -> pd.DataFrame:
    """Per task: examples kept, and examples dropped by reason (subword tokenizers only)."""
    rows = [{"task": name, "kept": len(d), "dropped": d.n_dropped,
             "reasons": "; ".join(f"{r}: {c}" for r, c in d.dropped.items())} for name, d in data.items()]
    return pd.DataFrame(rows)


def chance_levels(data: dict[str, EncodedTask]) -> pd.DataFrame:
    """Accuracy of a uniform guess among each task's format candidates, averaged over the examples."""
    rows = []
    for name, d in data.items():
        task = get_real_task(name) if is_real(d.examples[0]) else task_lib.get_task(name)
        rows.append({"task": name, "chance": sum(task.chance(e) for e in d.examples) / len(d)})
    return pd.DataFrame(rows)


def evaluate_pair(pair: ModelPair, data: dict[str, EncodedTask]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-example scores, accuracy table with chance levels) for both models of the pair."""
    scores = pd.concat([score_task(pair, d) for d in tqdm(data.values(), desc="scoring tasks")],
                       ignore_index=True)
    table = accuracy_table(scores).merge(chance_levels(data), on="task")
    return scores, table


def build_pools(scores: pd.DataFrame, data: dict[str, EncodedTask], out_dir, max_size: int | None = None
                ) -> pd.DataFrame:
    """Save each task's common-correct pool (its first ``max_size`` examples when given; the paper
    uses 500) as ``<out_dir>/<task>.jsonl``; returns the pool sizes."""
    if max_size is not None:
        check_positive_int("max_size", max_size)
    rows = []
    for name, d in data.items():
        keep = common_correct(scores[scores.task == name])[:max_size]
        path = save_pool(d, keep, Path(out_dir) / f"{name}.jsonl")
        rows.append({"task": name, "regime": d.regime, "pool_size": len(keep), "evaluated": len(d),
                     "path": str(path)})
    return pd.DataFrame(rows)


def accuracy_along_post_training(pair: ModelPair, checkpoints: dict[int, Path],
                                 data: dict[str, EncodedTask]) -> pd.DataFrame:
    """MDM accuracy per task at every post-training checkpoint (each read bidirectionally, as the MDM)."""
    if not checkpoints:
        raise ParameterError("checkpoints: expected at least one post-training checkpoint, got none")
    rows = []
    for step, path in tqdm(sorted(checkpoints.items()), desc="checkpoints"):
        model = load_checkpoint(path, pair.device)
        at_step = replace(pair, mdm=model)
        for d in data.values():
            for r in accuracy_table(score_task(at_step, d, roles=("mdm",))).itertuples():
                rows.append({"step": step, "task": r.task, "regime": r.regime, "accuracy": r.accuracy,
                             "mean_logit_diff": r.mean_logit_diff})
    return pd.DataFrame(rows)
