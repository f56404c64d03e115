"""The attribution engine on micro models: every method, the hand-checkable case, the causal
zero, completeness, faithfulness end points, and clear errors."""
import pytest
import torch

from mechshift_utils import tasks
from mechshift_utils.models.arch import arch_of
from mechshift_utils.attribution.engine import attribute
from mechshift_utils.attribution.runner import norm_vjp, normed_qkv_weights, qkv_norm_vjp
from mechshift_utils.analysis.ablations import ablate_components
from mechshift_utils.analysis.circuits import FaithfulnessProbe, faithfulness_curve, minimal_circuit
from mechshift_utils.models.embedded import ArmConfig, new_arm
from mechshift_utils.attribution.graph import Graph
from mechshift_utils.models import set_bidirectional
from mechshift_utils.evaluation.scoring import logit_difference
from mechshift_utils.analysis.stats import spearman
from mechshift_utils.core.validation import ParameterError
from mechshift_utils.tasks.encoding import encode_examples


@pytest.fixture(scope="module")
def ioi(tokenizer):
    return encode_examples(tasks.generate("ioi", 6, 0), tokenizer)


@pytest.fixture(scope="module")
def countdown(tokenizer):
    return encode_examples(tasks.generate("countdown", 5, 1), tokenizer)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_methods_agree_with_exact_patching(arch, bidirectional, micro_models, countdown):
    model = set_bidirectional(micro_models[arch], bidirectional)
    exact = attribute(model, countdown, method="exact", progress=False)
    clean = logit_difference(model, countdown.clean_ids, countdown.answer_positions, countdown.correct_ids,
                             countdown.counterfactual_ids)
    corrupt = logit_difference(model, countdown.corrupted_ids, countdown.answer_positions,
                               countdown.correct_ids, countdown.counterfactual_ids)
    assert torch.allclose(exact.metric_clean, clean, atol=1e-5)
    assert torch.allclose(exact.metric_ablated, corrupt, atol=1e-5), "all edges patched = the corrupted run"
    valid = exact.graph.valid
    eap_ig = attribute(model, countdown, method="eap-ig", ig_steps=16, progress=False)
    eap = attribute(model, countdown, method="eap", progress=False)
    assert spearman(eap_ig.edge_scores[valid], exact.edge_scores[valid]) > 0.9
    assert spearman(eap_ig.node_scores, exact.node_scores) > 0.9
    assert torch.isfinite(eap.edge_scores).all()
    assert (eap_ig.edge_scores[~valid] == 0).all()
    # completeness of the integrated gradients: the input's attribution is the whole metric change
    target = float((corrupt - clean).mean())
    assert abs(float(eap_ig.node_scores[0]) - target) <= 0.02 * abs(target) + 1e-7


def test_one_layer_eap_by_hand(tokenizer, ioi):
    """EAP edges into the logits and into the MLP, recomputed with plain autograd on the HF model."""
    model = new_arm(tokenizer, ArmConfig(n_layer=1, n_head=2, n_embd=16), seed=3).eval()
    res = attribute(model, ioi, method="eap", progress=False)
    g = res.graph
    tr = model.transformer
    read = ioi.answer_positions[:, 0] - 1
    rows = torch.arange(len(ioi))

    def metric_from_final(resid):
        logits = model.lm_head(tr.ln_f(resid))[rows, read]
        return (logits.gather(1, ioi.correct_ids[:, :1]) - logits.gather(1, ioi.counterfactual_ids[:, :1])).sum()

    def parts(ids):
        emb = tr.wte(ids)
        resid0 = emb + tr.wpe(torch.arange(ids.shape[1]))
        attn = tr.h[0].attn(tr.h[0].ln_1(resid0))[0]
        mid = resid0 + attn
        mlp = tr.h[0].mlp(tr.h[0].ln_2(mid))
        return emb, mid, mlp

    with torch.no_grad():
        emb_c, mid_c, mlp_c = parts(ioi.clean_ids)
        emb_x, _, mlp_x = parts(ioi.corrupted_ids)
    # input -> logits and m0 -> logits: gradient at the final residual (the clean run)
    final = (mid_c + mlp_c).clone().requires_grad_(True)
    metric_from_final(final).backward()
    want_input = ((emb_x - emb_c) * final.grad).sum() / len(ioi)
    want_mlp = ((mlp_x - mlp_c) * final.grad).sum() / len(ioi)
    assert torch.allclose(res.edge_scores[0, -1], want_input, rtol=1e-4, atol=1e-7)
    assert torch.allclose(res.edge_scores[g.mlp_index(0), -1], want_mlp, rtol=1e-4, atol=1e-7)
    # input -> m0: gradient through the MLP's own input only (not the residual path around it)
    mlp_in = mid_c.clone().requires_grad_(True)
    metric_from_final(mid_c + tr.h[0].mlp(tr.h[0].ln_2(mlp_in))).backward()
    want = ((emb_x - emb_c) * mlp_in.grad).sum() / len(ioi)
    assert torch.allclose(res.edge_scores[0, g.mlp_dest(0)], want, rtol=1e-4, atol=1e-7)


def test_causal_model_gets_nothing_from_after_the_slot(micro_arm, tokenizer, countdown):
    """Corrupt only the closing target (after the slots): the ARM cannot see it, the MDM can."""
    data = countdown.subset(range(len(countdown)))
    data.corrupted_ids = data.clean_ids.clone()
    data.corrupted_ids[:, -1] = data.corrupted_ids[:, 1]  # another number at the last position only
    changed = data.corrupted_ids[:, -1] != data.clean_ids[:, -1]
    assert changed.any() and (data.answer_positions[:, 0] < data.clean_ids.shape[1] - 1).all()
    for method in ("eap", "eap-ig"):  # the gradient from a position the slot cannot see is exactly 0
        arm = attribute(micro_arm, data, method=method, progress=False)
        assert (arm.edge_scores == 0).all() and (arm.node_scores == 0).all(), method
    # exact patching recomputes the patched destination's input (q/k/v through their weights), which
    # rounds differently from the module's own pass by ~1e-9: zero up to float32 rounding
    arm = attribute(micro_arm, data, method="exact", progress=False)
    scale = arm.metric_clean.abs().max()
    assert arm.edge_scores.abs().max() <= 1e-5 * scale and arm.node_scores.abs().max() <= 1e-5 * scale
    mdm = attribute(set_bidirectional(micro_arm, True), data, method="eap-ig", progress=False)
    assert mdm.edge_scores.abs().max() > 0
    set_bidirectional(micro_arm, False)


def test_zero_and_mean_ablation_run(micro_arm, ioi):
    for ablation in ("zero", "mean"):
        res = attribute(micro_arm, ioi, method="eap-ig", ablation=ablation, ig_steps=4, progress=False)
        exact = attribute(micro_arm, ioi, method="exact", ablation=ablation, exact_edges=False, progress=False)
        assert torch.isfinite(res.edge_scores).all() and res.ablation == ablation
        assert spearman(res.node_scores, exact.node_scores) > 0.8
        assert not torch.allclose(res.metric_ablated, res.metric_clean)


def test_faithfulness_end_points(micro_arm, ioi):
    res = attribute(micro_arm, ioi, method="eap-ig", ig_steps=4, progress=False)
    n = res.graph.n_edges
    curve = faithfulness_curve(micro_arm, ioi, res, [0, 5, n], progress=False)
    # exact up to float32 rounding of the patched passes, divided by the micro model's small gap
    # (m(full) - m(corrupt) is about 4e-4 here), so the end points are within ~1e-4, not 1e-7
    assert curve.faithfulness.iloc[0] == pytest.approx(0.0, abs=2e-4)
    assert curve.faithfulness.iloc[-1] == pytest.approx(1.0, abs=2e-4)


def test_faithfulness_probe_reuses_its_ablated_runs(micro_arm, ioi):
    """The probe behind minimal_circuit keeps the ablated runs between calls: the same numbers as
    faithfulness_curve, call after call, cached or not; and the minimal circuit it finds reaches its
    level while one edge fewer does not."""
    res = attribute(micro_arm, ioi, method="eap-ig", ablation="mean", ig_steps=2, progress=False)
    ks = [1, 7, 30]
    reference = faithfulness_curve(micro_arm, ioi, res, ks, batch_size=5, progress=False)
    probe = FaithfulnessProbe(micro_arm, ioi, res, batch_size=5)
    first, again = probe.curve(ks), probe.curve(ks[::-1])
    assert probe._ablated is not None and len(probe._ablated) == len(probe.batches)
    uncached = FaithfulnessProbe(micro_arm, ioi, res, batch_size=5, cache_bytes=0)
    assert uncached.curve(ks).faithfulness.tolist() == uncached.curve(ks).faithfulness.tolist()
    assert uncached._ablated is None
    for other in (first, again.iloc[::-1].reset_index(drop=True), uncached.curve(ks)):
        assert other.faithfulness.to_numpy() == pytest.approx(reference.faithfulness.to_numpy(), abs=1e-6)
    level = float(reference.faithfulness.iloc[1])  # reached at k = 7 by construction
    found, curve = minimal_circuit(micro_arm, ioi, res, levels=(level,), batch_size=5)
    k = found[level]
    assert k is not None and k <= 7
    at = curve.set_index("k").faithfulness
    assert at[k] >= level and (k - 1 not in at.index or at[k - 1] < level)
    eight_way, wide = minimal_circuit(micro_arm, ioi, res, levels=(level,), batch_size=5, ways=8)
    assert wide.set_index("k").faithfulness[eight_way[level]] >= level
    if curve.sort_values("k").faithfulness.is_monotonic_increasing:  # then every search finds the same k
        assert eight_way[level] == k
    with pytest.raises(ParameterError, match="ways: expected an integer >= 2"):
        minimal_circuit(micro_arm, ioi, res, levels=(level,), ways=1)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_summing_the_gradients_over_passes_gives_the_same_scores(arch, micro_models, countdown):
    """sum_passes: the IG passes' gradients added up and dotted with delta once = one product per pass,
    per example, per edge and per position group."""
    model = set_bidirectional(micro_models[arch], True)
    runs = {flag: attribute(model, countdown, method="eap-ig", ig_steps=6, ig_batch=2, by_region=True,
                            per_example=True, progress=False, sum_passes=flag) for flag in (True, False)}
    a, b = runs[True], runs[False]
    scale = b.per_example.abs().max().item()
    assert scale > 0
    for got, want in ((a.per_example, b.per_example), (a.edge_scores, b.edge_scores),
                      (a.region_edge_scores, b.region_edge_scores)):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_several_patterns_in_one_pass_equal_one_pass_each(arch, micro_models, countdown):
    """patched_metric with [G, n_up, n_down] patterns (the batch run G times in one pass) and
    patched_metrics split into passes by a memory budget give each pattern's single-pass numbers."""
    from mechshift_utils.attribution.engine import ablated_batch, read_out_positions
    from mechshift_utils.attribution.metrics import logit_diff
    from mechshift_utils.attribution.runner import runner_for

    model = set_bidirectional(micro_models[arch], True)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # effects large enough to tell patterns apart (a fresh model per test)
    runner = runner_for(model)
    g = runner.graph
    idx = torch.arange(len(countdown))
    read, metric = read_out_positions(countdown)[idx], logit_diff(countdown)
    _, abl, _, _ = ablated_batch(runner, countdown, idx, read, "patching", None, metric)
    gen = torch.Generator().manual_seed(0)
    patterns = torch.stack([g.valid & (torch.rand(g.valid.shape, generator=gen) < f)
                            for f in (0.0, 0.1, 0.3, 0.6, 1.0)])
    one_each = torch.stack([runner.patched_metric(countdown.clean_ids, read, idx, metric, abl, p) for p in patterns])
    together = runner.patched_metric(countdown.clean_ids, read, idx, metric, abl, patterns)
    per_pattern = 3 * countdown.clean_ids.numel() * len(g.upstream) * runner.arch.d_model * 4
    assert runner.patterns_per_pass(countdown.clean_ids, 5, 2 * per_pattern) == 2
    split = runner.patched_metrics(countdown.clean_ids, read, idx, metric, abl, list(patterns), 2 * per_pattern)
    assert together.shape == split.shape == (5, len(countdown))
    assert one_each[1:].sub(one_each[0]).abs().max() > 1e-2  # the patterns do differ
    assert torch.allclose(together, one_each, atol=1e-5) and torch.allclose(split, one_each, atol=1e-5)


def test_ablating_components(micro_arm, ioi):
    out = ablate_components(micro_arm, ioi, {"some": ["a0.h1", "m1"], "none": []}, "zero")
    some, none = out[out.group == "some"], out[out.group == "none"]
    assert len(some) == len(none) == len(ioi) and (some.metric_clean != some.metric_ablated).any()
    assert torch.allclose(torch.tensor(none.metric_clean.values), torch.tensor(none.metric_ablated.values))
    # ablating a node by hand: zero its output with a plain forward hook
    only_mlp = ablate_components(micro_arm, ioi, {"m1": ["m1"]}, "zero")
    handle = micro_arm.transformer.h[1].mlp.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    try:
        want = logit_difference(micro_arm, ioi.clean_ids, ioi.answer_positions, ioi.correct_ids,
                                ioi.counterfactual_ids)
    finally:
        handle.remove()
    assert torch.allclose(torch.tensor(only_mlp.metric_ablated.values, dtype=torch.float32), want, atol=1e-5)
    with pytest.raises(ParameterError, match="components: expected upstream nodes"):
        ablate_components(micro_arm, ioi, {"bad": ["a9.h9"]}, "zero")


def test_graph_names_and_sizes(micro_arm, tiny_llama_and_qwen):
    g = Graph.from_arch(arch_of(micro_arm))  # 2 layers, 2 heads
    assert g.upstream == ["input", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1"]
    assert g.downstream[:7] == ["a0.h0<q>", "a0.h1<q>", "a0.h0<k>", "a0.h1<k>", "a0.h0<v>", "a0.h1<v>", "m0"]
    assert g.downstream[-1] == "logits"
    # a layer-1 head reads input, layer-0 heads and m0; m1 also reads layer-1 heads; logits read all
    assert g.valid[:, g.downstream.index("a1.h0<q>")].tolist() == [True, True, True, True, False, False, False]
    assert g.valid[:, g.downstream.index("m1")].tolist() == [True] * 6 + [False]
    assert g.valid[:, -1].all()
    assert g.n_edges == 6 * 1 + 6 * 4 + 3 + 6 + 7
    gqa = Graph.from_arch(arch_of(tiny_llama_and_qwen["llama"]))
    assert "a0.kv1<k>" in gqa.downstream and "a0.h3<q>" in gqa.downstream


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "acdc"}, "method: expected one of"),
    ({"ablation": "resample"}, "ablation: expected one of"),
    ({"ig_steps": 0}, "ig_steps: expected a positive integer"),
])
def test_bad_arguments(micro_arm, ioi, kwargs, message):
    with pytest.raises(ParameterError, match=message):
        attribute(micro_arm, ioi, progress=False, **kwargs)


def test_bad_data(micro_arm, ioi):
    short = ioi.subset(range(len(ioi)))
    short.corrupted_ids = short.corrupted_ids[:, :-1]
    with pytest.raises(ParameterError, match="clean and corrupted sequences must have equal shapes"):
        attribute(micro_arm, short, progress=False)
    out = ioi.subset(range(len(ioi)))
    out.answer_positions = out.answer_positions.clone()
    out.answer_positions[0, 0] = out.clean_ids.shape[1]
    with pytest.raises(ParameterError, match="answer_positions: expected slots in"):
        attribute(micro_arm, out, progress=False)


def test_k_larger_than_the_graph(micro_arm, ioi):
    res = attribute(micro_arm, ioi, method="eap", progress=False)
    n = res.graph.n_edges
    with pytest.raises(ParameterError, match=rf"k: expected an integer in \[0, {n}\] \(the number of edges\)"):
        res.graph.top_edges(res.edge_scores, n + 1)
    with pytest.raises(ParameterError, match="k: expected an integer"):
        faithfulness_curve(micro_arm, ioi, res, [10, 1000], progress=False)


def test_saved_tables(micro_arm, ioi, tmp_path):
    import pandas as pd

    res = attribute(micro_arm, ioi, method="eap", progress=False)
    folder = res.save(tmp_path / "att", ioi)
    edges = pd.read_csv(folder / "edges.csv")
    nodes = pd.read_csv(folder / "nodes.csv")
    assert list(edges.columns) == ["src", "dst", "score"] and len(edges) == res.graph.n_edges
    assert list(nodes.columns) == ["node", "score"] and len(nodes) == len(res.graph.upstream)
    assert (folder / "examples.jsonl").read_text().count("\n") == len(ioi)


def test_stacking_ig_points_changes_nothing(micro_arm, ioi):
    one = attribute(micro_arm, ioi, method="eap-ig", ig_steps=6, ig_batch=1, progress=False)
    stacked = attribute(micro_arm, ioi, method="eap-ig", ig_steps=6, progress=False)
    pairs = attribute(micro_arm, ioi, method="eap-ig", ig_steps=6, ig_batch=4, progress=False)
    assert torch.allclose(one.edge_scores, stacked.edge_scores, rtol=1e-4, atol=1e-8)
    assert torch.allclose(one.edge_scores, pairs.edge_scores, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_norm_vjp_matches_autograd_per_cotangent(arch, micro_arm, tiny_llama_and_qwen):
    model = micro_arm if arch == "gpt2" else tiny_llama_and_qwen["llama"]
    a = arch_of(model)
    norm = a.attn_norm(model, 1)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)  # not the identity, so the weight matters
    x = torch.randn(2, 5, a.d_model)
    cot = torch.randn(2, 5, 3, a.d_model)
    got = norm_vjp(a.norm_fn(norm), x, cot)  # the closed form
    stacked = norm_vjp(lambda z: a.norm_fn(norm)(z), x, cot)  # a plain function: autograd on a stacked x
    assert a.norm_fn(norm).kind == ("layer" if arch == "gpt2" else "rms")
    for j in range(3):
        xx = x.clone().requires_grad_(True)
        (a.norm_fn(norm)(xx) * cot[:, :, j]).sum().backward()
        assert torch.allclose(got[:, :, j], xx.grad, atol=1e-5)
        assert torch.allclose(stacked[:, :, j], xx.grad, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_qkv_norm_vjp_with_folded_weights_matches_autograd(arch, micro_arm, tiny_llama_and_qwen):
    """The q/k/v gradients taken back through each destination's input weights and the pre-norm (the
    norm's scale and centring folded into the weights) equal autograd of (norm(x) W_n) . g_n."""
    model = micro_arm if arch == "gpt2" else tiny_llama_and_qwen["llama"]
    a = arch_of(model)
    module = a.attn_norm(model, 1)
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
    norm = a.norm_fn(module)
    w = a.qkv_weights(model, 1)[0].detach().float()  # [n, d, head_dim]
    x = torch.randn(2, 5, a.d_model) * 3 + 1  # a mean and a scale away from the normalised input
    g_k = torch.randn(2, 5, w.shape[0], a.head_dim)
    got = qkv_norm_vjp(norm, x, g_k, normed_qkv_weights(norm, w))
    assert got.shape == (2, 5, w.shape[0], a.d_model)
    for j in range(w.shape[0]):
        xx = x.clone().requires_grad_(True)
        (torch.einsum("bpd,dk->bpk", norm(xx), w[j]) * g_k[:, :, j]).sum().backward()
        assert torch.allclose(got[:, :, j], xx.grad, atol=1e-5)
    assert normed_qkv_weights(lambda z: z, w) is None  # any other norm: the plain path


def test_attribution_leaves_the_model_untouched(micro_arm, ioi):
    before = {n: p.detach().clone() for n, p in micro_arm.named_parameters()}
    for method in ("eap", "eap-ig"):
        attribute(micro_arm, ioi, method=method, ig_steps=3, progress=False)
    for n, p in micro_arm.named_parameters():
        assert p.grad is None, f"{n} got a gradient"
        assert p.requires_grad and torch.equal(p, before[n])


def test_probability_difference_metric_by_hand(tokenizer):
    from mechshift_utils.attribution.metrics import prob_diff

    data = encode_examples(tasks.generate("greater_than", 3, 0), tokenizer)
    logits = torch.randn(3, len(tokenizer))
    got = prob_diff(data)(logits, torch.arange(3))
    probs = logits.softmax(-1)
    for i, ex in enumerate(data.examples):
        start = ex.meta["start_year"]
        above = [tokenizer.convert_tokens_to_ids(f"{y:02d}") for y in range(start + 1, 100)]
        below = [tokenizer.convert_tokens_to_ids(f"{y:02d}") for y in range(2, start + 1)]
        assert torch.allclose(got[i], probs[i, above].sum() - probs[i, below].sum(), atol=1e-6)
