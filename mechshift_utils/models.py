"""One interface for every model pair: an ARM, its post-trained MDM, the shared
tokenizer, the mask token and how each model decodes a multi-token answer.

Notebooks only see :class:`ModelPair`; they never branch on the architecture.
Every model is a standard ``transformers`` causal-LM class (GPT2LMHeadModel,
LlamaForCausalLM, Qwen2ForCausalLM, ...), the MDM with ``config.is_causal =
False``, so that nnsight sees the same module tree for both models of a pair.
A pair is added with :func:`register_pair`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from .runtime import resolve_device
from .validation import ParameterError, check_existing_dir

ROLES = ("arm", "mdm")


def set_bidirectional(model: PreTrainedModel, bidirectional: bool = True) -> PreTrainedModel:
    """Full (bidirectional) attention when True, causal when False; saved with the config.

    transformers 5.x builds a bidirectional mask for GPT-2, Llama and Qwen2 when
    ``config.is_causal`` is False (tests/test_attention.py checks all three).
    """
    model.config.is_causal = not bidirectional
    return model


def is_bidirectional(model: PreTrainedModel) -> bool:
    return getattr(model.config, "is_causal", True) is False


@dataclass
class Decoding:
    """How a model fills several answer slots.

    ``left_to_right``: one slot per step in order (the ARM).
    ``confidence``: over ``steps`` steps, unmask the slots the model is most
    confident of (max softmax probability) first (the MDM).
    """

    order: str = "left_to_right"
    steps: int | None = None  # None: one slot per step


@dataclass
class ModelPair:
    name: str
    arm: PreTrainedModel
    mdm: PreTrainedModel
    tokenizer: object
    mask_token_id: int
    device: torch.device
    # Both DiffuGPT/DiffuLLaMA and Dream keep the shift: logits at j-1 predict token j.
    shift: bool = True
    decoding: dict[str, Decoding] = field(
        default_factory=lambda: {"arm": Decoding("left_to_right"), "mdm": Decoding("confidence")})
    source: dict[str, str] = field(default_factory=dict)

    def model(self, role: str) -> PreTrainedModel:
        if role not in ROLES:
            raise ParameterError(f"role: expected one of {list(ROLES)}, got {role!r}")
        return self.arm if role == "arm" else self.mdm

    def items(self):
        return [(r, self.model(r)) for r in ROLES]


PairLoader = Callable[..., ModelPair]
_REGISTRY: dict[str, PairLoader] = {}


def register_pair(name: str, loader: PairLoader) -> None:
    """Add a model pair: ``loader(checkpoint_dir=..., device=...) -> ModelPair``."""
    _REGISTRY[name] = loader


def known_pairs() -> list[str]:
    return list(_REGISTRY)


def load_pair(model_pair: str, checkpoint_dir: str | Path | None = None, device: str = "auto",
              **options) -> ModelPair:
    """``options`` (e.g. ``dtype``, ``device_map``; see mechshift_utils.real_pairs) go to the pair's loader."""
    if model_pair not in _REGISTRY:
        raise ParameterError(f"model_pair: expected one of {known_pairs()}, got {model_pair!r}")
    return _REGISTRY[model_pair](checkpoint_dir=checkpoint_dir, device=device, **options)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> PreTrainedModel:
    """A saved model through the standard Auto class, in eval mode."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per small checkpoint drowns the notebook's own bars
    model = AutoModelForCausalLM.from_pretrained(str(path))
    return model.to(device).eval()


def _load_embedded(checkpoint_dir=None, device="auto") -> ModelPair:
    """The embedded pair from a post-training run folder (``.../arm-<key>/mdm-<key>``, see
    mechshift_utils.embedded); the ARM is the ``arm`` folder beside it."""
    if checkpoint_dir is None:
        raise ParameterError("checkpoint_dir: the embedded pair needs the run folder that "
                             "mechshift_utils.embedded.prepare_embedded_pair wrote; got None")
    root = check_existing_dir("checkpoint_dir", checkpoint_dir)
    from .embedded import final_mdm_dir  # late import: embedded imports models

    # layout of mechshift_utils.embedded: <arm run>/arm and <arm run>/mdm-<key>/checkpoints/...
    arm_dir, mdm_dir = root.parent / "arm", final_mdm_dir(root)
    for what, path in (("ARM", arm_dir), ("MDM", mdm_dir)):
        if not (path / "config.json").is_file():
            raise ParameterError(f"checkpoint_dir: no {what} checkpoint at {path} (train it first)")
    dev = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(str(arm_dir))
    arm, mdm = load_checkpoint(arm_dir, dev), load_checkpoint(mdm_dir, dev)
    if is_bidirectional(arm) or not is_bidirectional(mdm):
        raise ParameterError(f"checkpoint_dir: expected a causal ARM and a bidirectional MDM in {root}")
    return ModelPair("embedded", arm, mdm, tokenizer, tokenizer.mask_token_id, dev,
                     source={"arm": str(arm_dir), "mdm": str(mdm_dir)})


register_pair("embedded", _load_embedded)


from . import real_pairs  # noqa: E402,F401  (registers the real pairs; models is fully defined by now)
