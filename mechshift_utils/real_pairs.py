"""The real ARM/MDM pairs of the paper, loaded as plain ``transformers`` models.

Importing this module registers every pair of :data:`REAL_PAIRS` with
:func:`mechshift_utils.models.register_pair`, so that::

    import mechshift_utils.real_pairs  # noqa: F401  (registers the pairs)
    pair = load_pair("gpt2-diffugpt-s", device="auto", dtype="auto")

returns a :class:`~mechshift_utils.models.ModelPair` whose two models are
standard causal-LM classes (GPT2LMHeadModel, LlamaForCausalLM,
Qwen2ForCausalLM), the MDM with full attention (``config.is_causal = False``).
No model's remote code is ever run: the MDM checkpoints are read in their own
layouts and mapped onto those classes (see :data:`LAYOUTS`).

Where the weights come from (first match wins, per model):

1. ``arm_path=`` / ``mdm_path=`` given to :func:`load_pair` (or the folders of a
   pair added with :func:`register_local_pair`);
2. ``checkpoint_dir`` (or ``$MECHSHIFT_MODELS_DIR``): ``<dir>/arm`` or ``<dir>/mdm``,
   ``<dir>/<repo id>`` (e.g. ``<dir>/diffusionfamily/diffugpt-s``, what
   ``hf download <repo> --local-dir <dir>/<repo>`` writes) or ``<dir>/<repo name>``;
3. the local Hugging Face cache (``snapshot_download(..., local_files_only=True)``);
4. only with ``download=True``: a download into that cache.

Without ``download=True`` nothing ever touches the network; with
``HF_HUB_OFFLINE`` set, ``download=True`` is refused with a clear message. A
model found nowhere stops with one :class:`ParameterError` that gives the
``hf download`` command for each missing model and how to point at a folder.

Options of the loader (all passed through ``load_pair``): ``dtype`` ("auto":
bfloat16 on CUDA, float32 elsewhere; or "float32", "bfloat16", "float16"),
``device_map`` ("pair": each model whole on its own GPU, the way to spread a 7B
pair over two GPUs; "auto" and other accelerate maps split each model over the
GPUs, which loads but is not what the attribution engine was measured with), ``arm_path``, ``mdm_path``,
``download``, ``cache_dir``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .arch import SUPPORTED
from .models import ModelPair, register_pair, set_bidirectional
from .runtime import resolve_device
from .validation import ParameterError, check_choice, check_existing_dir

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

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODELS_DIR_ENV = "MECHSHIFT_MODELS_DIR"
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]  # weights, configs, tokenizers; no code
# Buffers that old saves carry and the current classes rebuild: never a sign of a wrong layout.
_HARMLESS_EXTRA_KEYS = re.compile(r"(\.attn\.(bias|masked_bias)|rotary_emb\.inv_freq)$")
# GPT-2's checkpoints moved to the openai-community organisation; the cache may hold either name.
_CACHE_ALIASES = {"gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium"}
_MAX_ADDED_TOKENS = 256


@dataclass(frozen=True)
class PairSpec:
    """One ARM and its post-trained MDM: where they live, how the MDM is saved, its mask token.

    ``mask_token``: the text of the mask token when the MDM added it past the ARM's
    tokenizer (DiffuGPT-M's ``[¨M¨]``, Dream's ``<|mask|>``); None when the mask is
    an ordinary token both share (DiffuGPT-S 10541, DiffuLLaMA 811).
    ``arm_mask_token_id``: the token the ARM reads at masked slots when its own
    embedding has no row for ``mask_token_id`` (see :func:`substitute_arm_mask`).
    """

    name: str
    arm_id: str | None
    mdm_id: str | None
    mdm_layout: str
    mask_token_id: int
    family: str
    mask_token: str | None = None
    arm_mask_token_id: int | None = None
    arm_layout: str = "hf"
    arm_path: str | None = None
    mdm_path: str | None = None
    shift: bool = True  # DiffuGPT, DiffuLLaMA and Dream all read the logits for token j at j - 1
    gated: bool = False
    hardware: str = ""
    notes: str = ""

    def validate(self) -> "PairSpec":
        check_choice("mdm_layout", self.mdm_layout, LAYOUTS)
        check_choice("arm_layout", self.arm_layout, LAYOUTS)
        for what, value in (("mask_token_id", self.mask_token_id), ("arm_mask_token_id", self.arm_mask_token_id)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ParameterError(f"{what}: expected a non-negative integer token id, got {value!r}")
        for role in ("arm", "mdm"):
            if getattr(self, f"{role}_id") is None and getattr(self, f"{role}_path") is None:
                raise ParameterError(f"{role}_path: expected a folder (or a hub id) for the {role.upper()} "
                                     f"of pair {self.name!r}, got neither")
        return self


GPT2_HARDWARE = "{n} parameters per model, ~{gb} GB each in float32: a CPU is enough, a GPU is faster."
BIG_HARDWARE = ("{n} parameters per model, ~{gb} GB each in bfloat16 ({pair} GB for the pair): one GPU with "
                "40 GB or more (80 GB for EAP-IG at K = 1000), or device_map='pair' over two GPUs.")

REAL_PAIRS: dict[str, PairSpec] = {s.name: s for s in [
    PairSpec("gpt2-diffugpt-s", "gpt2", "diffusionfamily/diffugpt-s", "diffugpt", 10541, "gpt2",
             hardware=GPT2_HARDWARE.format(n="124M", gb="0.5"),
             notes="DiffuGPT-S reuses GPT-2 token 10541 as its mask; both models read the same ids."),
    PairSpec("gpt2-medium-diffugpt-m", "gpt2-medium", "diffusionfamily/diffugpt-m", "diffugpt", 50257, "gpt2",
             mask_token="[¨M¨]", arm_mask_token_id=10541,
             hardware=GPT2_HARDWARE.format(n="355M", gb="1.4"),
             notes="DiffuGPT-M added [¨M¨] as token 50257 (its embedding has 50258+ rows); GPT-2 medium has "
                   "no such row, so the ARM reads 10541 (DiffuGPT-S's mask) at masked slots instead."),
    PairSpec("llama2-diffullama", "meta-llama/Llama-2-7b-hf", "diffusionfamily/diffullama", "llama", 811, "llama",
             gated=True, hardware=BIG_HARDWARE.format(n="6.7B", gb="13.5", pair="27"),
             notes="DiffuLLaMA is a plain Llama checkpoint used with full attention; mask = Llama token 811."),
    PairSpec("qwen2.5-dream", "Qwen/Qwen2.5-7B", "Dream-org/Dream-v0-Base-7B", "dream", 151666, "qwen2",
             mask_token="<|mask|>", hardware=BIG_HARDWARE.format(n="7.6B", gb="15", pair="30"),
             notes="Dream ships remote code; it is read into Qwen2ForCausalLM without running that code."),
]}


# --- registration ----------------------------------------------------------------------------------

def register_spec(spec: PairSpec) -> PairSpec:
    """Make ``load_pair(spec.name, ...)`` load this pair (and list it in ``known_pairs()``)."""
    spec.validate()

    def loader(checkpoint_dir=None, device="auto", **options):
        return load_spec(spec, checkpoint_dir=checkpoint_dir, device=device, **options)

    loader.__doc__ = f"Load the {spec.name} pair (see mechshift_utils.real_pairs.load_spec)."
    register_pair(spec.name, loader)
    _SPECS[spec.name] = spec
    return spec


def register_local_pair(name: str, arm_path: str | Path, mdm_path: str | Path, layout: str,
                        mask_token_id: int, *, mask_token: str | None = None,
                        arm_mask_token_id: int | None = None, arm_layout: str = "hf",
                        notes: str = "") -> PairSpec:
    """Add your own pair from two local folders, without touching the notebooks.

    Example (a Llama ARM and an MDM post-trained from it, saved as plain Llama)::

        from mechshift_utils.real_pairs import register_local_pair
        register_local_pair("my-pair", "/models/my-arm", "/models/my-mdm", layout="llama", mask_token_id=811)
        pair = load_pair("my-pair")

    Notebooks run in their own kernel: give them the pair as a JSON file instead
    (:func:`register_pair_file`), ``./run_all.sh -p model_pair my-pair.json``.

    ``layout`` is the MDM's folder layout, one of :data:`LAYOUTS`; ``arm_layout``
    the ARM's (default "hf"). ``mask_token`` names the mask when the MDM added it
    past the ARM's tokenizer; ``arm_mask_token_id`` is the token the ARM reads at
    masked slots when its vocabulary is smaller than ``mask_token_id``. The
    folders are checked when the pair is loaded. Registering the same local name
    again replaces it; the built-in names and "embedded" are refused.
    """
    if not isinstance(name, str) or not name:
        raise ParameterError(f"name: expected a non-empty string, got {name!r}")
    if name == "embedded" or name in REAL_PAIRS:
        raise ParameterError(f"name: {name!r} is a built-in pair; choose another name")
    spec = PairSpec(name, None, None, layout, mask_token_id, family="local", mask_token=mask_token,
                    arm_mask_token_id=arm_mask_token_id, arm_layout=arm_layout,
                    arm_path=str(arm_path), mdm_path=str(mdm_path), notes=notes)
    return register_spec(spec)


PAIR_FILE_KEYS = {"name", "arm", "mdm", "layout", "mask_token_id", "mask_token", "arm_mask_token_id",
                  "arm_layout", "notes"}


def register_pair_file(path) -> str:
    """Register the pair a JSON file describes and return its name: how a notebook (a separate kernel)
    gets your own pair, with ``-p model_pair path/to/pair.json``. The file holds ``name``, ``arm`` and
    ``mdm`` (folders; relative ones are relative to the file), ``layout`` and ``mask_token_id``, and
    optionally ``mask_token``, ``arm_mask_token_id``, ``arm_layout``, ``notes`` (as
    :func:`register_local_pair`)."""
    file = Path(path)
    if not file.is_file():
        raise ParameterError(f"model_pair: no pair file at {file}")
    try:
        spec = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ParameterError(f"model_pair: {file} is not valid JSON ({err})") from None
    if not isinstance(spec, dict):
        raise ParameterError(f"model_pair: {file} must hold a JSON object, got {type(spec).__name__}")
    missing = {"name", "arm", "mdm", "layout", "mask_token_id"} - set(spec)
    unknown = set(spec) - PAIR_FILE_KEYS
    if missing or unknown:
        raise ParameterError(f"model_pair: {file} must have the keys name, arm, mdm, layout, mask_token_id "
                             f"(missing: {sorted(missing)}; unknown: {sorted(unknown)})")
    folder = file.resolve().parent
    options = {k: spec[k] for k in ("mask_token", "arm_mask_token_id", "arm_layout", "notes") if k in spec}
    register_local_pair(spec["name"], folder / spec["arm"], folder / spec["mdm"], spec["layout"],
                        spec["mask_token_id"], **options)
    return spec["name"]


def pair_spec(name: str) -> PairSpec:
    if name not in _SPECS:
        raise ParameterError(f"model_pair: expected one of {sorted(_SPECS)}, got {name!r}")
    return _SPECS[name]


# --- options ---------------------------------------------------------------------------------------

def resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    """"auto": bfloat16 on CUDA (7B pairs fit one GPU), float32 elsewhere (CPU bfloat16 is slow and
    coarse for attribution scores)."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ParameterError(f"dtype: expected one of {['auto', *DTYPES]}, got {dtype!r}")


def check_device_map(device_map):
    """``"pair"``: each model whole on its own GPU (the ARM on cuda:0, the MDM on cuda:1 when there are
    two); any other value goes to ``from_pretrained`` as it is (e.g. "auto" splits each model over the
    GPUs) and needs accelerate, so say so up front."""
    if device_map is None or device_map == "":
        return None
    if device_map == "pair":
        return device_map
    if not isinstance(device_map, (str, dict)):
        raise ParameterError(f"device_map: expected None, a string such as 'auto', or a dict, got {device_map!r}")
    if not has_accelerate():
        raise ParameterError(f"device_map: {device_map!r} needs the accelerate package, which is not "
                             "installed: pip install accelerate (or leave device_map=None)")
    return device_map


def pair_devices(device: torch.device) -> tuple[torch.device, torch.device]:
    """Devices for device_map="pair": two GPUs when there are two, else both models on ``device``."""
    if device.type == "cuda" and torch.cuda.device_count() > 1:
        return torch.device("cuda:0"), torch.device("cuda:1")
    return device, device


def has_accelerate() -> bool:
    return importlib.util.find_spec("accelerate") is not None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, looked up now (not at import) so it can be set late."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


# --- where the weights are -------------------------------------------------------------------------

def has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (
        any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin")))


def _candidates(root: Path, role: str, repo_id: str | None) -> list[Path]:
    out = [root / role]
    if repo_id:
        out += [root / repo_id, root / repo_id.split("/")[-1]]
    return out


def _from_cache(repo_id: str, cache_dir) -> Path | None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    for rid in (repo_id, _CACHE_ALIASES.get(repo_id)):
        if rid is None:
            continue
        try:
            folder = Path(huggingface_hub.snapshot_download(rid, local_files_only=True, cache_dir=cache_dir))
        except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
            continue
        if has_weights(folder):
            return folder
    return None


def _download(repo_id: str, cache_dir) -> Path:
    import huggingface_hub

    if hub_offline():
        raise ParameterError(f"download: HF_HUB_OFFLINE is set, so {repo_id} is not downloaded")
    folder = Path(huggingface_hub.snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=DOWNLOAD_PATTERNS))
    if not has_weights(folder):
        raise ParameterError(f"download: {repo_id} was downloaded to {folder} but has no config.json with "
                             "safetensors weights beside it")
    return folder


def _roots(checkpoint_dir) -> list[Path]:
    """The folders that may hold both models: checkpoint_dir, then $MECHSHIFT_MODELS_DIR."""
    roots = []
    for name, value in (("checkpoint_dir", checkpoint_dir), (MODELS_DIR_ENV, os.environ.get(MODELS_DIR_ENV))):
        if value:
            roots.append(check_existing_dir(name, value))
    return roots


def locate(role: str, repo_id: str | None, path=None, roots=(), download: bool = False,
           cache_dir=None) -> Path | None:
    """The folder of one model (see the module docstring for the order), or None when it is nowhere."""
    if path is not None:
        folder = Path(path)
        if not has_weights(folder):
            raise ParameterError(f"{role}_path: expected an existing folder with config.json and safetensors "
                                 f"weights, got {str(path)!r}")
        return folder
    for root in roots:
        for folder in _candidates(root, role, repo_id):
            if has_weights(folder):
                return folder
    if repo_id is None:
        return None
    cached = _from_cache(repo_id, cache_dir)
    if cached is not None:
        return cached
    return _download(repo_id, cache_dir) if download else None


def locate_pair(spec: PairSpec, checkpoint_dir=None, arm_path=None, mdm_path=None, download: bool = False,
                cache_dir=None) -> tuple[Path, Path]:
    """Both folders, or one ParameterError naming every missing model and how to get it."""
    if download is not False and download is not True:
        raise ParameterError(f"download: expected True or False, got {download!r}")
    if download and hub_offline():
        raise ParameterError("download: HF_HUB_OFFLINE is set, so nothing is downloaded; unset it to download, "
                             "or download elsewhere and pass checkpoint_dir=/arm_path=/mdm_path=")
    roots = _roots(checkpoint_dir)
    found = {role: locate(role, getattr(spec, f"{role}_id"), given or getattr(spec, f"{role}_path"),
                          roots, download, cache_dir)
             for role, given in (("arm", arm_path), ("mdm", mdm_path))}
    missing = [f"{role.upper()} {repo}: hf download {repo}   (or: huggingface-cli download {repo})"
               for role, repo in (("arm", spec.arm_id), ("mdm", spec.mdm_id)) if found[role] is None]
    if missing:
        gated = (f"\n{spec.arm_id} is gated: accept its licence on huggingface.co/{spec.arm_id} and run "
                 "`hf auth login` first." if spec.gated else "")
        raise ParameterError(
            f"model_pair: {spec.name!r} is not on this machine (looked in arm_path/mdm_path, checkpoint_dir, "
            f"${MODELS_DIR_ENV} and the Hugging Face cache; nothing is downloaded unless asked). Get it with\n  "
            + "\n  ".join(missing)
            + f"\nor call load_pair({spec.name!r}, download=True) to fetch it into the cache, or point at "
              "folders: load_pair(..., arm_path='/path/arm', mdm_path='/path/mdm') or checkpoint_dir= a folder "
              "holding arm/ and mdm/." + gated)
    return found["arm"], found["mdm"]


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


def check_mask_fits(spec: PairSpec, mdm_dir: Path, rows: int | None) -> None:
    if rows is not None and spec.mask_token_id >= rows:
        raise ParameterError(f"mask_token_id: {spec.mask_token_id} is not below the MDM's vocabulary size "
                             f"{rows} ({mdm_dir}); is this the right checkpoint for {spec.name!r}?")


def check_arm_stand_in(spec: PairSpec, arm_rows: int | None) -> bool:
    """True when the ARM lacks the mask id and reads ``spec.arm_mask_token_id`` there instead."""
    if arm_rows is None or spec.mask_token_id < arm_rows:
        return False
    if spec.arm_mask_token_id is None:
        raise ParameterError(f"arm_mask_token_id: the ARM has no token {spec.mask_token_id} (the MDM's mask); "
                             "give a token id it has, read at masked slots instead")
    return True


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
    attribution engine knows (mechshift_utils.arch.SUPPORTED)."""
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

    Both models of a pair get the identical token ids (mechshift_utils.scoring). Under
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


# --- the pair --------------------------------------------------------------------------------------

def load_spec(spec: PairSpec, checkpoint_dir=None, device: str = "auto", *, dtype="auto", device_map=None,
              arm_path=None, mdm_path=None, download: bool = False, cache_dir=None) -> ModelPair:
    """Load one pair: both models in eval mode, the ARM causal and the MDM bidirectional, the ARM's
    tokenizer with the MDM's mask token. Every option is checked before any weight is read."""
    from transformers import AutoTokenizer

    spec.validate()
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    device_map = check_device_map(device_map)
    arm_dir, mdm_dir = locate_pair(spec, checkpoint_dir, arm_path, mdm_path, download, cache_dir)
    check_mask_fits(spec, mdm_dir, embedding_rows(mdm_dir))
    check_arm_stand_in(spec, embedding_rows(arm_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(arm_dir), local_files_only=True)  # cheap: before the weights
    attach_mask_token(tokenizer, spec.mask_token_id, spec.mask_token, mdm_dir)

    split = None if device_map == "pair" else device_map
    arm = set_bidirectional(load_model(arm_dir, spec.arm_layout, torch_dtype, split), False)
    mdm = set_bidirectional(load_model(mdm_dir, spec.mdm_layout, torch_dtype, split), True)
    check_mask_fits(spec, mdm_dir, mdm.get_input_embeddings().num_embeddings)
    mdm.config.mask_token_id = spec.mask_token_id
    if device_map == "pair":
        arm_dev, mdm_dev = pair_devices(dev)
        arm, mdm = arm.to(arm_dev), mdm.to(mdm_dev)
        dev = mdm_dev
    elif device_map is None:
        arm, mdm = arm.to(dev), mdm.to(dev)
    else:
        dev = mdm.get_input_embeddings().weight.device

    source = {"arm": str(arm_dir), "mdm": str(mdm_dir)}
    if check_arm_stand_in(spec, arm.get_input_embeddings().num_embeddings):
        substitute_arm_mask(arm, spec.mask_token_id, spec.arm_mask_token_id)
        source["arm_mask_input"] = f"{spec.mask_token_id} -> {spec.arm_mask_token_id}"
    return ModelPair(spec.name, arm, mdm, tokenizer, spec.mask_token_id, dev, shift=spec.shift, source=source)


_SPECS: dict[str, PairSpec] = {}
for _spec in REAL_PAIRS.values():
    register_spec(_spec)
