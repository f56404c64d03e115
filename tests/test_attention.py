"""ARM: a later token never changes an earlier position's logits. MDM: it does."""
import pytest
import torch

from mechshift_utils.models import is_bidirectional, set_bidirectional
from mechshift_utils.models.post_training import annealed_attention_bias


def _earlier_change(model, vocab_size, length=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, vocab_size, (2, length), generator=g)
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1 - 4) % (vocab_size - 4) + 4  # change only the last token
    with torch.no_grad():
        a, b = model(input_ids=x).logits, model(input_ids=y).logits
    return (a[:, :-1] - b[:, :-1]).abs().max().item()


@pytest.fixture()
def models(micro_arm, tiny_llama_and_qwen):
    return {"gpt2": micro_arm, **tiny_llama_and_qwen}


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_causal_model_ignores_later_tokens(arch, models):
    model = models[arch]
    assert not is_bidirectional(model)
    assert _earlier_change(model, model.config.vocab_size) == 0.0


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_bidirectional_model_sees_later_tokens(arch, models):
    model = set_bidirectional(models[arch], True)
    assert is_bidirectional(model)
    assert _earlier_change(model, model.config.vocab_size) > 1e-6
    set_bidirectional(model, False)
    assert _earlier_change(model, model.config.vocab_size) == 0.0


def test_annealed_mask_is_causal_at_zero_and_full_at_one():
    real = torch.ones(3, 6, dtype=torch.bool)
    causal = annealed_attention_bias(6, 0.0, real)
    full = annealed_attention_bias(6, 1.0, real)
    tril = torch.ones(6, 6).tril().bool()
    assert causal.shape == (3, 1, 6, 6)
    assert ((causal[0, 0] == 0) == tril).all()
    assert (full == 0).all()


def test_annealed_mask_opens_about_the_ratio_and_never_pads():
    g = torch.Generator().manual_seed(0)
    real = torch.ones(1, 200, dtype=torch.bool)
    real[0, -20:] = False
    bias = annealed_attention_bias(200, 0.3, real, g)[0, 0]
    upper = torch.ones(200, 200).triu(1).bool()
    upper[:, -20:] = False
    opened = (bias[upper] == 0).float().mean().item()
    assert 0.27 < opened < 0.33
    assert (bias[:, -20:] < 0).all(), "padding keys are never attended"


def test_custom_mask_drives_the_model(micro_arm):
    """The 4D mask used in post-training is what the model obeys (causal mask -> causal model)."""
    model = set_bidirectional(micro_arm, True)
    x = torch.randint(4, 50, (1, 8))
    y = x.clone()
    y[0, -1] += 1
    causal = annealed_attention_bias(8, 0.0, torch.ones(1, 8, dtype=torch.bool))
    with torch.no_grad():
        a = model(input_ids=x, attention_mask=causal).logits
        b = model(input_ids=y, attention_mask=causal).logits
    assert (a[:, :-1] - b[:, :-1]).abs().max().item() == 0.0
