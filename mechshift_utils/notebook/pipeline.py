"""The step every notebook starts with: validated parameters -> the trained models of every seed
(or a loaded real pair) and their run folders."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..core.seeding import set_seed
from ..core.validation import ParameterError
from ..models import ModelPair, load_pair
from ..models.embedded import (MODEL_NAMES, EmbeddedRun, configs_for, decoding_for, load_models,
                               prepare_embedded_runs)
from .params import NotebookParams

DEFAULT_SEEDS = 3  # trained models per recipe of the embedded organism (seeds = 0 in a notebook)


@dataclass
class PairRun:
    """Where a pair that is loaded, not trained here, keeps its pools and attributions:
    ``<artifacts_dir>/pairs/<name>/`` (pools/, attribution/, as an embedded run)."""

    run_dir: Path
    seed: int = 0
    trained: bool = False  # no training logs or post-training checkpoints to show


def pair_run_dir(artifacts_dir, model_pair: str) -> Path:
    return Path(artifacts_dir) / "pairs" / re.sub(r"[^A-Za-z0-9._-]+", "_", model_pair)


def seed_list(params: NotebookParams) -> list[int]:
    """The seeds a notebook runs: ``params.seeds`` consecutive seeds from ``params.seed`` (0: three for the
    embedded organism; a real pair is one trained model, so one)."""
    n = params.seeds or (DEFAULT_SEEDS if params.model_pair == "embedded" else 1)
    if params.model_pair != "embedded" and n != 1:
        raise ParameterError(f"seeds: a real pair is one trained model; expected 0 or 1, got {params.seeds}")
    return [params.seed + i for i in range(n)]


@dataclass
class Experiment:
    """Every seed's models and run folders. For the embedded organism a seed is a trained ARM with its
    MDM and controls; a real pair is one seed. Models are loaded on first use and kept."""

    params: NotebookParams
    seeds: list[int]
    runs: list  # EmbeddedRun per seed, or one PairRun
    pair: ModelPair  # the first seed's ARM and MDM (a real pair: the pair itself)
    _models: dict = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        return self.params.model_pair == "embedded"

    @property
    def tokenizer(self):
        return self.pair.tokenizer

    def run(self, seed: int):
        for r in self.runs:
            if r.seed == seed:
                return r
        raise ParameterError(f"seed: expected one of {self.seeds}, got {seed}")

    def run_dir(self, seed: int) -> Path:
        return self.run(seed).run_dir

    def model_names(self) -> tuple[str, ...]:
        """The models each seed has: the ARM, the MDM, and for the embedded organism its controls, the
        step-0 checkpoint and (with two seeds or more) another seed's ARM."""
        if not self.embedded:
            return ("arm", "mdm")
        return tuple(n for n in MODEL_NAMES if n != "arm_twin" or len(self.seeds) > 1)

    def decoding(self, name: str):
        return decoding_for(name) if self.embedded else self.pair.decoding[name]

    def models(self, seed: int, names=None) -> dict:
        """name -> model of one seed (``names`` default: :meth:`model_names`; ``name@step`` for a
        post-training checkpoint of the MDM or a dense control)."""
        names = list(names or self.model_names())
        if not self.embedded:
            unknown = [n for n in names if n not in ("arm", "mdm")]
            if unknown:
                raise ParameterError(f"names: a real pair has the models 'arm' and 'mdm', got {unknown}")
            return {n: self.pair.model(n) for n in names}
        missing = [n for n in names if (seed, n) not in self._models]
        if missing:
            loaded = load_models(self.runs, seed, missing, self.params.device)
            self._models.update({(seed, n): m for n, m in loaded.items()})
        return {n: self._models[(seed, n)] for n in names}

    def forget(self, seed: int, names) -> None:
        """Drop loaded models (e.g. the checkpoints of a sweep along post-training) from memory."""
        for n in names:
            self._models.pop((seed, n), None)


def prepare_experiment(params: NotebookParams, artifacts_dir="artifacts") -> Experiment:
    """Train (or reuse) every seed's embedded models, or load the real pair named by ``params``."""
    params = params.validated()
    seeds = seed_list(params)
    set_seed(params.seed)
    if params.model_pair == "embedded":
        arm, post = configs_for(params.smoke)
        runs = prepare_embedded_runs(Path(artifacts_dir), seeds, arm, post, device=params.device,
                                     workers=params.workers)
        pair = load_pair("embedded", checkpoint_dir=runs[0].run_dir, device=params.device)
        return Experiment(params, seeds, runs, pair)
    pair, run = prepare_pair(params, artifacts_dir)
    return Experiment(params, seeds, [run], pair)


def prepare_pair(params: NotebookParams, artifacts_dir="artifacts") -> tuple[ModelPair, EmbeddedRun | PairRun]:
    """Load the pair named by ``params.model_pair`` (the embedded one: its seed ``params.seed``).

    The embedded pair is trained (ARM) and post-trained (MDM, with its controls) on first use and
    reused afterwards (artifacts keyed by configuration); its run is returned too, with the training
    logs and the post-training checkpoints. Any other pair is loaded (``params.dtype``) and gets a
    :class:`PairRun` folder.
    """
    params = params.validated()
    set_seed(params.seed)
    if params.model_pair == "embedded":
        arm, post = configs_for(params.smoke)
        run = prepare_embedded_runs(Path(artifacts_dir), [params.seed], arm, post, device=params.device,
                                    workers=params.workers)[0]
        return load_pair("embedded", checkpoint_dir=run.run_dir, device=params.device), run
    pair = load_pair(params.model_pair, device=params.device, dtype=params.dtype,
                     device_map=params.device_map or None)
    run = PairRun(pair_run_dir(artifacts_dir, params.model_pair), params.seed)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    return pair, run
