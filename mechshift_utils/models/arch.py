"""Where the pieces of a transformer live, for every architecture we trace.

The attribution engine only talks to an :class:`Arch`: module paths (valid on
the Hugging Face model and on its nnsight wrapper alike, since nnsight mirrors
attribute names), per-head weight slices, and the pre-norms as pure functions.
GPT-2 (fused ``c_attn``, Conv1D weights, LayerNorm) and the Llama family
(Llama, Qwen2, Dream-as-Qwen2: separate q/k/v projections, grouped-query
attention, RMSNorm; per-head outputs read from ``o_proj``'s input) are covered.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.validation import ParameterError

SUPPORTED = {"GPT2LMHeadModel": "gpt2", "LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "llama",
             "MistralForCausalLM": "llama"}


class Norm:
    """A pre-norm as a pure function of its input, with what its closed-form vector-Jacobian product
    (mechshift_utils.attribution.runner.norm_vjp) needs: ``kind`` "layer" (LayerNorm, GPT-2) or "rms"
    (RMSNorm, Llama and Qwen2: computed in float32, cast back, then scaled, as transformers does)."""

    def __init__(self, kind: str, weight: torch.Tensor, bias: torch.Tensor | None, eps: float):
        self.kind, self.weight, self.bias, self.eps = kind, weight, bias, float(eps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layer":
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        xf = x.float()
        return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


@dataclass(frozen=True)
class Arch:
    family: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    head_dim: int

    # --- module paths (work on the HF model and on nnsight's wrapper) ---------------------------
    def _root(self, m):
        return m.transformer if self.family == "gpt2" else m.model

    def layer(self, m, layer: int):
        return (self._root(m).h if self.family == "gpt2" else self._root(m).layers)[layer]

    def embed(self, m):
        return self._root(m).wte if self.family == "gpt2" else self._root(m).embed_tokens

    def attn_norm(self, m, layer):
        blk = self.layer(m, layer)
        return blk.ln_1 if self.family == "gpt2" else blk.input_layernorm

    def mlp_norm(self, m, layer):
        blk = self.layer(m, layer)
        return blk.ln_2 if self.family == "gpt2" else blk.post_attention_layernorm

    def final_norm(self, m):
        return self._root(m).ln_f if self.family == "gpt2" else self._root(m).norm

    def mlp(self, m, layer):
        return self.layer(m, layer).mlp

    def o_proj(self, m, layer):
        blk = self.layer(m, layer)
        return blk.attn.c_proj if self.family == "gpt2" else blk.self_attn.o_proj

    def mlp_out_proj(self, m, layer):
        """The MLP's output projection: its input is the vector of neuron activations."""
        mlp = self.mlp(m, layer)
        return mlp.c_proj if self.family == "gpt2" else mlp.down_proj

    def unembed(self, m):
        """The unembedding (``lm_head``), [vocab, d_model] weight."""
        return m.lm_head

    def qkv_modules(self, m, layer) -> list:
        """The projection modules whose outputs are the queries, keys and values (in call order)."""
        blk = self.layer(m, layer)
        if self.family == "gpt2":
            return [blk.attn.c_attn]
        return [blk.self_attn.q_proj, blk.self_attn.k_proj, blk.self_attn.v_proj]

    # --- per-head weights (from the HF model) ------------------------------------------------------
    def head_out_weights(self, hf, layer) -> torch.Tensor:
        """W_O per head, [n_heads, head_dim, d_model]: head h writes z_h @ W_O[h] to the residual."""
        w = self.o_proj(hf, layer).weight
        w = w if self.family == "gpt2" else w.T  # Conv1D stores [in, out]; Linear [out, in]
        return w.reshape(self.n_heads, self.head_dim, self.d_model)

    def mlp_out_weights(self, hf, layer) -> torch.Tensor:
        """W_out per neuron, [n_neurons, d_model]: neuron n writes act_n * W_out[n] to the residual."""
        w = self.mlp_out_proj(hf, layer).weight
        return w if self.family == "gpt2" else w.T

    def qkv_weights(self, hf, layer) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stacked input projections of every q/k/v destination, [n_dest, d_model, head_dim], and biases
        [n_dest, head_dim] (or None); destinations ordered q heads, k heads, v heads."""
        if self.family == "gpt2":
            w = self.qkv_modules(hf, layer)[0].weight  # [D, 3D]
            b = self.qkv_modules(hf, layer)[0].bias
            w = w.reshape(self.d_model, 3 * self.n_heads, self.head_dim).permute(1, 0, 2)
            return w, b.reshape(3 * self.n_heads, self.head_dim)
        ws, bs = [], []
        for mod, n in zip(self.qkv_modules(hf, layer), (self.n_heads, self.n_kv_heads, self.n_kv_heads)):
            ws.append(mod.weight.T.reshape(self.d_model, n, self.head_dim).permute(1, 0, 2))
            bs.append(None if mod.bias is None else mod.bias.reshape(n, self.head_dim))
        bias = None if all(b is None for b in bs) else torch.cat(
            [b if b is not None else torch.zeros_like(w[:, 0]) for b, w in zip(bs, ws)])
        return torch.cat(ws), bias

    def split_qkv(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Projection outputs -> [batch, pos, n_dest, head_dim] (q heads, k heads, v heads)."""
        cat = outputs[0] if self.family == "gpt2" else torch.cat(outputs, dim=-1)
        return cat.reshape(*cat.shape[:-1], -1, self.head_dim)

    def merge_qkv(self, per_dest: torch.Tensor) -> list[torch.Tensor]:
        """Inverse of :meth:`split_qkv`."""
        flat = per_dest.reshape(*per_dest.shape[:-2], -1)
        if self.family == "gpt2":
            return [flat]
        q = self.n_heads * self.head_dim
        kv = self.n_kv_heads * self.head_dim
        return [flat[..., :q], flat[..., q:q + kv], flat[..., q + kv:]]

    # --- pre-norms as pure functions (for vjp and for patched inputs) -----------------------------
    def norm_fn(self, module) -> "Norm":
        if self.family == "gpt2":
            return Norm("layer", module.weight, module.bias, module.eps)
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
        return Norm("rms", module.weight, None, eps)

    @property
    def n_qkv(self) -> int:
        return self.n_heads + 2 * self.n_kv_heads


def arch_of(model) -> Arch:
    """The :class:`Arch` of a Hugging Face causal LM (or its nnsight wrapper)."""
    hf = getattr(model, "_model", model)
    name = type(hf).__name__
    if name not in SUPPORTED:
        raise ParameterError(f"model: expected one of {sorted(SUPPORTED)}, got {name}")
    c = hf.config
    if SUPPORTED[name] == "gpt2":
        return Arch("gpt2", c.n_layer, c.n_head, c.n_head, c.n_embd, c.n_embd // c.n_head)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return Arch("llama", c.num_hidden_layers, c.num_attention_heads,
                c.num_key_value_heads or c.num_attention_heads, c.hidden_size, head_dim)
