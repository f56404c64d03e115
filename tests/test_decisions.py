"""The rules the notebooks read their verdicts and groups from, on hand-built inputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mechshift_utils.analysis.ablations import ablation_groups, ablation_summary, early_hurts_more
from mechshift_utils.analysis.comparison import importance_and_profiles, jaccard_over_k
from mechshift_utils.analysis.logit_lens import dla_grid
from mechshift_utils.analysis.specialization import claim3_table
from mechshift_utils.analysis.verdicts import regime_word, structural_verdicts
from mechshift_utils.attribution.graph import Graph
from mechshift_utils.models.arch import Arch
from mechshift_utils.tasks import GLOBALLY_CONSTRAINED as GC
from mechshift_utils.tasks import PREFIX_DOMINANT as PD

ARCH = Arch("gpt2", n_layers=4, n_heads=2, n_kv_heads=2, d_model=8, head_dim=4)


@pytest.fixture()
def graph():
    return Graph.from_arch(ARCH)


def at_k(rows):
    return pd.DataFrame(rows, columns=["task", "regime", "jaccard", "profile_distance", "difference", "ci_low",
                                       "ci_high"])


def test_claim1_needs_overlap_and_a_similar_profile():
    table = at_k([("a", PD, 0.6, 0.1, 0.0, -0.1, 0.1), ("b", PD, 0.6, 0.3, 0.0, -0.1, 0.1),
                  ("c", PD, 0.4, 0.1, 0.0, -0.1, 0.1)])
    out = structural_verdicts(table, overlap_threshold=0.5, profile_threshold=0.2)
    assert list(out.holds) == [True, False, False]
    assert set(out.claim) == {"claim 1 (kept circuit)"}
    assert list(structural_verdicts(table, 0.3, 0.5).holds) == [True, True, True]  # the thresholds decide


def test_claim2_needs_lower_overlap_than_the_prefix_tasks_and_an_earlier_shift():
    table = at_k([("p1", PD, 0.7, 0.0, 0.0, -0.1, 0.1), ("p2", PD, 0.5, 0.0, 0.0, -0.1, 0.1),
                  ("g1", GC, 0.55, 0.0, 0.05, 0.01, 0.09),  # below the prefix mean 0.6, shift above 0
                  ("g2", GC, 0.65, 0.0, 0.05, 0.01, 0.09),  # overlap not lower
                  ("g3", GC, 0.30, 0.0, 0.05, -0.01, 0.09)])  # interval includes 0
    out = structural_verdicts(table).set_index("task")
    assert out.loc["g1", "holds"] and not out.loc["g2", "holds"] and not out.loc["g3", "holds"]
    assert out.loc["g1", "diff_ci"] == "[0.010, 0.090]"
    assert [regime_word(h) for h in ([True, True], [True, False], [False, False])] == [
        "holds", "holds partly", "does not hold"]


def test_ablation_groups_rank_by_importance_within_depth(graph):
    scores = torch.zeros(graph.valid.shape)
    # a3.h1 -> logits strongest, then m0 -> logits, then a0.h0 -> m0; layers 0-1 are early
    scores[graph.head_index(3, 1), -1] = 5.0
    scores[graph.mlp_index(0), -1] = 3.0
    scores[graph.head_index(0, 0), graph.mlp_dest(0)] = 1.0
    groups = ablation_groups(graph, {("t", "arm"): scores, ("t", "mdm"): -scores}, k=3, n_early=2,
                             n_components=2, n_random=3, rng=np.random.default_rng(0))
    arm = groups[groups.model == "arm"].set_index(["group", "draw"]).components
    assert arm[("early", 0)] == ["m0", "a0.h0"]
    # the circuit has one mid/late component; the group is filled up from the rest (importance 0)
    assert arm[("mid/late", 0)][0] == "a3.h1" and len(arm[("mid/late", 0)]) == 2
    assert len(groups[groups.group == "random"]) == 6
    assert all(len(c) == 2 and "input" not in c for c in groups[groups.group == "random"].components)
    again = ablation_groups(graph, {("t", "arm"): scores, ("t", "mdm"): -scores}, 3, 2, 2, 3,
                            np.random.default_rng(0))
    assert again.components.tolist() == groups.components.tolist()  # same rng seed, same draws


def test_ablation_summary_and_the_papers_claim():
    rows = []
    for group, drop in (("early", 1.0), ("mid/late", 0.1), ("random", 0.0)):
        for i in range(20):
            rows.append({"ablation": "zero", "task": "t", "model": "mdm", "group": group, "example": i,
                         "metric_clean": 2.0, "metric_ablated": 2.0 - 2.0 * drop + 0.01 * (i % 3),
                         "accuracy_clean": 1.0, "accuracy_ablated": 1.0 - drop})
    summary = ablation_summary(pd.DataFrame(rows), {"t": GC}, n_boot=50, seed=0)
    early = summary.set_index("group").loc["early"]
    assert early.metric_drop == pytest.approx(1.0 - 0.01 * np.mean([i % 3 for i in range(20)]) / 2)
    assert early.accuracy_drop == pytest.approx(1.0) and early.regime == GC
    assert early_hurts_more(summary, "t", "mdm")
    flipped = summary.copy()
    flipped.loc[flipped.group == "random", ["metric_ci_low", "metric_ci_high"]] = [0.9, 1.5]
    assert not early_hurts_more(flipped, "t", "mdm")


def test_overlap_over_k_and_the_tables_of_importance(graph):
    scores = torch.randn(graph.valid.shape, generator=torch.Generator().manual_seed(0)) * graph.valid
    rows = jaccard_over_k(graph, scores, scores, [1, 5, graph.n_edges])
    assert [r["jaccard"] for r in rows] == [1.0, 1.0, 1.0] and rows[-1]["fraction"] == 1.0
    opposite = jaccard_over_k(graph, scores, -scores.abs().max() + scores.abs(), [5])  # order reversed
    assert opposite[0]["jaccard"] == 0.0
    importance, profiles = importance_and_profiles(graph, {("t", "arm"): scores, ("t", "mdm"): scores}, 10,
                                                   {"t": PD})
    for role in ("arm", "mdm"):
        assert importance[importance.model == role].share.sum() == pytest.approx(1.0)
        assert profiles[profiles.model == role].share.sum() == pytest.approx(1.0)
        assert list(profiles[profiles.model == role].layer) == list(range(ARCH.n_layers))
    assert list(importance[importance.model == "arm"]["rank"]) == list(range(1, 1 + (importance.model == "arm").sum()))


def test_dla_grid_places_heads_and_mlps():
    table = pd.DataFrame({"component": ["input", "a1.h0", "a2.h1", "m3"], "layer": [-1, 1, 2, 3],
                          "kind": ["input", "head", "head", "mlp"], "dla": [9.0, 1.0, -2.0, 3.0]})
    grid = dla_grid(table, ARCH)
    assert grid.shape == (4, 3) and grid[1, 0] == 1.0 and grid[2, 1] == -2.0 and grid[3, 2] == 3.0
    assert grid.sum() == pytest.approx(2.0)  # the embeddings are not a component of the grid


def test_claim3_table_reads_the_verdict_per_task_and_weight():
    def rows(task, quantity, sign):
        out = []
        for m, spread in (("entropy_norm", 1), ("gini", -1), ("top5", -1)):
            value = sign * spread * 0.1
            out.append({"measure": m, "model": "mdm-arm", "value": value, "ci_low": value - 0.05,
                        "ci_high": value + 0.05, "task": task, "quantity": quantity})
        return out

    spec = pd.DataFrame(rows("a", "importance", 1) + rows("b", "importance", -1))
    table = claim3_table(spec, {"a": PD, "b": GC}).set_index("task")
    assert table.loc["a", "verdict"] == "holds" and table.loc["b", "verdict"] == "reversed"
    assert table.loc["a", "entropy_norm_ci"] == "[+0.050, +0.150]" and table.loc["b", "regime"] == GC
