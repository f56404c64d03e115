"""The real ARM/MDM pairs of the paper: their specs, where their weights are, and loading them.

:data:`REAL_PAIRS` is the table of built-in pairs (listed by name in
:mod:`mechshift_utils.models.registry`), so that::

    from mechshift_utils.models import load_pair
    pair = load_pair("gpt2-diffugpt-s", device="auto", dtype="auto")

returns a :class:`~mechshift_utils.models.ModelPair` whose two models are
standard causal-LM classes (GPT2LMHeadModel, LlamaForCausalLM,
Qwen2ForCausalLM), the MDM with full attention (``config.is_causal = False``).
No model's remote code is ever run: the MDM checkpoints are read in their own
layouts and mapped onto those classes (see :data:`LAYOUTS`).

Where the weights come from (first match wins, per model):

1. ``arm_path=`` / ``mdm_path=`` given to :func:`load_pair` (or the folders of a
   pair added with :func:`mechshift_utils.models.register_local_pair`);
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
GPUs, which loads but is not what the attribution engine was measured with),
``arm_path``, ``mdm_path``, ``download``, ``cache_dir``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.devices import resolve_device
from ..core.validation import ParameterError, check_choice, check_existing_dir
from .layouts import LAYOUTS, attach_mask_token, embedding_rows, load_model, substitute_arm_mask
from .pair import ModelPair, load_tokenizer, set_bidirectional

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODELS_DIR_ENV = "MECHSHIFT_MODELS_DIR"
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]  # weights, configs, tokenizers; no code
# GPT-2's checkpoints moved to the openai-community organisation; the cache may hold either name.
_CACHE_ALIASES = {"gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium"}


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


# --- your own pair ---------------------------------------------------------------------------------

BUILT_IN_NAMES = ("embedded", *REAL_PAIRS)


def local_spec(name: str, arm_path: str | Path, mdm_path: str | Path, layout: str, mask_token_id: int, *,
               mask_token: str | None = None, arm_mask_token_id: int | None = None, arm_layout: str = "hf",
               notes: str = "") -> PairSpec:
    """The spec of a pair in two local folders (see mechshift_utils.models.register_local_pair)."""
    if not isinstance(name, str) or not name:
        raise ParameterError(f"name: expected a non-empty string, got {name!r}")
    if name in BUILT_IN_NAMES:
        raise ParameterError(f"name: {name!r} is a built-in pair; choose another name")
    spec = PairSpec(name, None, None, layout, mask_token_id, family="local", mask_token=mask_token,
                    arm_mask_token_id=arm_mask_token_id, arm_layout=arm_layout,
                    arm_path=str(arm_path), mdm_path=str(mdm_path), notes=notes)
    return spec.validate()


PAIR_FILE_KEYS = {"name", "arm", "mdm", "layout", "mask_token_id", "mask_token", "arm_mask_token_id",
                  "arm_layout", "notes"}


def spec_from_file(path) -> PairSpec:
    """The pair a JSON file describes: ``name``, ``arm`` and ``mdm`` (folders; relative ones are relative
    to the file), ``layout`` and ``mask_token_id``, and optionally ``mask_token``, ``arm_mask_token_id``,
    ``arm_layout``, ``notes`` (as :func:`local_spec`)."""
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
    return local_spec(spec["name"], folder / spec["arm"], folder / spec["mdm"], spec["layout"],
                      spec["mask_token_id"], **options)


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


def what_is_missing(folder: Path) -> str:
    """Why a folder that exists is not a model folder, in a few words."""
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    if not names:
        return "empty"
    lacks = [] if (folder / "config.json").is_file() else ["config.json"]
    if not (any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))):
        lacks.append("weights (*.safetensors)")
    return f"no {' and no '.join(lacks)}; it holds {', '.join(sorted(names)[:6])}{', ...' if len(names) > 6 else ''}"


def _candidates(root: Path, role: str, repo_id: str | None) -> list[Path]:
    out = [root / role]
    if repo_id:
        out += [root / repo_id, root / repo_id.split("/")[-1]]
    return out


def _from_cache(repo_id: str, cache_dir, incomplete: list | None = None) -> Path | None:
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
        if incomplete is not None:
            incomplete.append((folder, what_is_missing(folder)))
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
           cache_dir=None, incomplete: list | None = None) -> Path | None:
    """The folder of one model (see the module docstring for the order), or None when it is nowhere.
    Folders found on the way that exist but hold no model are added to ``incomplete`` as (folder, why)."""
    if path is not None:
        folder = Path(path)
        if not has_weights(folder):
            why = what_is_missing(folder) if folder.is_dir() else "not found"
            raise ParameterError(f"{role}_path: expected an existing folder with config.json and safetensors "
                                 f"weights, got {str(path)!r} ({why})")
        return folder
    for root in roots:
        for folder in _candidates(root, role, repo_id):
            if has_weights(folder):
                return folder
            if folder.is_dir() and incomplete is not None:
                incomplete.append((folder, what_is_missing(folder)))
    if repo_id is None:
        return None
    cached = _from_cache(repo_id, cache_dir, incomplete)
    if cached is not None:
        return cached
    return _download(repo_id, cache_dir) if download else None


def hf_command() -> str:
    """The Hugging Face command line as it can be run here: ``hf`` from this environment's bin folder
    (it is not on PATH outside the environment), or plain ``hf`` when this environment has none."""
    installed = Path(sys.executable).parent / "hf"  # not resolved: the venv's bin, not the base interpreter's
    return str(installed) if installed.exists() else "hf"


def locate_pair(spec: PairSpec, checkpoint_dir=None, arm_path=None, mdm_path=None, download: bool = False,
                cache_dir=None) -> tuple[Path, Path]:
    """Both folders, or one ParameterError naming every missing model, how to get it, and the folders found
    on the way that hold no model."""
    if download is not False and download is not True:
        raise ParameterError(f"download: expected True or False, got {download!r}")
    if download and hub_offline():
        raise ParameterError("download: HF_HUB_OFFLINE is set, so nothing is downloaded; unset it to download, "
                             "or download elsewhere and pass checkpoint_dir=/arm_path=/mdm_path=")
    roots = _roots(checkpoint_dir)
    incomplete: list[tuple[Path, str]] = []
    found = {role: locate(role, getattr(spec, f"{role}_id"), given or getattr(spec, f"{role}_path"),
                          roots, download, cache_dir, incomplete)
             for role, given in (("arm", arm_path), ("mdm", mdm_path))}
    if found["arm"] is None or found["mdm"] is None:
        raise ParameterError(missing_pair_message(spec, found, incomplete))
    return found["arm"], found["mdm"]


def missing_pair_message(spec: PairSpec, found: dict, incomplete: list[tuple[Path, str]]) -> str:
    hf = hf_command()
    commands = [f"{role.upper()} {repo}: {hf} download {repo}   (older huggingface_hub: huggingface-cli download "
                f"{repo})" for role, repo in (("arm", spec.arm_id), ("mdm", spec.mdm_id)) if found[role] is None]
    partial = [f"{folder}: {why}" for folder, why in dict(incomplete).items()]
    gated = (f"\n{spec.arm_id} is gated: accept its licence on huggingface.co/{spec.arm_id} and run "
             f"`{hf} auth login` first." if spec.gated else "")
    return (
        f"model_pair: {spec.name!r} is not on this machine (looked in arm_path/mdm_path, checkpoint_dir, "
        f"${MODELS_DIR_ENV} and the Hugging Face cache; nothing is downloaded unless asked)."
        + ("\nFound, but not a model folder (config.json and *.safetensors weights are needed):\n  "
           + "\n  ".join(partial) if partial else "")
        + "\nGet it with\n  " + "\n  ".join(commands)
        + f"\nor fetch it into the cache with load_pair({spec.name!r}, download=True). Weights already in "
          "folders: for the notebooks, write a pair file and run ./run_all.sh -p model_pair my_pair.json "
          "(README: Adding a model pair); from Python, load_pair(..., arm_path='/path/arm', "
          f"mdm_path='/path/mdm'), or checkpoint_dir= (or ${MODELS_DIR_ENV}=) a folder holding arm/ and mdm/ "
          "or <repo id>/ subfolders." + gated)


# --- the mask token in the pair --------------------------------------------------------------------

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


def check_mask_agrees(spec: PairSpec, tokenizer, arm_dir: Path) -> None:
    """A tokenizer that has a mask token of its own must have it at the pair's ``mask_token_id``: the
    examples are written through the tokenizer, so a disagreement would mask with one id and score
    another, silently."""
    own = getattr(tokenizer, "mask_token_id", None)
    if own is not None and own != spec.mask_token_id:
        raise ParameterError(
            f"mask_token_id: pair {spec.name!r} gives {spec.mask_token_id}, but the ARM's tokenizer in {arm_dir} "
            f"has its own mask token {tokenizer.mask_token!r} with id {own}; set the pair's mask_token_id to {own} "
            "(or use a tokenizer without a mask token of its own)")


def spec_tokenizer(spec: PairSpec, arm_dir: Path, mdm_dir: Path):
    """The ARM's tokenizer with the MDM's mask token (cheap: no weights are read)."""
    where = "arm_path" if spec.arm_path is not None else "model_pair"
    tokenizer = load_tokenizer(arm_dir, where, local_files_only=True)
    check_mask_agrees(spec, tokenizer, arm_dir)
    return attach_mask_token(tokenizer, spec.mask_token_id, spec.mask_token, mdm_dir)


# --- the pair --------------------------------------------------------------------------------------

def load_spec(spec: PairSpec, checkpoint_dir=None, device: str = "auto", *, dtype="auto", device_map=None,
              arm_path=None, mdm_path=None, download: bool = False, cache_dir=None) -> ModelPair:
    """Load one pair: both models in eval mode, the ARM causal and the MDM bidirectional, the ARM's
    tokenizer with the MDM's mask token. Every option is checked before any weight is read."""
    spec.validate()
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    device_map = check_device_map(device_map)
    arm_dir, mdm_dir = locate_pair(spec, checkpoint_dir, arm_path, mdm_path, download, cache_dir)
    check_mask_fits(spec, mdm_dir, embedding_rows(mdm_dir))
    check_arm_stand_in(spec, embedding_rows(arm_dir))
    tokenizer = spec_tokenizer(spec, arm_dir, mdm_dir)  # cheap: before the weights

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
