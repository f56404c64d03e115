"""Bad parameters stop with one clear message naming the parameter."""
from dataclasses import replace

import pytest

from mechshift_utils.models.embedded import DEFAULT_ARM, DEFAULT_POST, prepare_embedded_pair
from mechshift_utils.evaluation.accuracy import eval_sets
from mechshift_utils.models import load_pair
from mechshift_utils.core.devices import resolve_device
from mechshift_utils.notebook.params import NotebookParams
from mechshift_utils.core.validation import ParameterError


@pytest.mark.parametrize("kwargs, message", [
    ({"model_pair": "gpt5-diffu"}, "model_pair: expected one of"),
    ({"seed": -1}, "seed: expected a non-negative integer"),
    ({"seed": 1.5}, "seed: expected a non-negative integer"),
    ({"device": "tpu"}, "device: expected one of"),
    ({"smoke": "yes"}, "smoke: expected True or False"),
    ({"dtype": "int8"}, "dtype: expected one of"),
    ({"device_map": "pair"}, "device_map: the embedded pair runs on one device"),
    ({"model_pair": "gpt2-diffugpt-s", "device_map": 3}, "device_map: expected a string"),
    ({"model_pair": "missing-pair.json"}, "model_pair: no pair file at"),
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

    from mechshift_utils.notebook.params import figures_dir_for

    repo_figures = Path(__file__).resolve().parents[1] / "figures"
    assert Path(figures_dir_for(repo_figures, True)).name == "smoke_figures"
    assert figures_dir_for(repo_figures, False) == str(repo_figures)
    assert figures_dir_for(tmp_path, True) == str(tmp_path)


def test_pair_files_register_a_pair_or_name_what_is_wrong(tmp_path):
    import json

    good = tmp_path / "mine.json"
    good.write_text(json.dumps({"name": "mine", "arm": "arm", "mdm": "mdm", "layout": "llama", "mask_token_id": 3}))
    assert NotebookParams(model_pair=str(good)).validated().model_pair == "mine"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "arm": "a", "layout": "llama", "mask_token_id": 3, "colour": 1}))
    with pytest.raises(ParameterError, match=r"missing: \['mdm'\]; unknown: \['colour'\]"):
        NotebookParams(model_pair=str(bad)).validated()
    broken = tmp_path / "broken.json"
    broken.write_text("{name")
    with pytest.raises(ParameterError, match="not valid JSON"):
        NotebookParams(model_pair=str(broken)).validated()


def test_device_map_pair_keeps_each_model_whole():
    import torch

    from mechshift_utils.models.real_pairs import check_device_map, pair_devices

    assert check_device_map("pair") == "pair" and check_device_map("") is None
    assert pair_devices(torch.device("cpu")) == (torch.device("cpu"), torch.device("cpu"))


def test_the_built_in_pairs_are_one_table_and_cannot_be_replaced():
    import subprocess
    import sys

    from mechshift_utils.models import BUILT_IN_PAIRS, register_pair
    from mechshift_utils.models.real_pairs import REAL_PAIRS

    assert list(BUILT_IN_PAIRS) == ["embedded", *REAL_PAIRS]
    with pytest.raises(ParameterError, match="'embedded' is a built-in pair"):
        register_pair("embedded", lambda **kw: None)
    # a fresh interpreter knows exactly the table, without importing anything for its side effect
    code = ("from mechshift_utils.models.registry import known_pairs, BUILT_IN_PAIRS; "
            "assert known_pairs() == list(BUILT_IN_PAIRS), known_pairs(); print(len(known_pairs()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(1 + len(REAL_PAIRS))
