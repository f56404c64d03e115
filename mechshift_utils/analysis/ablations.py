"""Targeted ablations: each model's most important early vs mid/late components, matched on the
share of the circuit they hold, the layer-0 MLP alone, and random groups, ablated together (every
outgoing edge of a component carries its ablated value).

:func:`matched_groups` chooses the groups, :func:`ablate_components` measures them per example
(zero, mean, corrupted or resampled activations).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..attribution.engine import ABLATIONS, ablated_batch, batch_indices, mean_activations, read_out_positions
from ..attribution.graph import layer_of
from ..attribution.metrics import first_slot_accuracy, logit_diff
from ..attribution.runner import runner_for
from ..core.validation import ParameterError, check_choice, check_positive_int
from ..tasks import EncodedTask

ABLATION_KINDS = (*ABLATIONS, "resample")


def ablate_components(model, data: EncodedTask, groups: dict[str, list[str]], ablation: str = "zero",
                      batch_size: int = 64, shift: bool = True) -> pd.DataFrame:
    """Per group and example: logit difference and first-slot accuracy, clean and with the group's
    upstream nodes ablated (all their outgoing edges carry the ablated value).

    ``ablation``: "zero", "mean" (over the task data, per position), "patching" (the corrupted run)
    or "resample" (another example's clean run: example i takes example i+1's activations, within its
    batch). ``groups`` maps a label to a list of components (e.g. ``{"early": ["a0.h1", "m0"]}``); the
    clean run and the ablated values are computed once for all groups.
    """
    check_choice("ablation", ablation, ABLATION_KINDS)
    check_positive_int("batch_size", batch_size)
    if ablation == "resample" and len(data) < 2:
        raise ParameterError("data: resample ablation needs at least two examples")
    runner = runner_for(model, shift)
    g = runner.graph
    unknown = sorted({c for comps in groups.values() for c in comps} - set(g.upstream))
    if unknown:
        raise ParameterError(f"components: expected upstream nodes of the graph (e.g. 'a0.h1', 'm2'), got {unknown}")
    patches = {label: g.valid & torch.tensor([n in set(comps) for n in g.upstream])[:, None]
               for label, comps in groups.items()}
    # resample needs a partner in every batch: no batch of one
    batches = batch_indices(len(data), batch_size)
    if ablation == "resample" and len(batches) > 1 and len(batches[-1]) == 1:
        batches = batches[:-2] + [torch.cat(batches[-2:])]
    mean_acts = mean_activations(runner, data, batches) if ablation == "mean" else None
    read_all = read_out_positions(data, shift)
    diff, acc = logit_diff(data), first_slot_accuracy(data)

    def both(logits, index):  # one pass gives both numbers
        return torch.stack([diff(logits, index), acc(logits, index)], dim=-1)

    out = []
    for idx in batches:
        read = read_all[idx]
        if ablation == "resample":
            _, clean = runner.node_outputs(data.clean_ids[idx], read, idx, both)
            abl = runner.node_outputs(data.clean_ids[idx.roll(-1)])
        else:
            _, abl, clean, _ = ablated_batch(runner, data, idx, read, ablation, mean_acts, both)
        ablated_all = runner.patched_metrics(data.clean_ids[idx], read, idx, both, abl, list(patches.values()))
        for label, ablated in zip(patches, ablated_all):  # every group's pass shares the batch's clean run
            out.append(pd.DataFrame({"group": label, "example": idx.numpy(),
                                     "metric_clean": clean[:, 0].numpy(), "metric_ablated": ablated[:, 0].numpy(),
                                     "accuracy_clean": clean[:, 1].numpy(),
                                     "accuracy_ablated": ablated[:, 1].numpy()}))
    return pd.concat(out, ignore_index=True)


def matched_groups(stats, scores: dict[str, torch.Tensor], k: int, n_early: int, n_random: int, seed: int,
                   match_fraction: float = 0.5, alone: tuple[str, ...] = ("m0",)) -> pd.DataFrame:
    """Fair ablation groups for the models of one seed and task (``scores``: model -> edge scores).

    Per model: its components by importance in the top-``k`` circuit (heads and MLPs, the upstream
    nodes; a grouped-query key/value head is not one, as it cannot be ablated alone; the ones in
    ``alone`` are left out of the groups and ablated on their own). "early" (layers below ``n_early``)
    and "mid/late" take the most important components of their layers until each holds the same share
    of the model's importance: ``match_fraction`` of the smaller of the two layer ranges' totals, so
    that neither group wins by holding more of the circuit. "random": ``n_random`` draws of as many
    components as the models' early groups have on average, from every head and MLP, the same draws
    for every model (drawn from ``seed``). One row per (model, group, draw) with the group's share of
    its model's importance."""
    if not 0 < match_fraction <= 1:
        raise ParameterError(f"match_fraction: expected a number in (0, 1], got {match_fraction!r}")
    check_positive_int("n_random", n_random)
    # heads and MLPs that can be ablated: upstream nodes (under grouped-query attention a key/value
    # head is a component of the importance, but not a node whose output can be replaced)
    upstream = set(stats.graph.upstream)
    keep = [i for i in stats.model_components if stats.components[i] in upstream]
    comps = [stats.components[i] for i in keep]
    layers = {c: layer_of(c) for c in comps}
    rows, early_sizes, shares = [], [], {}
    for name, sc in scores.items():
        imp = stats.importance(sc, k)[0, keep]
        share = imp / imp.sum() if imp.sum() > 0 else imp
        shares[name] = dict(zip(comps, share.tolist()))
        ranked = [comps[i] for i in torch.argsort(-share, stable=True).tolist()]
        early = [c for c in ranked if layers[c] < n_early and c not in alone]
        late = [c for c in ranked if layers[c] >= n_early and c not in alone]
        target = match_fraction * min(sum(shares[name][c] for c in early), sum(shares[name][c] for c in late))
        for label, pool in (("early", early), ("mid/late", late)):
            chosen, total = [], 0.0
            for c in pool:
                if total >= target and chosen:
                    break
                chosen.append(c)
                total += shares[name][c]
            rows.append({"model": name, "group": label, "draw": 0, "components": chosen, "share": total})
            if label == "early":
                early_sizes.append(len(chosen))
        for c in alone:
            rows.append({"model": name, "group": c, "draw": 0, "components": [c], "share": shares[name].get(c, 0.0)})
    size = max(1, round(float(np.mean(early_sizes))))
    rng = np.random.default_rng(seed)
    draws = [sorted(rng.choice(len(comps), size=min(size, len(comps)), replace=False).tolist()) for _ in range(n_random)]
    for name in scores:
        for d, pick in enumerate(draws):
            chosen = [comps[i] for i in pick]
            rows.append({"model": name, "group": "random", "draw": d, "components": chosen,
                         "share": sum(shares[name][c] for c in chosen)})
    return pd.DataFrame(rows)
