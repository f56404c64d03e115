"""Circuits (the top-K edges by |score|) and their faithfulness.

Faithfulness of a circuit C: every edge outside C carries its ablated value
(from the corrupted run for ``patching``), the metric is read, and
``(m(C) - m(ablated)) / (m(full) - m(ablated))`` with m averaged over the
examples: 1 means C alone carries the clean behaviour, 0 none of it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..attribution.engine import Attribution, ablated_batch, batch_indices, mean_activations, read_out_positions
from ..attribution.metrics import Metric, logit_diff
from ..attribution.runner import runner_for
from ..tasks import EncodedTask


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


def log_k_grid(n_edges: int, points: int = 16) -> list[int]:
    """About ``points`` circuit sizes from 1 edge to all of them, evenly spaced in log(k)."""
    return sorted({max(1, min(n_edges, round(n_edges ** (i / (points - 1))))) for i in range(points)})


def minimal_circuit(model, data: EncodedTask, attribution: Attribution, levels=(0.8, 0.9), points: int = 16,
                    batch_size: int = 64, shift: bool = True) -> tuple[dict[float, int | None], pd.DataFrame]:
    """The smallest top-k circuit reaching each faithfulness level (None: no k does), and the curve it
    was read from: faithfulness on a log-spaced grid of k, then bisection between the last k below a
    level and the first at or above it (faithfulness is taken as increasing in k between them)."""
    n = attribution.graph.n_edges
    curve = faithfulness_curve(model, data, attribution, log_k_grid(n, points), batch_size=batch_size, shift=shift,
                               progress=False)
    found = {}
    for level in levels:
        above = curve[curve.faithfulness >= level]
        if above.empty:
            found[level] = None
            continue
        hi = int(above.k.iloc[0])
        below = curve[curve.k < hi]
        lo = int(below.k.iloc[-1]) if len(below) else 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            point = faithfulness_curve(model, data, attribution, [mid], batch_size=batch_size, shift=shift,
                                       progress=False)
            curve = pd.concat([curve, point], ignore_index=True)
            lo, hi = (lo, mid) if point.faithfulness.iloc[0] >= level else (mid, hi)
        found[level] = hi
    return found, curve.sort_values("k").drop_duplicates("k").reset_index(drop=True)
