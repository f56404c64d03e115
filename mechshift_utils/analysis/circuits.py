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
from ..core.validation import ParameterError
from ..tasks import EncodedTask


def k_sweep(n_edges: int, fractions=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)):
    """Circuit sizes as fractions of all edges (at least one edge each, no repeats)."""
    ks = sorted({max(1, min(n_edges, round(f * n_edges))) for f in fractions})
    return ks


class FaithfulnessProbe:
    """Faithfulness of top-k circuits of one attribution on one task's data, for any k, many times.

    The clean and fully ablated runs of every batch are made once; each k then costs one patched
    forward pass per batch. The ablated activations are kept between calls when they fit in
    ``cache_bytes`` (a search over k, as :func:`minimal_circuit`'s, then runs no pass twice), and
    made again per call otherwise (a real pair's pool).
    """

    def __init__(self, model, data: EncodedTask, attribution: Attribution, metric: Metric | None = None,
                 batch_size: int = 64, shift: bool = True, cache_bytes: int = 2 ** 30):
        self.runner = runner_for(model, shift)
        self.graph = self.runner.graph
        self.data, self.attribution = data, attribution
        self.metric = metric or logit_diff(data)
        self.batches = batch_indices(len(data), batch_size)
        self.mean_acts = (mean_activations(self.runner, data, self.batches) if attribution.ablation == "mean"
                          else None)
        self.read_all = read_out_positions(data, shift)
        self.cache_bytes = cache_bytes
        self._ablated: list | None = None
        self.m_full = self.m_abl = None

    def _batches(self):
        """(indices, read positions, ablated activations) per batch; the metric totals on the way."""
        if self._ablated is not None:
            yield from self._ablated
            return
        kept, size, m_full, m_abl = [], 0, 0.0, 0.0
        for idx in self.batches:
            read = self.read_all[idx]
            _, abl, m_c, m_a = ablated_batch(self.runner, self.data, idx, read, self.attribution.ablation,
                                             self.mean_acts, self.metric)
            m_full, m_abl = m_full + float(m_c.sum()), m_abl + float(m_a.sum())
            size += abl.numel() * abl.element_size()
            if kept is not None and size <= self.cache_bytes:
                kept.append((idx, read, abl))
            else:
                kept = None
            yield idx, read, abl
        self.m_full, self.m_abl = m_full / len(self.data), m_abl / len(self.data)
        self._ablated = kept

    def curve(self, ks, progress: bool = False) -> pd.DataFrame:
        """Faithfulness of the top-k circuit for each k in ``ks``."""
        g, scores = self.graph, self.attribution.edge_scores
        patches = {k: g.valid & ~g.top_edges(scores, k) for k in ks}  # validates every k before any work
        sums = {k: 0.0 for k in ks}
        bar = tqdm(total=len(self.batches) * len(ks), desc="faithfulness", disable=not progress, mininterval=2.0)
        for idx, read, abl in self._batches():  # several k per forward pass (runner.patched_metrics)
            metrics = self.runner.patched_metrics(self.data.clean_ids[idx], read, idx, self.metric, abl,
                                                  [patches[k] for k in ks])
            for k, m in zip(ks, metrics):
                sums[k] += float(m.sum())
            bar.update(len(ks))
        bar.close()
        n = len(self.data)
        return pd.DataFrame([{"k": k, "fraction": k / g.n_edges, "metric": sums[k] / n, "metric_full": self.m_full,
                              "metric_ablated": self.m_abl,
                              "faithfulness": (sums[k] / n - self.m_abl) / (self.m_full - self.m_abl)} for k in ks])


def faithfulness_curve(model, data: EncodedTask, attribution: Attribution, ks, metric: Metric | None = None,
                       batch_size: int = 64, shift: bool = True, progress: bool = True) -> pd.DataFrame:
    """Faithfulness of the top-k circuit for each k, with the attribution's ablation kind."""
    return FaithfulnessProbe(model, data, attribution, metric, batch_size, shift, cache_bytes=0).curve(ks, progress)


def curve_area(curve: pd.DataFrame) -> float:
    """Area under faithfulness vs the fraction of edges kept (log-free, trapezoid, x from 0 to 1)."""
    x = np.concatenate([[0.0], curve.fraction.to_numpy()])
    y = np.concatenate([[0.0], curve.faithfulness.to_numpy()])
    return float(np.trapezoid(y, x))


def log_k_grid(n_edges: int, points: int = 16) -> list[int]:
    """About ``points`` circuit sizes from 1 edge to all of them, evenly spaced in log(k)."""
    return sorted({max(1, min(n_edges, round(n_edges ** (i / (points - 1))))) for i in range(points)})


def minimal_circuit(model, data: EncodedTask, attribution: Attribution, levels=(0.8, 0.9), points: int = 16,
                    batch_size: int = 64, shift: bool = True, ways: int = 2) -> tuple[dict[float, int | None],
                                                                                   pd.DataFrame]:
    """The smallest top-k circuit reaching each faithfulness level (None: no k does), and the curve it
    was read from: faithfulness on a log-spaced grid of k, then a search between the last k below a
    level and the first at or above it (faithfulness is taken as increasing in k between them): each
    round measures ``ways - 1`` evenly spaced k (in as few forward passes per batch as
    runner.patched_metrics fits) and keeps the interval between the last below the level and the first
    at or above it. ``ways = 2`` (default) is bisection: on the CPU, where a pass of several patterns
    costs about as much as that many passes, it measures the fewest k; a larger ``ways`` needs fewer
    rounds where a pass of many patterns costs little more than one (a GPU). Every ``ways`` finds the
    same k when faithfulness increases in k."""
    if not isinstance(ways, int) or ways < 2:
        raise ParameterError(f"ways: expected an integer >= 2, got {ways!r}")
    n = attribution.graph.n_edges
    probe = FaithfulnessProbe(model, data, attribution, batch_size=batch_size, shift=shift)
    curve = probe.curve(log_k_grid(n, points))
    found = {}
    for level in levels:
        while True:
            above = curve[curve.faithfulness >= level].sort_values("k")
            if above.empty:
                found[level] = None
                break
            hi = int(above.k.iloc[0])
            below = curve[curve.k < hi].sort_values("k")
            lo = int(below.k.iloc[-1]) if len(below) else 0
            if hi - lo <= 1:
                found[level] = hi
                break
            mids = sorted({lo + (hi - lo) * i // ways for i in range(1, ways)} - {lo, hi})
            curve = pd.concat([curve, probe.curve(mids)], ignore_index=True)
    return found, curve.sort_values("k").drop_duplicates("k").reset_index(drop=True)
