"""Real-pair loaders: each MDM layout, written tiny and random to disk exactly as it is published,
loads into a standard class whose logits equal the original network's forward (written here in plain
torch from the raw safetensors), with full attention, the shift, and the right mask token. Nothing is
downloaded."""
from __future__ import annotations

import json
import math
import re
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast,
                          Qwen2Config, Qwen2ForCausalLM)

from mechshift_utils.models import real_pairs, registry
from mechshift_utils.models import is_bidirectional, load_pair
from mechshift_utils.models import register_local_pair
from mechshift_utils.models.real_pairs import PairSpec, load_spec
from mechshift_utils.evaluation.scoring import read_positions, slot_logits
from mechshift_utils.core.validation import ParameterError

ARM_VOCAB = 100  # tokenizer words w0..w99 (w0 = <unk>, w1 = <eos>)
WIDTH, LAYERS, HEADS, KV_HEADS = 32, 2, 4, 2


# --- writing tiny checkpoints ----------------------------------------------------------------------

def save_word_tokenizer(folder: Path, n_words: int = ARM_VOCAB, eos: str = "<eos>") -> None:
    words = ["<unk>", eos] + [f"w{i}" for i in range(2, n_words)]
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token=eos).save_pretrained(folder)


def randomized(model, seed: int):
    """Every parameter random (norm gains around 1), so that no weight is checked only at its init value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(1 + noise if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight", "norm.weight"))
                    else noise)
    return model.eval()


def save_arm(folder: Path, model, n_words: int = ARM_VOCAB, eos: str = "<eos>") -> Path:
    model.save_pretrained(folder)
    save_word_tokenizer(folder, n_words, eos)
    return folder


def gpt2_config(vocab: int) -> GPT2Config:
    return GPT2Config(vocab_size=vocab, n_positions=64, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS,
                      bos_token_id=1, eos_token_id=1)


def llama_common(vocab: int) -> dict:
    return dict(vocab_size=vocab, hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=LAYERS,
                num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=64,
                bos_token_id=1, eos_token_id=1, pad_token_id=1)


def save_sharded(tensors: dict[str, torch.Tensor], folder: Path, n_shards: int) -> None:
    """Hugging Face's sharded layout: model-0000i-of-0000n.safetensors + model.safetensors.index.json."""
    names = sorted(tensors)
    weight_map = {}
    for i in range(n_shards):
        file = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: tensors[k].contiguous() for k in names[i::n_shards]}
        save_file(part, str(folder / file), metadata={"format": "pt"})
        weight_map.update({k: file for k in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))


def write_diffugpt(folder: Path, rows: int, lm_head: bool, seed: int, config_vocab: int = ARM_VOCAB) -> Path:
    """DiffuGPT's save: embed_tokens.weight + denoise_model.* (+ lm_head.weight), GPT-2 config.json whose
    vocab_size is GPT-2's even when the embedding grew (DiffuGPT-M)."""
    folder.mkdir(parents=True)
    net = randomized(GPT2LMHeadModel(gpt2_config(rows)), seed)
    tensors = {"embed_tokens.weight": net.transformer.wte.weight.detach().clone()}
    for k, v in net.transformer.state_dict().items():
        if not k.startswith("wte."):
            tensors[f"denoise_model.{k}"] = v.detach().clone()
    if lm_head:
        tensors["lm_head.weight"] = torch.randn(rows, WIDTH, generator=torch.Generator().manual_seed(seed + 1))
        tensors["denoise_model.h.0.attn.bias"] = torch.ones(1, 1, 64, 64, dtype=torch.bool)  # an old buffer
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    gpt2_config(config_vocab).save_pretrained(folder)
    return folder


def write_llama_mdm(folder: Path, seed: int, vocab: int = ARM_VOCAB) -> Path:
    """DiffuLLaMA: a plain Llama checkpoint, bf16, sharded with an index."""
    folder.mkdir(parents=True)
    net = randomized(LlamaForCausalLM(LlamaConfig(**llama_common(vocab))), seed)
    save_sharded({k: v.to(torch.bfloat16) for k, v in net.state_dict().items()}, folder, n_shards=2)
    config = dict(llama_common(vocab), model_type="llama", architectures=["LlamaForCausalLM"],
                  rms_norm_eps=1e-5, rope_theta=10000.0, torch_dtype="bfloat16", hidden_act="silu")
    (folder / "config.json").write_text(json.dumps(config))
    return folder


DREAM_VOCAB, DREAM_WORDS, DREAM_MASK = 256, 200, 201


def write_dream(folder: Path, seed: int, vocab: int = DREAM_VOCAB, words: int = DREAM_WORDS,
                mask: int = DREAM_MASK) -> Path:
    """Dream: Qwen2 weight names, a remote-code config ("Dream", auto_map) and code that must never run;
    ``words`` (the ARM tokenizer's size) and ``mask`` are the ids of the tokens Dream adds past it."""
    folder.mkdir(parents=True)
    net = randomized(Qwen2ForCausalLM(Qwen2Config(**llama_common(vocab))), seed)
    save_sharded({k: v.to(torch.bfloat16) for k, v in net.state_dict().items()}, folder, n_shards=2)
    config = dict(llama_common(vocab), architectures=["DreamModel"], model_type="Dream",
                  auto_map={"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
                  hidden_act="silu", rms_norm_eps=1e-6, rope_theta=50.0, rope_scaling=None, tie_word_embeddings=False,
                  use_sliding_window=False, sliding_window=None, max_window_layers=2, attention_dropout=0.0,
                  mask_token_id=mask, torch_dtype="bfloat16", use_cache=False)
    (folder / "config.json").write_text(json.dumps(config))
    for module in ("configuration_dream.py", "modeling_dream.py"):
        (folder / module).write_text("raise RuntimeError('remote code must never run')\n")
    added = {str(words): {"content": "<|beginoftext|>", "special": True},
             str(mask): {"content": "<|mask|>", "special": True}}
    (folder / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": added}))
    generation = {"mask_token_id": mask, "alg": "origin", "steps": 512, "temperature": 0.0, "top_p": None}
    (folder / "generation_config.json").write_text(json.dumps(generation))  # Dream-only sampling fields
    return folder


# --- the original networks, in plain torch ---------------------------------------------------------

def raw_tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update({k: v.float() for k, v in load_file(str(file)).items()})
    return out


def attention(q, k, v, causal):
    """q [b, h, p, d], k/v [b, h, p, d] -> [b, p, h * d]."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        p = q.shape[2]
        scores = scores.masked_fill(torch.ones(p, p, dtype=torch.bool).triu(1), float("-inf"))
    out = scores.softmax(-1) @ v
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def gpt2_reference(t: dict, ids: torch.Tensor, causal: bool) -> torch.Tensor:
    """GPT-2: pre-LayerNorm blocks, fused qkv (Conv1D: x @ W + b), gelu_new MLP, logits on the (tied)
    token embedding unless a separate lm_head is stored."""
    t = {k.removeprefix("transformer.").removeprefix("denoise_model."): v for k, v in t.items()}
    wte = t.get("embed_tokens.weight", t.get("wte.weight"))
    b, p = ids.shape
    x = wte[ids] + t["wpe.weight"][:p]

    def ln(h, name):
        return F.layer_norm(h, (h.shape[-1],), t[f"{name}.weight"], t[f"{name}.bias"], 1e-5)

    def heads(h):
        return h.reshape(b, p, HEADS, -1).transpose(1, 2)

    for layer in range(LAYERS):
        pre = f"h.{layer}"
        qkv = ln(x, f"{pre}.ln_1") @ t[f"{pre}.attn.c_attn.weight"] + t[f"{pre}.attn.c_attn.bias"]
        q, k, v = qkv.split(WIDTH, -1)
        x = x + attention(heads(q), heads(k), heads(v), causal) @ t[f"{pre}.attn.c_proj.weight"] \
            + t[f"{pre}.attn.c_proj.bias"]
        h = ln(x, f"{pre}.ln_2") @ t[f"{pre}.mlp.c_fc.weight"] + t[f"{pre}.mlp.c_fc.bias"]
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
        x = x + h @ t[f"{pre}.mlp.c_proj.weight"] + t[f"{pre}.mlp.c_proj.bias"]
    return ln(x, "ln_f") @ t.get("lm_head.weight", wte).T


def llama_reference(t: dict, ids: torch.Tensor, causal: bool, theta: float, eps: float) -> torch.Tensor:
    """Llama / Qwen2 (Dream): RMSNorm, RoPE (rotate-half), grouped-query attention, SiLU-gated MLP; the
    q/k/v biases are used when stored (Qwen2)."""
    b, p = ids.shape
    d = WIDTH // HEADS
    x = t["model.embed_tokens.weight"][ids]
    freqs = torch.arange(p).float()[:, None] / theta ** (torch.arange(0, d, 2).float() / d)
    cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()

    def rms(h, name):
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * t[name]

    def rope(h):
        half = torch.cat([-h[..., d // 2:], h[..., :d // 2]], -1)
        return h * cos + half * sin

    def proj(h, name, n):
        out = h @ t[f"{name}.weight"].T + t.get(f"{name}.bias", 0)
        return out.reshape(b, p, n, d).transpose(1, 2)

    for layer in range(LAYERS):
        pre = f"model.layers.{layer}"
        h = rms(x, f"{pre}.input_layernorm.weight")
        q = rope(proj(h, f"{pre}.self_attn.q_proj", HEADS))
        k = rope(proj(h, f"{pre}.self_attn.k_proj", KV_HEADS)).repeat_interleave(HEADS // KV_HEADS, 1)
        v = proj(h, f"{pre}.self_attn.v_proj", KV_HEADS).repeat_interleave(HEADS // KV_HEADS, 1)
        x = x + attention(q, k, v, causal) @ t[f"{pre}.self_attn.o_proj.weight"].T
        h = rms(x, f"{pre}.post_attention_layernorm.weight")
        gate = F.silu(h @ t[f"{pre}.mlp.gate_proj.weight"].T) * (h @ t[f"{pre}.mlp.up_proj.weight"].T)
        x = x + gate @ t[f"{pre}.mlp.down_proj.weight"].T
    return rms(x, "model.norm.weight") @ t["lm_head.weight"].T


# --- shared checks ---------------------------------------------------------------------------------

def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def later_token_effect(model, ids):
    """Largest change of the logits before the last position when only the last token changes."""
    other = ids.clone()
    other[:, -1] = (other[:, -1] - 2 + 1) % (ARM_VOCAB - 2) + 2
    return (logits(model, ids)[:, :-1] - logits(model, other)[:, :-1]).abs().max().item()


def sample_ids(seed=0, length=10, high=ARM_VOCAB):
    return torch.randint(2, high, (2, length), generator=torch.Generator().manual_seed(seed))


def check_pair(pair, mask_token_id, reference, high=ARM_VOCAB):
    """(a) full attention for the MDM only, (b) the shift, (c) the mask id, (d) the original forward."""
    ids = sample_ids(high=high)
    assert is_bidirectional(pair.mdm) and not is_bidirectional(pair.arm)
    assert later_token_effect(pair.mdm, ids) > 1e-4
    assert later_token_effect(pair.arm, ids) == 0.0
    assert not pair.arm.training and not pair.mdm.training

    assert pair.shift is True
    slots = torch.tensor([[4, 7], [3, 9]])
    assert torch.equal(read_positions(slots, pair.shift), slots - 1)
    full = logits(pair.mdm, ids)
    assert torch.equal(slot_logits(pair.mdm, ids, slots, pair.shift), full[torch.arange(2)[:, None], slots - 1])

    assert pair.mask_token_id == mask_token_id == pair.tokenizer.mask_token_id == pair.mdm.config.mask_token_id
    assert mask_token_id < pair.mdm.get_input_embeddings().num_embeddings

    ref_arm, ref_mdm = reference
    torch.testing.assert_close(full, ref_mdm(ids, causal=False), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits(pair.arm, ids), ref_arm(ids, causal=True), atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def gpt2_arm(tmp_path_factory):
    return save_arm(tmp_path_factory.mktemp("gpt2") / "arm", randomized(GPT2LMHeadModel(gpt2_config(ARM_VOCAB)), 1))


# --- each layout -----------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["with_lm_head", "tied", "added_mask"])
def test_diffugpt_layouts(variant, gpt2_arm, tmp_path):
    rows = 102 if variant == "added_mask" else ARM_VOCAB  # DiffuGPT-M: GPT-2's vocab + [¨M¨], padded to even
    mdm_dir = write_diffugpt(tmp_path / "mdm", rows, lm_head=variant == "with_lm_head", seed=2)
    mask = ARM_VOCAB if variant == "added_mask" else 41
    extra = dict(mask_token="[¨M¨]", arm_mask_token_id=41) if variant == "added_mask" else {}
    register_local_pair(f"test-diffugpt-{variant}", gpt2_arm, mdm_dir, "diffugpt", mask, **extra)
    pair = load_pair(f"test-diffugpt-{variant}", device="cpu", dtype="float32")

    assert type(pair.mdm).__name__ == "GPT2LMHeadModel" and pair.mdm.get_input_embeddings().num_embeddings == rows
    arm_t, mdm_t = raw_tensors(gpt2_arm), raw_tensors(mdm_dir)
    tied = pair.mdm.lm_head.weight.data_ptr() == pair.mdm.transformer.wte.weight.data_ptr()
    assert tied == (variant != "with_lm_head")
    check_pair(pair, mask, (lambda ids, causal: gpt2_reference(arm_t, ids, causal),
                            lambda ids, causal: gpt2_reference(mdm_t, ids, causal)))

    if variant == "added_mask":  # the ARM has no row 100: it reads the stand-in 41 at masked slots
        assert pair.tokenizer.convert_ids_to_tokens(mask) == "[¨M¨]"
        assert pair.tokenizer("w5 [¨M¨] w7")["input_ids"] == [5, mask, 7]
        masked, stand_in = sample_ids(), sample_ids()
        masked[:, 6], stand_in[:, 6] = mask, 41
        torch.testing.assert_close(logits(pair.arm, masked), logits(pair.arm, stand_in), atol=0, rtol=0)
        assert logits(pair.mdm, masked).shape[-1] == rows
        assert pair.source["arm_mask_input"] == f"{mask} -> 41"
    else:
        assert pair.tokenizer.convert_ids_to_tokens(mask) == "w41", "an ordinary token keeps its text"
        assert pair.tokenizer("w41 w3")["input_ids"] == [41, 3]


def test_llama_sharded_bf16_through_checkpoint_dir(tmp_path):
    root = tmp_path / "models"
    save_arm(root / "arm", randomized(LlamaForCausalLM(LlamaConfig(**llama_common(ARM_VOCAB))), 3))
    mdm_dir = write_llama_mdm(root / "mdm", seed=4)
    registry.register_spec(PairSpec("test-llama", "nobody/arm", "nobody/mdm", "llama", 7, "llama"))
    pair = load_pair("test-llama", checkpoint_dir=root, device="cpu", dtype="float32")

    assert type(pair.mdm).__name__ == "LlamaForCausalLM" and pair.mdm.dtype == torch.float32
    arm_t, mdm_t = raw_tensors(root / "arm"), raw_tensors(mdm_dir)  # bf16 on disk, upcast exactly
    check_pair(pair, 7, (lambda ids, causal: llama_reference(arm_t, ids, causal, 10000.0, 1e-6),
                         lambda ids, causal: llama_reference(mdm_t, ids, causal, 10000.0, 1e-5)))
    assert pair.source == {"arm": str(root / "arm"), "mdm": str(mdm_dir)}

    half = load_pair("test-llama", checkpoint_dir=root, device="cpu", dtype="bfloat16")
    assert half.mdm.dtype == torch.bfloat16 and half.arm.dtype == torch.bfloat16


def test_dream_without_remote_code(tmp_path):
    arm_dir = save_arm(tmp_path / "arm", randomized(Qwen2ForCausalLM(Qwen2Config(**llama_common(DREAM_VOCAB))), 5),
                       n_words=DREAM_WORDS, eos="<|endoftext|>")  # AutoTokenizer gives Qwen2Tokenizer, as for Qwen2.5
    mdm_dir = write_dream(tmp_path / "mdm", seed=6)
    register_local_pair("test-dream", arm_dir, mdm_dir, "dream", DREAM_MASK, mask_token="<|mask|>")
    pair = load_pair("test-dream", device="cpu")  # dtype "auto" is float32 on the CPU

    assert type(pair.mdm).__name__ == "Qwen2ForCausalLM" and pair.mdm.dtype == torch.float32
    assert pair.mdm.model.layers[0].self_attn.q_proj.bias is not None
    arm_t, mdm_t = raw_tensors(arm_dir), raw_tensors(mdm_dir)
    check_pair(pair, DREAM_MASK, (lambda ids, causal: llama_reference(arm_t, ids, causal, 10000.0, 1e-6),
                                  lambda ids, causal: llama_reference(mdm_t, ids, causal, 50.0, 1e-6)),
               high=DREAM_WORDS)
    # Dream's mask is past the Qwen tokenizer, after one more added token: both land on the MDM's ids
    assert pair.tokenizer.convert_ids_to_tokens([DREAM_WORDS, DREAM_MASK]) == ["<|beginoftext|>", "<|mask|>"]
    assert pair.tokenizer("<|mask|>")["input_ids"] == [DREAM_MASK]
    assert "arm_mask_input" not in pair.source, "the ARM's embedding has a row for the mask id"


# --- where weights come from -----------------------------------------------------------------------

def fake_cache_entry(cache: Path, repo_id: str) -> Path:
    """The Hugging Face cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    entry = cache / f"models--{repo_id.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text("0123abcd")
    return entry / "snapshots" / "0123abcd"


def test_loads_from_the_local_hub_cache(gpt2_arm, tmp_path, monkeypatch):
    monkeypatch.delenv(real_pairs.MODELS_DIR_ENV, raising=False)
    cache = tmp_path / "hub"
    arm_snapshot = fake_cache_entry(cache, "tiny-org/arm")
    arm_snapshot.parent.mkdir(parents=True)
    arm_snapshot.symlink_to(gpt2_arm, target_is_directory=True)
    write_diffugpt(fake_cache_entry(cache, "tiny-org/mdm"), ARM_VOCAB, lm_head=False, seed=7)
    spec = PairSpec("test-cache", "tiny-org/arm", "tiny-org/mdm", "diffugpt", 41, "gpt2")
    pair = load_spec(spec, device="cpu", dtype="float32", cache_dir=cache)
    assert pair.source["mdm"].startswith(str(cache)) and pair.source["arm"].startswith(str(cache))


def test_missing_model_says_what_to_download(tmp_path, monkeypatch):
    monkeypatch.delenv(real_pairs.MODELS_DIR_ENV, raising=False)
    with pytest.raises(ParameterError) as err:
        load_pair("gpt2-diffugpt-s", device="cpu", cache_dir=tmp_path)
    message = str(err.value)
    assert message.startswith("model_pair: 'gpt2-diffugpt-s' is not on this machine")
    assert "hf download diffusionfamily/diffugpt-s" in message and "hf download gpt2" in message
    assert "huggingface-cli download diffusionfamily/diffugpt-s" in message and "mdm_path=" in message
    with pytest.raises(ParameterError, match="(?s)hf download meta-llama/Llama-2-7b-hf.*hf auth login"):
        load_pair("llama2-diffullama", device="cpu", cache_dir=tmp_path)


def test_offline_never_touches_the_network(gpt2_arm, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(real_pairs.MODELS_DIR_ENV, raising=False)
    calls = []
    real_snapshot = huggingface_hub.snapshot_download

    def local_only(repo_id, **kwargs):
        calls.append(repo_id)
        if kwargs.get("local_files_only") is not True:
            raise AssertionError(f"network look-up of {repo_id} while HF_HUB_OFFLINE=1")
        return real_snapshot(repo_id, **kwargs)

    def no_network(*args, **kwargs):
        raise AssertionError("a socket was opened while HF_HUB_OFFLINE=1")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", local_only)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)

    with pytest.raises(ParameterError, match="download: HF_HUB_OFFLINE is set"):
        load_pair("gpt2-diffugpt-s", device="cpu", download=True, cache_dir=tmp_path)
    with pytest.raises(ParameterError, match="hf download diffusionfamily/diffugpt-s"):
        load_pair("gpt2-diffugpt-s", device="cpu", cache_dir=tmp_path)
    assert "diffusionfamily/diffugpt-s" in calls
    mdm_dir = write_diffugpt(tmp_path / "mdm", ARM_VOCAB, lm_head=False, seed=8)
    pair = load_spec(PairSpec("test-offline", None, None, "diffugpt", 41, "gpt2", arm_path=str(gpt2_arm),
                              mdm_path=str(mdm_dir)), device="cpu")
    assert is_bidirectional(pair.mdm)


# --- bad input: one message naming the parameter ---------------------------------------------------

def test_bad_options(gpt2_arm, tmp_path, monkeypatch):
    mdm_dir = write_diffugpt(tmp_path / "mdm", ARM_VOCAB, lm_head=False, seed=9)
    register_local_pair("test-options", gpt2_arm, mdm_dir, "diffugpt", 41)
    with pytest.raises(ParameterError, match=r"dtype: expected one of \['auto', 'float32', 'bfloat16', 'float16'\]"):
        load_pair("test-options", device="cpu", dtype="float64")
    with pytest.raises(ParameterError, match="download: expected True or False"):
        load_pair("test-options", device="cpu", download="yes")
    monkeypatch.setattr(real_pairs, "has_accelerate", lambda: False)
    with pytest.raises(ParameterError, match="device_map: 'auto' needs the accelerate package.*pip install accelerate"):
        load_pair("test-options", device="cpu", device_map="auto")
    with pytest.raises(ParameterError, match="mdm_layout: expected one of"):
        register_local_pair("test-bad", gpt2_arm, mdm_dir, "diffullama", 41)
    with pytest.raises(ParameterError, match="name: 'embedded' is a built-in pair"):
        register_local_pair("embedded", gpt2_arm, mdm_dir, "diffugpt", 41)
    with pytest.raises(ParameterError, match="checkpoint_dir: expected an existing folder"):
        load_pair("test-options", checkpoint_dir=tmp_path / "nope", device="cpu")
    register_local_pair("test-nowhere", tmp_path / "nope", mdm_dir, "diffugpt", 41)
    with pytest.raises(ParameterError, match="arm_path: expected an existing folder"):
        load_pair("test-nowhere", device="cpu")


def test_mask_id_must_fit_the_checkpoints(gpt2_arm, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    (root / "arm").symlink_to(gpt2_arm, target_is_directory=True)
    write_diffugpt(root / "mdm", ARM_VOCAB, lm_head=False, seed=10)
    with pytest.raises(ParameterError, match="mask_token_id: 10541 is not below the MDM's vocabulary size 100"):
        load_pair("gpt2-diffugpt-s", checkpoint_dir=root, device="cpu")
    register_local_pair("test-no-stand-in", gpt2_arm, write_diffugpt(tmp_path / "big", 102, False, 11),
                        "diffugpt", ARM_VOCAB)
    with pytest.raises(ParameterError, match="arm_mask_token_id: the ARM has no token 100"):
        load_pair("test-no-stand-in", device="cpu")


def test_real_pairs_are_registered():
    from mechshift_utils.models import known_pairs

    assert {"gpt2-diffugpt-s", "gpt2-medium-diffugpt-m", "llama2-diffullama", "qwen2.5-dream"} <= set(known_pairs())
    specs = real_pairs.REAL_PAIRS
    assert [specs[n].mask_token_id for n in specs] == [10541, 50257, 811, 151666]
    assert all(s.shift for s in specs.values())
    assert specs["gpt2-medium-diffugpt-m"].arm_mask_token_id == 10541


# --- what a user sees when something is missing ------------------------------------------------------

def test_missing_model_message_names_the_routes_hf_by_its_path_and_incomplete_folders(tmp_path, monkeypatch):
    import sys

    models_dir = tmp_path / "models"
    (models_dir / "diffugpt-s").mkdir(parents=True)  # made, never filled
    (models_dir / "arm").mkdir()
    (models_dir / "arm" / "config.json").write_text("{}")
    monkeypatch.setenv(real_pairs.MODELS_DIR_ENV, str(models_dir))
    with pytest.raises(ParameterError) as err:
        load_pair("gpt2-diffugpt-s", device="cpu", cache_dir=tmp_path / "hub")
    message = str(err.value)
    hf = Path(sys.executable).parent / "hf"
    assert hf.exists() and f"{hf} download diffusionfamily/diffugpt-s" in message and f"{hf} download gpt2" in message
    assert "./run_all.sh -p model_pair my_pair.json" in message
    assert f"{models_dir / 'diffugpt-s'}: empty" in message
    assert f"{models_dir / 'arm'}: no weights (*.safetensors); it holds config.json" in message
    monkeypatch.setattr(real_pairs.sys, "executable", str(tmp_path / "elsewhere" / "python"))
    assert real_pairs.hf_command() == "hf", "no hf beside the interpreter: the plain command"


def test_missing_tokenizer_files_are_named_with_their_folder(gpt2_arm, tmp_path):
    import shutil

    arm = tmp_path / "arm"
    shutil.copytree(gpt2_arm, arm)
    (arm / "tokenizer.json").unlink()
    mdm_dir = write_diffugpt(tmp_path / "mdm", ARM_VOCAB, lm_head=False, seed=12)
    register_local_pair("test-no-tokenizer", arm, mdm_dir, "diffugpt", 41)
    with pytest.raises(ParameterError) as err:
        load_pair("test-no-tokenizer", device="cpu")
    message = str(err.value)
    assert message.startswith(f"arm_path: no tokenizer in {arm}: expected tokenizer.json, or tokenizer.model, or "
                              "vocab.json with merges.txt; the folder holds config.json")
    (arm / "vocab.json").write_text("{}")
    with pytest.raises(ParameterError, match=r"\(missing: merges\.txt beside vocab\.json\)"):
        load_pair("test-no-tokenizer", device="cpu")


def _word_level_arm(folder: Path) -> Path:
    """An ARM over the embedded tasks' word-level tokenizer, which has its own [MASK]."""
    from mechshift_utils.models.embedded import ArmConfig, new_arm
    from mechshift_utils.tasks import build_word_tokenizer

    tokenizer = build_word_tokenizer()
    new_arm(tokenizer, ArmConfig(n_layer=1, n_head=2, n_embd=16), seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_pair_files_mask_id_is_never_silently_ignored(tmp_path):
    """A pair file over a word-level tokenizer: a mask id other than the tokenizer's [MASK] stops at
    loading and at encoding; the right one loads, and the tasks it reads are the word-level ones."""
    from mechshift_utils import tasks
    from mechshift_utils.models import load_pair_tokenizer, register_pair_file

    arm = _word_level_arm(tmp_path / "arm")
    _word_level_arm(tmp_path / "mdm")
    own = tasks.build_word_tokenizer().mask_token_id
    spec = {"name": "test-word-level", "arm": "arm", "mdm": "mdm", "layout": "hf", "mask_token_id": own + 7}
    (tmp_path / "pair.json").write_text(json.dumps(spec))
    name = register_pair_file(tmp_path / "pair.json")
    message = (f"mask_token_id: pair 'test-word-level' gives {own + 7}, but the ARM's tokenizer in {arm} has its own "
               f"mask token '[MASK]' with id {own}; set the pair's mask_token_id to {own}")
    with pytest.raises(ParameterError, match=re.escape(message)):
        load_pair(name, device="cpu")
    with pytest.raises(ParameterError, match=re.escape(message)):
        load_pair_tokenizer(name)
    (tmp_path / "pair.json").write_text(json.dumps({**spec, "mask_token_id": own}))
    name = register_pair_file(tmp_path / "pair.json")
    pair = load_pair(name, device="cpu")
    tokenizer = load_pair_tokenizer(name)
    examples = tasks.task_examples("ioi", 3, 0, tokenizer)  # what notebook 01 shows: the form it scores
    assert [e.to_dict() for e in examples] == [e.to_dict() for e in tasks.generate("ioi", 3, 0)]
    data = tasks.encode_for(examples, pair.tokenizer, pair.mask_token_id)
    assert (data.clean_ids == own).sum() == 3
    with pytest.raises(ParameterError, match=r"mask_token_id: the word-level tokenizer masks with its own \[MASK\]"):
        tasks.encode_for(examples, pair.tokenizer, own + 7)
