"""Seeds as the unit of evidence: a hierarchical bootstrap over trained models, then examples.

A measured effect of the organism is a property of a *trained model*, not of an example: two seeds
of the same recipe can disagree more than two halves of one pool. So every headline number is the
mean over seeds of a per-seed statistic, and its interval comes from resampling at both levels: a
draw picks seeds with replacement, then, inside each picked seed, examples with replacement (the
same examples for every model of that seed, so paired differences stay paired), recomputes the
statistic per picked seed, and averages over them. With one seed it reduces to the bootstrap over
examples (and says so: ``n_seeds`` is reported beside every interval).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..core.validation import ParameterError, check_positive_int

StatFn = Callable[[int, torch.Tensor | None], dict[str, float]]


def seed_bootstrap(stat: StatFn, n_examples: dict[int, int], n_boot: int = 200, seed: int = 0
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-seed statistics on all examples, and ``n_boot`` hierarchical bootstrap means.

    ``stat(seed, index)`` returns named statistics of one seed's model(s) computed on the examples
    ``index`` (None: all of them); ``n_examples``: seed -> pool size. Returns (per_seed, draws): one row
    per seed (column ``seed`` and the statistics), and one row per draw (the statistics averaged over
    the draw's seeds).
    """
    check_positive_int("n_boot", n_boot)
    if not n_examples:
        raise ParameterError("n_examples: expected at least one seed, got none")
    seeds = list(n_examples)
    per_seed = pd.DataFrame([{"seed": s, **stat(s, None)} for s in seeds])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        picked = rng.choice(len(seeds), size=len(seeds), replace=True)
        rows = []
        for i in picked:
            s = seeds[i]
            index = torch.as_tensor(rng.integers(0, n_examples[s], n_examples[s]))
            rows.append(stat(s, index))
        draws.append(pd.DataFrame(rows).mean().to_dict())
    return per_seed, pd.DataFrame(draws)


def interval(values, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap values (NaNs dropped; NaN when none is left)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(v, [tail, 100 - tail])
    return float(low), float(high)


def summarize(per_seed: pd.DataFrame, draws: pd.DataFrame, columns=None, level: float = 0.95) -> pd.DataFrame:
    """One row per statistic: the mean over seeds, its hierarchical interval, the per-seed range."""
    columns = [c for c in (columns or draws.columns) if c != "seed"]
    rows = []
    for c in columns:
        low, high = interval(draws[c], level)
        rows.append({"statistic": c, "mean": float(per_seed[c].mean()), "ci_low": low, "ci_high": high,
                     "seed_min": float(per_seed[c].min()), "seed_max": float(per_seed[c].max()),
                     "n_seeds": len(per_seed)})
    return pd.DataFrame(rows)


def mean_interval(values_by_seed: dict[int, np.ndarray], n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict:
    """Mean over seeds of a per-example quantity's mean (e.g. accuracy), with its hierarchical interval."""
    arrays = {s: np.asarray(v, dtype=float) for s, v in values_by_seed.items() if len(v)}
    if not arrays:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n_seeds": 0}

    def stat(s, index):
        x = arrays[s] if index is None else arrays[s][index.numpy()]
        return {"value": float(x.mean())}

    per_seed, draws = seed_bootstrap(stat, {s: len(a) for s, a in arrays.items()}, n_boot, seed)
    low, high = interval(draws["value"], level)
    return {"mean": float(per_seed["value"].mean()), "ci_low": low, "ci_high": high, "n_seeds": len(arrays),
            "seed_min": float(per_seed["value"].min()), "seed_max": float(per_seed["value"].max())}
