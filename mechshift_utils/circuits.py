"""Circuits (the top-K edges by |score|), their faithfulness, and component ablations.

Faithfulness of a circuit C: every edge outside C carries its ablated value
(from the corrupted run for ``patching``), the metric is read, and
``(m(C) - m(ablated)) / (m(full) - m(ablated))`` with m averaged over the
examples: 1 means C alone carries the clean behaviour, 0 none of it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .attribute import (ABLATIONS, Attribution, ablated_batch, batch_indices, mean_activations, read_out_positions,
                        runner_for)
from .metrics import Metric, first_slot_accuracy, logit_diff
from .validation import ParameterError, check_choice, check_positive_int
from .vocab import EncodedTask


def k_sweep(n_edges: int, fractions=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)):
    """Circuit sizes as fractions of all edges (at least one edge each, no repeats)."""
    ks = sorted({max(1, min(n_edges, round(f * n_edges))) for f in fractions})
    return ks


def faithfulness_curve(model, data: EncodedTask, attribution: Attribution, ks, metric: Metric | None = None,
                       batch_size: int = 64, shift: bool = True, progress: bool = True) -> pd.DataFrame:
    """Faithfulness of the top-k circuit for each k, with the attribution's ablation kind."""
    runner = runner_for(model, shift)
    g = runner.graph
    for k in ks:
        g.top_edges(attribution.edge_scores, k)  # validates k before any work
    metric = metric or logit_diff(data)
    batches = batch_indices(len(data), batch_size)
    mean_acts = mean_activations(runner, data, batches) if attribution.ablation == "mean" else None
    read_all = read_out_positions(data, shift)
    sums = {k: 0.0 for k in ks}
    m_full = m_abl = 0.0
    bar = tqdm(total=len(batches) * len(ks), desc="faithfulness", disable=not progress, mininterval=2.0)
    for idx in batches:
        read = read_all[idx]
        _, abl, m_c, m_a = ablated_batch(runner, data, idx, read, attribution.ablation, mean_acts, metric)
        m_full += float(m_c.sum())
        m_abl += float(m_a.sum())
        for k in ks:
            patch = g.valid & ~g.top_edges(attribution.edge_scores, k)
            sums[k] += float(runner.patched_metric(data.clean_ids[idx], read, idx, metric, abl, patch).sum())
            bar.update(1)
    bar.close()
    n = len(data)
    m_full, m_abl = m_full / n, m_abl / n
    rows = [{"k": k, "fraction": k / g.n_edges, "metric": sums[k] / n, "metric_full": m_full,
             "metric_ablated": m_abl, "faithfulness": (sums[k] / n - m_abl) / (m_full - m_abl)}
            for k in ks]
    return pd.DataFrame(rows)


def curve_area(curve: pd.DataFrame) -> float:
    """Area under faithfulness vs the fraction of edges kept (log-free, trapezoid, x from 0 to 1)."""
    x = np.concatenate([[0.0], curve.fraction.to_numpy()])
    y = np.concatenate([[0.0], curve.faithfulness.to_numpy()])
    return float(np.trapezoid(y, x))


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
