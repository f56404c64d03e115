"""The step every notebook starts with: validated parameters -> a ready model pair and its run folder."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..core.seeding import set_seed
from ..models import ModelPair, load_pair
from ..models.embedded import EmbeddedRun, configs_for, prepare_embedded_pair
from .params import NotebookParams


@dataclass
class PairRun:
    """Where a pair that is loaded, not trained here, keeps its pools and attributions:
    ``<artifacts_dir>/pairs/<name>/`` (pools/, attribution/, as an embedded run)."""

    run_dir: Path
    trained: bool = False  # no training logs or post-training checkpoints to show


def pair_run_dir(artifacts_dir, model_pair: str) -> Path:
    return Path(artifacts_dir) / "pairs" / re.sub(r"[^A-Za-z0-9._-]+", "_", model_pair)


def prepare_pair(params: NotebookParams, artifacts_dir="artifacts") -> tuple[ModelPair, EmbeddedRun | PairRun]:
    """Load the pair named by ``params.model_pair``.

    The embedded pair is trained (ARM) and post-trained (MDM) on first use and
    reused afterwards (artifacts keyed by configuration); its run is returned
    too, with the training logs and the post-training checkpoints. Any other
    pair is loaded (``params.dtype``) and gets a :class:`PairRun` folder.
    """
    params = params.validated()
    set_seed(params.seed)
    if params.model_pair == "embedded":
        arm, post = configs_for(params.smoke)
        run = prepare_embedded_pair(Path(artifacts_dir), params.seed, arm, post, device=params.device)
        return load_pair("embedded", checkpoint_dir=run.run_dir, device=params.device), run
    pair = load_pair(params.model_pair, device=params.device, dtype=params.dtype,
                     device_map=params.device_map or None)
    run = PairRun(pair_run_dir(artifacts_dir, params.model_pair))
    run.run_dir.mkdir(parents=True, exist_ok=True)
    return pair, run
