"""Structural comparison of two circuits: overlap, component importance, depth profile."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..attribution.graph import Graph, component_of, layer_of


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|A ∩ B| / |A ∪ B| of two boolean edge masks (1.0 for two empty sets)."""
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def component_importance(graph: Graph, scores: torch.Tensor, circuit: torch.Tensor) -> pd.Series:
    """s(v) = sum of |score| over the circuit edges incident to component v (in or out).

    A head's q/k/v inputs count for the head; under grouped-query attention a
    key/value head is its own component (``a{l}.kv{g}``). ``input`` and
    ``logits`` are components too.
    """
    weights = (scores.abs() * circuit).double()
    totals: dict[str, float] = {}
    out_sum = weights.sum(1)
    in_sum = weights.sum(0)
    for i, name in enumerate(graph.upstream):
        totals[name] = totals.get(name, 0.0) + float(out_sum[i])
    for j, name in enumerate(graph.downstream):
        comp = component_of(name)
        totals[comp] = totals.get(comp, 0.0) + float(in_sum[j])
    return pd.Series(totals).sort_values(ascending=False)


def depth_profile(importance: pd.Series, n_layers: int) -> pd.Series:
    """Share of (component) importance per layer; input and logits are left out."""
    layers = pd.Series({name: layer_of(name) for name in importance.index})
    inside = importance[(layers >= 0) & layers.notna()]
    by_layer = inside.groupby(layers[inside.index].astype(int)).sum().reindex(range(n_layers), fill_value=0.0)
    total = by_layer.sum()
    return by_layer / total if total > 0 else by_layer


def early_layer_count(n_layers: int, early_layers: int = 0) -> int:
    """How many leading layers count as "early": ``early_layers`` when positive, else the first half."""
    return early_layers or max(1, n_layers // 2)


def early_share(profile: pd.Series, n_early: int) -> float:
    return float(profile.iloc[:n_early].sum())


def circuit_early_share(graph: Graph, scores: torch.Tensor, k: int, n_early: int) -> float:
    """Share of the top-k circuit's component importance that sits in the first ``n_early`` layers."""
    importance = component_importance(graph, scores, graph.top_edges(scores, k))
    return early_share(depth_profile(importance, graph.arch.n_layers), n_early)


def bootstrap_early_share(graph: Graph, per_example: torch.Tensor, k: int, n_early: int, n_boot: int = 200,
                          seed: int = 0) -> dict:
    """Early-layer share of the top-k circuit's importance, with a 95% bootstrap interval over examples.

    Each resample draws examples with replacement, averages their edge scores,
    takes the top-k edges anew and recomputes the share.
    """
    rng = np.random.default_rng(seed)
    n = per_example.shape[0]

    def share(scores):
        return circuit_early_share(graph, scores, k, n_early)

    point = share(per_example.mean(0))
    draws = [share(per_example[torch.as_tensor(rng.integers(0, n, n))].mean(0)) for _ in range(n_boot)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"early_share": point, "ci_low": float(low), "ci_high": float(high), "n_examples": n,
            "n_boot": n_boot}


def bootstrap_early_share_difference(graph: Graph, arm_examples: torch.Tensor, mdm_examples: torch.Tensor,
                                     k: int, n_early: int, n_boot: int = 200, seed: int = 0) -> dict:
    """MDM minus ARM early-layer share of the top-k circuit, examples resampled jointly for both models
    (they were traced on the same examples), with a 95% percentile interval."""
    if arm_examples.shape != mdm_examples.shape:
        raise ValueError("arm_examples and mdm_examples: expected per-example scores on the same examples")
    rng = np.random.default_rng(seed)
    n = arm_examples.shape[0]
    share = lambda scores: circuit_early_share(graph, scores, k, n_early)  # noqa: E731

    point = share(mdm_examples.mean(0)) - share(arm_examples.mean(0))
    draws = []
    for _ in range(n_boot):
        pick = torch.as_tensor(rng.integers(0, n, n))
        draws.append(share(mdm_examples[pick].mean(0)) - share(arm_examples[pick].mean(0)))
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"difference": point, "ci_low": float(low), "ci_high": float(high)}


def profile_distance(a: pd.Series, b: pd.Series) -> float:
    """Total-variation distance between two depth profiles (0: identical, 1: disjoint)."""
    return float(0.5 * (a - b).abs().sum())


def jaccard_over_k(graph: Graph, arm_scores: torch.Tensor, mdm_scores: torch.Tensor, ks) -> list[dict]:
    """Jaccard of the two top-k edge sets for each k: rows of k, fraction (k / all edges), jaccard."""
    return [{"k": k, "fraction": k / graph.n_edges,
             "jaccard": jaccard(graph.top_edges(arm_scores, k), graph.top_edges(mdm_scores, k))} for k in ks]


def importance_and_profiles(graph: Graph, edge_scores: dict, k: int, regime_of: dict[str, str]
                            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For each (task, model) key of ``edge_scores``: the share of the top-k circuit's importance per
    component (ranked) and per layer (the depth profile). Returns (importance, profiles) tables."""
    imp_rows, prof_rows = [], []
    for (task, role), scores in edge_scores.items():
        importance = component_importance(graph, scores, graph.top_edges(scores, k))
        share = importance / importance.sum()
        for rank, (name, value) in enumerate(share.items(), start=1):
            imp_rows.append({"task": task, "model": role, "component": name, "share": value, "rank": rank})
        for layer, value in depth_profile(importance, graph.arch.n_layers).items():
            prof_rows.append({"task": task, "regime": regime_of[task], "model": role, "layer": layer, "share": value})
    return pd.DataFrame(imp_rows), pd.DataFrame(prof_rows)
