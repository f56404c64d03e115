"""The step every notebook starts with: validated parameters -> a ready model pair."""
from __future__ import annotations

from pathlib import Path

from .embedded import EmbeddedRun, configs_for, prepare_embedded_pair
from .models import ModelPair, load_pair
from .runtime import NotebookParams, set_seed


def prepare_pair(params: NotebookParams, artifacts_dir="artifacts") -> tuple[ModelPair, EmbeddedRun | None]:
    """Load the pair named by ``params.model_pair``.

    The embedded pair is trained (ARM) and post-trained (MDM) on first use and
    reused afterwards (artifacts keyed by configuration); its run is returned
    too, with the training logs and the post-training checkpoints.
    """
    params = params.validated()
    set_seed(params.seed)
    if params.model_pair == "embedded":
        arm, post = configs_for(params.smoke)
        run = prepare_embedded_pair(Path(artifacts_dir), params.seed, arm, post, device=params.device)
        return load_pair("embedded", checkpoint_dir=run.run_dir, device=params.device), run
    return load_pair(params.model_pair, device=params.device), None
