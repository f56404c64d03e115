"""Reading each published checkpoint layout into a plain ``transformers`` class, and the mask token.

No model's remote code is ever run: every MDM is read in its own layout and mapped onto the
class of its ARM (GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM), one loader per layout
(:data:`LOADERS`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..core.validation import ParameterError, check_choice
from .arch import SUPPORTED

LAYOUTS = ("hf", "llama", "diffugpt", "dream")
"""How a checkpoint folder is laid out:

``hf``: any folder ``AutoModelForCausalLM`` reads (the ARMs, or your own MDM saved
with ``save_pretrained``); ``llama``: the same, required to be a Llama checkpoint
(DiffuLLaMA: sharded safetensors, keys ``model.*`` and ``lm_head.weight``);
``diffugpt``: DiffuGPT's wrapper save, keys ``embed_tokens.weight`` (GPT-2's token
embedding), ``denoise_model.*`` (the GPT-2 transformer without ``wte``) and
optionally ``lm_head.weight``, beside a GPT-2 ``config.json``; ``dream``: Dream's
remote-code checkpoint (``model_type`` "Dream"), a Qwen2 network with Qwen2's
weight names, read into ``Qwen2ForCausalLM`` from a translated config.
"""


# Buffers that old saves carry and the current classes rebuild: never a sign of a wrong layout.
_HARMLESS_EXTRA_KEYS = re.compile(r"(\.attn\.(bias|masked_bias)|rotary_emb\.inv_freq)$")
_MAX_ADDED_TOKENS = 256


# --- reading each layout ---------------------------------------------------------------------------

def _read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / n for n in names]
    return sorted(folder.glob("*.safetensors"))


def _tensor_shapes(folder: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    shapes = {}
    for file in _safetensors_files(folder):
        with safe_open(str(file), framework="pt") as f:
            shapes.update({k: f.get_slice(k).get_shape() for k in f.keys()})
    return shapes


def _read_tensor(folder: Path, name: str) -> torch.Tensor:
    from safetensors import safe_open

    for file in _safetensors_files(folder):
        with safe_open(str(file), framework="pt") as f:
            if name in f.keys():
                return f.get_tensor(name)
    raise KeyError(name)


def embedding_rows(folder: Path) -> int | None:
    """Rows of a checkpoint's token embedding, read from the safetensors headers (no weights loaded)."""
    for name, shape in _tensor_shapes(folder).items():
        if name.endswith(("embed_tokens.weight", "wte.weight")):
            return shape[0]
    return None


def _from_pretrained(cls, folder: Path, dtype: torch.dtype, device_map, **kwargs):
    """``cls.from_pretrained`` on a local folder; a missing weight or an unmapped one is an error, since
    either means the folder is not in the layout we were told."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    extra = {} if device_map is None else {"device_map": device_map}
    model, info = cls.from_pretrained(str(folder), dtype=dtype, local_files_only=True, output_loading_info=True,
                                      **extra, **kwargs)
    unexpected = sorted(k for k in info["unexpected_keys"] if not _HARMLESS_EXTRA_KEYS.search(k))
    for what, keys in (("missing", sorted(info["missing_keys"])), ("unmapped", unexpected)):
        if keys:
            raise ParameterError(f"checkpoint: {folder} does not match its layout ({type(model).__name__}); "
                                 f"{what} weights: {keys[:5]}{' ...' if len(keys) > 5 else ''}")
    return model.eval()


def load_hf(folder, dtype=torch.float32, device_map=None):
    """A standard causal-LM folder (the ARMs), through AutoModelForCausalLM; the class must be one the
    attribution engine knows (mechshift_utils.models.arch.SUPPORTED)."""
    from transformers import AutoModelForCausalLM

    model = _from_pretrained(AutoModelForCausalLM, Path(folder), dtype, device_map)
    if type(model).__name__ not in SUPPORTED:
        raise ParameterError(f"checkpoint: {folder} holds a {type(model).__name__}; "
                             f"expected one of {sorted(SUPPORTED)}")
    return model


def load_llama(folder, dtype=torch.float32, device_map=None):
    """A plain Llama checkpoint (DiffuLLaMA): model_type "llama", keys ``model.*`` and ``lm_head.weight``."""
    from transformers import LlamaForCausalLM

    folder = Path(folder)
    kind = _read_config(folder).get("model_type")
    if kind != "llama":
        raise ParameterError(f"layout: 'llama' expects a config.json with model_type 'llama' in {folder}, got {kind!r}")
    return _from_pretrained(LlamaForCausalLM, folder, dtype, device_map)


def load_diffugpt(folder, dtype=torch.float32, device_map=None):
    """DiffuGPT's save read into GPT2LMHeadModel.

    DiffuGPT wraps GPT-2 as ``embed_tokens`` (GPT-2's ``wte``) + ``denoise_model``
    (GPT-2's transformer fed embeddings) + ``lm_head``, so its keys are renamed
    ``embed_tokens.`` -> ``transformer.wte.`` and ``denoise_model.`` -> ``transformer.``.
    The vocabulary size comes from the embedding, not config.json: DiffuGPT-M grew
    it by its added mask token. ``lm_head.weight`` absent (or equal to the
    embedding) means tied; a different one is kept untied.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    raw = _read_config(folder)
    if raw.get("model_type") != "gpt2":
        raise ParameterError(f"layout: 'diffugpt' expects a GPT-2 config.json in {folder}, "
                             f"got model_type {raw.get('model_type')!r}")
    shapes = _tensor_shapes(folder)
    if "embed_tokens.weight" not in shapes or not any(k.startswith("denoise_model.") for k in shapes):
        raise ParameterError(f"layout: 'diffugpt' expects embed_tokens.weight and denoise_model.* weights in "
                             f"{folder}, found {sorted(shapes)[:5]}")
    config = GPT2Config.from_pretrained(str(folder), local_files_only=True)
    config.vocab_size = shapes["embed_tokens.weight"][0]
    config.tie_word_embeddings = "lm_head.weight" not in shapes or torch.equal(
        _read_tensor(folder, "lm_head.weight"), _read_tensor(folder, "embed_tokens.weight"))
    mapping = {r"^embed_tokens\.": "transformer.wte.", r"^denoise_model\.": "transformer."}
    return _from_pretrained(GPT2LMHeadModel, folder, dtype, device_map, config=config, key_mapping=mapping)


def dream_to_qwen2_config(raw: dict):
    """A Qwen2Config for Dream's config.json: Dream's network is Qwen2's (same weight names, biases on
    q/k/v only, RoPE, RMSNorm, SiLU MLP); its attention never uses a sliding window."""
    from transformers import Qwen2Config

    theta = raw.get("rope_theta", 10000.0)
    rope = dict(raw.get("rope_scaling") or {})
    if "type" in rope:
        rope["rope_type"] = rope.pop("type")
    rope = {"rope_type": "default", **rope, "rope_theta": theta}
    keep = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
            "tie_word_embeddings", "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id")
    fields = {k: raw[k] for k in keep if k in raw}
    config = Qwen2Config(**fields, rope_parameters=rope, use_sliding_window=False, use_cache=False)
    head_dim = raw.get("head_dim")
    if head_dim is not None and head_dim != config.hidden_size // config.num_attention_heads:
        raise ParameterError(f"checkpoint: Dream config has head_dim {head_dim}, but Qwen2 derives "
                             f"{config.hidden_size // config.num_attention_heads} from hidden_size/num_attention_heads")
    if "mask_token_id" in raw:
        config.mask_token_id = raw["mask_token_id"]
    return config


def load_dream(folder, dtype=torch.float32, device_map=None):
    """Dream's checkpoint in Qwen2ForCausalLM, without trust_remote_code: only config.json is translated
    (the weights already carry Qwen2's names: ``model.embed_tokens``, ``model.layers.N.*``,
    ``model.norm``, ``lm_head``)."""
    from transformers import Qwen2ForCausalLM

    folder = Path(folder)
    raw = _read_config(folder)
    if str(raw.get("model_type", "")).lower() not in {"dream", "qwen2"}:
        raise ParameterError(f"layout: 'dream' expects a config.json with model_type 'Dream' in {folder}, "
                             f"got {raw.get('model_type')!r}")
    return _from_pretrained(Qwen2ForCausalLM, folder, dtype, device_map, config=dream_to_qwen2_config(raw))


LOADERS = {"hf": load_hf, "llama": load_llama, "diffugpt": load_diffugpt, "dream": load_dream}


def load_model(folder, layout: str, dtype=torch.float32, device_map=None):
    check_choice("layout", layout, LAYOUTS)
    return LOADERS[layout](folder, dtype=dtype, device_map=device_map)


# --- mask token ------------------------------------------------------------------------------------

def added_token_names(folder) -> dict[int, str]:
    """Token id -> text of the tokens a tokenizer folder adds to its base vocabulary (tokenizer.json,
    tokenizer_config.json's added_tokens_decoder, added_tokens.json); empty when there are none."""
    if folder is None:
        return {}
    folder, names = Path(folder), {}
    if (folder / "added_tokens.json").is_file():
        names.update({int(i): t for t, i in json.loads((folder / "added_tokens.json").read_text()).items()})
    if (folder / "tokenizer_config.json").is_file():
        decoder = json.loads((folder / "tokenizer_config.json").read_text()).get("added_tokens_decoder", {})
        names.update({int(i): t["content"] for i, t in decoder.items()})
    if (folder / "tokenizer.json").is_file():
        added = json.loads((folder / "tokenizer.json").read_text()).get("added_tokens", [])
        names.update({int(t["id"]): t["content"] for t in added})
    return names


def attach_mask_token(tokenizer, mask_token_id: int, mask_token: str | None = None, mdm_dir=None):
    """Make ``tokenizer.mask_token_id == mask_token_id`` (the notebooks write [MASK] through it).

    A mask inside the ARM's vocabulary (DiffuGPT-S, DiffuLLaMA) just becomes the named
    mask token; its text and how text is tokenized stay as they were. A mask past it
    (DiffuGPT-M, Dream) is added as a special token with the MDM's own text for it
    (from the MDM folder's tokenizer files, else ``mask_token``), after any tokens the
    MDM added before it (Dream's 151665), so that every id lands where the MDM has it.
    """
    size = len(tokenizer)
    if mask_token_id >= size:
        from tokenizers import AddedToken

        if mask_token_id - size >= _MAX_ADDED_TOKENS:
            raise ParameterError(f"mask_token_id: {mask_token_id} is far past the tokenizer's {size} tokens; "
                                 "expected the mask inside its vocabulary or just after it")
        names = added_token_names(mdm_dir)
        names.setdefault(mask_token_id, mask_token or "<|mask|>")
        for i in range(size, mask_token_id + 1):
            text = names.get(i, f"<|mechshift_unused_{i}|>")
            tokenizer.add_tokens([AddedToken(text, special=True, normalized=False)], special_tokens=True)
            if tokenizer.convert_tokens_to_ids(text) != i:
                raise ParameterError(f"mask_token_id: could not give {text!r} id {i} in the ARM's tokenizer "
                                     f"(it got {tokenizer.convert_tokens_to_ids(text)})")
    tokenizer.mask_token_id = mask_token_id
    return tokenizer


def substitute_arm_mask(arm, mask_token_id: int, stand_in: int):
    """Let a causal ARM read a sequence that holds the MDM's mask id past its vocabulary.

    Both models of a pair get the identical token ids (mechshift_utils.evaluation.scoring). Under
    the shift, slot j is predicted at j - 1, and a causal ARM never sees j or later, so
    the token at a still-masked slot cannot change any ARM prediction for that slot or an
    earlier one; it only has to be a token the ARM has. A pre-hook on the input embedding
    replaces the mask id with ``stand_in``; the ARM's weights and vocabulary are untouched.
    """
    rows = arm.get_input_embeddings().num_embeddings
    if not 0 <= stand_in < rows:
        raise ParameterError(f"arm_mask_token_id: expected a token id below the ARM's {rows}, got {stand_in}")

    def replace_mask(module, args):
        return (args[0].masked_fill(args[0] == mask_token_id, stand_in), *args[1:])

    return arm.get_input_embeddings().register_forward_pre_hook(replace_mask)
