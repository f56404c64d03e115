"""Checkpoints: Hugging Face format, round trip through from_pretrained, keyed by configuration,
resumable with identical results; the controls beside the MDM; the same numbers in one process or two."""
import json
import shutil
from dataclasses import replace

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from mechshift_utils.core.validation import ParameterError
from mechshift_utils.models import is_bidirectional, load_pair
from mechshift_utils.models.embedded import (ArmConfig, PostTrainConfig, arm_run_dir, checkpoints_of, decoding_for,
                                             load_models, model_folder, pair_run_dir, prepare_embedded_pair,
                                             prepare_embedded_runs)
from mechshift_utils.models.training import RESUME_FILE

ARM = ArmConfig(n_layer=2, n_head=2, n_embd=16, steps=12, batch_size=8, warmup=2)
POST = PostTrainConfig(steps=10, batch_size=8, warmup=2, anneal_steps=5, n_checkpoints=6)
DENSE_STEPS = [0, 2, 4, 5, 6, 8, 10]  # six even steps and the end of the annealing


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return prepare_embedded_pair(tmp_path_factory.mktemp("art"), seed=0, arm=ARM, post=POST, device="cpu")


def test_checkpoints_along_post_training(run):
    for name in ("mdm", "arm_continued", "mdm_causal"):
        assert sorted(run.checkpoints[name]) == DENSE_STEPS, name
    assert sorted(run.checkpoints["mdm_scratch"]) == [POST.steps]
    assert len(run.logs["arm"]) == ARM.steps and all(len(run.logs[n]) == POST.steps for n in POST.runs)
    mdm = run.logs["mdm"]
    assert mdm.anneal_ratio.iloc[0] == 0.0 and mdm.anneal_ratio.iloc[-1] == 1.0
    assert (run.logs["mdm_causal"].anneal_ratio == 0).all()


def test_the_controls_share_batches_and_noise_and_change_one_factor(run):
    mdm, causal, scratch = (run.logs[n] for n in ("mdm", "mdm_causal", "mdm_scratch"))
    assert mdm.mask_rate.tolist() == causal.mask_rate.tolist() == scratch.mask_rate.tolist()  # same noise
    # the same start, batch and noise, and at step 0 the annealed attention is still causal: one loss
    assert mdm.loss.iloc[0] == causal.loss.iloc[0]
    assert mdm.loss.iloc[-1] != causal.loss.iloc[-1]  # once the attention opens, they part
    assert (run.logs["arm_continued"].mask_rate == 0).all()
    saved = {n: AutoModelForCausalLM.from_pretrained(str(run.model_dir(n))) for n in POST.runs}
    assert is_bidirectional(saved["mdm"]) and is_bidirectional(saved["mdm_scratch"])
    assert not is_bidirectional(saved["arm_continued"]) and not is_bidirectional(saved["mdm_causal"])
    arm = AutoModelForCausalLM.from_pretrained(str(run.arm_dir))
    # the scratch run does not start from the ARM: its first loss is a random model's
    assert run.logs["mdm_scratch"].loss.iloc[0] > run.logs["mdm"].loss.iloc[0]
    assert not torch.equal(arm.transformer.wte.weight, saved["mdm_scratch"].transformer.wte.weight)
    assert [decoding_for(n).order for n in ("arm", "arm_continued", "mdm", "mdm_causal", "step0")] == [
        "left_to_right", "left_to_right", "confidence", "confidence", "confidence"]


def test_round_trip_through_auto_classes(run):
    arm = AutoModelForCausalLM.from_pretrained(str(run.arm_dir))
    assert type(arm).__name__ == "GPT2LMHeadModel" and not is_bidirectional(arm)
    for step, path in run.checkpoints["mdm"].items():
        mdm = AutoModelForCausalLM.from_pretrained(str(path))
        assert is_bidirectional(mdm), f"MDM checkpoint {step} must load bidirectional"
        assert json.loads((path / "config.json").read_text())["is_causal"] is False
        tok = AutoTokenizer.from_pretrained(str(path))
        assert tok.mask_token == "[MASK]" and mdm.config.mask_token_id == tok.mask_token_id
    # step 0 is the ARM's weights, only read with full attention
    step0 = AutoModelForCausalLM.from_pretrained(str(run.model_dir("step0")))
    for (n, a), (_, b) in zip(arm.state_dict().items(), step0.state_dict().items()):
        assert torch.equal(a, b), n
    last = AutoModelForCausalLM.from_pretrained(str(run.model_dir("mdm")))
    assert not torch.equal(arm.transformer.h[0].attn.c_attn.weight, last.transformer.h[0].attn.c_attn.weight)


def test_saved_weights_give_the_same_logits(run):
    pair = load_pair("embedded", checkpoint_dir=run.run_dir, device="cpu")
    x = torch.randint(4, 50, (2, 9))
    again = AutoModelForCausalLM.from_pretrained(str(run.model_dir("mdm"))).eval()
    with torch.no_grad():
        assert torch.allclose(pair.mdm(input_ids=x).logits, again(input_ids=x).logits)
    assert pair.mask_token_id == pair.tokenizer.mask_token_id


def test_models_by_name(run):
    runs = [run]
    assert model_folder(runs, 0, "mdm@4") == run.checkpoints["mdm"][4]
    assert model_folder(runs, 0, "step0") == run.checkpoints["mdm"][0]
    with pytest.raises(ParameterError, match="arm_twin needs a second seed"):
        model_folder(runs, 0, "arm_twin")
    with pytest.raises(ParameterError, match="step: mdm_scratch of seed 0 has checkpoints at \\[10\\], got 4"):
        model_folder(runs, 0, "mdm_scratch@4")
    with pytest.raises(ParameterError, match="name: expected one of"):
        model_folder(runs, 0, "mdm_bidirectional")
    models = load_models(runs, 0, ["arm", "mdm_causal@10"])
    assert not is_bidirectional(models["mdm_causal@10"])


def test_curves_along_post_training_are_cached(run, tmp_path, monkeypatch):
    """Notebooks 01 and 06 score the same checkpoints on the same examples: the second call reads the
    first's table; other examples are scored afresh."""
    from mechshift_utils.evaluation import accuracy as acc
    from mechshift_utils.evaluation.accuracy import accuracy_along_post_training, eval_sets

    pair = load_pair("embedded", checkpoint_dir=run.run_dir, device="cpu")
    data = eval_sets(pair.tokenizer, 6, 0, ["ioi", "greater_than"])
    first = accuracy_along_post_training(run.checkpoints["mdm"], data, decoding_for("mdm"), progress=False,
                                         cache_dir=tmp_path)
    assert len(list(tmp_path.glob("curve-*.csv"))) == 1
    calls = []
    monkeypatch.setattr(acc, "_along_post_training", lambda *a: calls.append(a) or first.iloc[:0])
    again = accuracy_along_post_training(run.checkpoints["mdm"], data, decoding_for("mdm"), progress=False,
                                         cache_dir=tmp_path)
    assert not calls
    pd.testing.assert_frame_equal(again, first, check_exact=True)
    other = eval_sets(pair.tokenizer, 6, 1, ["ioi", "greater_than"])
    accuracy_along_post_training(run.checkpoints["mdm"], other, decoding_for("mdm"), progress=False, cache_dir=tmp_path)
    accuracy_along_post_training(run.checkpoints["mdm"], data, decoding_for("arm"), progress=False, cache_dir=tmp_path)
    assert len(calls) == 2


def test_reuse_and_keys(run):
    root = run.run_dir.parent.parent.parent
    again = prepare_embedded_pair(root, seed=0, arm=ARM, post=POST, device="cpu")
    assert again.run_dir == run.run_dir and again.logs["arm"].equals(run.logs["arm"])
    assert arm_run_dir(root, ARM, 0) != arm_run_dir(root, replace(ARM, steps=13), 0)
    assert arm_run_dir(root, ARM, 0) != arm_run_dir(root, ARM, 1)
    assert pair_run_dir(root, ARM, POST, 0) != pair_run_dir(root, ARM, replace(POST, lr=2e-3), 0)
    assert pair_run_dir(root, ARM, POST, 0).parent == arm_run_dir(root, ARM, 0)
    # the set of controls is not part of the key: asking for fewer reuses the same MDM
    assert pair_run_dir(root, ARM, replace(POST, controls=()), 0) == pair_run_dir(root, ARM, POST, 0)


def test_same_numbers_in_one_process_or_two(run, tmp_path):
    """Every run is single-threaded, so training the same seed in parallel worker processes gives the same
    weights as training it in this process."""
    runs = prepare_embedded_runs(tmp_path, [0, 1], ARM, POST, device="cpu", workers=2)
    for name in ("arm", "mdm", "mdm_scratch"):
        a = load_file(str(runs[0].model_dir(name) / "model.safetensors"))
        b = load_file(str(run.model_dir(name) / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert runs[0].logs["arm_continued"].loss.tolist() == run.logs["arm_continued"].loss.tolist()
    assert runs[1].logs["arm"].loss.tolist() != run.logs["arm"].loss.tolist()  # another seed


def test_interrupted_run_resumes_to_identical_weights(run, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_clip = torch.nn.utils.clip_grad_norm_

    def crash_after_seven(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt("simulated interruption")
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", crash_after_seven)
    with pytest.raises(KeyboardInterrupt):
        prepare_embedded_pair(tmp_path, seed=0, arm=ARM, post=POST, device="cpu", resume_every=5)
    state = torch.load(arm_run_dir(tmp_path, ARM, 0) / RESUME_FILE, weights_only=False)
    assert state["step"] == 5
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real_clip)
    resumed = prepare_embedded_pair(tmp_path, seed=0, arm=ARM, post=POST, device="cpu", resume_every=5)
    assert resumed.logs["arm"].loss.tolist() == run.logs["arm"].loss.tolist()
    assert not (arm_run_dir(tmp_path, ARM, 0) / RESUME_FILE).exists()
    a = AutoModelForCausalLM.from_pretrained(str(resumed.model_dir("mdm")))
    b = AutoModelForCausalLM.from_pretrained(str(run.model_dir("mdm")))
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), n


def test_missing_checkpoint_folder_names_the_parameter(tmp_path):
    with pytest.raises(ParameterError, match="checkpoint_dir: expected an existing folder"):
        load_pair("embedded", checkpoint_dir=tmp_path / "nope")
    with pytest.raises(ParameterError, match="checkpoint_dir: no ARM checkpoint"):
        load_pair("embedded", checkpoint_dir=tmp_path)
    with pytest.raises(ParameterError, match="seeds: expected distinct seeds"):
        prepare_embedded_runs(tmp_path, [0, 0], ARM, POST)
    with pytest.raises(ParameterError, match="post.controls: expected distinct names"):
        prepare_embedded_runs(tmp_path, [0], ARM, replace(POST, controls=("mdm_sideways",)))


def test_training_time_after_a_resume_counts_every_segment(tmp_path, monkeypatch):
    """A clock that moves one second per step: the ARM's 12 steps take 12 s whether or not the run was
    interrupted (after step 7, resumed from the state saved at step 5), not the last segment's 7 s."""
    from mechshift_utils.models import training

    clock = {"now": 0.0, "steps": 0, "crash_at": None}
    real_clip = torch.nn.utils.clip_grad_norm_

    def one_second_per_step(*args, **kwargs):
        clock["now"] += 1.0
        clock["steps"] += 1
        if clock["steps"] == clock["crash_at"]:
            raise KeyboardInterrupt("simulated interruption")
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(training, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", one_second_per_step)
    post = PostTrainConfig(steps=3, batch_size=4, warmup=1, anneal_steps=1, n_checkpoints=2, controls=())
    whole = prepare_embedded_pair(tmp_path / "whole", seed=0, arm=ARM, post=post, device="cpu", resume_every=5)
    assert whole.seconds["arm"] == ARM.steps and whole.seconds["mdm"] == post.steps
    clock.update(steps=0, crash_at=8)
    with pytest.raises(KeyboardInterrupt):
        prepare_embedded_pair(tmp_path / "cut", seed=0, arm=ARM, post=post, device="cpu", resume_every=5)
    clock["crash_at"] = None
    resumed = prepare_embedded_pair(tmp_path / "cut", seed=0, arm=ARM, post=post, device="cpu", resume_every=5)
    assert resumed.seconds["arm"] == ARM.steps, "both segments: 5 s saved with the state, 7 s after the resume"
    recorded = json.loads((arm_run_dir(tmp_path / "cut", ARM, 0) / "run.json").read_text())["seconds"]
    assert recorded == ARM.steps
    assert prepare_embedded_pair(tmp_path / "cut", seed=0, arm=ARM, post=post, device="cpu").seconds["arm"] == ARM.steps


def test_a_truncated_checkpoint_is_named_and_its_run_trained_again(run, tmp_path, capsys):
    from mechshift_utils.core.files import ArtifactError

    shutil.copytree(run.run_dir.parent.parent.parent, tmp_path, dirs_exist_ok=True)  # the module's run, copied
    fresh = prepare_embedded_pair(tmp_path, seed=0, arm=ARM, post=POST, device="cpu")
    assert capsys.readouterr().out == "" and fresh.run_dir.is_relative_to(tmp_path), "reused as it is"
    last = fresh.checkpoints["mdm"][10]
    weights = last / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ArtifactError) as err:
        load_pair("embedded", checkpoint_dir=fresh.run_dir, device="cpu")
    assert str(err.value).startswith(f"{last}: model.safetensors does not match its checksum in "
                                     "SHA256SUMS") and "./run_all.sh --only 01" in str(err.value)
    assert 10 not in checkpoints_of(fresh.run_dir, "mdm")
    again = prepare_embedded_pair(tmp_path, seed=0, arm=ARM, post=POST, device="cpu")
    printed = capsys.readouterr().out
    assert f"{last}: model.safetensors does not match its checksum" in printed
    assert "training mdm of seed 0 again" in printed and sorted(again.checkpoints["mdm"]) == DENSE_STEPS
    a = load_pair("embedded", checkpoint_dir=again.run_dir, device="cpu").mdm
    b = AutoModelForCausalLM.from_pretrained(str(run.model_dir("mdm")))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    # the ARM: its weights cut short, it is trained again (to the same weights)
    arm_weights = again.arm_dir / "model.safetensors"
    arm_weights.write_bytes(arm_weights.read_bytes()[:-10])
    prepare_embedded_pair(tmp_path, seed=0, arm=ARM, post=POST, device="cpu")
    assert f"{again.arm_dir}: model.safetensors does not match its checksum" in capsys.readouterr().out
    assert load_pair("embedded", checkpoint_dir=again.run_dir, device="cpu") is not None
