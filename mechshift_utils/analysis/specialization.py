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

Confidence intervals come from resampling examples (both models traced on the
same examples are resampled jointly, so the MDM - ARM difference has its own
interval). Claim 3 says the MDM is less concentrated than the ARM.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..core.validation import ParameterError
from .comparison import component_importance

MEASURES = ("entropy", "entropy_norm", "effective_number", "gini", "top1", "top5", "top10")
# +1: a larger value means more spread out (the MDM's side of claim 3); -1: more concentrated.
SPREAD_SIGN = {"entropy": 1, "entropy_norm": 1, "effective_number": 1, "gini": -1, "top1": -1, "top5": -1,
               "top10": -1}


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


def bootstrap_compare(n_examples: int, weights_fn: Callable[[str, torch.Tensor], torch.Tensor],
                      n_boot: int = 200, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Concentration of both models, and MDM minus ARM, with percentile intervals over examples.

    ``weights_fn(role, index)`` returns the component weights of ``role`` ("arm" or "mdm") computed
    from the examples ``index`` (a resample, drawn with replacement; the same draw for both roles).
    Returns one row per (measure, model in arm / mdm / mdm-arm): value (on all examples), ci_low, ci_high.
    """
    rng = np.random.default_rng(seed)
    everything = torch.arange(n_examples)

    def both(index):
        arm, mdm = concentration(weights_fn("arm", index)), concentration(weights_fn("mdm", index))
        return {"arm": arm, "mdm": mdm, "mdm-arm": {m: mdm[m] - arm[m] for m in MEASURES}}

    point = both(everything)
    draws = [both(torch.as_tensor(rng.integers(0, n_examples, n_examples))) for _ in range(n_boot)]
    tail = (1 - level) / 2 * 100
    rows = []
    for model in ("arm", "mdm", "mdm-arm"):
        for m in MEASURES:
            low, high = np.percentile([d[model][m] for d in draws], [tail, 100 - tail])
            rows.append({"measure": m, "model": model, "value": point[model][m], "ci_low": float(low),
                         "ci_high": float(high)})
    return pd.DataFrame(rows)


def claim3_verdict(differences: pd.DataFrame, measures=("entropy_norm", "gini", "top5")) -> str:
    """Verdict from the MDM - ARM rows of :func:`bootstrap_compare` on the chosen measures.

    "holds": every measure says the MDM is more spread out, with its interval excluding 0;
    "reversed": every measure says the MDM is more concentrated, intervals excluding 0;
    "mixed": measures disagree with intervals excluding 0; "no clear difference" otherwise
    (some intervals include 0 and the others do not point the other way).
    """
    diff = differences[differences.model == "mdm-arm"].set_index("measure")
    calls = []
    for m in measures:
        row, sign = diff.loc[m], SPREAD_SIGN[m]
        if row.ci_low > 0 or row.ci_high < 0:
            calls.append("spread" if np.sign(row.value) == sign else "concentrated")
        else:
            calls.append("unclear")
    if all(c == "spread" for c in calls):
        return "holds"
    if all(c == "concentrated" for c in calls):
        return "reversed"
    if "spread" in calls and "concentrated" in calls:
        return "mixed"
    return "no clear difference"


def regime_verdict(task_verdicts: list[str]) -> str:
    """A regime's verdict from its tasks': the common one when they agree, else "differs by task"."""
    return task_verdicts[0] if len(set(task_verdicts)) == 1 else "differs by task"


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


VERDICT_MEASURES = ("entropy_norm", "gini", "top5")


def claim3_table(spec: pd.DataFrame, regime_of: dict[str, str], measures=VERDICT_MEASURES) -> pd.DataFrame:
    """One row per (task, quantity) of :func:`bootstrap_compare` tables (with task and quantity
    columns): the claim-3 verdict and the MDM - ARM value and interval of each measure."""
    rows = []
    for (task, quantity), sub in spec.groupby(["task", "quantity"], sort=False):
        diff = sub[sub.model == "mdm-arm"].set_index("measure")
        rows.append({"task": task, "regime": regime_of[task], "quantity": quantity,
                     "verdict": claim3_verdict(sub, measures),
                     **{f"{m}_mdm_minus_arm": diff.loc[m, "value"] for m in measures},
                     **{f"{m}_ci": f"[{diff.loc[m, 'ci_low']:+.3f}, {diff.loc[m, 'ci_high']:+.3f}]" for m in measures}})
    return pd.DataFrame(rows)
