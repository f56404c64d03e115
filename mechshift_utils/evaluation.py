"""Accuracy of a pair per task, along post-training, and the common-correct pools."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
from tqdm import tqdm  # text bars: visible in run_all.sh logs and in JupyterLab alike

from . import tasks as task_lib
from .models import ModelPair, load_checkpoint
from .scoring import accuracy_table, common_correct, save_pool, score_task
from .validation import ParameterError, check_non_negative_int, check_positive_int
from .vocab import EncodedTask, encode_examples

EVAL_STREAM = 1_000_003  # evaluation examples come from a seed stream apart from training's


def eval_sets(tokenizer, n: int, seed: int, task_names=task_lib.TASK_NAMES) -> dict[str, EncodedTask]:
    """n encoded evaluation examples per task (the same for every model of the pair)."""
    check_positive_int("n", n)
    check_non_negative_int("seed", seed)
    return {name: encode_examples(task_lib.generate(name, n, seed + EVAL_STREAM), tokenizer)
            for name in task_names}


def chance_levels(data: dict[str, EncodedTask]) -> pd.DataFrame:
    """Accuracy of a uniform guess among each task's format candidates, averaged over the examples."""
    rows = []
    for name, d in data.items():
        task = task_lib.get_task(name)
        rows.append({"task": name, "chance": sum(task.chance(e) for e in d.examples) / len(d)})
    return pd.DataFrame(rows)


def evaluate_pair(pair: ModelPair, data: dict[str, EncodedTask]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-example scores, accuracy table with chance levels) for both models of the pair."""
    scores = pd.concat([score_task(pair, d) for d in tqdm(data.values(), desc="scoring tasks")],
                       ignore_index=True)
    table = accuracy_table(scores).merge(chance_levels(data), on="task")
    return scores, table


def build_pools(scores: pd.DataFrame, data: dict[str, EncodedTask], out_dir) -> pd.DataFrame:
    """Save each task's common-correct pool as ``<out_dir>/<task>.jsonl``; returns the pool sizes."""
    rows = []
    for name, d in data.items():
        keep = common_correct(scores[scores.task == name])
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
