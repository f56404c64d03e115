"""Training loops: the ARM from scratch (next-token loss), and the shared loop
(progress bar, resume, step-seeded batches) that post-training reuses.

Every batch is drawn from a generator seeded by (seed, stream, step), so a run
interrupted and resumed from its resume state gives the same weights as an
uninterrupted one. The resume state also carries the training seconds so far, so the
time a resumed run reports counts every segment.
"""
from __future__ import annotations

import math
import random
from time import perf_counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from tqdm import tqdm  # text bars: visible in run_all.sh logs and in JupyterLab alike

from ..core.files import file_problem, remove, write_with
from ..core.seeding import stable_seed
from ..tasks import TASKS, TaskExample, encode_words

RESUME_FILE = "resume.pt"


def task_mixture_batch(tokenizer, batch_size: int, seed: int, stream: str, step: int,
                       tasks: tuple[str, ...] = tuple(TASKS)) -> torch.Tensor:
    """A batch of full (answer-filled) sequences, tasks mixed uniformly, right-padded with [PAD]."""
    rng = random.Random(stable_seed(seed, stream, step))
    examples: list[TaskExample] = [TASKS[rng.choice(tasks)].sample(rng) for _ in range(batch_size)]
    rows = [encode_words(tokenizer, e.full) for e in examples]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)


def arm_loss(model, batch: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Next-token cross-entropy on every non-pad token (transformers shifts the labels)."""
    real = batch != pad_token_id
    return model(input_ids=batch, attention_mask=real.long(), labels=batch.masked_fill(~real, -100)).loss


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


def run_training_loop(model, settings: LoopSettings, run_dir: Path,
                      loss_on_step: Callable[[object, int], tuple[torch.Tensor, dict]],
                      on_step_start: Callable[[int, object], None] | None = None,
                      device: torch.device | str = "cpu") -> pd.DataFrame:
    """Optimise ``model`` for ``settings.steps`` steps; returns the per-step log, with the seconds the
    training took in ``log.attrs["seconds"]``: every segment of a resumed run counted (the work done
    after the last resume state of an interrupted segment is done again, and counted then).

    ``loss_on_step(model, step)`` draws the step's batch itself (seeded by the
    step) and returns the loss and extra columns for the log.
    ``on_step_start(step, model)`` runs before the update of ``step`` and once
    more with ``step == settings.steps`` at the end (checkpoints hook in here).
    A resume state is written every ``resume_every`` steps (atomically, with its checksum) and removed
    at the end; a damaged one is reported and the run starts again from step 0.
    """
    started = perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(0.9, 0.98),
                                  weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, settings.steps, settings.warmup))
    start, log, earlier_seconds = 0, [], 0.0
    resume = run_dir / RESUME_FILE
    state = _resume_state(resume, device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, log, earlier_seconds = state["step"], state["log"], state.get("seconds", 0.0)
    bar = tqdm(range(start, settings.steps), initial=start, total=settings.steps, desc=settings.description,
               mininterval=2.0)
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
                        "seconds": earlier_seconds + perf_counter() - started}
            write_with(resume, lambda p: torch.save(snapshot, p))  # never half a resume state
    bar.close()
    if on_step_start is not None:
        on_step_start(settings.steps, model)
    model.eval()
    remove(resume)
    frame = pd.DataFrame(log)
    frame.attrs["seconds"] = earlier_seconds + perf_counter() - started
    return frame


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
              device: torch.device | str = "cpu") -> pd.DataFrame:
    """Train the ARM on the task mixture (full sequences, answers written in)."""
    pad = tokenizer.pad_token_id

    def loss_on_step(m, step):
        batch = task_mixture_batch(tokenizer, settings.batch_size, seed, "arm", step).to(device)
        return arm_loss(m, batch, pad), {}

    return run_training_loop(model, settings, run_dir, loss_on_step, device=device)
