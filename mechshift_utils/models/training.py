"""Training loops: the ARM from scratch (next-token loss), and the shared loop (progress bar, resume,
step-seeded batches) that post-training and its controls reuse.

Every batch is drawn from a generator seeded by (seed, stream, step), so a run interrupted and
resumed from its resume state gives the same weights as an uninterrupted one. Training runs single
threaded (see :data:`TRAIN_THREADS`): the numbers then do not depend on how many runs share the
machine's cores.
"""
from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm  # text bars: visible in run_all.sh logs and in JupyterLab alike

from ..core.files import file_problem, remove, write_with
from ..core.seeding import stable_seed
from ..tasks import TASKS, TRAIN, TRAINING_TASKS, TaskExample, encode_rows
from .fast_forward import gpt2_logits

RESUME_FILE = "resume.pt"
# One thread per training run: on a small model one thread does most of what two do, two runs in
# two processes do twice as much, and the result never depends on the number of threads.
TRAIN_THREADS = 1


@contextmanager
def training_threads(n: int = TRAIN_THREADS):
    """Run the block with ``n`` intra-op threads, then restore the previous number."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def task_mixture_batch(tokenizer, batch_size: int, seed: int, stream: str, step: int,
                       tasks: tuple[str, ...] = TRAINING_TASKS) -> torch.Tensor:
    """A batch of full (answer-filled) sequences from the tasks' train splits, tasks mixed uniformly,
    right-padded with [PAD]."""
    rng = random.Random(stable_seed(seed, stream, step))
    examples: list[TaskExample] = [TASKS[rng.choice(tasks)].sample(rng, TRAIN) for _ in range(batch_size)]
    rows = encode_rows(tokenizer, [e.full for e in examples])
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)


def next_token_loss(logits: torch.Tensor, batch: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Cross-entropy of every non-pad token given the ones before it (mean over those tokens)."""
    target = batch[:, 1:]
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), target, reduction="none")
    real = (target != pad_token_id).float()
    return (ce * real).sum() / real.sum().clamp(min=1.0)


def arm_loss(model, batch: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """The ARM's next-token loss on a right-padded batch (causal attention: padding at the end is
    never attended by a real token)."""
    return next_token_loss(gpt2_logits(model, batch), batch, pad_token_id)


def lr_at(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak (a factor on the peak lr)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class LoopSettings:
    steps: int
    batch_size: int
    lr: float
    warmup: int
    weight_decay: float = 0.01
    resume_every: int = 100
    description: str = "training"
    progress: bool = True


@dataclass
class LoopResult:
    log: pd.DataFrame
    seconds: float  # training time over every segment of an interrupted and resumed run


def run_training_loop(model, settings: LoopSettings, run_dir: Path,
                      loss_on_step: Callable[[object, int], tuple[torch.Tensor, dict]],
                      on_step_start: Callable[[int, object], None] | None = None,
                      device: torch.device | str = "cpu") -> LoopResult:
    """Optimise ``model`` for ``settings.steps`` steps; returns the per-step log and the time taken.

    ``loss_on_step(model, step)`` draws the step's batch itself (seeded by the
    step) and returns the loss and extra columns for the log.
    ``on_step_start(step, model)`` runs before the update of ``step`` and once
    more with ``step == settings.steps`` at the end (checkpoints hook in here).
    A resume state is written every ``resume_every`` steps (atomically, with its checksum) and removed
    at the end; a damaged one is reported and the run starts again from step 0. The seconds count
    every segment of a resumed run (the work done after the last resume state of an interrupted
    segment is done again, and counted then).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.to(device).train()
    # fused: one kernel for all parameters (about 0.6 ms a step on the organism instead of 3.4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(0.9, 0.98),
                                  weight_decay=settings.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, settings.steps, settings.warmup))
    start, log, before = 0, [], 0.0
    resume = run_dir / RESUME_FILE
    state = _resume_state(resume, device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, log, before = state["step"], state["log"], state.get("seconds", 0.0)
    t0 = perf_counter()
    bar = tqdm(range(start, settings.steps), initial=start, total=settings.steps, desc=settings.description,
               mininterval=2.0, disable=not settings.progress)
    for step in bar:
        if on_step_start is not None:
            on_step_start(step, model)
        loss, extra = loss_on_step(model, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        log.append({"step": step, "loss": loss.item(), "lr": scheduler.get_last_lr()[0], **extra})
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % settings.resume_every == 0 and step + 1 < settings.steps:
            snapshot = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "step": step + 1, "log": log,
                        "seconds": before + perf_counter() - t0}
            write_with(resume, lambda p: torch.save(snapshot, p))  # never half a resume state
    bar.close()
    if on_step_start is not None:
        on_step_start(settings.steps, model)
    model.eval()
    remove(resume)
    return LoopResult(pd.DataFrame(log), before + perf_counter() - t0)


def _resume_state(resume: Path, device) -> dict | None:
    """The saved state of an interrupted run, or None (none saved, or damaged: then said so)."""
    if not resume.exists():
        return None
    problem = file_problem(resume)
    if problem is None:
        try:
            return torch.load(resume, map_location=device, weights_only=False)
        except Exception as err:  # noqa: BLE001 - an unreadable state is dropped, the run starts over
            problem = f"cannot be read ({type(err).__name__})"
    print(f"{resume}: {problem}; this run starts again from step 0")
    remove(resume)
    return None


def train_arm(model, tokenizer, settings: LoopSettings, run_dir: Path, seed: int,
              device: torch.device | str = "cpu") -> LoopResult:
    """Train the ARM on the task mixture (full sequences, answers written in)."""
    pad = tokenizer.pad_token_id

    def loss_on_step(m, step):
        batch = task_mixture_batch(tokenizer, settings.batch_size, seed, "arm", step).to(device)
        return arm_loss(m, batch, pad), {}

    return run_training_loop(model, settings, run_dir, loss_on_step, device=device)
