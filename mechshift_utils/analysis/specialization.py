"""Numbers for "a few sharply specialised components" vs "work spread over many".

A model's work on a task is a non-negative weight per component (heads and
MLPs): its circuit importance, or |its direct logit attribution|. Normalised to
shares p, the weight's concentration is measured by

* ``entropy``: -sum p log p in nats (0: one component does everything; log N: all equal),
  and ``entropy_norm`` = entropy / log N,
* ``effective_number``: exp(entropy), the number of equally weighted components
  with the same entropy (1 ... N),
* ``gini``: the Gini coefficient of the weights (0: all equal; (N-1)/N: one component),
* ``top1``, ``top5``, ``top10``: the share held by the 1 / 5 / 10 largest.

Claim 3 says the MDM is less concentrated than the ARM; notebook 05 reads these measures per seed
and bootstrap draw (mechshift_utils.analysis.seeds) against the null of continued ARM training.
"""
from __future__ import annotations


import numpy as np
import torch

from ..core.validation import ParameterError
from .comparison import component_importance

MEASURES = ("entropy", "entropy_norm", "effective_number", "gini", "top1", "top5", "top10")


def concentration(weights) -> dict[str, float]:
    """The measures of the module docstring for one vector of non-negative weights."""
    w = torch.as_tensor(weights, dtype=torch.float64).flatten()
    if w.numel() == 0 or (w < 0).any() or not torch.isfinite(w).all():
        raise ParameterError("weights: expected a non-empty vector of finite non-negative numbers")
    n = w.numel()
    total = w.sum()
    if total == 0:
        raise ParameterError("weights: expected at least one positive weight (all are zero)")
    p = w / total
    nz = p[p > 0]
    entropy = float(-(nz * nz.log()).sum())
    ranked = torch.sort(w).values  # ascending
    i = torch.arange(1, n + 1, dtype=torch.float64)
    gini = float(((2 * i - n - 1) * ranked).sum() / (n * total))
    desc = torch.sort(p, descending=True).values
    return {"entropy": entropy, "entropy_norm": entropy / np.log(n) if n > 1 else 0.0,
            "effective_number": float(np.exp(entropy)), "gini": gini,
            "top1": float(desc[:1].sum()), "top5": float(desc[:5].sum()), "top10": float(desc[:10].sum())}


def model_components(graph) -> list[str]:
    """The components whose concentration is measured: every head and MLP (not the embeddings)."""
    return [name for name in graph.upstream if name != "input"]


def importance_weights(graph, edge_scores: torch.Tensor, k: int) -> torch.Tensor:
    """Circuit importance of every head and MLP (notebook 03's s(v) on the top-k circuit), 0 for those
    outside the circuit, in :func:`model_components` order."""
    importance = component_importance(graph, edge_scores, graph.top_edges(edge_scores, k))
    return torch.tensor(importance.reindex(model_components(graph), fill_value=0.0).to_numpy())


def alignment_weights(graph, dla: torch.Tensor) -> torch.Tensor:
    """|mean direct logit attribution| of every head and MLP ([n, n_up] per example in, one vector out)."""
    keep = [graph.upstream.index(name) for name in model_components(graph)]
    return dla[:, keep].double().mean(0).abs()
