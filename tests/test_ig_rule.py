"""EAP-IG's quadrature rule (``ig_rule``): the engine's scores for each rule against integrated gradients
computed here from scratch with plain torch autograd hooks on the Hugging Face model, the rules' points,
the cache folders they get, and the error for an unknown rule."""
import pytest
import torch

from mechshift_utils import tasks
from mechshift_utils.attribution.engine import IG_RULES, attribute, ig_points
from mechshift_utils.core.validation import ParameterError
from mechshift_utils.tasks.encoding import encode_examples


@pytest.fixture(scope="module")
def ioi(tokenizer):
    return encode_examples(tasks.generate("ioi", 4, 0), tokenizer)


# --- the reference: plain autograd, written against the Hugging Face modules ------------------------------
def modules(model):
    """Per family: embedding, blocks, and per block (attn norm, [(projection, widths of its destinations)],
    output projection, mlp norm, mlp), final norm; plus n_heads, head_dim."""
    cfg = model.config
    if model.config.model_type == "gpt2":
        root, n_heads = model.transformer, cfg.n_head
        head_dim = cfg.n_embd // n_heads
        blocks = [(b.ln_1, [(b.attn.c_attn, 3 * n_heads)], b.attn.c_proj, b.ln_2, b.mlp) for b in root.h]
        return root.wte, blocks, root.ln_f, n_heads, head_dim
    root, n_heads = model.model, cfg.num_attention_heads
    head_dim, n_kv = cfg.hidden_size // n_heads, cfg.num_key_value_heads
    blocks = [(b.input_layernorm, [(b.self_attn.q_proj, n_heads), (b.self_attn.k_proj, n_kv),
                                   (b.self_attn.v_proj, n_kv)], b.self_attn.o_proj, b.post_attention_layernorm,
               b.mlp) for b in root.layers]
    return root.embed_tokens, blocks, root.norm, n_heads, head_dim


def head_outputs(model, out_proj, z, n_heads, head_dim):
    """Each head's write to the residual stream, z_h W_O[h]: [batch, pos, n_heads, d_model] (no bias)."""
    w = out_proj.weight if model.config.model_type == "gpt2" else out_proj.weight.T  # -> [in, out]
    return torch.stack([z[..., h * head_dim:(h + 1) * head_dim] @ w[h * head_dim:(h + 1) * head_dim]
                        for h in range(n_heads)], dim=2)


def upstream_outputs(model, ids):
    """[batch, pos, n_up, d_model]: token embeddings, every head's output, every MLP's output."""
    emb_mod, blocks, _, n_heads, head_dim = modules(model)
    seen, handles = {}, []
    handles.append(emb_mod.register_forward_hook(lambda m, i, o: seen.__setitem__("emb", o)))
    for l, (_, _, out_proj, _, mlp) in enumerate(blocks):
        handles.append(out_proj.register_forward_pre_hook(lambda m, a, l=l: seen.__setitem__(("z", l), a[0])))
        handles.append(mlp.register_forward_hook(lambda m, i, o, l=l: seen.__setitem__(("mlp", l), o)))
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in handles:
            h.remove()
    parts = [seen["emb"][:, :, None]]
    with torch.no_grad():
        for l, (_, _, out_proj, _, _) in enumerate(blocks):
            parts += [head_outputs(model, out_proj, seen[("z", l)], n_heads, head_dim), seen[("mlp", l)][:, :, None]]
    return torch.cat(parts, dim=2)


def gradients_at_destinations(model, data, emb):
    """dM/d(input of every destination) at the run whose token embeddings are ``emb``, M the summed
    logit difference at slot - 1: [n_down] tensors [batch, pos, d_model], in the graph's order.

    Every destination reads the residual stream x plus a zero tensor of its own that requires grad, so
    the gradient of that zero tensor is the gradient at the destination's input through it alone, while
    the gradient still flows on to x (and to the destinations before it). A head's q/k/v input is the
    residual stream as its own slice of the projection reads it (through the pre-norm): the projection's
    output is rebuilt slice by slice from its own copy of x (module.forward, which runs no hooks)."""
    emb_mod, blocks, final_norm, _, head_dim = modules(model)
    taps, handles, resid = [], [], {}

    def tap(like):
        t = torch.zeros_like(like, requires_grad=True)
        taps.append(t)
        return t

    def rebuild(norm, l):
        def hook(proj, args, out):
            x = resid[l]
            n = out.shape[-1] // head_dim
            return torch.cat([proj.forward(norm.forward(x + tap(x)))[..., j * head_dim:(j + 1) * head_dim]
                              for j in range(n)], dim=-1)
        return hook

    handles.append(emb_mod.register_forward_hook(lambda m, i, o: emb.to(o.dtype)))
    for l, (attn_norm, projections, _, mlp_norm, _) in enumerate(blocks):
        handles.append(attn_norm.register_forward_pre_hook(lambda m, a, l=l: resid.__setitem__(l, a[0])))
        for proj, _ in projections:  # called in q, k, v order: the graph's order of destinations
            handles.append(proj.register_forward_hook(rebuild(attn_norm, l)))
        handles.append(mlp_norm.register_forward_pre_hook(lambda m, a: (a[0] + tap(a[0]),) + tuple(a[1:])))
    handles.append(final_norm.register_forward_pre_hook(lambda m, a: (a[0] + tap(a[0]),) + tuple(a[1:])))
    try:
        with torch.enable_grad():
            logits = model(data.clean_ids).logits
            rows = torch.arange(len(data))
            at = logits[rows, data.answer_positions[:, 0] - 1]
            metric = at[rows, data.correct_ids[:, 0]] - at[rows, data.counterfactual_ids[:, 0]]
            grads = torch.autograd.grad(metric.sum(), taps)
    finally:
        for h in handles:
            h.remove()
    n_layers = len(blocks)
    per_layer = sum(n for _, n in blocks[0][1]) + 1
    assert len(grads) == n_layers * per_layer + 1
    return list(grads)


def edges_by_hand(model, n_up_per_layer, n_dest_per_layer):
    """[n_up, n_down] bool: u -> v when u is written before v reads (a layer's MLP reads its heads)."""
    n_layers = len(modules(model)[1])
    n_heads = n_up_per_layer - 1
    up_layer = [-1] + [l for l in range(n_layers) for _ in range(n_up_per_layer)]
    up_is_mlp = [False] + [k == n_heads for _ in range(n_layers) for k in range(n_up_per_layer)]
    valid = torch.zeros(len(up_layer), n_layers * n_dest_per_layer + 1, dtype=torch.bool)
    for l in range(n_layers):
        for k in range(n_dest_per_layer):
            is_mlp = k == n_dest_per_layer - 1
            for u, (lu, mu) in enumerate(zip(up_layer, up_is_mlp)):
                valid[u, l * n_dest_per_layer + k] = lu < l or (is_mlp and lu == l and not mu)
    valid[:, -1] = True
    return valid


def eap_ig_by_hand(model, data, points):
    """Per-example EAP-IG scores [n, n_up, n_down]: (a_u(corrupted) - a_u(clean)) . the mean over the
    points alpha of dM/d(input of v) at the run with embeddings corrupted + alpha (clean - corrupted)."""
    emb_mod = modules(model)[0]
    clean, corrupt = upstream_outputs(model, data.clean_ids), upstream_outputs(model, data.corrupted_ids)
    with torch.no_grad():
        e_clean, e_corrupt = emb_mod(data.clean_ids), emb_mod(data.corrupted_ids)
    delta = corrupt - clean  # [n, pos, n_up, d]
    total = None
    for alpha in points.tolist():
        grads = torch.stack(gradients_at_destinations(model, data, e_corrupt + alpha * (e_clean - e_corrupt)), 2)
        step = torch.einsum("bpud,bpvd->buv", delta.double(), grads.double())
        total = step if total is None else total + step
    scores = total / len(points)
    _, blocks, _, n_heads, _ = modules(model)
    valid = edges_by_hand(model, n_heads + 1, sum(n for _, n in blocks[0][1]) + 1)
    return scores * valid, valid


# --- the tests ---------------------------------------------------------------------------------------------
def test_the_rules_points():
    assert torch.equal(ig_points(5, "midpoint"), (torch.arange(5) + 0.5) / 5)  # the engine's points until now
    assert torch.equal(ig_points(5, "left"), torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8]))
    assert ig_points(1, "left").tolist() == [0.0] and ig_points(1, "midpoint").tolist() == [0.5]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("ig_rule", IG_RULES)
def test_eap_ig_matches_plain_autograd(arch, ig_rule, micro_models, ioi):
    model = micro_models[arch]
    steps = 3
    # batches of 3 and 1 examples, IG points stacked 2 then 1: every seam of the engine is crossed
    res = attribute(model, ioi, method="eap-ig", ig_steps=steps, ig_rule=ig_rule, batch_size=3, ig_batch=2,
                    per_example=True, progress=False)
    want, valid = eap_ig_by_hand(model, ioi, ig_points(steps, ig_rule))
    assert torch.equal(res.graph.valid, valid)
    assert res.ig_rule == ig_rule and res.ig_steps == steps
    scale = float(want.abs().max())
    assert scale > 0
    assert torch.allclose(res.per_example.double(), want, rtol=1e-4, atol=1e-5 * scale)
    assert torch.allclose(res.edge_scores.double(), want.mean(0), rtol=1e-4, atol=1e-5 * scale)
    assert torch.allclose(res.node_scores.double(), want.mean(0).sum(1), rtol=1e-4, atol=1e-5 * scale)


def test_the_rules_differ_and_midpoint_is_the_default(micro_arm, ioi):
    default = attribute(micro_arm, ioi, method="eap-ig", ig_steps=2, progress=False)
    mid = attribute(micro_arm, ioi, method="eap-ig", ig_steps=2, ig_rule="midpoint", progress=False)
    left = attribute(micro_arm, ioi, method="eap-ig", ig_steps=2, ig_rule="left", progress=False)
    assert torch.equal(default.edge_scores, mid.edge_scores) and default.ig_rule == "midpoint"
    assert not torch.allclose(mid.edge_scores, left.edge_scores, rtol=1e-3, atol=0)
    assert (mid.edge_scores - left.edge_scores).abs().max() > 1e-3 * mid.edge_scores.abs().max()
    assert attribute(micro_arm, ioi, method="eap", ig_rule="left", progress=False).ig_rule is None


@pytest.mark.parametrize("bad", ["right", "Midpoint", None, 0])
def test_an_unknown_rule_stops_with_its_name(micro_arm, ioi, bad):
    with pytest.raises(ParameterError, match=r"ig_rule: expected one of \['midpoint', 'left'\]"):
        attribute(micro_arm, ioi, method="eap-ig", ig_steps=2, ig_rule=bad, progress=False)
    with pytest.raises(ParameterError, match="ig_rule: expected one of"):
        ig_points(2, bad)


def test_each_rule_has_its_own_cache(micro_arm, ioi, tmp_path):
    from mechshift_utils.attribution.tracing import attribution_dir, traced_model
    from mechshift_utils.core.files import write_with

    assert attribution_dir(tmp_path, "arm", "ioi", "eap-ig", "patching", 8).name == "ioi"
    assert attribution_dir(tmp_path, "arm", "ioi", "eap-ig", "patching", 8).parts[-3] == "eap-ig-patching-ig8"
    assert attribution_dir(tmp_path, "arm", "ioi", "eap-ig", "patching", 8, "left").parts[-3] == \
        "eap-ig-patching-ig8-left"
    assert attribution_dir(tmp_path, "arm", "ioi", "eap", "patching", 8, "left").parts[-3] == "eap-patching"
    with pytest.raises(ParameterError, match="ig_rule: expected one of"):
        attribution_dir(tmp_path, "arm", "ioi", "eap-ig", "patching", 8, "simpson")
    kwargs = dict(ig_steps=2, batch_size=4, by_region=False)
    mid = traced_model(micro_arm, "arm", tmp_path, "ioi", ioi, **kwargs)
    left = traced_model(micro_arm, "arm", tmp_path, "ioi", ioi, ig_rule="left", **kwargs)
    assert not torch.allclose(mid.edge_scores, left.edge_scores)
    folders = sorted(p.name for p in (tmp_path / "attribution").iterdir())
    assert folders == ["eap-ig-patching-ig2", "eap-ig-patching-ig2-left"]
    for rule, first in (("midpoint", mid), ("left", left)):  # read back from its own folder
        again = traced_model(micro_arm, "arm", tmp_path, "ioi", ioi, ig_rule=rule, **kwargs)
        assert torch.equal(again.edge_scores, first.edge_scores) and again.ig_rule == rule
    # a cache written before the rule was recorded holds midpoint scores: read for midpoint only
    cache = attribution_dir(tmp_path, "arm", "ioi", "eap-ig", "patching", 2) / "scores.pt"
    state = torch.load(cache, weights_only=False)
    assert state.pop("ig_rule") == "midpoint"
    write_with(cache, lambda p: torch.save(state, p))
    assert torch.equal(traced_model(micro_arm, "arm", tmp_path, "ioi", ioi, **kwargs).edge_scores, mid.edge_scores)
