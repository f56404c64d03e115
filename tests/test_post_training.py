"""The DiffuGPT loss on hand-checkable cases: the 1/t weight, the shift, the normalisation."""
import math

import torch

from mechshift_utils.models.post_training import T_EPS, anneal_ratio, masked_diffusion_loss, noise_batch


def _logits_for(probabilities_of_target, targets, vocab=3):
    """Logits whose softmax gives the target token exactly the wanted probability."""
    rows = []
    for p, tgt in zip(probabilities_of_target, targets):
        other = (1 - p) / (vocab - 1)
        row = [math.log(other)] * vocab
        row[tgt] = math.log(p)
        rows.append(row)
    return torch.tensor(rows)


def test_loss_weight_and_shift_by_hand():
    # one sequence x0 = [0, 1, 2, 1]; positions 1 and 3 masked; t = 0.5
    x0 = torch.tensor([[0, 1, 2, 1]])
    masked = torch.tensor([[False, True, False, True]])
    t = torch.tensor([0.5])
    # the shift: logits at j-1 score token j. Position 0 -> token 1 (masked, p=0.5),
    # position 1 -> token 2 (not masked, ignored), position 2 -> token 1 (masked, p=0.25),
    # position 3 -> nothing (dropped).
    logits = torch.zeros(1, 4, 3)
    logits[0, :3] = _logits_for([0.5, 0.9, 0.25], [1, 2, 1])
    logits[0, 3] = torch.tensor([100.0, -100.0, -100.0])  # the last position must not matter
    expected = (-math.log(0.5) / 0.5 + -math.log(0.25) / 0.5) / 2
    got = masked_diffusion_loss(logits, x0, masked, t).item()
    assert abs(got - expected) < 1e-5


def test_loss_normalises_by_masked_count_over_the_batch():
    x0 = torch.tensor([[0, 1, 1], [0, 2, 2]])
    masked = torch.tensor([[False, True, False], [False, True, True]])
    t = torch.tensor([0.25, 1.0])
    logits = torch.zeros(2, 3, 3)  # uniform: every token has probability 1/3
    ce = math.log(3)
    expected = (ce / 0.25 + ce / 1.0 + ce / 1.0) / 3
    assert abs(masked_diffusion_loss(logits, x0, masked, t).item() - expected) < 1e-5


def test_noise_never_masks_bos_or_padding_and_follows_t():
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((4000, 12), 7)
    x0[:, -2:] = 0  # padding
    xt, masked, t = noise_batch(x0, mask_token_id=3, pad_token_id=0, generator=g)
    assert not masked[:, 0].any() and not masked[:, -2:].any()
    assert (xt[masked] == 3).all() and (xt[~masked] == x0[~masked]).all()
    assert t.min() >= T_EPS and t.max() <= 1
    rate = masked[:, 1:-2].float().mean(1)
    assert torch.corrcoef(torch.stack([rate, t]))[0, 1] > 0.9
    assert abs(masked[:, 1:-2].float().mean().item() - t.mean().item()) < 0.02


def test_anneal_schedule():
    assert anneal_ratio(0, 100) == 0.0
    assert anneal_ratio(50, 100) == 0.5
    assert anneal_ratio(500, 100) == 1.0
    assert anneal_ratio(0, 0) == 1.0  # DiffuLLaMA: full attention from step 0
