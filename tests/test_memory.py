"""The EAP-IG memory estimate: its terms by hand for real 7B shapes, its growth, the batch it picks
under a given amount of free memory, and its main terms against the engine's own tensors."""
import os

import pytest
import torch

from mechshift_utils import tasks
from mechshift_utils.attribution import memory
from mechshift_utils.models.arch import Arch, arch_of
from mechshift_utils.attribution.engine import ablated_batch
from mechshift_utils.attribution.runner import runner_for
from mechshift_utils.attribution.graph import Graph
from mechshift_utils.attribution.memory import (FLOAT32, MODEL_UNITS, NORM_VJP_COPIES, activation_units,
                                                attribution_bytes, choose_batch_size, describe_plan, free_memory_bytes,
                                                graph_sizes, model_sizes, weight_copy_bytes)
from mechshift_utils.attribution.metrics import logit_diff
from mechshift_utils.core.validation import ParameterError
from mechshift_utils.tasks.encoding import encode_examples

LLAMA_7B = Arch("llama", n_layers=32, n_heads=32, n_kv_heads=32, d_model=4096, head_dim=128)
QWEN25_7B = Arch("llama", n_layers=28, n_heads=28, n_kv_heads=4, d_model=3584, head_dim=128)
QWEN25_7B_PARAMS = 7.6e9
QWEN_VOCAB = 152064


def _meta_model(config):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # the module tree of a real shape, no memory
        return AutoModelForCausalLM.from_config(config)


def test_arch_constants_are_the_real_configs():
    from transformers import LlamaConfig, Qwen2Config

    llama = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=32, vocab_size=32000)
    qwen = Qwen2Config(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=QWEN_VOCAB)
    assert arch_of(_meta_model(llama)) == LLAMA_7B
    assert arch_of(_meta_model(qwen)) == QWEN25_7B


def test_llama_7b_buffer_by_hand():
    n_up = 1 + 32 * 33
    assert n_up == 1057
    per_position_and_example = n_up * 4096 * 4
    assert per_position_and_example == 17_317_888  # 17.3 MB
    assert attribution_bytes(LLAMA_7B, 1, 1)["delta"] == per_position_and_example
    assert attribution_bytes(LLAMA_7B, 128, 4)["delta"] == 4 * 128 * per_position_and_example  # 8.9 GB


def test_qwen25_7b_terms_by_hand():
    n_up, n_down = 1 + 28 * 29, 28 * (28 + 2 * 4 + 1) + 1
    assert graph_sizes(QWEN25_7B) == (n_up, n_down) == (813, 1037)
    est = attribution_bytes(QWEN25_7B, 128, 2, 1, 2, per_example=True)
    assert est["delta"] == 2 * 128 * 813 * 3584 * 4  # 11.7 MB per position and example
    assert est["scores"] == 2 * (2 * 813 * 1037 * 4) + 813 * 1037 * (4 + 1)
    assert est["per_example_host"] == 2 * 813 * 1037 * 4
    # float32 W_O [28, 128, 3584] and W_QKV [36, 3584, 128] per layer
    assert est["weight_copies"] == 28 * (28 * 128 * 3584 + 36 * 3584 * 128) * 4
    assert est["norm_vjp"] == NORM_VJP_COPIES["llama"] * 2 * 128 * 36 * 3584 * 4


def test_graph_sizes_match_the_graph():
    for arch in (Arch("llama", 3, 4, 2, 32, 8), Arch("gpt2", 2, 3, 3, 24, 8)):
        g = Graph.from_arch(arch)
        assert graph_sizes(arch) == (len(g.upstream), len(g.downstream))


def test_total_is_the_largest_phase():
    est = attribution_bytes(QWEN25_7B, 128, 3, 2, vocab_size=QWEN_VOCAB)
    assert est["total"] == max(est["build_peak"], est["backward_peak"], est["scoring_peak"])
    assert est["build_peak"] == est["weight_copies"] + est["gc_lag"] + est["delta"] + est["build"]
    no_host = attribution_bytes(QWEN25_7B, 128, 3, 2, per_example=False, vocab_size=QWEN_VOCAB)
    assert no_host["per_example_host"] == 0 and no_host["total"] == est["total"]


@pytest.mark.parametrize("arch", [LLAMA_7B, QWEN25_7B, Arch("gpt2", 12, 12, 12, 768, 64)])
def test_grows_with_batch_positions_and_ig_batch(arch):
    by_batch = [attribution_bytes(arch, 64, b)["total"] for b in range(1, 9)]
    by_positions = [attribution_bytes(arch, p, 2)["total"] for p in (16, 32, 64, 128, 256)]
    for series in (by_batch, by_positions):
        assert all(a < b for a, b in zip(series, series[1:])), series
    # stacking IG points grows the pass, not the buffer that building delta needs
    by_ig_batch = [attribution_bytes(arch, 64, 2, k) for k in (1, 2, 4, 8)]
    assert all(a["backward_peak"] < b["backward_peak"] for a, b in zip(by_ig_batch, by_ig_batch[1:]))
    assert all(a["total"] <= b["total"] for a, b in zip(by_ig_batch, by_ig_batch[1:]))


GPT2_SMALL = Arch("gpt2", 12, 12, 12, 768, 64)
GPT2_VOCAB = 50257


@pytest.mark.parametrize("arch, dtype_bytes", [(GPT2_SMALL, 4), (QWEN25_7B, 2)])
def test_logits_term_scales_with_vocab_positions_batch_and_ig_batch(arch, dtype_bytes):
    """The logits of a pass and their dense gradient: 2 x (batch x ig_batch) x positions x vocab x dtype."""
    def logits_part(p, b, k, vocab):
        with_vocab = attribution_bytes(arch, p, b, k, dtype_bytes, vocab_size=vocab, ig_steps=8)["activations"]
        return with_vocab - attribution_bytes(arch, p, b, k, dtype_bytes, vocab_size=0, ig_steps=8)["activations"]

    for p, b, k, vocab in [(32, 4, 1, GPT2_VOCAB), (64, 4, 1, GPT2_VOCAB), (32, 8, 1, GPT2_VOCAB),
                           (32, 4, 4, GPT2_VOCAB), (32, 4, 1, QWEN_VOCAB), (16, 3, 2, 1000)]:
        assert logits_part(p, b, k, vocab) == 2 * b * k * p * vocab * dtype_bytes
    # more IG points than steps never stack: the pass is capped at ig_steps points
    assert logits_part(32, 4, 16, GPT2_VOCAB) == 2 * 4 * 8 * 32 * GPT2_VOCAB * dtype_bytes


def test_activation_units_by_hand():
    # GPT-2: 4 d-wide tensors, the fused q/k/v (3) and gelu_new's 4 tensors of width 4d; one F.gelu: 1
    assert activation_units(GPT2_SMALL, 4) == 4 + 3 + 16 == 23
    assert activation_units(GPT2_SMALL, 4, mlp_saved=1) == 4 + 3 + 4 == 11
    # Qwen2 float32, I = 3d, 8 query and 2 key-value heads: 3 + 12/8 + 9; bfloat16 adds the RMSNorms'
    # float32 copies of their inputs, 2 units each
    tiny = Arch("llama", 8, 8, 2, 512, 64)
    assert activation_units(tiny, 4, 1536) == 3 + 1.5 + 9
    assert activation_units(tiny, 2, 1536) == 3 + 1.5 + 9 + 4
    assert activation_units(QWEN25_7B, 2, 18944) == pytest.approx(3 + 36 * 128 / 3584 + 3 * 18944 / 3584 + 4)


@pytest.mark.parametrize("name", ["gpt2", "gpt2:gelu_new", "gpt2:gelu_pytorch_tanh", "qwen2"])
def test_activation_units_are_what_autograd_saves(micro_models, name):
    """Count the storages autograd saves in one plain forward with frozen weights (the weights' own left
    out), as D_WIDE_SAVED's comment was counted, against the estimate's units: the embedded GPT-2 (exact
    GELU), GPT-2's own gelu_new (written out op by op) and the fused tanh form, and Qwen2."""
    name, _, activation = name.partition(":")
    model = micro_models[name]
    if activation:
        import copy

        from transformers import GPT2LMHeadModel

        config = copy.deepcopy(model.config)
        config.activation_function = activation
        model = GPT2LMHeadModel(config).eval()
    arch, sizes = arch_of(model), model_sizes(model)
    b, p = 3, 16
    params = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    frozen = [q for q in model.parameters() if q.requires_grad]
    for q in frozen:
        q.requires_grad_(False)
    try:
        emb = torch.randn(b, p, arch.d_model, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(inputs_embeds=emb)
    finally:
        for q in frozen:
            q.requires_grad_(True)
    unit = b * p * arch.d_model * 4
    # the attention's per-head statistics ([b, heads, p] logsumexp) are a visible share at width 32
    big = sum(v for v in seen.values() if v >= unit // 4)
    counted = (activation_units(arch, 4, sizes["d_mlp"], sizes.get("mlp_saved")) * arch.n_layers
               + MODEL_UNITS[arch.family])
    assert big / unit == pytest.approx(counted, rel=0.1)


def test_model_sizes_reads_the_config(micro_models):
    for name, model in micro_models.items():
        sizes = model_sizes(model)
        assert sizes["dtype_bytes"] == next(model.parameters()).element_size()
        assert sizes["vocab_size"] == model.config.vocab_size
        expected = 4 * model.config.n_embd if name == "gpt2" and not model.config.n_inner else (
            model.config.n_inner if name == "gpt2" else model.config.intermediate_size)
        assert sizes["d_mlp"] == expected


def test_choose_batch_size_gpt2_on_the_cpu_fits_and_the_next_does_not(monkeypatch):
    _pretend_free(monkeypatch, 3e9)
    options = dict(dtype_bytes=4, vocab_size=GPT2_VOCAB, d_mlp=3072, ig_steps=8)
    for ig_batch in (1, 4):
        b = choose_batch_size(GPT2_SMALL, 64, "cpu", ig_batch=ig_batch, **options)
        budget = 0.8 * 3e9
        summed = {**options, "sum_passes": True}  # what the engine does on the CPU
        assert attribution_bytes(GPT2_SMALL, 64, b, ig_batch, **summed)["total"] <= budget
        assert attribution_bytes(GPT2_SMALL, 64, b + 1, ig_batch, **summed)["total"] > budget
        assert attribution_bytes(GPT2_SMALL, 64, b, ig_batch, **summed)["ig_sum"] > 0
        assert choose_batch_size(GPT2_SMALL, 64, "cpu", ig_batch=ig_batch, **{**options, "sum_passes": False}) >= b
    # the logits count: without them the same memory would seem to hold more
    assert choose_batch_size(GPT2_SMALL, 64, "cpu", ig_batch=4, **{**options, "vocab_size": 0}) > b


def test_float32_models_need_no_weight_copies():
    assert weight_copy_bytes(QWEN25_7B, 4) == 0
    assert weight_copy_bytes(QWEN25_7B, 2) > 3e9  # 3.3 GB


def _pretend_free(monkeypatch, free_bytes):
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: int(free_bytes))


def test_choose_batch_size_qwen25_7b_on_80gb_beside_both_models(monkeypatch):
    _pretend_free(monkeypatch, 80e9)
    both_models = int(2 * QWEN25_7B_PARAMS * 2)  # ARM and MDM in bfloat16
    options = dict(dtype_bytes=2, vocab_size=QWEN_VOCAB)
    b = choose_batch_size(QWEN25_7B, 128, "cuda", ig_batch=1, reserve_bytes=both_models, **options)
    budget = 0.8 * (80e9 - both_models)
    assert b >= 1
    assert attribution_bytes(QWEN25_7B, 128, b, 1, **options)["total"] <= budget
    assert attribution_bytes(QWEN25_7B, 128, b + 1, 1, **options)["total"] > budget
    # the largest batch that fits, found by scanning every size (not by the bisection under test), and
    # decided by the memory, not by the cap of 64
    fits = [k for k in range(1, 65) if attribution_bytes(QWEN25_7B, 128, k, 1, **options)["total"] <= budget]
    assert b == max(fits) < 64
    # the same free memory given directly, no reserve
    _pretend_free(monkeypatch, 80e9 - both_models)
    assert choose_batch_size(QWEN25_7B, 128, "cuda", **options) == b


def test_choose_batch_size_follows_free_memory(monkeypatch):
    picks = []
    for free in (40e9, 80e9, 160e9):
        _pretend_free(monkeypatch, free)
        picks.append(choose_batch_size(QWEN25_7B, 64, "cuda"))
    assert picks == sorted(picks) and picks[0] < picks[-1]
    _pretend_free(monkeypatch, 1e15)
    assert choose_batch_size(QWEN25_7B, 64, "cuda", max_batch=5) == 5
    assert choose_batch_size(QWEN25_7B, 64, "cuda", safety=1.0, max_batch=64) == 64


def test_choose_batch_size_raises_when_nothing_fits(monkeypatch):
    _pretend_free(monkeypatch, 80e9)
    with pytest.raises(ParameterError) as err:
        choose_batch_size(LLAMA_7B, 2048, "cuda", reserve_bytes=int(2 * 6.7e9 * 2))
    message = str(err.value)
    assert message.startswith("batch_size:")
    for hint in ("2048 positions", "GB", "fewer positions", "more memory", "device_map"):
        assert hint in message


@pytest.mark.parametrize("call, name", [
    (lambda: attribution_bytes(QWEN25_7B, 0, 1), "positions"),
    (lambda: attribution_bytes(QWEN25_7B, 64, 1.5), "batch_size"),
    (lambda: attribution_bytes(QWEN25_7B, 64, 1, 0), "ig_batch"),
    (lambda: attribution_bytes("qwen", 64, 1), "arch"),
    (lambda: attribution_bytes(QWEN25_7B, 64, 1, ablation="resample"), "ablation"),
    (lambda: choose_batch_size(QWEN25_7B, 64, "cpu", safety=1.5), "safety"),
    (lambda: choose_batch_size(QWEN25_7B, 64, "cpu", max_batch=0), "max_batch"),
    (lambda: free_memory_bytes("tpu"), "device"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ParameterError, match=f"^{name}: expected"):
        call()


def test_free_memory_on_the_cpu_is_plausible():
    free = free_memory_bytes("cpu")
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # physical memory, Linux and macOS
    assert 0 < free <= total


def test_describe_plan_names_the_parts_in_gb():
    text = describe_plan(QWEN25_7B, 128, 2, 1, vocab_size=QWEN_VOCAB)
    total = attribution_bytes(QWEN25_7B, 128, 2, 1, vocab_size=QWEN_VOCAB)["total"]
    assert f"peak about {total / 1e9:.2f} GB" in text
    for part in ("activation differences", "forward+backward", "weight copies", "garbage collector", "IG inputs"):
        assert part in text


# --- the estimate against the engine's own tensors (micro Qwen2 with grouped-query attention) ------

@pytest.fixture()
def qwen_and_data(micro_models, tokenizer):
    data = encode_examples(tasks.generate("ioi", 3, 0), tokenizer)
    return micro_models["qwen2"], data


def test_delta_term_is_the_engines_buffer(qwen_and_data):
    model, data = qwen_and_data
    runner = runner_for(model)
    idx = torch.arange(len(data))
    read = data.answer_positions[:, 0] - 1
    clean, abl, _, _ = ablated_batch(runner, data, idx, read, "patching", None, logit_diff(data))
    delta = abl - clean  # what attribute() keeps per batch
    positions = data.clean_ids.shape[1]
    est = attribution_bytes(arch_of(model), positions, len(data), dtype_bytes=4)
    assert delta.dtype == torch.float32
    assert delta.numel() * delta.element_size() == est["delta"]
    assert clean.numel() * clean.element_size() == est["delta"]  # each build buffer is one more of these


def test_scores_vjp_stack_and_saved_tensors_are_the_engines(qwen_and_data, monkeypatch):
    import mechshift_utils.attribution.runner as runner_module

    model, data = qwen_and_data
    runner = runner_for(model)
    arch = arch_of(model)
    b, positions, ig_batch = len(data), data.clean_ids.shape[1], 2
    idx, read = torch.arange(b), data.answer_positions[:, 0] - 1
    n_up, _ = graph_sizes(arch)
    delta = torch.zeros(b, n_up, positions, arch.d_model)  # node-major, as the engine hands it
    emb = torch.randn(ig_batch * b, positions, arch.d_model)
    seen = {"stack": 0, "saved": 0}
    real_vjp, real_dot = runner_module.qkv_norm_vjp, runner._dot_gradients

    def vjp(norm, x, g_k, w):
        out = real_vjp(norm, x, g_k, w)
        seen["stack"] = max(seen["stack"], out.numel() * out.element_size())
        return out

    def dot(delta, x_attn, g_qkv, x_mlp, g_mlp, x_final, g_final, repeats, *regions):
        tensors = [*x_attn, *[t for layer in g_qkv for t in layer], *x_mlp, *g_mlp, x_final, g_final]
        seen["saved"] = sum(t.numel() * t.element_size() for t in tensors)
        return real_dot(delta, x_attn, g_qkv, x_mlp, g_mlp, x_final, g_final, repeats, *regions)

    monkeypatch.setattr(runner_module, "qkv_norm_vjp", vjp)
    monkeypatch.setattr(runner, "_dot_gradients", dot)
    scores = runner.gradient_scores(data.clean_ids[idx], read, idx, logit_diff(data), delta, emb, ig_batch)
    est = attribution_bytes(arch, positions, b, ig_batch, dtype_bytes=4, ig_steps=ig_batch)
    n_score = scores.numel() * scores.element_size()
    assert est["scores"] == 2 * n_score + n_up * scores.shape[2] * (FLOAT32 + 1)
    assert seen["stack"] * NORM_VJP_COPIES["llama"] == est["norm_vjp"]
    # what _dot_gradients is handed, and all the scoring phase counts of the trace (peak RSS showed
    # nothing else of the pass kept)
    tokens = ig_batch * b * positions
    handed = (arch.n_layers * (3 * arch.d_model + arch.n_qkv * arch.head_dim) + 2 * arch.d_model) * tokens * 4
    assert seen["saved"] == handed == est["saved_for_scoring"]


def test_weight_copies_are_the_runners(micro_models):
    model = micro_models["qwen2"].to(torch.bfloat16)
    runner = runner_for(model)
    copies = sum(t.numel() * t.element_size() for t in runner.w_out)
    copies += sum(t.numel() * t.element_size() for w, bias in runner.w_qkv for t in (w, bias) if t is not None)
    bias = sum(bias.numel() * bias.element_size() for _, bias in runner.w_qkv if bias is not None)
    assert copies - bias == weight_copy_bytes(arch_of(model), 2)


def test_ig_sum_term_is_what_the_engine_accumulates(qwen_and_data):
    model, data = qwen_and_data
    runner = runner_for(model)
    arch = arch_of(model)
    b, positions = len(data), data.clean_ids.shape[1]
    idx, read = torch.arange(b), data.answer_positions[:, 0] - 1
    n_up, _ = graph_sizes(arch)
    delta = torch.zeros(b, n_up, positions, arch.d_model)
    summed = []
    for _ in range(2):  # two passes of two IG points: what a batch holds before the products
        emb = torch.randn(2 * b, positions, arch.d_model)
        assert runner.gradient_scores(data.clean_ids[idx], read, idx, logit_diff(data), delta, emb, 2,
                                      accumulate=summed) is None
    held = sum(t.nbytes if hasattr(t, "x_hats") else t.numel() * t.element_size() for _, _, t in summed)
    assert held == attribution_bytes(arch, positions, b, 2, dtype_bytes=4, ig_steps=4, sum_passes=True)["ig_sum"]
    # one pass per batch: nothing to sum
    assert attribution_bytes(arch, positions, b, 2, dtype_bytes=4, ig_steps=2, sum_passes=True)["ig_sum"] == 0
