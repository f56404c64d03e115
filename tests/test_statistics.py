"""The seed-level statistics: exact edge patching against the engine, the vectorised circuit measures
against the plain ones, the hierarchical bootstrap, and the scorecard's rules."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mechshift_utils import tasks
from mechshift_utils.analysis.circuit_stats import CircuitStats, seed_statistics
from mechshift_utils.analysis.comparison import (component_importance, depth_profile, early_share, jaccard,
                                                 profile_distance)
from mechshift_utils.analysis.scorecard import (FAILS, HOLDS, INCONCLUSIVE, NULL, REVERSED, VerdictRule,
                                                effect_verdict, equivalence_verdict, scorecard_row)
from mechshift_utils.analysis.seeds import interval, mean_interval, seed_bootstrap
from mechshift_utils.analysis.specialization import concentration, importance_weights
from mechshift_utils.attribution import attribute
from mechshift_utils.attribution.exact_edges import exact_edge_scores
from mechshift_utils.attribution.graph import Graph
from mechshift_utils.models import set_bidirectional
from mechshift_utils.models.arch import Arch
from mechshift_utils.tasks import encode_examples

ARCH = Arch("gpt2", n_layers=4, n_heads=2, n_kv_heads=2, d_model=8, head_dim=4)


@pytest.mark.parametrize("task", ["ioi", "countdown"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fast_exact_edges_equal_the_engines_exact_patching(micro_arm, tokenizer, task, bidirectional):
    with torch.no_grad():
        for p in micro_arm.parameters():
            p.mul_(3.0)  # effects of ~1e-5 at the default initialisation would pass any tolerance
    set_bidirectional(micro_arm, bidirectional)
    data = encode_examples(tasks.generate(task, 5, 0), tokenizer)
    want = attribute(micro_arm, data, method="exact", per_example=True, progress=False).per_example
    got = exact_edge_scores(micro_arm, data, batch_size=3, progress=False)
    assert want.abs().max() > 1e-2
    assert torch.allclose(got, want, atol=2e-5 * want.abs().max().item())
    set_bidirectional(micro_arm, False)


def test_vectorised_measures_equal_the_plain_ones():
    graph = Graph.from_arch(ARCH)
    stats = CircuitStats(graph)
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, *graph.valid.shape, generator=g) * graph.valid
    k = 20
    imp = stats.importance(scores, k)
    for i in range(3):
        plain = component_importance(graph, scores[i], graph.top_edges(scores[i], k))
        mine = pd.Series(imp[i].numpy(), index=stats.components)
        assert np.allclose(mine.reindex(plain.index).to_numpy(), plain.to_numpy())
        prof = depth_profile(plain, ARCH.n_layers)
        assert np.allclose(stats.profile(imp)[i].numpy(), prof.to_numpy())
        assert stats.early_share(imp, 2)[i].item() == pytest.approx(early_share(prof, 2))
        assert stats.center_of_mass(imp)[i].item() == pytest.approx(float((prof * prof.index).sum()))
        w = importance_weights(graph, scores[i], k)
        assert stats.entropy_norm(imp)[i].item() == pytest.approx(concentration(w)["entropy_norm"])
    tops = stats.top_edges(scores, k)
    assert torch.equal(tops[0], graph.top_edges(scores[0], k))
    assert stats.jaccard(tops[:1], tops[1:2]).item() == pytest.approx(jaccard(tops[0], tops[1]))
    # without m0: its importance leaves the profile
    without = stats.profile(imp, exclude=("m0",))
    assert without[:, 0].sum() < stats.profile(imp)[:, 0].sum() or imp[:, stats.components.index("m0")].sum() == 0
    assert stats.chance_jaccard(k) == pytest.approx(k / (2 * graph.n_edges - k))


def test_seed_statistics_compare_every_model_with_the_reference():
    graph = Graph.from_arch(ARCH)
    stats = CircuitStats(graph)
    g = torch.Generator().manual_seed(1)
    arm = torch.randn(30, *graph.valid.shape, generator=g) * graph.valid
    per_example = {"arm": arm, "same": arm.clone(), "other": torch.randn(30, *graph.valid.shape, generator=g)}
    st = seed_statistics(stats, per_example, 15, 2, split_seed=0)
    assert st["jaccard/arm"] == st["jaccard/same"] == 1.0 and st["change/same"] == 0.0
    assert st["profile_distance/same"] == 0.0 and 0 <= st["jaccard/other"] < 1
    a, b = (stats.profile(stats.importance(x.mean(0), 15)) for x in (arm, per_example["other"]))
    assert st["profile_distance/other"] == pytest.approx(
        profile_distance(pd.Series(a[0].numpy()), pd.Series(b[0].numpy())))
    assert 0 <= st["split_half"] <= 1


def test_the_hierarchical_bootstrap():
    rng = np.random.default_rng(0)
    # one seed: the bootstrap over examples
    one = {0: rng.normal(1.0, 1.0, 400)}
    res = mean_interval(one, n_boot=400, seed=0)
    assert res["n_seeds"] == 1 and res["ci_low"] < 1.0 < res["ci_high"] and res["ci_high"] - res["ci_low"] < 0.3
    # seeds that disagree widen the interval beyond what the examples alone give
    spread = {s: rng.normal(mu, 0.1, 400) for s, mu in enumerate((0.0, 1.0, 2.0))}
    wide = mean_interval(spread, n_boot=400, seed=0)
    assert wide["mean"] == pytest.approx(1.0, abs=0.05) and wide["ci_high"] - wide["ci_low"] > 1.0
    assert (wide["seed_min"], wide["seed_max"]) == pytest.approx((0.0, 2.0), abs=0.05)
    # paired: the same example draw for both statistics of a seed, so a difference of equal values is 0
    per_seed, draws = seed_bootstrap(lambda s, index: {"a": 1.0, "b": 1.0}, {0: 5, 1: 5}, n_boot=20)
    assert (draws.a - draws.b).abs().max() == 0 and list(per_seed.seed) == [0, 1]
    assert interval([np.nan, np.nan]) != interval([np.nan, np.nan])  # NaN when nothing is left


def test_the_verdict_rules():
    rule = VerdictRule(min_seed_fraction=2 / 3, equivalence_margin=0.1)
    assert effect_verdict((0.1, 0.3), [0.2, 0.1, 0.3], 1, rule) == (HOLDS, 3)
    assert effect_verdict((0.1, 0.3), [0.2, -0.1, -0.3], 1, rule)[0] == NULL  # too few seeds agree
    assert effect_verdict((-0.3, -0.1), [-0.2, -0.1, -0.3], 1, rule) == (REVERSED, 0)
    assert effect_verdict((-0.3, -0.1), [-0.2, -0.1, -0.3], -1, rule) == (HOLDS, 3)  # a claimed decrease
    assert effect_verdict((-0.1, 0.3), [0.2, 0.1, 0.3], 1, rule)[0] == NULL  # the interval includes 0
    assert equivalence_verdict((-0.05, 0.05), [0.0, 0.02, -0.01], rule) == (HOLDS, 3)
    assert equivalence_verdict((0.15, 0.3), [0.2, 0.2, 0.2], rule)[0] == FAILS
    assert equivalence_verdict((0.02, 0.2), [0.1, 0.15, 0.05], rule)[0] == FAILS  # more than the null, past the margin
    assert equivalence_verdict((-0.1, 0.2), [0.0, 0.15, 0.05], rule)[0] == INCONCLUSIVE


def test_a_scorecard_row_reads_the_excess_over_the_null():
    rule = VerdictRule()
    per_seed = pd.DataFrame({"mdm": [0.30, 0.28, 0.35], "null": [0.10, 0.12, 0.08]})
    draws = pd.DataFrame({"mdm": np.linspace(0.25, 0.36, 50), "null": np.linspace(0.07, 0.13, 50)})
    row = scorecard_row("claim 2", "countdown", tasks.GLOBALLY_CONSTRAINED, "circuit change", per_seed, draws,
                        "effect", rule)
    assert row["verdict"] == HOLDS and row["seeds_holding"] == 3 and row["n_seeds"] == 3
    assert row["excess"] == pytest.approx(per_seed.mdm.mean() - per_seed.null.mean())
    assert row["ci_low"] > 0 and row["mdm_minus_arm"] == pytest.approx(0.31)
    same = scorecard_row("claim 2", "countdown", tasks.GLOBALLY_CONSTRAINED, "circuit change",
                         per_seed.assign(null=per_seed.mdm), draws.assign(null=draws.mdm), "effect", rule)
    assert same["verdict"] == NULL, "an MDM that changes as much as continued training does shows no shift"
