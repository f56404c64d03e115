"""Models: one interface for every pair (:class:`ModelPair`), the architecture adapters, the pair
registry and the loaders of each published checkpoint layout, and the embedded model organism
with its training and post-training.
"""
from __future__ import annotations

from .arch import Arch, arch_of
from .pair import ROLES, Decoding, ModelPair, is_bidirectional, load_checkpoint, set_bidirectional
from .registry import (BUILT_IN_PAIRS, known_pairs, load_pair, load_pair_tokenizer, pair_spec,
                       register_local_pair, register_pair, register_pair_file, register_spec)

__all__ = ["Arch", "arch_of", "ROLES", "Decoding", "ModelPair", "is_bidirectional", "load_checkpoint",
           "set_bidirectional", "BUILT_IN_PAIRS", "known_pairs", "load_pair", "load_pair_tokenizer", "pair_spec",
           "register_local_pair", "register_pair", "register_pair_file", "register_spec"]
