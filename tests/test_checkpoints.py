"""Checkpoints: Hugging Face format, round trip through from_pretrained, keyed by configuration,
resumable with identical results."""
import json
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mechshift_utils.models.embedded import (ArmConfig, PostTrainConfig, arm_run_dir, pair_run_dir,
                                             prepare_embedded_pair)
from mechshift_utils.models import is_bidirectional, load_pair
from mechshift_utils.models.training import RESUME_FILE
from mechshift_utils.core.validation import ParameterError

ARM = ArmConfig(n_layer=2, n_head=2, n_embd=16, steps=12, batch_size=8, warmup=2)
POST = PostTrainConfig(steps=10, batch_size=8, warmup=2, anneal_steps=5, n_checkpoints=6)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return prepare_embedded_pair(tmp_path_factory.mktemp("art"), seed=0, arm=ARM, post=POST, device="cpu")


def test_checkpoints_along_post_training(run):
    assert sorted(run.checkpoints) == [0, 2, 4, 6, 8, 10]
    assert len(run.post_log) == POST.steps and len(run.arm_log) == ARM.steps
    assert run.post_log.anneal_ratio.iloc[0] == 0.0 and run.post_log.anneal_ratio.iloc[-1] == 1.0


def test_round_trip_through_auto_classes(run):
    arm = AutoModelForCausalLM.from_pretrained(str(run.arm_dir))
    assert type(arm).__name__ == "GPT2LMHeadModel" and not is_bidirectional(arm)
    assert (run.arm_dir / "model.safetensors").is_file()
    for step, path in run.checkpoints.items():
        mdm = AutoModelForCausalLM.from_pretrained(str(path))
        assert is_bidirectional(mdm), f"MDM checkpoint {step} must load bidirectional"
        assert json.loads((path / "config.json").read_text())["is_causal"] is False
        tok = AutoTokenizer.from_pretrained(str(path))
        assert tok.mask_token == "[MASK]" and mdm.config.mask_token_id == tok.mask_token_id
    # step 0 is the ARM's weights, only read with full attention
    step0 = AutoModelForCausalLM.from_pretrained(str(run.checkpoints[0]))
    for (n, a), (_, b) in zip(arm.state_dict().items(), step0.state_dict().items()):
        assert torch.equal(a, b), n
    last = AutoModelForCausalLM.from_pretrained(str(run.checkpoints[10]))
    assert not torch.equal(arm.transformer.h[0].attn.c_attn.weight, last.transformer.h[0].attn.c_attn.weight)


def test_saved_weights_give_the_same_logits(run):
    pair = load_pair("embedded", checkpoint_dir=run.run_dir, device="cpu")
    x = torch.randint(4, 50, (2, 9))
    again = AutoModelForCausalLM.from_pretrained(str(run.checkpoints[10])).eval()
    with torch.no_grad():
        assert torch.allclose(pair.mdm(input_ids=x).logits, again(input_ids=x).logits)
    assert pair.mask_token_id == pair.tokenizer.mask_token_id


def test_reuse_and_keys(run, tmp_path):
    root = run.run_dir.parent.parent.parent
    again = prepare_embedded_pair(root, seed=0, arm=ARM, post=POST, device="cpu")
    assert again.run_dir == run.run_dir and again.arm_log.equals(run.arm_log)
    assert arm_run_dir(root, ARM, 0) != arm_run_dir(root, replace(ARM, steps=13), 0)
    assert arm_run_dir(root, ARM, 0) != arm_run_dir(root, ARM, 1)
    assert pair_run_dir(root, ARM, POST, 0) != pair_run_dir(root, ARM, replace(POST, lr=2e-3), 0)
    assert pair_run_dir(root, ARM, POST, 0).parent == arm_run_dir(root, ARM, 0)


def test_same_seed_same_numbers(run, tmp_path):
    other = prepare_embedded_pair(tmp_path, seed=0, arm=ARM, post=POST, device="cpu")
    assert other.arm_log.loss.tolist() == run.arm_log.loss.tolist()
    assert other.post_log.loss.tolist() == run.post_log.loss.tolist()


def test_interrupted_run_resumes_to_identical_weights(run, tmp_path, monkeypatch):
    arm = replace(ARM, steps=12)
    calls = {"n": 0}
    real_clip = torch.nn.utils.clip_grad_norm_

    def crash_after_seven(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt("simulated interruption")
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", crash_after_seven)
    with pytest.raises(KeyboardInterrupt):
        prepare_embedded_pair(tmp_path, seed=0, arm=arm, post=POST, device="cpu", resume_every=5)
    state = torch.load(arm_run_dir(tmp_path, arm, 0) / RESUME_FILE, weights_only=False)
    assert state["step"] == 5
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real_clip)
    resumed = prepare_embedded_pair(tmp_path, seed=0, arm=arm, post=POST, device="cpu", resume_every=5)
    assert resumed.arm_log.loss.tolist() == run.arm_log.loss.tolist()
    assert not (arm_run_dir(tmp_path, arm, 0) / RESUME_FILE).exists()
    a = AutoModelForCausalLM.from_pretrained(str(resumed.checkpoints[10]))
    b = AutoModelForCausalLM.from_pretrained(str(run.checkpoints[10]))
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), n


def test_missing_checkpoint_folder_names_the_parameter(tmp_path):
    with pytest.raises(ParameterError, match="checkpoint_dir: expected an existing folder"):
        load_pair("embedded", checkpoint_dir=tmp_path / "nope")
    with pytest.raises(ParameterError, match="checkpoint_dir: no ARM checkpoint"):
        load_pair("embedded", checkpoint_dir=tmp_path)


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
    post = PostTrainConfig(steps=3, batch_size=4, warmup=1, anneal_steps=1, n_checkpoints=2)  # kept short
    whole = prepare_embedded_pair(tmp_path / "whole", seed=0, arm=ARM, post=post, device="cpu", resume_every=5)
    assert whole.arm_seconds == ARM.steps and whole.post_seconds == post.steps
    clock.update(steps=0, crash_at=8)
    with pytest.raises(KeyboardInterrupt):
        prepare_embedded_pair(tmp_path / "cut", seed=0, arm=ARM, post=post, device="cpu", resume_every=5)
    clock["crash_at"] = None
    resumed = prepare_embedded_pair(tmp_path / "cut", seed=0, arm=ARM, post=post, device="cpu", resume_every=5)
    assert resumed.arm_seconds == ARM.steps, "both segments: 5 s saved with the state, 7 s after the resume"
    recorded = json.loads((arm_run_dir(tmp_path / "cut", ARM, 0) / "config.json").read_text())["seconds"]
    assert recorded == ARM.steps
    assert prepare_embedded_pair(tmp_path / "cut", seed=0, arm=ARM, post=post, device="cpu").arm_seconds == ARM.steps


def test_a_truncated_checkpoint_is_named_and_its_run_trained_again(run, tmp_path, capsys):
    from mechshift_utils.core.files import ArtifactError

    import shutil

    shutil.copytree(run.run_dir.parent.parent.parent, tmp_path, dirs_exist_ok=True)  # the module's run, copied
    fresh = prepare_embedded_pair(tmp_path, seed=0, arm=ARM, post=POST, device="cpu")
    assert capsys.readouterr().out == "" and fresh.run_dir.is_relative_to(tmp_path), "reused as it is"
    weights = fresh.checkpoints[10] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ArtifactError) as err:
        load_pair("embedded", checkpoint_dir=fresh.run_dir, device="cpu")
    assert str(err.value).startswith(f"{fresh.checkpoints[10]}: model.safetensors does not match its checksum in "
                                     "SHA256SUMS") and "./run_all.sh --only 01" in str(err.value)
    assert 10 not in prepare_embedded_pair.__globals__["mdm_checkpoints"](fresh.run_dir)
    again = prepare_embedded_pair(tmp_path, seed=0, arm=ARM, post=POST, device="cpu")
    printed = capsys.readouterr().out
    assert f"{fresh.checkpoints[10]}: model.safetensors does not match its checksum" in printed
    assert "post-training the MDM again" in printed and sorted(again.checkpoints) == [0, 2, 4, 6, 8, 10]
    a = load_pair("embedded", checkpoint_dir=again.run_dir, device="cpu").mdm
    b = AutoModelForCausalLM.from_pretrained(str(run.checkpoints[10]))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    # the ARM: its weights cut short, it is trained again (to the same weights)
    arm_weights = again.arm_dir / "model.safetensors"
    arm_weights.write_bytes(arm_weights.read_bytes()[:-10])
    prepare_embedded_pair(tmp_path, seed=0, arm=ARM, post=POST, device="cpu")
    assert f"{again.arm_dir}: model.safetensors does not match its checksum" in capsys.readouterr().out
    assert load_pair("embedded", checkpoint_dir=again.run_dir, device="cpu") is not None
