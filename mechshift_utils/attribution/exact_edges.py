"""Exact edge patching for GPT-2, fast enough to be the ground truth of every embedded circuit.

``attribute(..., method="exact")`` patches each edge in an nnsight pass (several edges per pass, the
batch repeated once per edge): right for any architecture, but on the 6-layer organism its ~1,300 edges
still cost many seconds per model and task. Here the same
numbers come from plain tensor operations on a GPT-2 (the embedded organism's architecture):

* the clean and corrupted runs are made once; every upstream node's output (token embedding, each
  head's z_h W_O[h], each MLP's output) and every layer's residual stream are kept;
* patching edge u -> v changes only v's input (clean input + a_u(corrupted) - a_u(clean)), so the
  run starts at v's layer from the cached clean residual;
* all upstream nodes of one destination are patched at once, one copy of the batch each;
* the metric reads one position, so the last block is computed only there (its attention for that
  query alone, with keys and values everywhere; its MLP on that row).

The result is the engine's ``exact`` edge score (the metric of the patched run minus the clean one,
per example; "patching" ablation), checked against it in tests/test_exact_edges.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import GPT2LMHeadModel

from ..core.validation import ParameterError, check_positive_int
from ..models.arch import arch_of
from ..tasks import EncodedTask
from .engine import batch_indices, read_out_positions
from .graph import Graph


class _GPT2:
    """The GPT-2 forward in pieces: embeddings, one layer (optionally with a destination's input
    patched), the read-out logit difference."""

    def __init__(self, model: GPT2LMHeadModel):
        if not isinstance(model, GPT2LMHeadModel):
            raise ParameterError(f"model: the fast exact edge patching covers GPT2LMHeadModel, got "
                                 f"{type(model).__name__}; use attribute(..., method='exact') for others")
        self.m = model
        self.tr = model.transformer
        self.heads = model.config.n_head
        self.d = model.config.n_embd
        self.dh = self.d // self.heads
        self.causal = getattr(model.config, "is_causal", True) is not False

    def ln(self, module, x):
        return F.layer_norm(x, (self.d,), module.weight, module.bias, module.eps)

    def attention(self, blk, x_qkv: torch.Tensor, override: tuple[int, int, torch.Tensor] | None = None,
                  read: torch.Tensor | None = None):
        """Attention of a block from its normed input ``x_qkv`` [B, L, d]. ``override`` (which of q/k/v:
        0/1/2, head, patched normed input [R, L, d] with R a multiple of B): that head's q, k or v is
        computed from the patched input, one copy of the batch per patch. Returns (z [R, L, H, dh], the
        attention output with c_proj's bias [R, L, d]). ``read`` [R]: only each row's query at that
        position (keys and values at every position): z [R, 1, H, dh], output [R, d]."""
        b, length, _ = x_qkv.shape
        qkv = (x_qkv @ blk.attn.c_attn.weight + blk.attn.c_attn.bias).view(b, length, 3, self.heads, self.dh)
        if override is not None:
            which, head, x_patched = override
            r = x_patched.shape[0]
            qkv = qkv.repeat(r // b, 1, 1, 1, 1)
            w = blk.attn.c_attn.weight[:, which * self.d + head * self.dh: which * self.d + (head + 1) * self.dh]
            bias = blk.attn.c_attn.bias[which * self.d + head * self.dh: which * self.d + (head + 1) * self.dh]
            qkv = qkv.clone()
            qkv[:, :, which, head] = x_patched @ w + bias
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if read is None:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal).transpose(1, 2)  # [R, L, H, dh]
            out = z.reshape(z.shape[0], length, self.d) @ blk.attn.c_proj.weight + blk.attn.c_proj.bias
            return z, out
        rows = torch.arange(q.shape[0], device=q.device)
        q = q[rows, :, read][:, :, None]  # [R, H, 1, dh]
        mask = (torch.arange(length, device=q.device)[None, :] <= read[:, None])[:, None, None] if self.causal else None
        z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)  # [R, 1, H, dh]
        return z, z.reshape(z.shape[0], self.d) @ blk.attn.c_proj.weight + blk.attn.c_proj.bias

    def mlp(self, blk, x):
        return blk.mlp(x)

    def head_outputs(self, blk, z):
        """Each head's write into the residual: z_h W_O[h], [R, L, H, d] (without the shared bias)."""
        w = blk.attn.c_proj.weight.view(self.heads, self.dh, self.d)
        return torch.einsum("blhk,hkd->blhd", z, w)


@torch.no_grad()
def _runs(g: _GPT2, ids: torch.Tensor):
    """One run: the residual at each layer's input and after its attention, every upstream node's output
    [B, L, n_up, d], and the final residual."""
    tr = g.tr
    length = ids.shape[1]
    emb = tr.wte(ids)
    h = emb + tr.wpe.weight[:length]
    nodes, pre, mid = [emb], [], []
    for blk in tr.h:
        pre.append(h)
        z, attn = g.attention(blk, g.ln(blk.ln_1, h))
        nodes.extend(g.head_outputs(blk, z).unbind(2))
        h = h + attn
        mid.append(h)
        out = g.mlp(blk, g.ln(blk.ln_2, h))
        nodes.append(out)
        h = h + out
    return pre, mid, torch.stack(nodes, 2), h


def _metric(g: _GPT2, h_read, correct, counter):
    """The logit difference from the final residual at the read position, [R, d]."""
    x = g.ln(g.tr.ln_f, h_read)
    w = g.m.lm_head.weight
    return ((x * (w[correct] - w[counter])).sum(-1))


def _at(h: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
    """Each row's residual at its read position: [R, L, d] -> [R, d]."""
    return h[torch.arange(h.shape[0], device=h.device), read]


@torch.no_grad()
def _last_block_at_read(g: _GPT2, blk, h: torch.Tensor, read: torch.Tensor, override=None,
                        x_qkv: torch.Tensor | None = None) -> torch.Tensor:
    """The last block on residual ``h`` [R, L, d], computed only where the metric reads it: its
    attention for the read query alone (keys and values everywhere), its MLP on that row: [R, d].
    ``override`` and ``x_qkv`` (the clean normed input it repeats) as :meth:`_GPT2.attention`'s."""
    _, attn = g.attention(blk, g.ln(blk.ln_1, h) if x_qkv is None else x_qkv, override, read=read)
    h_read = _at(h, read) + attn
    return h_read + g.mlp(blk, g.ln(blk.ln_2, h_read))


@torch.no_grad()
def _finish(g: _GPT2, h: torch.Tensor, start_layer: int, read: torch.Tensor) -> torch.Tensor:
    """The clean forward of layers ``start_layer``.. on residual ``h`` [R, L, d] (patched rows
    included), the last layer only at the read positions: the final residual there, [R, d]."""
    last = len(g.tr.h) - 1
    for blk in g.tr.h[start_layer:last]:
        _, attn = g.attention(blk, g.ln(blk.ln_1, h))
        h = h + attn
        h = h + g.mlp(blk, g.ln(blk.ln_2, h))
    return _last_block_at_read(g, g.tr.h[last], h, read) if start_layer <= last else _at(h, read)


@torch.no_grad()
def exact_edge_scores(model, data: EncodedTask, shift: bool = True, batch_size: int = 32,
                      progress: bool = True) -> torch.Tensor:
    """Per-example exact edge scores [n, n_up, n_down] (patching from the corrupted run; metric: the
    logit difference at the first answer slot), in the graph of ``attribution.graph.Graph``."""
    check_positive_int("batch_size", batch_size)
    g = _GPT2(getattr(model, "_model", model))
    graph = Graph.from_arch(arch_of(g.m))
    read_all = read_out_positions(data, shift)
    device = next(g.m.parameters()).device
    n_layers, heads = len(g.tr.h), g.heads
    out = torch.zeros(len(data), len(graph.upstream), len(graph.downstream))
    batches = batch_indices(len(data), batch_size)
    bar = tqdm(total=len(batches) * n_layers, desc="exact edges", disable=not progress, mininterval=2.0)
    for idx in batches:
        ids, cor = data.clean_ids[idx].to(device), data.corrupted_ids[idx].to(device)
        read = read_all[idx].to(device)
        correct, counter = data.correct_ids[idx, 0].to(device), data.counterfactual_ids[idx, 0].to(device)
        b = len(idx)
        pre, mid, clean_nodes, h_final = _runs(g, ids)
        _, _, cor_nodes, _ = _runs(g, cor)
        delta = cor_nodes - clean_nodes  # [b, L, n_up, d]
        base = _metric(g, _at(h_final, read), correct, counter)

        def scores_for(h_read: torch.Tensor, n_src: int) -> torch.Tensor:
            m = _metric(g, h_read, correct.repeat(n_src), counter.repeat(n_src))
            return (m.view(n_src, b) - base[None]).T.cpu()  # [b, n_src]

        for layer in range(n_layers):
            blk = g.tr.h[layer]
            last = layer == n_layers - 1  # the metric reads one position: the last block computes only that
            n_src = graph.up_until(layer)
            read_rep = read.repeat(n_src)
            # sources first, batch second: row (u, i) carries example i with u patched
            d_src = delta[:, :, :n_src].permute(2, 0, 1, 3).reshape(n_src * b, *delta.shape[1:2], g.d)
            h_rep = pre[layer].repeat(n_src, 1, 1)
            x_pat = g.ln(blk.ln_1, h_rep + d_src)
            x_clean = g.ln(blk.ln_1, pre[layer])
            for which in range(3):
                for head in range(heads):
                    if last:
                        h = _last_block_at_read(g, blk, h_rep, read_rep, (which, head, x_pat), x_clean)
                    else:
                        _, attn = g.attention(blk, x_clean, (which, head, x_pat))
                        h = h_rep + attn
                        h = _finish(g, h + g.mlp(blk, g.ln(blk.ln_2, h)), layer + 1, read_rep)
                    dest = graph.attn_dest_slice(layer).start + which * heads + head
                    out[idx, :n_src, dest] = scores_for(h, n_src)
            n_mlp_src = n_src + heads
            read_rep = read.repeat(n_mlp_src)
            d_src = delta[:, :, :n_mlp_src].permute(2, 0, 1, 3).reshape(n_mlp_src * b, delta.shape[1], g.d)
            h_mid = mid[layer].repeat(n_mlp_src, 1, 1)
            if last:  # the MLP acts position by position: the read row is all the metric needs
                h_mid, d_src = _at(h_mid, read_rep), _at(d_src, read_rep)
            h = h_mid + g.mlp(blk, g.ln(blk.ln_2, h_mid + d_src))
            h = h if last else _finish(g, h, layer + 1, read_rep)
            out[idx, :n_mlp_src, graph.mlp_dest(layer)] = scores_for(h, n_mlp_src)
            bar.update(1)
        n_all = len(graph.upstream)
        d_src = delta.permute(2, 0, 1, 3).reshape(n_all * b, delta.shape[1], g.d)
        out[idx, :, len(graph.downstream) - 1] = scores_for(
            _at(h_final.repeat(n_all, 1, 1) + d_src, read.repeat(n_all)), n_all)
    bar.close()
    return out * graph.valid
