"""GPT-2's forward pass written as plain tensor operations over the model's own parameters, for
training the embedded organism.

It computes what ``GPT2LMHeadModel(input_ids, attention_mask=...)`` computes (tests/test_organism.py
checks the logits against it, causal and with an additive attention mask, for the exact and the tanh
GELU) without the module machinery around it: on the small organism that machinery, not arithmetic,
is a fifth of a training step on the CPU. Attention is written out (scores, softmax, weighted sum as
batched products): at the organism's 23 positions this is faster on the CPU than the fused attention
kernel. Training only runs here; every checkpoint is a plain ``GPT2LMHeadModel`` again, and
evaluation and attribution use the model itself.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel


# GPT-2's activation names and the GELU each one is: "gelu" (the exact, erf form) is the embedded
# organism's (on this CPU it is about 4x cheaper than the tanh form, forward and backward).
GELU_APPROXIMATION = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


def check_plain_gpt2(model) -> None:
    """The configuration this forward reproduces: GPT-2 with a GELU, no dropout, default scaling."""
    c = model.config
    plain = (isinstance(model, GPT2LMHeadModel) and c.activation_function in GELU_APPROXIMATION
             and c.scale_attn_weights and not c.scale_attn_by_inverse_layer_idx and not c.reorder_and_upcast_attn
             and c.resid_pdrop == c.embd_pdrop == c.attn_pdrop == 0.0)
    if not plain:
        raise ValueError(f"model: expected a dropout-free GPT2LMHeadModel with a GELU activation "
                         f"({sorted(GELU_APPROXIMATION)}) and default attention scaling (the embedded organism's "
                         f"configuration)")


def causal_bias(length: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive causal mask [L, L]: 0 on and below the diagonal, -inf above."""
    future = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    return torch.zeros(length, length, device=device, dtype=dtype).masked_fill(future, float("-inf"))


def gpt2_logits(model: GPT2LMHeadModel, input_ids: torch.Tensor, attention_bias: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Logits [B, L, vocab]. ``attention_bias``: None for causal attention, else an additive mask
    broadcastable to [B, heads, L, L] (0 where a query may attend a key, a large negative number
    elsewhere), as ``attention_mask`` takes it in transformers."""
    check_plain_gpt2(model)
    tr = model.transformer
    b, length = input_ids.shape
    d = tr.wte.weight.shape[1]
    heads = model.config.n_head
    hd = d // heads
    approximate = GELU_APPROXIMATION[model.config.activation_function]
    bias = causal_bias(length, input_ids.device) if attention_bias is None else attention_bias
    # one [B*heads, L, L] bias for the batched score product (a view when it is shared by the batch)
    bias = bias.expand(b, heads, length, length).reshape(b * heads, length, length)
    scale = 1.0 / math.sqrt(hd)
    h = tr.wte(input_ids) + tr.wpe.weight[:length]
    for blk in tr.h:
        x = F.layer_norm(h, (d,), blk.ln_1.weight, blk.ln_1.bias, blk.ln_1.eps).view(-1, d)
        qkv = torch.addmm(blk.attn.c_attn.bias, x, blk.attn.c_attn.weight).view(b, length, 3, heads, hd)
        q, k, v = (t.reshape(b * heads, length, hd) for t in qkv.permute(2, 0, 3, 1, 4))
        scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale)
        z = torch.bmm(torch.softmax(scores, dim=-1), v)
        z = z.view(b, heads, length, hd).transpose(1, 2).reshape(b * length, d)
        h = h + torch.addmm(blk.attn.c_proj.bias, z, blk.attn.c_proj.weight).view(b, length, d)
        x = F.layer_norm(h, (d,), blk.ln_2.weight, blk.ln_2.bias, blk.ln_2.eps).view(-1, d)
        f = F.gelu(torch.addmm(blk.mlp.c_fc.bias, x, blk.mlp.c_fc.weight), approximate=approximate)
        h = h + torch.addmm(blk.mlp.c_proj.bias, f, blk.mlp.c_proj.weight).view(b, length, d)
    h = F.layer_norm(h, (d,), tr.ln_f.weight, tr.ln_f.bias, tr.ln_f.eps)
    return model.lm_head(h)
