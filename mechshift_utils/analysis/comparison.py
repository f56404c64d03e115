"""Structural comparison of two circuits: overlap, component importance, depth profile."""
from __future__ import annotations

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


def profile_distance(a: pd.Series, b: pd.Series) -> float:
    """Total-variation distance between two depth profiles (0: identical, 1: disjoint)."""
    return float(0.5 * (a - b).abs().sum())
