"""Post-training an ARM into an MDM with the DiffuGPT / DiffuLLaMA recipe, and the control runs that
change one factor of it.

The recipe (``mdm``):

* t ~ U(eps, 1) per sequence (eps = 1e-3); each token (but BOS and padding) is
  replaced by the mask token with probability t;
* cross-entropy on the masked tokens only, each weighted by 1/t, summed and
  divided by the number of masked tokens in the batch;
* the shift is kept: logits[:, :-1] are scored against x0[:, 1:], so the hidden
  state at j-1 predicts token j, as in the ARM;
* attention = causal OR Bernoulli(min(1, step / anneal_steps)), one random
  matrix per step shared by the batch (as the DiffuGPT code does), so it
  anneals from causal to full; ``anneal_steps = 0`` is full attention from the
  start (DiffuLLaMA). No timestep embedding.

The controls (:data:`RECIPES`), each trained by the same loop from the same start with the same
batches, noise, steps, schedule and seed, one factor changed:

* ``arm_continued``: the ARM trained further with its own next-token loss, causal (the null: how
  much a circuit moves with more training and no change of objective);
* ``mdm_causal``: the masked 1/t loss with attention kept causal (the objective without the
  bidirectional attention);
* ``mdm_scratch``: the whole MDM recipe from a random initialisation (what the budget teaches
  without the ARM's circuits).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..core.seeding import stable_seed
from .fast_forward import gpt2_logits
from .pair import set_bidirectional
from .training import LoopResult, LoopSettings, next_token_loss, run_training_loop, task_mixture_batch

T_EPS = 1e-3


@dataclass(frozen=True)
class Recipe:
    """One post-training run: its objective ("diffusion": the 1/t masked loss; "next_token"), its
    attention during training ("annealed" causal -> full, or "causal"), and where it starts ("arm",
    or "random": a fresh initialisation of the same architecture)."""

    name: str
    objective: str
    attention: str
    init: str = "arm"

    @property
    def bidirectional(self) -> bool:
        """How the trained model is saved and read: with full attention after an annealed run."""
        return self.attention == "annealed"


RECIPES = {r.name: r for r in (
    Recipe("mdm", "diffusion", "annealed"),
    Recipe("arm_continued", "next_token", "causal"),
    Recipe("mdm_causal", "diffusion", "causal"),
    Recipe("mdm_scratch", "diffusion", "annealed", init="random"),
)}
CONTROLS = tuple(name for name in RECIPES if name != "mdm")


def anneal_ratio(step: int, anneal_steps: int) -> float:
    """Probability that a non-causal (query, key) pair is opened at this step."""
    return 1.0 if anneal_steps <= 0 else min(1.0, step / anneal_steps)


def annealed_attention_bias(seq_len: int, ratio: float, key_is_real: torch.Tensor,
                            generator: torch.Generator | None = None,
                            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive attention mask [batch, 1, L, L]: 0 where a query may attend a key, -inf-like elsewhere.

    Allowed = causal OR Bernoulli(ratio), and never a padding key.
    """
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
    opened = torch.rand(seq_len, seq_len, generator=generator) < ratio
    allowed = (causal | opened)[None, None] & key_is_real[:, None, None, :].bool()
    bias = torch.zeros(allowed.shape, dtype=dtype)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)


def masked_diffusion_loss(logits: torch.Tensor, x0: torch.Tensor, masked: torch.Tensor,
                          t: torch.Tensor) -> torch.Tensor:
    """The 1/t-weighted masked cross-entropy with the shift kept.

    logits [B, L, V] from the noised input; x0 [B, L] clean tokens; masked [B, L]
    which tokens were replaced; t [B] the mask rate of each sequence.
    """
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), x0[:, 1:], reduction="none")
    target_masked = masked[:, 1:].float()
    weighted = ce * target_masked / t[:, None]
    return weighted.sum() / target_masked.sum().clamp(min=1.0)


def noise_batch(x0: torch.Tensor, mask_token_id: int, pad_token_id: int, generator: torch.Generator,
                eps: float = T_EPS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, masked, t): mask each maskable token with probability t ~ U(eps, 1)."""
    b, length = x0.shape
    t = (1 - eps) * torch.rand(b, generator=generator) + eps
    maskable = (x0 != pad_token_id) & (torch.arange(length) > 0)[None, :]
    masked = (torch.rand(b, length, generator=generator) < t[:, None]) & maskable
    return x0.masked_fill(masked, mask_token_id), masked, t


def recipe_step_loss(model, recipe: Recipe, x0: torch.Tensor, step: int, anneal_steps: int, mask_token_id: int,
                     pad_token_id: int, seed: int) -> tuple[torch.Tensor, dict]:
    """One step's loss of a recipe on the clean batch ``x0``. The noise (mask rates, masked tokens and
    the annealed attention) is drawn from a generator seeded by (seed, step), the same for every recipe."""
    device = next(model.parameters()).device
    if recipe.objective == "next_token":
        logits = gpt2_logits(model, x0.to(device))
        return next_token_loss(logits, x0.to(device), pad_token_id), {"anneal_ratio": 0.0, "mask_rate": 0.0}
    g = torch.Generator().manual_seed(stable_seed(seed, "mdm-noise", step))
    xt, masked, t = noise_batch(x0, mask_token_id, pad_token_id, g)
    if recipe.attention == "annealed":
        ratio = anneal_ratio(step, anneal_steps)
        bias = annealed_attention_bias(x0.shape[1], ratio, x0 != pad_token_id, g).to(device)
    else:
        ratio, bias = 0.0, None  # causal
    logits = gpt2_logits(model, xt.to(device), bias)
    loss = masked_diffusion_loss(logits, x0.to(device), masked.to(device), t.to(device))
    return loss, {"anneal_ratio": ratio, "mask_rate": float(t.mean())}


def post_train(model, tokenizer, settings: LoopSettings, anneal_steps: int, run_dir: Path, seed: int,
               on_step_start: Callable[[int, object], None] | None = None,
               device: torch.device | str = "cpu", recipe: Recipe = RECIPES["mdm"]) -> LoopResult:
    """Train ``model`` (modified in place) with ``recipe`` (default: the ARM into the MDM); returns the
    per-step log and the time. Every recipe draws the same batches for the same seed and step."""
    set_bidirectional(model, recipe.bidirectional)  # training passes its own mask; the saved config says this
    mask_id, pad_id = tokenizer.mask_token_id, tokenizer.pad_token_id

    def loss_on_step(m, step):
        x0 = task_mixture_batch(tokenizer, settings.batch_size, seed, "mdm", step)
        return recipe_step_loss(m, recipe, x0, step, anneal_steps, mask_id, pad_id, seed)

    return run_training_loop(model, settings, Path(run_dir), loss_on_step, on_step_start, device=device)
