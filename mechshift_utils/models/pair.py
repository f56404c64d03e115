"""One interface for every model pair: an ARM, its post-trained MDM, the shared
tokenizer, the mask token and how each model decodes a multi-token answer.

Notebooks only see :class:`ModelPair`; they never branch on the architecture.
Every model is a standard ``transformers`` causal-LM class (GPT2LMHeadModel,
LlamaForCausalLM, Qwen2ForCausalLM, ...), the MDM with ``config.is_causal =
False``, so that nnsight sees the same module tree for both models of a pair.
The pairs that can be loaded by name are in :mod:`.registry`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from ..core.validation import ParameterError

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


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> PreTrainedModel:
    """A saved model through the standard Auto class, in eval mode."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per small checkpoint drowns the notebook's own bars
    model = AutoModelForCausalLM.from_pretrained(str(path))
    return model.to(device).eval()


# The files a tokenizer can be read from (any one set is enough): the fast tokenizer's own file,
# a SentencePiece model (Llama), a BPE vocabulary with its merges (GPT-2), a WordPiece vocabulary.
TOKENIZER_FILES = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"), ("vocab.txt",))


def check_tokenizer_files(folder: str | Path, name: str) -> Path:
    """Stop, naming the folder and what is missing, unless ``folder`` holds a tokenizer's files
    (transformers would otherwise build an empty tokenizer from the config alone, and the first
    sign would be a missing mask token far downstream). ``name`` is the parameter that gave the folder."""
    folder = Path(folder)
    present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if any(set(files) <= present for files in TOKENIZER_FILES):
        return folder
    partial = [f"{', '.join(sorted(set(files) - present))} beside {', '.join(sorted(set(files) & present))}"
               for files in TOKENIZER_FILES if len(files) > 1 and set(files) & present]
    raise ParameterError(
        f"{name}: no tokenizer in {folder}: expected tokenizer.json, or tokenizer.model, or vocab.json with "
        f"merges.txt{' (missing: ' + '; '.join(partial) + ')' if partial else ''}; the folder holds "
        f"{', '.join(sorted(present)) or 'nothing'}. Copy the tokenizer files of the model into it "
        "(save_pretrained of its tokenizer writes them).")


def load_tokenizer(folder: str | Path, name: str, **options):
    """``AutoTokenizer.from_pretrained(folder)`` after :func:`check_tokenizer_files`."""
    return AutoTokenizer.from_pretrained(str(check_tokenizer_files(folder, name)), **options)
