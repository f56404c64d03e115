"""One model wrapped for nnsight: every upstream node's output, the gradients at every destination
dotted with the activation differences, and forward passes with edges patched.

The engine (:mod:`.engine`) drives it; the analyses that patch or read components (circuits,
ablations, the logit lens, neurons) use it too. Memory: see the engine's docstring.
"""
from __future__ import annotations

import torch

from ..models.arch import Arch, arch_of
from .graph import Graph
from .metrics import Metric


class ModelRunner:
    """One model wrapped for nnsight, with its architecture and graph."""

    def __init__(self, model, shift: bool = True):
        from nnsight import NNsight

        self.hf = getattr(model, "_model", model)
        self.nn = model if hasattr(model, "_model") else NNsight(self.hf)
        self.arch: Arch = arch_of(self.hf)
        self.graph = Graph.from_arch(self.arch)
        self.shift = shift
        self.device = next(self.hf.parameters()).device
        with torch.no_grad():
            self.w_out = [self.arch.head_out_weights(self.hf, l).detach().float() for l in range(self.arch.n_layers)]
            self.w_qkv = [tuple(t if t is None else t.detach().float() for t in self.arch.qkv_weights(self.hf, l))
                          for l in range(self.arch.n_layers)]
        self.attn_norms = [self.arch.norm_fn(self.arch.attn_norm(self.hf, l)) for l in range(self.arch.n_layers)]
        self.mlp_norms = [self.arch.norm_fn(self.arch.mlp_norm(self.hf, l)) for l in range(self.arch.n_layers)]
        self.final_norm = self.arch.norm_fn(self.arch.final_norm(self.hf))

    # -- plain forward: every upstream node's output --------------------------------------------------
    @torch.no_grad()
    def node_outputs(self, ids: torch.Tensor, read=None, index=None, metric: Metric | None = None):
        """[batch, pos, n_up, d_model]: embeddings, each head's z_h W_O[h], each MLP's output;
        with ``metric`` also the metric per example of the same run."""
        a, nn = self.arch, self.nn
        zs, mlps, value = [], [], [None]  # made outside the trace: values created inside vanish after it
        with nn.trace(ids.to(self.device)):
            emb = a.embed(nn).output.save()
            for layer in range(a.n_layers):
                zs.append(a.o_proj(nn, layer).input.save())
                mlps.append(a.mlp(nn, layer).output.save())
            if metric is not None:
                value[0] = metric(self.read_logits(nn.output.logits, read), index).float().save()
        acts = self._stack(emb, zs, mlps)
        return acts if metric is None else (acts, value[0].cpu())

    def _stack(self, emb, zs, mlps):
        a = self.arch
        b, p = emb.shape[:2]
        parts = [emb.float()[:, :, None]]
        for layer in range(a.n_layers):
            z = zs[layer].float().reshape(b, p, a.n_heads, a.head_dim)
            parts.append(torch.einsum("bphk,hkd->bphd", z, self.w_out[layer]))
            parts.append(mlps[layer].float()[:, :, None])
        return torch.cat(parts, dim=2)

    def read_logits(self, logits, read):
        return logits[torch.arange(logits.shape[0], device=logits.device), read.to(logits.device)]

    # -- gradients at every destination, dotted with the activation differences ----------------------
    def gradient_scores(self, ids, read, index, metric: Metric, delta: torch.Tensor,
                        embed_override: torch.Tensor | None, repeats: int = 1, masks: torch.Tensor | None = None,
                        into: torch.Tensor | None = None, weight: float = 1.0) -> torch.Tensor:
        """Per example [batch, n_up, n_down]: delta[u] . dM/d(input of v), summed over ``repeats`` runs
        stacked in one pass (``embed_override`` [repeats * batch, pos, d]: e.g. several IG points).

        ``delta`` is node-major, [batch, n_up, pos, d_model] (see :func:`node_major`): each
        destination's scores are then one batched matrix product over (pos, d_model) with no copy
        of the buffer, which dominated the time when it was position-major.

        ``masks`` [batch, R, pos] (position groups, mechshift_utils.attribution.regions): the scores are
        also split by the position of the activation difference; ``weight`` times their sum over the
        batch, [R, n_up, n_down], is added to ``into``."""
        if repeats > 1:
            ids, read, index = ids.repeat(repeats, 1), read.repeat(repeats), index.repeat(repeats)
        # Only activation gradients are wanted: the weights are frozen for the pass (no .grad piles up
        # on the model, no weight-gradient work), and the embedding output is what requires grad.
        frozen = [p for p in self.hf.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            saved = self._trace_gradients(ids, read, index, metric, embed_override)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        try:
            with torch.no_grad():  # the vjps below are function transforms: they still differentiate
                return self._dot_gradients(delta, saved["x_attn"], saved["g_qkv"], saved["x_mlp"], saved["g_mlp"],
                                           saved["x_final"], saved["g_final"], repeats, masks, into, weight)
        finally:
            saved.clear()

    def _trace_gradients(self, ids, read, index, metric, embed_override) -> dict:
        """One traced forward+backward: the norms' inputs and the gradients at every destination.

        nnsight keeps a snapshot of this frame's locals in a reference cycle, which would hold
        whatever they point to until the garbage collector runs; everything large therefore lives
        in one dict, which the caller empties when done (and ``delta`` never enters this frame).
        """
        a, nn = self.arch, self.nn
        saved = {"x_attn": [], "x_mlp": [], "g_mlp": [None] * a.n_layers, "g_qkv": [None] * a.n_layers}
        qkv, mlp_out = [], []
        with nn.trace(ids.to(self.device)):
            if embed_override is not None:
                a.embed(nn).output = embed_override.to(self.device, self.hf.dtype).requires_grad_(True)
            else:
                a.embed(nn).output = a.embed(nn).output.detach().requires_grad_(True)
            for layer in range(a.n_layers):
                saved["x_attn"].append(a.attn_norm(nn, layer).input.save())
                qkv.append([m.output for m in a.qkv_modules(nn, layer)])
                saved["x_mlp"].append(a.mlp_norm(nn, layer).input.save())
                mlp_out.append(a.mlp_norm(nn, layer).output)
            saved["x_final"] = a.final_norm(nn).input.save()
            final_out = a.final_norm(nn).output
            value = metric(self.read_logits(nn.output.logits, read), index).sum()
            with value.backward():
                saved["g_final"] = final_out.grad.save()
                for layer in reversed(range(a.n_layers)):
                    saved["g_mlp"][layer] = mlp_out[layer].grad.save()
                    saved["g_qkv"][layer] = [p.grad.save() for p in reversed(qkv[layer])][::-1]
        qkv.clear()
        mlp_out.clear()
        return saved

    def _dot_gradients(self, delta, x_attn, g_qkv, x_mlp, g_mlp, x_final, g_final, repeats, masks=None, into=None,
                       weight=1.0):
        a, g = self.arch, self.graph
        b, n_up = delta.shape[:2]
        flat = delta.reshape(b, n_up, -1)  # [b, n_up, pos * d]: a view, delta is node-major and contiguous

        def fold(t):  # sum the stacked runs: [repeats * b, ...] -> [b, ...]
            return t if repeats == 1 else t.reshape(repeats, b, *t.shape[1:]).sum(0)

        def contract(upto: int, g_res: torch.Tensor, dest) -> torch.Tensor:
            """delta of the first ``upto`` nodes . g_res over (pos, d): [b, upto, n] (g_res [b, p, n, d]).
            With ``masks``, one product per position group, each group's batch sum (times ``weight``)
            added to ``into[:, :upto, dest]``."""
            if masks is None:
                return torch.bmm(flat[:, :upto], g_res.permute(0, 1, 3, 2).reshape(b, -1, g_res.shape[2]))
            parts = torch.stack([torch.bmm(flat[:, :upto], (g_res * masks[:, r, :, None, None])
                                           .permute(0, 1, 3, 2).reshape(b, -1, g_res.shape[2]))
                                 for r in range(masks.shape[1])], 1)  # [b, R, upto, n]
            summed = weight * parts.sum(0)
            into[:, :upto, dest] += summed if isinstance(dest, slice) else summed[:, :, 0]
            return parts.sum(1)

        out = torch.zeros(b, len(g.upstream), len(g.downstream), device=self.device)
        for layer in range(a.n_layers):
            u = g.up_until(layer)
            w, _ = self.w_qkv[layer]
            g_heads = torch.einsum("bpnk,ndk->bpnd", a.split_qkv([t.float() for t in g_qkv[layer]]), w)
            g_res = fold(norm_vjp(self.attn_norms[layer], x_attn[layer], g_heads))
            dest = g.attn_dest_slice(layer)
            out[:, :u, dest] = contract(u, g_res, dest)
            um = u + a.n_heads
            g_res = fold(norm_vjp(self.mlp_norms[layer], x_mlp[layer], g_mlp[layer].float()[:, :, None]))
            out[:, :um, g.mlp_dest(layer)] = contract(um, g_res, g.mlp_dest(layer))[:, :, 0]
        g_res = fold(norm_vjp(self.final_norm, x_final, g_final.float()[:, :, None]))
        last = len(g.downstream) - 1
        out[:, :, -1] = contract(n_up, g_res, last)[:, :, 0]
        return out

    # -- forward with some edges ablated ------------------------------------------------------------------
    @torch.no_grad()
    def patched_metric(self, ids, read, index, metric: Metric, ablated: torch.Tensor,
                       patch: torch.Tensor) -> torch.Tensor:
        """Metric per example when every edge in ``patch`` [n_up, n_down] carries the ablated value.

        The input of a destination becomes its current input plus, for each
        patched edge u -> v, a_u(ablated) - a_u(current run).
        """
        a, nn, g = self.arch, self.nn, self.graph
        b, p = ids.shape
        patch = patch.to(self.device).float()
        ablated = ablated.to(self.device)
        cur = torch.zeros(b, p, len(g.upstream), a.d_model, device=self.device)
        with nn.trace(ids.to(self.device)):
            cur[:, :, 0] = a.embed(nn).output.float()
            for layer in range(a.n_layers):
                u = g.up_until(layer)
                mask = patch[:u, g.attn_dest_slice(layer)]
                if mask.any():
                    x = a.attn_norm(nn, layer).input
                    delta = torch.einsum("bpud,un->bpnd", ablated[:, :, :u] - cur[:, :, :u], mask)
                    normed = self.attn_norms[layer]((x.float()[:, :, None] + delta).to(x.dtype)).float()
                    w, bias = self.w_qkv[layer]
                    new = torch.einsum("bpnd,ndk->bpnk", normed, w)
                    if bias is not None:
                        new = new + bias
                    for module, value in zip(a.qkv_modules(nn, layer), a.merge_qkv(new)):
                        module.output = value.to(x.dtype)
                z = a.o_proj(nn, layer).input.float().reshape(b, p, a.n_heads, a.head_dim)
                cur[:, :, u:u + a.n_heads] = torch.einsum("bphk,hkd->bphd", z, self.w_out[layer])
                um = u + a.n_heads
                mask = patch[:um, g.mlp_dest(layer)]
                if mask.any():
                    x = a.mlp_norm(nn, layer).input
                    delta = torch.einsum("bpud,u->bpd", ablated[:, :, :um] - cur[:, :, :um], mask)
                    a.mlp_norm(nn, layer).input = (x.float() + delta).to(x.dtype)
                cur[:, :, um] = a.mlp(nn, layer).output.float()
            mask = patch[:, -1]
            if mask.any():
                x = a.final_norm(nn).input
                delta = torch.einsum("bpud,u->bpd", ablated - cur, mask)
                a.final_norm(nn).input = (x.float() + delta).to(x.dtype)
            result = metric(self.read_logits(nn.output.logits, read), index).float().save()
        return result.cpu()


def node_major(acts: torch.Tensor) -> torch.Tensor:
    """[batch, pos, n_up, d] -> [batch, n_up, pos, d], contiguous (the layout gradient_scores takes)."""
    return acts.transpose(1, 2).contiguous()


_RUNNERS: dict[int, ModelRunner] = {}


def runner_for(model, shift: bool = True) -> ModelRunner:
    """The nnsight wrapper of a model, made once per model object (wrapping is not free)."""
    key = id(getattr(model, "_model", model))
    runner = _RUNNERS.get(key)
    if runner is None or runner.hf is not getattr(model, "_model", model):
        runner = _RUNNERS[key] = ModelRunner(model, shift)
    runner.shift = shift
    return runner


def norm_vjp(norm, x: torch.Tensor, cotangents: torch.Tensor) -> torch.Tensor:
    """J_norm(x)^T applied to n cotangents at once: x [b, p, d], cotangents [b, p, n, d] -> [b, p, n, d].

    Works for any norm given as a function (LayerNorm, RMSNorm): x is copied n
    times along a new axis so that one fused backward of the norm does all n
    products (faster on the CPU than vmap or a closed form with broadcasting).
    """
    stacked = x.detach().float()[:, :, None].expand(-1, -1, cotangents.shape[2], -1).contiguous()
    stacked.requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(norm(stacked).float(), stacked, cotangents)
    return grad
