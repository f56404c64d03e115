"""Micro models and shared fixtures: every test runs in milliseconds to seconds."""
from __future__ import annotations

import pytest
import torch

from mechshift_utils.models.embedded import ArmConfig, new_arm
from mechshift_utils.tasks import build_word_tokenizer

MICRO_ARM = ArmConfig(n_layer=2, n_head=2, n_embd=16, n_positions=32, steps=8, batch_size=8, warmup=2)


@pytest.fixture(scope="session")
def tokenizer():
    return build_word_tokenizer()


@pytest.fixture()
def micro_arm(tokenizer):
    """A 2-layer, width-16 GPT-2 over the task vocabulary, random weights, causal."""
    return new_arm(tokenizer, MICRO_ARM, seed=0).eval()


@pytest.fixture()
def tiny_llama_and_qwen():
    """Tiny random Llama and Qwen2 causal LMs (grouped-query attention, 2 layers)."""
    vocab_size = 64
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return {"llama": LlamaForCausalLM(LlamaConfig(**common)).eval(),
            "qwen2": Qwen2ForCausalLM(Qwen2Config(**common)).eval()}


@pytest.fixture()
def micro_models(micro_arm, tokenizer):
    """The three architectures over the task vocabulary: micro GPT-2, and tiny Llama and Qwen2 with
    grouped-query attention (2 layers, width 32), random weights, causal."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  bos_token_id=2, eos_token_id=2, pad_token_id=0)
    return {"gpt2": micro_arm, "llama": LlamaForCausalLM(LlamaConfig(**common)).eval(),
            "qwen2": Qwen2ForCausalLM(Qwen2Config(**common)).eval()}
