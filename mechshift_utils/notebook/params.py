"""The parameters every notebook accepts, checked in one place, and where a notebook writes figures."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.devices import resolve_device
from ..core.validation import ParameterError, check_bool, check_non_negative_int
from ..models import known_pairs, register_pair_file
from .checkout import CHECKOUT_ENV, check_checkout, is_checkout, package_checkout

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class NotebookParams:
    """The parameters every notebook accepts (its papermill `parameters` cell).

    ``model_pair``: a registered pair name, or the path of a pair file (JSON, see
    mechshift_utils.models.register_pair_file); :meth:`validated` registers the
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
    seeds: int = 0  # trained models per recipe, from ``seed`` on; 0: 3 for the embedded pair, 1 for a real one
    workers: int = 0  # training processes for the embedded pair; 0: one per core

    def validated(self) -> "NotebookParams":
        check_checkout()  # the kernel runs the code of the checkout whose notebook it executes
        params = self
        if isinstance(self.model_pair, str) and self.model_pair.endswith(".json"):
            params = replace(self, model_pair=register_pair_file(Path(self.model_pair).expanduser()))
        if params.model_pair not in known_pairs():
            raise ParameterError(f"model_pair: expected one of {known_pairs()} or the path of a pair .json file, "
                                 f"got {params.model_pair!r}")
        check_non_negative_int("seed", params.seed)
        check_non_negative_int("seeds", params.seeds)
        check_non_negative_int("workers", params.workers)
        resolve_device(params.device)
        check_bool("smoke", params.smoke)
        if params.dtype not in DTYPES:
            raise ParameterError(f"dtype: expected one of {list(DTYPES)}, got {params.dtype!r}")
        if not isinstance(params.device_map, str):
            raise ParameterError(f"device_map: expected a string ('', 'pair' or 'auto'), got {params.device_map!r}")
        if params.device_map and params.model_pair == "embedded":
            raise ParameterError("device_map: the embedded pair runs on one device; leave device_map empty")
        return params


def figures_dir_for(figures_dir, smoke: bool):
    """Where a notebook writes its figures: a smoke run never writes into the ``figures/`` folder of a
    checkout (the committed figures), wherever the package was imported from; it writes to that
    checkout's ``outputs/smoke_figures/`` instead. Any other folder is used as given."""
    folder = Path(figures_dir).resolve()
    if smoke and folder.name == "figures" and _checkout_of(folder.parent):
        return str(folder.parent / "outputs" / "smoke_figures")
    return str(figures_dir)


def _checkout_of(folder: Path) -> bool:
    served = os.environ.get(CHECKOUT_ENV)
    return (folder == package_checkout() or (served is not None and folder == Path(served).resolve())
            or is_checkout(folder))
