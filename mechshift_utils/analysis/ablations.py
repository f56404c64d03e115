"""Targeted ablations: each model's most important early vs mid/late components against random
ones, ablated together (every outgoing edge of a component carries its ablated value).

:func:`ablation_groups` chooses the groups, :func:`ablate_components` measures them per example,
:func:`ablation_summary` turns the drops into bootstrap intervals, :func:`early_hurts_more` reads
the paper's claim off them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..attribution.engine import ABLATIONS, ablated_batch, batch_indices, mean_activations, read_out_positions
from ..attribution.graph import Graph, layer_of
from ..attribution.metrics import first_slot_accuracy, logit_diff
from ..attribution.runner import runner_for
from ..core.validation import ParameterError, check_choice, check_positive_int
from ..tasks import EncodedTask
from .comparison import component_importance
from .stats import bootstrap_ci

GROUP_ORDER = ("early", "mid/late", "random")


def ablate_components(model, data: EncodedTask, groups: dict[str, list[str]], ablation: str = "zero",
                      batch_size: int = 64, shift: bool = True) -> pd.DataFrame:
    """Per group and example: logit difference and first-slot accuracy, clean and with the group's
    upstream nodes ablated (all their outgoing edges carry the zero / mean / corrupted value).

    ``groups`` maps a label to a list of components (e.g. ``{"early": ["a0.h1", "m0"]}``); the clean
    run and the ablated values are computed once for all groups.
    """
    check_choice("ablation", ablation, ABLATIONS)
    check_positive_int("batch_size", batch_size)
    runner = runner_for(model, shift)
    g = runner.graph
    unknown = sorted({c for comps in groups.values() for c in comps} - set(g.upstream))
    if unknown:
        raise ParameterError(f"components: expected upstream nodes of the graph (e.g. 'a0.h1', 'm2'), got {unknown}")
    patches = {label: g.valid & torch.tensor([n in set(comps) for n in g.upstream])[:, None]
               for label, comps in groups.items()}
    batches = batch_indices(len(data), batch_size)
    mean_acts = mean_activations(runner, data, batches) if ablation == "mean" else None
    read_all = read_out_positions(data, shift)
    diff, acc = logit_diff(data), first_slot_accuracy(data)

    def both(logits, index):  # one pass gives both numbers
        return torch.stack([diff(logits, index), acc(logits, index)], dim=-1)

    out = []
    for idx in batches:
        read = read_all[idx]
        _, abl, clean, _ = ablated_batch(runner, data, idx, read, ablation, mean_acts, both)
        for label, patch in patches.items():
            ablated = runner.patched_metric(data.clean_ids[idx], read, idx, both, abl, patch)
            out.append(pd.DataFrame({"group": label, "example": idx.numpy(),
                                     "metric_clean": clean[:, 0].numpy(), "metric_ablated": ablated[:, 0].numpy(),
                                     "accuracy_clean": clean[:, 1].numpy(),
                                     "accuracy_ablated": ablated[:, 1].numpy()}))
    return pd.concat(out, ignore_index=True)


def ablation_candidates(graph: Graph) -> list[str]:
    """The components an ablation group is drawn from: every head and MLP (not the embeddings)."""
    return [n for n in graph.upstream if n != "input"]


def ablation_groups(graph: Graph, edge_scores: dict, k: int, n_early: int, n_components: int, n_random: int,
                    rng: np.random.Generator) -> pd.DataFrame:
    """The groups to ablate, per (task, model) key of ``edge_scores`` (in its order): the model's top
    ``n_components`` components by circuit importance (top-``k`` circuit) in the first ``n_early``
    layers ("early") and in the others ("mid/late"), and ``n_random`` draws of ``n_components`` from all
    heads and MLPs ("random", drawn from ``rng`` in key order). One row per (task, model, group, draw)."""
    check_positive_int("n_components", n_components)
    check_positive_int("n_random", n_random)
    candidates = ablation_candidates(graph)
    groups = []
    for (task, role), scores in edge_scores.items():
        importance = component_importance(graph, scores, graph.top_edges(scores, k))
        ranked = [n for n in importance.index if n in set(candidates)]
        early = [n for n in ranked if layer_of(n) < n_early][:n_components]
        late = [n for n in ranked if layer_of(n) >= n_early][:n_components]
        groups.append({"task": task, "model": role, "group": "early", "draw": 0, "components": early})
        groups.append({"task": task, "model": role, "group": "mid/late", "draw": 0, "components": late})
        for d in range(n_random):
            pick = sorted(rng.choice(len(candidates), size=n_components, replace=False).tolist())
            groups.append({"task": task, "model": role, "group": "random", "draw": d,
                           "components": [candidates[i] for i in pick]})
    return pd.DataFrame(groups)


def ablation_summary(results: pd.DataFrame, regime_of: dict[str, str], n_boot: int, seed: int) -> pd.DataFrame:
    """Per (ablation, task, model, group): the drop of the logit difference as a share of the clean one,
    and of the first-slot accuracy, each the mean over examples (and random draws) with a percentile
    bootstrap interval. ``results``: :func:`ablate_components` rows with ablation, task, model columns."""
    summary = []
    for (ablation, task, role, group), sub in results.groupby(["ablation", "task", "model", "group"], sort=False):
        clean_scale = sub.metric_clean.mean()
        m, lo, hi = bootstrap_ci((sub.metric_clean - sub.metric_ablated) / clean_scale, n_boot, seed)
        a, alo, ahi = bootstrap_ci(sub.accuracy_clean - sub.accuracy_ablated, n_boot, seed)
        summary.append({"ablation": ablation, "task": task, "regime": regime_of[task], "model": role,
                        "group": group, "metric_drop": m, "metric_ci_low": lo, "metric_ci_high": hi,
                        "accuracy_drop": a, "accuracy_ci_low": alo, "accuracy_ci_high": ahi,
                        "n_rows": len(sub)})
    return pd.DataFrame(summary)


def early_hurts_more(summary: pd.DataFrame, task: str, role: str, ablation: str = "zero") -> bool:
    """The paper's ablation claim for one task and model: the early group's drop has its interval above
    both the mid/late and the random group's intervals."""
    z = summary[summary.ablation == ablation].set_index(["task", "model", "group"])
    e, l, r = (z.loc[(task, role, g)] for g in GROUP_ORDER)
    return bool(e.metric_ci_low > max(l.metric_ci_high, r.metric_ci_high))
