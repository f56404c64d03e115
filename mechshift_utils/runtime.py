"""Device choice, seeding and the common notebook parameters."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from .validation import ParameterError, check_bool, check_non_negative_int

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks the GPU when one is present, else the CPU."""
    if not isinstance(device, str):
        raise ParameterError(f"device: expected one of {list(DEVICES)} or 'cuda:N', got {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = device.split(":")[0]
    if base not in DEVICES[1:]:
        raise ParameterError(f"device: expected one of {list(DEVICES)} or 'cuda:N', got {device!r}")
    if base == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device: {device!r} was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return torch.device(device)


def set_seed(seed: int) -> None:
    check_non_negative_int("seed", seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class NotebookParams:
    """The parameters every notebook accepts (its papermill `parameters` cell).

    ``model_pair``: a registered pair name, or the path of a pair file (JSON, see
    mechshift_utils.real_pairs.register_pair_file); :meth:`validated` registers the
    file and returns the parameters with the pair's name. ``dtype``: the real pairs'
    weights ("auto": bfloat16 on CUDA, float32 elsewhere); the embedded pair is float32.
    ``device_map``: real pairs only; "" (one device), "pair" (the ARM on cuda:0, the MDM on
    cuda:1) or an accelerate map such as "auto".
    """

    model_pair: str = "embedded"
    seed: int = 0
    device: str = "auto"
    smoke: bool = False
    dtype: str = "auto"
    device_map: str = ""

    def validated(self) -> "NotebookParams":
        from dataclasses import replace
        from pathlib import Path

        from .models import known_pairs  # late import: models imports runtime

        params = self
        if isinstance(self.model_pair, str) and self.model_pair.endswith(".json"):
            from .real_pairs import register_pair_file

            params = replace(self, model_pair=register_pair_file(Path(self.model_pair).expanduser()))
        if params.model_pair not in known_pairs():
            raise ParameterError(f"model_pair: expected one of {known_pairs()} or the path of a pair .json file, "
                                 f"got {params.model_pair!r}")
        check_non_negative_int("seed", params.seed)
        resolve_device(params.device)
        check_bool("smoke", params.smoke)
        if params.dtype not in DTYPES:
            raise ParameterError(f"dtype: expected one of {list(DTYPES)}, got {params.dtype!r}")
        if not isinstance(params.device_map, str):
            raise ParameterError(f"device_map: expected a string ('', 'pair' or 'auto'), got {params.device_map!r}")
        if params.device_map and params.model_pair == "embedded":
            raise ParameterError("device_map: the embedded pair runs on one device; leave device_map empty")
        return params


def stable_seed(*parts: object) -> int:
    """A seed derived from parts (e.g. base seed, stream name, step), the same on every run and platform."""
    import hashlib

    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


def figures_dir_for(figures_dir, smoke: bool):
    """Where a notebook writes its figures: smoke runs never overwrite the committed ``figures/``
    (they go to ``outputs/smoke_figures/`` instead, unless another folder was asked for)."""
    from pathlib import Path

    repo_figures = Path(__file__).resolve().parent.parent / "figures"
    if smoke and Path(figures_dir).resolve() == repo_figures:
        return str(repo_figures.parent / "outputs" / "smoke_figures")
    return str(figures_dir)
