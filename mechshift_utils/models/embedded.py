"""The embedded model organism: a small GPT-2 ARM trained from scratch on the
task mixture, post-trained into an MDM, all on the CPU in minutes.

Artifacts are keyed by their configuration (a hash of it in the folder name),
so a changed configuration never reuses stale checkpoints::

    <artifacts_dir>/embedded/arm-<key>/          one ARM run, reused by every post-training run on it
        arm/                                   the ARM (save_pretrained, safetensors) + tokenizer
        config.json, training_log.csv
        mdm-<key>/                             one post-training run: pass it as checkpoint_dir
            checkpoints/step_000000/ ...       MDM checkpoints along post-training (HF format,
            checkpoints/step_<last>/           bidirectional config, tokenizer beside), last = the MDM
            config.json, post_training_log.csv

Every checkpoint loads with ``transformers.AutoModelForCausalLM.from_pretrained``.
Interrupted training resumes from ``resume.pt`` in the run folder. Every artifact is written
atomically with a checksum (a checkpoint folder carries a ``SHA256SUMS`` manifest, a file its
``<name>.sha256``, see mechshift_utils.core.files); a damaged checkpoint or log is found on the
next call, which trains that run again and says so.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from transformers import GPT2Config, GPT2LMHeadModel

from ..core.devices import resolve_device
from ..core.files import file_problem, folder_problem, staged_folder, verify_folder, write_text, write_with
from ..core.seeding import set_seed
from ..core.validation import (ParameterError, check_existing_dir, check_non_negative_int, check_positive_float,
                               check_positive_int)
from ..tasks import build_word_tokenizer, task_vocabulary
from .pair import ModelPair, is_bidirectional, load_checkpoint, load_tokenizer
from .post_training import post_train
from .training import LoopSettings, train_arm

CONFIG_VERSION = 1  # bump when the task generators or the recipe change meaning
RETRAIN_FIX = ("Notebook 01 (./run_all.sh --only 01, with the same -p options) or prepare_embedded_pair trains "
               "that run again")


@dataclass(frozen=True)
class ArmConfig:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    n_positions: int = 32
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 100

    def validate(self) -> "ArmConfig":
        for name in ("n_layer", "n_head", "n_embd", "n_positions", "steps", "batch_size"):
            check_positive_int(f"arm.{name}", getattr(self, name))
        check_non_negative_int("arm.warmup", self.warmup)
        check_positive_float("arm.lr", self.lr)
        if self.n_embd % self.n_head:
            raise ParameterError(f"arm.n_embd: expected a multiple of arm.n_head={self.n_head}, got {self.n_embd}")
        return self


@dataclass(frozen=True)
class PostTrainConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 50
    anneal_steps: int = 500
    n_checkpoints: int = 6

    def validate(self) -> "PostTrainConfig":
        for name in ("steps", "batch_size"):
            check_positive_int(f"post.{name}", getattr(self, name))
        check_non_negative_int("post.warmup", self.warmup)
        check_non_negative_int("post.anneal_steps", self.anneal_steps)
        check_positive_float("post.lr", self.lr)
        if not isinstance(self.n_checkpoints, int) or self.n_checkpoints < 2:
            raise ParameterError(f"post.n_checkpoints: expected an integer >= 2 (step 0 and the last), "
                                 f"got {self.n_checkpoints!r}")
        return self

    def checkpoint_steps(self) -> list[int]:
        n = min(self.n_checkpoints, self.steps + 1)
        return sorted({round(i * self.steps / (n - 1)) for i in range(n)})


DEFAULT_ARM = ArmConfig()
DEFAULT_POST = PostTrainConfig()
# Tiny sizes for tests and smoke runs: minutes become seconds, numbers mean nothing.
SMOKE_ARM = ArmConfig(n_layer=2, n_head=2, n_embd=32, steps=30, batch_size=16, warmup=5)
SMOKE_POST = PostTrainConfig(steps=30, batch_size=16, warmup=5, anneal_steps=10, n_checkpoints=6)


def configs_for(smoke: bool) -> tuple[ArmConfig, PostTrainConfig]:
    return (SMOKE_ARM, SMOKE_POST) if smoke else (DEFAULT_ARM, DEFAULT_POST)


def config_key(payload: dict) -> str:
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def _arm_payload(arm: ArmConfig, seed: int) -> dict:
    return {"version": CONFIG_VERSION, "seed": seed, "arm": asdict(arm), "vocabulary": task_vocabulary()}


def arm_run_dir(artifacts_dir, arm: ArmConfig, seed: int) -> Path:
    return Path(artifacts_dir) / "embedded" / f"arm-{config_key(_arm_payload(arm, seed))}"


def pair_run_dir(artifacts_dir, arm: ArmConfig, post: PostTrainConfig, seed: int) -> Path:
    key = config_key({"arm_run": arm_run_dir("", arm, seed).name, "post": asdict(post)})
    return arm_run_dir(artifacts_dir, arm, seed) / f"mdm-{key}"


def checkpoint_dir_for(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}"


def mdm_checkpoints(run_dir) -> dict[int, Path]:
    """Step -> folder of every MDM checkpoint of a post-training run that is complete and matches its
    checksums."""
    root = Path(run_dir) / "checkpoints"
    return {int(path.name.split("_")[1]): path for path in sorted(root.glob("step_*"))
            if path.is_dir() and folder_problem(path) is None}


def final_mdm_dir(run_dir) -> Path:
    config = Path(run_dir) / "config.json"
    if file_problem(config) is None:
        last = json.loads(config.read_text())["post"]["steps"]
        return checkpoint_dir_for(run_dir, last)
    found = mdm_checkpoints(run_dir)
    return found[max(found)] if found else checkpoint_dir_for(run_dir, 0)


def new_arm(tokenizer, arm: ArmConfig, seed: int) -> GPT2LMHeadModel:
    set_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=arm.n_positions, n_embd=arm.n_embd, n_layer=arm.n_layer,
        n_head=arm.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # no dropout: no RNG in training
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.mask_token_id = tokenizer.mask_token_id
    return GPT2LMHeadModel(config)


def _save(model, tokenizer, path: Path, extra_config: dict | None = None) -> None:
    """A checkpoint folder, staged under a name unique to this process and renamed into place with its
    SHA256SUMS manifest: it appears complete or not at all, also with two runs at once."""
    for k, v in (extra_config or {}).items():
        setattr(model.config, k, v)
    with staged_folder(path) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)


def _damage(problems: dict[Path, str | None]) -> str | None:
    """The first problem of artifacts that were written (some exist) but cannot be used; None when all are
    fine or none was ever written (a fresh run is not damage)."""
    if all(p is None for p in problems.values()) or not any(path.exists() for path in problems):
        return None
    path, problem = next((path, p) for path, p in problems.items() if p is not None)
    return f"{path}: {problem}"


@dataclass
class EmbeddedRun:
    """Where a prepared embedded pair lives, and its training logs."""

    trained = True  # class attribute: this run trained its pair (see mechshift_utils.notebook.pipeline.PairRun)

    arm_dir: Path
    run_dir: Path
    arm_log: pd.DataFrame
    post_log: pd.DataFrame
    checkpoints: dict[int, Path]
    arm_seconds: float
    post_seconds: float


def prepare_embedded_pair(artifacts_dir="artifacts", seed: int = 0, arm: ArmConfig = DEFAULT_ARM,
                          post: PostTrainConfig = DEFAULT_POST, device: str = "cpu",
                          resume_every: int = 100) -> EmbeddedRun:
    """Train the ARM and post-train it into the MDM, or reuse finished runs with the same configuration.

    A resume state is written every ``resume_every`` steps; an interrupted call,
    called again, continues from it (with the same numbers as an uninterrupted run), and the
    seconds it records count every segment. A run whose artifacts are damaged (checksums) is
    trained again, with a printed line naming the file.
    """
    check_non_negative_int("seed", seed)
    check_positive_int("resume_every", resume_every)
    arm, post = arm.validate(), post.validate()
    dev = resolve_device(device)
    arm_root = arm_run_dir(artifacts_dir, arm, seed)
    run_dir = pair_run_dir(artifacts_dir, arm, post, seed)
    arm_root.mkdir(parents=True, exist_ok=True)

    arm_dir = arm_root / "arm"
    arm_log_path, arm_config = arm_root / "training_log.csv", arm_root / "config.json"
    arm_problems = {arm_dir: folder_problem(arm_dir), arm_config: file_problem(arm_config),
                    arm_log_path: file_problem(arm_log_path)}
    if any(arm_problems.values()):
        damage = _damage(arm_problems)
        if damage:
            print(f"{damage}; training the ARM again")
        tokenizer = build_word_tokenizer()
        model = new_arm(tokenizer, arm, seed)
        log = train_arm(model, tokenizer, LoopSettings(arm.steps, arm.batch_size, arm.lr, arm.warmup,
                                                       description="ARM training", resume_every=resume_every),
                        arm_root, seed, device=dev)
        arm_seconds = log.attrs["seconds"]  # every segment of a resumed run
        _save(model.cpu(), tokenizer, arm_dir)
        write_text(arm_config, json.dumps(_arm_payload(arm, seed) | {"seconds": arm_seconds}, indent=1))
        write_with(arm_log_path, lambda p: log.to_csv(p, index=False))
    else:
        arm_seconds = json.loads(arm_config.read_text()).get("seconds", 0.0)
    arm_log = pd.read_csv(arm_log_path)

    post_log_path, post_config = run_dir / "post_training_log.csv", run_dir / "config.json"
    steps_wanted = post.checkpoint_steps()
    post_problems = {checkpoint_dir_for(run_dir, step): folder_problem(checkpoint_dir_for(run_dir, step))
                     for step in steps_wanted}
    post_problems |= {post_config: file_problem(post_config), post_log_path: file_problem(post_log_path)}
    if any(post_problems.values()):
        damage = _damage(post_problems)
        if damage:
            print(f"{damage}; post-training the MDM again")
        tokenizer = load_tokenizer(arm_dir, "artifacts_dir")
        model = load_checkpoint(arm_dir, dev)

        def save_checkpoint(step, m):
            if step in steps_wanted:
                _save(m, tokenizer, checkpoint_dir_for(run_dir, step),
                      {"mechshift_post_training_step": step})

        log = post_train(model, tokenizer, LoopSettings(post.steps, post.batch_size, post.lr, post.warmup,
                                                        description="post-training ARM -> MDM",
                                                        resume_every=resume_every),
                         post.anneal_steps, run_dir, seed, on_step_start=save_checkpoint, device=dev)
        post_seconds = log.attrs["seconds"]
        write_text(post_config, json.dumps(
            {"version": CONFIG_VERSION, "seed": seed, "arm_run": arm_root.name, "post": asdict(post),
             "seconds": post_seconds}, indent=1))
        write_with(post_log_path, lambda p: log.to_csv(p, index=False))
    else:
        post_seconds = json.loads(post_config.read_text()).get("seconds", 0.0)
    return EmbeddedRun(arm_dir, run_dir, arm_log, pd.read_csv(post_log_path), mdm_checkpoints(run_dir),
                       arm_seconds, post_seconds)


def load_embedded(checkpoint_dir=None, device="auto") -> ModelPair:
    """The embedded pair from a post-training run folder (``.../arm-<key>/mdm-<key>``, see
    :func:`prepare_embedded_pair`); the ARM is the ``arm`` folder beside it."""
    if checkpoint_dir is None:
        raise ParameterError("checkpoint_dir: the embedded pair needs the run folder that "
                             "mechshift_utils.models.embedded.prepare_embedded_pair wrote; got None")
    root = check_existing_dir("checkpoint_dir", checkpoint_dir)
    arm_dir, mdm_dir = root.parent / "arm", final_mdm_dir(root)
    for what, path in (("ARM", arm_dir), ("MDM", mdm_dir)):
        if not (path / "config.json").is_file():
            raise ParameterError(f"checkpoint_dir: no {what} checkpoint at {path} (train it first)")
        verify_folder(path, RETRAIN_FIX)
    dev = resolve_device(device)
    tokenizer = load_tokenizer(arm_dir, "checkpoint_dir")
    arm, mdm = load_checkpoint(arm_dir, dev), load_checkpoint(mdm_dir, dev)
    if is_bidirectional(arm) or not is_bidirectional(mdm):
        raise ParameterError(f"checkpoint_dir: expected a causal ARM and a bidirectional MDM in {root}")
    return ModelPair("embedded", arm, mdm, tokenizer, tokenizer.mask_token_id, dev,
                     source={"arm": str(arm_dir), "mdm": str(mdm_dir)})
