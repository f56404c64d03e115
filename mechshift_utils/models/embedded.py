"""The embedded model organism: a small GPT-2 ARM trained from scratch on the task mixture,
post-trained into an MDM, and the control runs beside it, all on the CPU.

Artifacts are keyed by their configuration (a hash of it in the folder name),
so a changed configuration never reuses stale checkpoints::

    <artifacts_dir>/embedded/arm-<key>/          one ARM run (one seed), reused by every post-training on it
        arm/                                   the ARM (save_pretrained, safetensors) + tokenizer
        run.json, training_log.csv
        mdm-<key>/                             one post-training configuration: pass it as checkpoint_dir
            checkpoints/step_000000/ ...       MDM checkpoints along post-training (HF format,
            checkpoints/step_<last>/           bidirectional config, tokenizer beside), last = the MDM
            run.json, training_log.csv
            controls/<name>/checkpoints/...    the control runs (post_training.RECIPES), same layout
            config.json                        the configuration of the whole post-training run

Every checkpoint loads with ``transformers.AutoModelForCausalLM.from_pretrained``.
Interrupted training resumes from ``resume.pt`` in the run's folder. Every artifact is written
atomically with a checksum (a checkpoint folder carries a ``SHA256SUMS`` manifest, a file its
``<name>.sha256``, see mechshift_utils.core.files); a damaged checkpoint or log is found on the
next call, which trains that run again and says so. The runs of several seeds
(:func:`prepare_embedded_runs`) train in parallel processes, one thread each: the numbers are the
same whatever the number of processes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import pandas as pd
from tqdm import tqdm
from transformers import GPT2Config, GPT2LMHeadModel

from ..core.cpus import usable_cores
from ..core.devices import resolve_device
from ..core.files import file_problem, folder_problem, staged_folder, verify_folder, write_text, write_with
from ..core.seeding import set_seed, stable_seed
from ..core.validation import (ParameterError, check_existing_dir, check_non_negative_int, check_positive_float,
                               check_positive_int)
from ..tasks import build_word_tokenizer, task_vocabulary
from .pair import Decoding, ModelPair, is_bidirectional, load_checkpoint, load_tokenizer
from .post_training import CONTROLS, RECIPES, post_train
from .training import LoopSettings, train_arm, training_threads

CONFIG_VERSION = 3  # bump when the task generators or the recipe change meaning
RETRAIN_FIX = ("Notebook 01 (./run_all.sh --only 01, with the same -p options) or prepare_embedded_runs trains "
               "that run again")
DENSE = ("mdm", "arm_continued", "mdm_causal")  # runs saved at every checkpoint step (the others: the last)


@dataclass(frozen=True)
class ArmConfig:
    n_layer: int = 6
    n_head: int = 4
    n_embd: int = 64
    n_positions: int = 32
    steps: int = 3000
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
    steps: int = 1200
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 50
    anneal_steps: int = 240
    n_checkpoints: int = 11
    controls: tuple[str, ...] = CONTROLS

    def validate(self) -> "PostTrainConfig":
        for name in ("steps", "batch_size"):
            check_positive_int(f"post.{name}", getattr(self, name))
        check_non_negative_int("post.warmup", self.warmup)
        check_non_negative_int("post.anneal_steps", self.anneal_steps)
        check_positive_float("post.lr", self.lr)
        if not isinstance(self.n_checkpoints, int) or self.n_checkpoints < 2:
            raise ParameterError(f"post.n_checkpoints: expected an integer >= 2 (step 0 and the last), "
                                 f"got {self.n_checkpoints!r}")
        unknown = [c for c in self.controls if c not in CONTROLS]
        if unknown or len(set(self.controls)) != len(self.controls):
            raise ParameterError(f"post.controls: expected distinct names among {list(CONTROLS)}, "
                                 f"got {list(self.controls)}")
        return self

    def checkpoint_steps(self) -> list[int]:
        """``n_checkpoints`` evenly spaced steps from 0 to the last, and the end of the annealing."""
        n = min(self.n_checkpoints, self.steps + 1)
        steps = {round(i * self.steps / (n - 1)) for i in range(n)}
        if 0 < self.anneal_steps < self.steps:
            steps.add(self.anneal_steps)
        return sorted(steps)

    @property
    def runs(self) -> tuple[str, ...]:
        return ("mdm", *self.controls)


DEFAULT_ARM = ArmConfig()
DEFAULT_POST = PostTrainConfig()
# Tiny sizes for tests and smoke runs: minutes become seconds, numbers mean nothing.
SMOKE_ARM = ArmConfig(n_layer=2, n_head=2, n_embd=32, steps=30, batch_size=16, warmup=5)
SMOKE_POST = PostTrainConfig(steps=30, batch_size=16, warmup=5, anneal_steps=10, n_checkpoints=4)


def configs_for(smoke: bool) -> tuple[ArmConfig, PostTrainConfig]:
    return (SMOKE_ARM, SMOKE_POST) if smoke else (DEFAULT_ARM, DEFAULT_POST)


def config_key(payload: dict) -> str:
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def _arm_payload(arm: ArmConfig, seed: int) -> dict:
    return {"version": CONFIG_VERSION, "seed": seed, "arm": asdict(arm), "vocabulary": task_vocabulary()}


def _post_payload(arm: ArmConfig, post: PostTrainConfig, seed: int) -> dict:
    payload = asdict(post)
    payload.pop("controls")  # the controls live in their own folders: adding one keeps the MDM's key
    return {"arm_run": arm_run_dir("", arm, seed).name, "post": payload}


def arm_run_dir(artifacts_dir, arm: ArmConfig, seed: int) -> Path:
    return Path(artifacts_dir) / "embedded" / f"arm-{config_key(_arm_payload(arm, seed))}"


def pair_run_dir(artifacts_dir, arm: ArmConfig, post: PostTrainConfig, seed: int) -> Path:
    return arm_run_dir(artifacts_dir, arm, seed) / f"mdm-{config_key(_post_payload(arm, post, seed))}"


def run_folder(run_dir, name: str) -> Path:
    """The folder of one post-training run: the MDM's is the run folder itself, a control's is below it."""
    return Path(run_dir) if name == "mdm" else Path(run_dir) / "controls" / name


def checkpoint_dir_for(run_dir: Path, step: int, name: str = "mdm") -> Path:
    return run_folder(run_dir, name) / "checkpoints" / f"step_{step:06d}"


def complete_checkpoint(path: Path) -> bool:
    """A checkpoint folder that is whole and matches its checksums."""
    return Path(path).is_dir() and folder_problem(path) is None


def checkpoints_of(run_dir, name: str = "mdm") -> dict[int, Path]:
    """Step -> folder of every checkpoint of one post-training run that is complete and matches its
    checksums."""
    root = run_folder(run_dir, name) / "checkpoints"
    return {int(path.name.split("_")[1]): path for path in sorted(root.glob("step_*")) if complete_checkpoint(path)}


def mdm_checkpoints(run_dir) -> dict[int, Path]:
    return checkpoints_of(run_dir, "mdm")


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
        activation_function="gelu",  # exact GELU: on the CPU about 4x cheaper than GPT-2's tanh form
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


def _write_json(path: Path, payload: dict) -> None:
    write_text(path, json.dumps(payload, indent=1))


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    write_with(path, lambda p: table.to_csv(p, index=False))


def _damage(problems: dict[Path, str | None]) -> str | None:
    """The first problem of artifacts that were written (some exist) but cannot be used; None when all are
    fine or none was ever written (a fresh run is not damage)."""
    if all(p is None for p in problems.values()) or not any(path.exists() for path in problems):
        return None
    path, problem = next((path, p) for path, p in problems.items() if p is not None)
    return f"{path}: {problem}"


# --- one training run each ------------------------------------------------------------------------

def _arm_problems(artifacts_dir, arm: ArmConfig, seed: int) -> dict[Path, str | None]:
    root = arm_run_dir(artifacts_dir, arm, seed)
    return {root / "arm": folder_problem(root / "arm"), root / "run.json": file_problem(root / "run.json"),
            root / "training_log.csv": file_problem(root / "training_log.csv")}


def arm_done(artifacts_dir, arm: ArmConfig, seed: int) -> bool:
    return not any(_arm_problems(artifacts_dir, arm, seed).values())


def train_arm_run(artifacts_dir, arm: ArmConfig, seed: int, device: str = "cpu", resume_every: int = 100,
                  progress: bool = True) -> float:
    """Train one seed's ARM (or find it trained); returns its training seconds."""
    root = arm_run_dir(artifacts_dir, arm, seed)
    problems = _arm_problems(artifacts_dir, arm, seed)
    if not any(problems.values()):
        return json.loads((root / "run.json").read_text())["seconds"]
    damage = _damage(problems)
    if damage:
        print(f"{damage}; training the ARM of seed {seed} again")
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = build_word_tokenizer()
    model = new_arm(tokenizer, arm, seed)
    settings = LoopSettings(arm.steps, arm.batch_size, arm.lr, arm.warmup, resume_every=resume_every,
                            description=f"ARM training (seed {seed})", progress=progress)
    with training_threads():
        result = train_arm(model, tokenizer, settings, root, seed, device=resolve_device(device))
    _save(model.cpu(), tokenizer, root / "arm")
    _write_csv(root / "training_log.csv", result.log)
    _write_json(root / "run.json", _arm_payload(arm, seed) | {"seconds": result.seconds})
    return result.seconds


def _post_problems(artifacts_dir, arm: ArmConfig, post: PostTrainConfig, seed: int,
                   name: str) -> dict[Path, str | None]:
    run_dir = pair_run_dir(artifacts_dir, arm, post, seed)
    folder = run_folder(run_dir, name)
    wanted = post.checkpoint_steps() if name in DENSE else [post.steps]
    problems = {checkpoint_dir_for(run_dir, step, name): folder_problem(checkpoint_dir_for(run_dir, step, name))
                for step in wanted}
    return problems | {folder / f: file_problem(folder / f) for f in ("run.json", "training_log.csv")}


def post_run_done(artifacts_dir, arm: ArmConfig, post: PostTrainConfig, seed: int, name: str) -> bool:
    return not any(_post_problems(artifacts_dir, arm, post, seed, name).values())


def train_post_run(artifacts_dir, arm: ArmConfig, post: PostTrainConfig, seed: int, name: str,
                   device: str = "cpu", resume_every: int = 100, progress: bool = True) -> float:
    """Train one post-training run of a seed (the MDM or a control) from that seed's trained ARM (or
    find it trained); returns its training seconds."""
    run_dir = pair_run_dir(artifacts_dir, arm, post, seed)
    folder = run_folder(run_dir, name)
    problems = _post_problems(artifacts_dir, arm, post, seed, name)
    if not any(problems.values()):
        return json.loads((folder / "run.json").read_text())["seconds"]
    damage = _damage(problems)
    if damage:
        print(f"{damage}; training {name} of seed {seed} again")
    recipe = RECIPES[name]
    arm_dir = arm_run_dir(artifacts_dir, arm, seed) / "arm"
    if not complete_checkpoint(arm_dir):
        raise ParameterError(f"seed: the ARM of seed {seed} is not trained yet ({arm_dir}); train it first")
    folder.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    tokenizer = load_tokenizer(arm_dir, "artifacts_dir")
    if recipe.init == "arm":
        model = load_checkpoint(arm_dir, dev)
    else:
        model = new_arm(tokenizer, arm, stable_seed(seed, "scratch") % 2**31).to(dev)
    steps_wanted = set(post.checkpoint_steps()) if name in DENSE else {post.steps}

    def save_checkpoint(step, m):
        if step in steps_wanted:
            _save(m, tokenizer, checkpoint_dir_for(run_dir, step, name),
                  {"mechshift_post_training_step": step, "mechshift_recipe": name})

    settings = LoopSettings(post.steps, post.batch_size, post.lr, post.warmup, resume_every=resume_every,
                            description=f"{name} (seed {seed})", progress=progress)
    with training_threads():
        result = post_train(model, tokenizer, settings, post.anneal_steps, folder, seed,
                            on_step_start=save_checkpoint, device=dev, recipe=recipe)
    _write_csv(folder / "training_log.csv", result.log)
    _write_json(folder / "run.json", {"version": CONFIG_VERSION, "seed": seed, "recipe": asdict(recipe),
                                      "seconds": result.seconds})
    return result.seconds


# --- every run of some seeds ----------------------------------------------------------------------

@dataclass
class EmbeddedRun:
    """Where one seed's embedded pair and its controls live, with their training logs and times."""

    trained: ClassVar[bool] = True  # this run trained its pair (see mechshift_utils.notebook.pipeline.PairRun)

    seed: int
    arm_dir: Path
    run_dir: Path
    logs: dict[str, pd.DataFrame] = field(default_factory=dict)  # "arm", "mdm", and each control
    seconds: dict[str, float] = field(default_factory=dict)
    checkpoints: dict[str, dict[int, Path]] = field(default_factory=dict)  # "mdm" and each control

    def model_dir(self, name: str, step: int | None = None) -> Path:
        """The folder of a model of this seed: "arm", "step0" (the ARM's weights read with full attention:
        the MDM's step-0 checkpoint), "mdm" or a control, at ``step`` (default: its last)."""
        if name == "arm":
            return self.arm_dir
        if name == "step0":
            name, step = "mdm", 0
        if name not in self.checkpoints:
            raise ParameterError(f"name: expected 'arm', 'step0' or one of {sorted(self.checkpoints)}, got {name!r}")
        found = self.checkpoints[name]
        step = max(found) if step is None else step
        if step not in found:
            raise ParameterError(f"step: {name} of seed {self.seed} has checkpoints at {sorted(found)}, got {step}")
        return found[step]


def load_run(artifacts_dir, arm: ArmConfig, post: PostTrainConfig, seed: int) -> EmbeddedRun:
    root = arm_run_dir(artifacts_dir, arm, seed)
    run_dir = pair_run_dir(artifacts_dir, arm, post, seed)
    run = EmbeddedRun(seed, root / "arm", run_dir)
    run.logs["arm"] = pd.read_csv(root / "training_log.csv")
    run.seconds["arm"] = json.loads((root / "run.json").read_text())["seconds"]
    for name in post.runs:
        folder = run_folder(run_dir, name)
        run.logs[name] = pd.read_csv(folder / "training_log.csv")
        run.seconds[name] = json.loads((folder / "run.json").read_text())["seconds"]
        run.checkpoints[name] = checkpoints_of(run_dir, name)
    return run


def _job(kind: str, artifacts_dir: str, arm: ArmConfig, post: PostTrainConfig, seed: int, device: str,
         resume_every: int) -> tuple[str, int, float]:
    """One training run in a worker process (module level: picklable)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per saved checkpoint would drown the parent's bar
    if kind == "arm":
        return kind, seed, train_arm_run(artifacts_dir, arm, seed, device, resume_every, progress=False)
    return kind, seed, train_post_run(artifacts_dir, arm, post, seed, kind, device, resume_every, progress=False)


def default_workers(device: str = "cpu", arm: ArmConfig = DEFAULT_ARM, post: PostTrainConfig = DEFAULT_POST) -> int:
    """Parallel training processes: one per core (at most four); one on a GPU, and one for runs so short
    (tests, smoke runs) that starting a process would cost more than the training."""
    if resolve_device(device).type != "cpu" or arm.steps + post.steps < 500:
        return 1
    return min(usable_cores(), 4)


def prepare_embedded_runs(artifacts_dir="artifacts", seeds=(0,), arm: ArmConfig = DEFAULT_ARM,
                          post: PostTrainConfig = DEFAULT_POST, device: str = "cpu", resume_every: int = 100,
                          workers: int = 0) -> list[EmbeddedRun]:
    """Train every seed's ARM, MDM and controls (or reuse finished runs with the same configuration).

    ``workers``: parallel processes (0: :func:`default_workers`); each run uses one thread, so the
    numbers do not depend on it. A run's ARM is trained before its post-training runs; the others run
    as soon as a process is free. An interrupted call, called again, continues every unfinished run
    from its resume state, with the same numbers as an uninterrupted one.
    """
    seeds = list(seeds)
    if not seeds:
        raise ParameterError("seeds: expected at least one seed, got none")
    for s in seeds:
        check_non_negative_int("seed", s)
    if len(set(seeds)) != len(seeds):
        raise ParameterError(f"seeds: expected distinct seeds, got {seeds}")
    check_positive_int("resume_every", resume_every)
    check_non_negative_int("workers", workers)
    arm, post = arm.validate(), post.validate()
    resolve_device(device)
    artifacts_dir = str(Path(artifacts_dir).resolve())
    todo_arm = [s for s in seeds if not arm_done(artifacts_dir, arm, s)]
    todo_post = {s: [n for n in post.runs if not post_run_done(artifacts_dir, arm, post, s, n)] for s in seeds}
    total = len(todo_arm) + sum(len(v) for v in todo_post.values())
    workers = workers or default_workers(device, arm, post)
    if total:
        bar = tqdm(total=total, desc=f"training {total} runs in {min(workers, total)} process(es)")
        done = _run_jobs(todo_arm, todo_post, artifacts_dir, arm, post, device, resume_every, workers, bar)
        bar.close()
        for kind, seed, seconds in done:
            print(f"trained {kind} (seed {seed}) in {seconds:.0f} s")
    for s in seeds:
        pair_dir = pair_run_dir(artifacts_dir, arm, post, s)
        if not (pair_dir / "config.json").is_file():
            _write_json(pair_dir / "config.json", {"version": CONFIG_VERSION, "seed": s,
                                                   "arm_run": arm_run_dir("", arm, s).name, "post": asdict(post)})
    return [load_run(artifacts_dir, arm, post, s) for s in seeds]


def _run_jobs(todo_arm, todo_post, artifacts_dir, arm, post, device, resume_every, workers, bar) -> list:
    args = (artifacts_dir, arm, post)
    if workers == 1:
        done = []
        for s in todo_arm:
            done.append(_job("arm", *args, s, device, resume_every))
            bar.update(1)
        for s, names in todo_post.items():
            for name in names:
                done.append(_job(name, *args, s, device, resume_every))
                bar.update(1)
        return done
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    done = []
    waiting_on_arm = set(todo_arm)
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_job, "arm", *args, s, device, resume_every) for s in todo_arm}
        for s, names in todo_post.items():
            if s not in waiting_on_arm:
                futures |= {pool.submit(_job, n, *args, s, device, resume_every) for n in names}
        while futures:
            finished, futures = wait(futures, return_when=FIRST_COMPLETED)
            for f in finished:
                kind, seed, seconds = f.result()
                done.append((kind, seed, seconds))
                bar.update(1)
                if kind == "arm":
                    futures |= {pool.submit(_job, n, *args, seed, device, resume_every) for n in todo_post[seed]}
    return done


def prepare_embedded_pair(artifacts_dir="artifacts", seed: int = 0, arm: ArmConfig = DEFAULT_ARM,
                          post: PostTrainConfig = DEFAULT_POST, device: str = "cpu",
                          resume_every: int = 100, workers: int = 0) -> EmbeddedRun:
    """One seed's runs (see :func:`prepare_embedded_runs`)."""
    return prepare_embedded_runs(artifacts_dir, [seed], arm, post, device, resume_every, workers)[0]


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


# --- the models of one seed, by name -------------------------------------------------------------

# Every model the analyses compare with the seed's ARM: the MDM, the trained controls, the ARM's
# weights read with full attention (step 0 of post-training) and the ARM of another seed.
MODEL_NAMES = ("arm", "mdm", *CONTROLS, "step0", "arm_twin")
LEFT_TO_RIGHT = ("arm", "arm_continued", "arm_twin")  # trained causal on next tokens: they decode in order


def decoding_for(name: str) -> Decoding:
    """How a named model fills several answer slots: in order for the ARM-like models, by confidence for
    every model trained with the masked objective (and for step 0, the MDM's starting point)."""
    base = name.split("@")[0]
    if base not in MODEL_NAMES:
        raise ParameterError(f"name: expected one of {list(MODEL_NAMES)} (optionally '@<step>'), got {name!r}")
    return Decoding("left_to_right") if base in LEFT_TO_RIGHT else Decoding("confidence")


def twin_of(runs: list[EmbeddedRun], seed: int) -> EmbeddedRun | None:
    """The run whose ARM serves as ``arm_twin`` for ``seed``: the next seed of ``runs`` (cyclically);
    None with a single seed."""
    seeds = [r.seed for r in runs]
    if len(seeds) < 2:
        return None
    return runs[(seeds.index(seed) + 1) % len(seeds)]


def model_folder(runs: list[EmbeddedRun], seed: int, name: str) -> Path:
    """The checkpoint folder of a named model of ``seed``; ``name@<step>`` picks a post-training step of
    "mdm" or a densely saved control."""
    run = next((r for r in runs if r.seed == seed), None)
    if run is None:
        raise ParameterError(f"seed: expected one of {[r.seed for r in runs]}, got {seed}")
    base, _, step = name.partition("@")
    decoding_for(base)  # checks the name
    if base == "arm_twin":
        twin = twin_of(runs, seed)
        if twin is None:
            raise ParameterError("name: arm_twin needs a second seed (seeds >= 2)")
        return twin.arm_dir
    return run.model_dir(base, int(step) if step else None)


def load_models(runs: list[EmbeddedRun], seed: int, names, device="cpu") -> dict:
    """The named models of one seed (see :data:`MODEL_NAMES`), loaded once each, in eval mode."""
    dev = resolve_device(device)
    return {name: load_checkpoint(model_folder(runs, seed, name), dev) for name in names}
