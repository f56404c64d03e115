import pandas as pd
import pytest
import torch

from mechshift_utils.models.arch import Arch
from mechshift_utils.analysis.comparison import (component_importance, depth_profile, jaccard, profile_distance)
from mechshift_utils.attribution.graph import Graph
from mechshift_utils.analysis.stats import bootstrap_ci, spearman


def test_jaccard():
    a = torch.tensor([[True, True, False], [False, False, False]])
    b = torch.tensor([[True, False, True], [False, False, False]])
    assert jaccard(a, b) == pytest.approx(1 / 3)
    assert jaccard(a, a) == 1.0
    assert jaccard(torch.zeros_like(a), torch.zeros_like(a)) == 1.0


def test_importance_and_depth_profile_by_hand():
    g = Graph.from_arch(Arch("gpt2", 2, 1, 1, 4, 4))  # upstream: input, a0.h0, m0, a1.h0, m1
    scores = torch.zeros(len(g.upstream), len(g.downstream))
    circuit = torch.zeros_like(g.valid)
    scores[0, g.downstream.index("a1.h0<q>")] = -2.0  # input -> a1.h0 (via its query)
    scores[g.upstream.index("m0"), g.downstream.index("logits")] = 1.0
    circuit[scores != 0] = True
    imp = component_importance(g, scores, circuit)
    assert imp["input"] == 2.0 and imp["a1.h0"] == 2.0 and imp["m0"] == 1.0 and imp["logits"] == 1.0
    prof = depth_profile(imp, 2)
    assert prof.tolist() == pytest.approx([1 / 3, 2 / 3])
    assert profile_distance(prof, prof) == 0.0
    assert profile_distance(pd.Series([1.0, 0.0]), pd.Series([0.0, 1.0])) == 1.0


def test_spearman_and_bootstrap():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) > 0.9
    mean, low, high = bootstrap_ci([1.0] * 10 + [3.0] * 10, n_boot=500, seed=0)
    assert mean == 2.0 and low < 2.0 < high


def test_early_layer_count():
    from mechshift_utils.analysis.comparison import early_layer_count

    assert early_layer_count(4) == 2 and early_layer_count(28) == 14 and early_layer_count(1) == 1
    assert early_layer_count(28, 7) == 7
