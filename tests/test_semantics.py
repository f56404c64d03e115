"""Logit lens, specialization measures and neuron attribution, each against a direct computation."""
import math

import pytest
import torch

from mechshift_utils import tasks
from mechshift_utils.analysis.logit_lens import logit_lens, promoted_tokens
from mechshift_utils.models import set_bidirectional
from mechshift_utils.analysis.neurons import (explain_neurons, neuron_attribution, selected_activations, selectivity,
                                     task_sequences, token_features)
from mechshift_utils.analysis.specialization import concentration
from mechshift_utils.core.validation import ParameterError
from mechshift_utils.tasks.encoding import encode_examples


@pytest.fixture(scope="module")
def ioi(tokenizer):
    return encode_examples(tasks.generate("ioi", 6, 0), tokenizer)


def _loud(model):
    """Random micro models at the default init barely react to their input (effects ~1e-5); larger
    weights make every effect O(0.01-1), so the comparisons below are not satisfied by tolerance alone."""
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(6)
    return model


def _captured(model, ids):
    """Plain-PyTorch hooks: final-norm input, every o_proj input and MLP output (no nnsight)."""
    hf = model
    root = hf.transformer if hasattr(hf, "transformer") else hf.model
    blocks = root.h if hasattr(root, "h") else root.layers
    seen = {}
    hooks = [(root.ln_f if hasattr(root, "ln_f") else root.norm).register_forward_hook(
        lambda m, i, o: seen.__setitem__("resid", i[0]))]
    for l, blk in enumerate(blocks):
        o_proj = blk.attn.c_proj if hasattr(blk, "attn") else blk.self_attn.o_proj
        hooks.append(o_proj.register_forward_hook(lambda m, i, o, l=l: seen.__setitem__(f"z{l}", i[0])))
        hooks.append(blk.mlp.register_forward_hook(lambda m, i, o, l=l: seen.__setitem__(f"m{l}", o)))
    with torch.no_grad():
        logits = hf(input_ids=ids).logits
    for h in hooks:
        h.remove()
    return seen, logits, blocks, root


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_logit_lens_matches_direct_computation(arch, bidirectional, micro_models, ioi):
    model = _loud(set_bidirectional(micro_models[arch], bidirectional))
    lens = logit_lens(model, ioi, progress=False)
    seen, logits, blocks, root = _captured(model, ioi.clean_ids)
    rows = torch.arange(len(ioi))
    read = ioi.answer_positions[:, 0] - 1
    resid = seen["resid"][rows, read]
    norm = root.ln_f if arch == "gpt2" else root.norm
    if arch == "gpt2":
        scale = 1 / torch.sqrt(resid.var(-1, unbiased=False) + norm.eps)
        center = lambda x: x - x.mean(-1, keepdim=True)  # noqa: E731
    else:
        scale = 1 / torch.sqrt(resid.pow(2).mean(-1) + norm.variance_epsilon)
        center = lambda x: x  # noqa: E731
    w_u = model.lm_head.weight
    direction = w_u[ioi.correct_ids[:, 0]] - w_u[ioi.counterfactual_ids[:, 0]]

    def dla(x):  # x [b, d] -> [b]
        return ((norm.weight * center(x) * scale[:, None]) * direction).sum(-1)

    graph = lens.graph
    last = len(blocks) - 1
    mlp = seen[f"m{last}"][rows, read]
    assert dla(mlp).abs().max() > 0.05  # a real signal, not a tolerance-sized one
    assert torch.allclose(lens.dla[:, graph.upstream.index(f"m{last}")], dla(mlp), rtol=1e-4, atol=1e-5)
    # head 1 of layer 1: its slice of the o_proj input times its slice of W_O
    n_heads = model.config.num_attention_heads if arch != "gpt2" else model.config.n_head
    hd = model.config.hidden_size // n_heads if arch != "gpt2" else model.config.n_embd // n_heads
    z = seen[f"z{last}"][rows, read][:, hd:2 * hd]
    o_proj = blocks[last].attn.c_proj if arch == "gpt2" else blocks[last].self_attn.o_proj
    w_o = o_proj.weight[hd:2 * hd] if arch == "gpt2" else o_proj.weight[:, hd:2 * hd].T
    assert torch.allclose(lens.dla[:, graph.upstream.index(f"a{last}.h1")], dla(z @ w_o), rtol=1e-4, atol=1e-5)
    # the pieces add up to the model's own logit difference
    at = logits[rows, read]
    model_diff = at[rows, ioi.correct_ids[:, 0]] - at[rows, ioi.counterfactual_ids[:, 0]]
    assert torch.allclose(lens.logit_diff, model_diff, rtol=1e-4, atol=1e-5)
    assert lens.max_closure_error() < 1e-4 * float(model_diff.abs().max()) + 1e-5
    table = lens.table()
    assert list(table.component) == graph.upstream and set(table.kind) == {"input", "head", "mlp"}


def test_promoted_tokens_are_the_component_top_logits(micro_arm, tokenizer, ioi):
    _loud(micro_arm)
    table = promoted_tokens(micro_arm, ioi, ["m1", "a0.h0"], tokenizer, k=3)
    seen, _, _, root = _captured(micro_arm, ioi.clean_ids)
    rows = torch.arange(len(ioi))
    read = ioi.answer_positions[:, 0] - 1
    resid = seen["resid"][rows, read]
    mlp = seen["m1"][rows, read]
    normed = root.ln_f.weight * (mlp - mlp.mean(-1, keepdim=True)) / torch.sqrt(
        resid.var(-1, unbiased=False) + root.ln_f.eps)[:, None]
    logits = normed @ micro_arm.lm_head.weight.T
    expected = torch.topk(logits.mean(0), 3).indices.tolist()
    got = table[table.component == "m1"].sort_values("rank")
    assert got.token_id.tolist() == expected
    answer = logits[rows, ioi.correct_ids[:, 0]]
    ranks = (logits > answer[:, None]).sum(1).float() + 1
    assert got.answer_rank.iloc[0] == float(ranks.median())
    with pytest.raises(ParameterError, match="components"):
        promoted_tokens(micro_arm, ioi, ["m9"], tokenizer)


# --- specialization ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [4, 12, 30])
def test_concentration_of_one_hot_and_uniform(n):
    one_hot = torch.zeros(n)
    one_hot[n // 2] = 3.0
    c = concentration(one_hot)
    assert c["entropy"] == 0.0 and c["effective_number"] == 1.0 and c["entropy_norm"] == 0.0
    assert c["gini"] == pytest.approx((n - 1) / n)
    assert c["top1"] == c["top5"] == c["top10"] == 1.0
    u = concentration(torch.full((n,), 0.7))
    assert u["entropy"] == pytest.approx(math.log(n)) and u["entropy_norm"] == pytest.approx(1.0)
    assert u["effective_number"] == pytest.approx(n) and u["gini"] == pytest.approx(0.0, abs=1e-12)
    assert u["top1"] == pytest.approx(1 / n)
    assert u["top5"] == pytest.approx(min(5, n) / n) and u["top10"] == pytest.approx(min(10, n) / n)


def test_concentration_by_hand():
    c = concentration([1.0, 3.0])  # p = (1/4, 3/4)
    assert c["entropy"] == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert c["gini"] == pytest.approx(0.25)  # |1 - 3| * 2 / (2 * 2^2 * 2)
    assert c["top1"] == pytest.approx(0.75)
    for bad in ([], [-1.0, 2.0], [0.0, 0.0], [float("nan")]):
        with pytest.raises(ParameterError, match="weights"):
            concentration(bad)


def _patched_metric(model, data, layer, neuron, corrupt_acts):
    """Logit difference with one neuron's activations replaced, by a plain forward pre-hook."""
    blk = (model.transformer.h if hasattr(model, "transformer") else model.model.layers)[layer]
    proj = blk.mlp.c_proj if hasattr(blk.mlp, "c_proj") else blk.mlp.down_proj

    def hook(module, args):
        x = args[0].clone()
        if corrupt_acts is not None:
            x[:, :, neuron] = corrupt_acts[:, :, neuron]
        return (x,)

    handle = proj.register_forward_pre_hook(hook)
    with torch.no_grad():
        logits = model(input_ids=data.clean_ids).logits
    handle.remove()
    rows = torch.arange(len(data))
    at = logits[rows, data.answer_positions[:, 0] - 1]
    return at[rows, data.correct_ids[:, 0]] - at[rows, data.counterfactual_ids[:, 0]]


def _acts(model, ids, layer):
    blk = (model.transformer.h if hasattr(model, "transformer") else model.model.layers)[layer]
    proj = blk.mlp.c_proj if hasattr(blk.mlp, "c_proj") else blk.mlp.down_proj
    seen = {}
    handle = proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    return seen["x"]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_exact_neuron_scores_equal_single_neuron_patching(arch, micro_models, ioi):
    model = _loud(set_bidirectional(micro_models[arch], True))
    res = neuron_attribution(model, ioi, [0, 1], method="exact", neuron_chunk=7, progress=False)
    corrupt = _acts(model, ioi.corrupted_ids, 1)
    base = _patched_metric(model, ioi, 1, 0, None)
    assert torch.allclose(res.metric_clean, base, atol=1e-5)
    for neuron in (0, 5, 13):
        expected = (_patched_metric(model, ioi, 1, neuron, corrupt) - base).mean()
        assert float(res.scores[1, neuron]) == pytest.approx(float(expected), rel=1e-3, abs=1e-7)
    assert res.scores.abs().max() > 1e-3
    # the whole-layer effect: every neuron patched at once
    everything = _patched_metric(model, ioi, 0, slice(None), _acts(model, ioi.corrupted_ids, 0))
    assert float(res.layer_effect[0]) == pytest.approx(float((everything - base).mean()), rel=1e-3, abs=1e-7)


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_ig_neuron_scores_are_complete_and_track_exact(arch, micro_models, ioi):
    from mechshift_utils.analysis.stats import spearman

    model = _loud(set_bidirectional(micro_models[arch], True))
    ig = neuron_attribution(model, ioi, [0, 1], method="ig", ig_steps=32, progress=False)
    exact = neuron_attribution(model, ioi, [0, 1], method="exact", progress=False)
    comp = ig.completeness()
    assert exact.layer_effect.abs().min() > 1e-3
    assert torch.allclose(torch.tensor(comp.sum_of_scores.values), torch.tensor(comp.layer_patched.values),
                          rtol=0.02, atol=1e-6)
    assert spearman(ig.scores.flatten(), exact.scores.flatten()) > 0.9
    eap = neuron_attribution(model, ioi, [1], method="eap", progress=False)
    assert eap.scores.shape == (1, ig.scores.shape[1]) and eap.ig_steps is None
    top = ig.top(3)
    assert list(top.columns) == ["layer", "neuron", "name", "score"] and len(top) == 3


def test_neuron_attribution_rejects_bad_input(micro_arm, ioi):
    with pytest.raises(ParameterError, match="layers"):
        neuron_attribution(micro_arm, ioi, [5])
    with pytest.raises(ParameterError, match="method"):
        neuron_attribution(micro_arm, ioi, [0], method="lrp")


def test_selectivity_by_hand():
    feature = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    only_on_first = torch.tensor([2.0, 3.0, 0, 0, 0, 0, 0, 0])
    s = selectivity(only_on_first, feature)
    assert s[0] == pytest.approx(1.0)
    assert s[1] == pytest.approx((1.0 - 0.5) / 0.5)
    indifferent = torch.ones(8)
    assert selectivity(indifferent, feature).abs().max() < 1e-12
    assert selectivity(-only_on_first, feature)[0] == pytest.approx(1.0)  # sign does not matter


def test_explanation_finds_a_planted_feature(micro_arm, tokenizer, ioi):
    names, feats = token_features(ioi, tokenizer, min_support=2)
    seqs = task_sequences(ioi)
    assert feats.shape == (len(names), *seqs.shape)
    differ = names.index("the position where clean and corrupted differ")
    assert feats[differ].sum() == 2 * (ioi.clean_ids != ioi.corrupted_ids).sum()
    planted = feats[differ].float()[:, :, None] * 2.0 + 0.01 * torch.rand(*seqs.shape, 1)
    table = explain_neurons(planted, ["m0.n0"], ioi, tokenizer, names, feats, top_k=3)
    row = table.iloc[0]
    assert row.feature == "the position where clean and corrupted differ"
    assert row.selectivity > 0.9 and row.explanation.startswith("fires on the position where")
    acts = selected_activations(micro_arm, ioi, [(1, 3), (0, 2)])
    assert acts.shape == (2 * len(ioi), ioi.clean_ids.shape[1], 2)
    assert torch.allclose(acts[:len(ioi), :, 0], _acts(micro_arm, ioi.clean_ids, 1)[:, :, 3], atol=1e-6)
