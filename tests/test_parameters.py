"""Bad parameters stop with one clear message naming the parameter."""
from dataclasses import replace

import pytest

from mechshift_utils.embedded import DEFAULT_ARM, DEFAULT_POST, prepare_embedded_pair
from mechshift_utils.evaluation import eval_sets
from mechshift_utils.models import load_pair
from mechshift_utils.runtime import NotebookParams, resolve_device
from mechshift_utils.validation import ParameterError


@pytest.mark.parametrize("kwargs, message", [
    ({"model_pair": "gpt5-diffu"}, "model_pair: expected one of"),
    ({"seed": -1}, "seed: expected a non-negative integer"),
    ({"seed": 1.5}, "seed: expected a non-negative integer"),
    ({"device": "tpu"}, "device: expected one of"),
    ({"smoke": "yes"}, "smoke: expected True or False"),
])
def test_notebook_parameters(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        NotebookParams(**kwargs).validated()


def test_defaults_are_valid():
    assert NotebookParams().validated().model_pair == "embedded"
    assert resolve_device("cpu").type == "cpu"


def test_unknown_model_pair_in_loader():
    with pytest.raises(ParameterError, match="model_pair: expected one of \\['embedded'"):
        load_pair("llama-7b")


@pytest.mark.parametrize("arm, post, message", [
    (replace(DEFAULT_ARM, steps=0), DEFAULT_POST, "arm.steps: expected a positive integer"),
    (replace(DEFAULT_ARM, n_embd=-8), DEFAULT_POST, "arm.n_embd: expected a positive integer"),
    (replace(DEFAULT_ARM, n_embd=30, n_head=4), DEFAULT_POST, "arm.n_embd: expected a multiple"),
    (DEFAULT_ARM, replace(DEFAULT_POST, batch_size=0), "post.batch_size: expected a positive integer"),
    (DEFAULT_ARM, replace(DEFAULT_POST, lr=0.0), "post.lr: expected a positive number"),
    (DEFAULT_ARM, replace(DEFAULT_POST, n_checkpoints=1), "post.n_checkpoints: expected an integer >= 2"),
])
def test_non_positive_sizes(tmp_path, arm, post, message):
    with pytest.raises(ParameterError, match=message):
        prepare_embedded_pair(tmp_path, arm=arm, post=post)
    assert not any(tmp_path.iterdir()), "nothing is written before the check"


def test_evaluation_sizes(tokenizer):
    with pytest.raises(ParameterError, match="n: expected a positive integer"):
        eval_sets(tokenizer, 0, 0)
    with pytest.raises(ParameterError, match="task: expected one of"):
        eval_sets(tokenizer, 3, 0, task_names=["ioi", "sorting"])


def test_smoke_runs_never_write_the_committed_figures(tmp_path):
    from pathlib import Path

    from mechshift_utils.runtime import figures_dir_for

    repo_figures = Path(__file__).resolve().parents[1] / "figures"
    assert Path(figures_dir_for(repo_figures, True)).name == "smoke_figures"
    assert figures_dir_for(repo_figures, False) == str(repo_figures)
    assert figures_dir_for(tmp_path, True) == str(tmp_path)
