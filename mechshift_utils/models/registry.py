"""The pairs that ``load_pair`` knows by name: one explicit table of built-in pairs, and the pairs
a user adds in this process.

Built in: ``"embedded"`` (the model organism trained here, :mod:`.embedded`) and every pair of
:data:`~mechshift_utils.models.real_pairs.REAL_PAIRS`. Nothing is registered by importing a
module: the table below is the whole list. Your own pair is added with :func:`register_local_pair`
(two folders), :func:`register_pair_file` (a JSON file, what notebooks take), or
:func:`register_pair` (any loader returning a :class:`~mechshift_utils.models.pair.ModelPair`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..core.validation import ParameterError
from ..tasks import build_word_tokenizer
from .embedded import load_embedded
from .pair import ModelPair
from .real_pairs import (BUILT_IN_NAMES, REAL_PAIRS, PairSpec, load_spec, local_spec, locate_pair, spec_from_file,
                         spec_tokenizer)

PairLoader = Callable[..., ModelPair]


def _spec_loader(spec: PairSpec) -> PairLoader:
    def loader(checkpoint_dir=None, device="auto", **options):
        return load_spec(spec, checkpoint_dir=checkpoint_dir, device=device, **options)

    loader.__doc__ = f"Load the {spec.name} pair (see mechshift_utils.models.real_pairs.load_spec)."
    return loader


BUILT_IN_PAIRS: dict[str, PairLoader] = {
    "embedded": load_embedded,
    **{name: _spec_loader(spec) for name, spec in REAL_PAIRS.items()},
}
assert tuple(BUILT_IN_PAIRS) == BUILT_IN_NAMES

_ADDED: dict[str, PairLoader] = {}
_ADDED_SPECS: dict[str, PairSpec] = {}


def register_pair(name: str, loader: PairLoader) -> None:
    """Add a model pair: ``loader(checkpoint_dir=..., device=..., **options) -> ModelPair``. Adding the
    same name again replaces it; the built-in names are refused."""
    if not isinstance(name, str) or not name:
        raise ParameterError(f"name: expected a non-empty string, got {name!r}")
    if name in BUILT_IN_PAIRS:
        raise ParameterError(f"name: {name!r} is a built-in pair; choose another name")
    _ADDED[name] = loader
    _ADDED_SPECS.pop(name, None)


def register_local_pair(name: str, arm_path: str | Path, mdm_path: str | Path, layout: str,
                        mask_token_id: int, *, mask_token: str | None = None,
                        arm_mask_token_id: int | None = None, arm_layout: str = "hf",
                        notes: str = "") -> PairSpec:
    """Add your own pair from two local folders, without touching the notebooks.

    Example (a Llama ARM and an MDM post-trained from it, saved as plain Llama)::

        from mechshift_utils.models import load_pair, register_local_pair
        register_local_pair("my-pair", "/models/my-arm", "/models/my-mdm", layout="llama", mask_token_id=811)
        pair = load_pair("my-pair")

    Notebooks run in their own kernel: give them the pair as a JSON file instead
    (:func:`register_pair_file`), ``./run_all.sh -p model_pair my-pair.json``.

    ``layout`` is the MDM's folder layout, one of
    :data:`~mechshift_utils.models.layouts.LAYOUTS`; ``arm_layout`` the ARM's (default
    "hf"). ``mask_token`` names the mask when the MDM added it past the ARM's tokenizer;
    ``arm_mask_token_id`` is the token the ARM reads at masked slots when its vocabulary
    is smaller than ``mask_token_id``. The folders are checked when the pair is loaded.
    Registering the same local name again replaces it; the built-in names are refused.
    """
    spec = local_spec(name, arm_path, mdm_path, layout, mask_token_id, mask_token=mask_token,
                      arm_mask_token_id=arm_mask_token_id, arm_layout=arm_layout, notes=notes)
    return register_spec(spec)


def register_spec(spec: PairSpec) -> PairSpec:
    """Make ``load_pair(spec.name, ...)`` load this pair (and list it in :func:`known_pairs`)."""
    spec.validate()
    register_pair(spec.name, _spec_loader(spec))
    _ADDED_SPECS[spec.name] = spec
    return spec


def register_pair_file(path) -> str:
    """Register the pair a JSON file describes and return its name: how a notebook (a separate kernel)
    gets your own pair, with ``-p model_pair path/to/pair.json``. The file's keys are those of
    :func:`~mechshift_utils.models.real_pairs.spec_from_file`."""
    return register_spec(spec_from_file(path)).name


def known_pairs() -> list[str]:
    return [*BUILT_IN_PAIRS, *_ADDED]


def pair_spec(name: str) -> PairSpec:
    """The spec of a real pair, built in or added (the embedded pair has none: it is trained here)."""
    specs = {**REAL_PAIRS, **_ADDED_SPECS}
    if name not in specs:
        raise ParameterError(f"model_pair: expected one of {sorted(specs)}, got {name!r}")
    return specs[name]


def load_pair(model_pair: str, checkpoint_dir: str | Path | None = None, device: str = "auto",
              **options) -> ModelPair:
    """The pair named ``model_pair``. ``options`` (e.g. ``dtype``, ``device_map``; see
    mechshift_utils.models.real_pairs) go to the pair's loader."""
    loader = BUILT_IN_PAIRS.get(model_pair) or _ADDED.get(model_pair)
    if loader is None:
        raise ParameterError(f"model_pair: expected one of {known_pairs()}, got {model_pair!r}")
    return loader(checkpoint_dir=checkpoint_dir, device=device, **options)


def load_pair_tokenizer(model_pair: str, checkpoint_dir: str | Path | None = None, **options):
    """The tokenizer a pair reads its examples through, without loading the models: the word-level
    tokenizer for the embedded pair (built here, the one it is trained with), the ARM's tokenizer with
    the MDM's mask token for a real pair or a pair file (``options``: ``arm_path``, ``mdm_path``,
    ``cache_dir``, as for :func:`load_pair`). A pair added with :func:`register_pair` has no tokenizer
    apart from its loader: load the pair instead."""
    if model_pair == "embedded":
        return build_word_tokenizer()
    spec = {**REAL_PAIRS, **_ADDED_SPECS}.get(model_pair)
    if spec is None:
        raise ParameterError(f"model_pair: {model_pair!r} is known only through its loader; load the pair "
                             "(load_pair) and use pair.tokenizer")
    arm_dir, mdm_dir = locate_pair(spec, checkpoint_dir, **options)
    return spec_tokenizer(spec, arm_dir, mdm_dir)
