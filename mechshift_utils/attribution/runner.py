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


# float32 node buffers that patched_metrics spends on running several ablation patterns in one pass
PATTERN_BUDGET = 256 * 2 ** 20


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
        # each q/k/v destination's input weights with its pre-norm's scale (and LayerNorm's centring) folded in
        self.w_qkv_normed = [normed_qkv_weights(n, w) for n, (w, _) in zip(self.attn_norms, self.w_qkv)]
        self.qkv_shift = [qkv_shift(n, w, bias) for n, (w, bias) in zip(self.attn_norms, self.w_qkv)]
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
                        into: torch.Tensor | None = None, weight: float = 1.0,
                        accumulate: list | None = None) -> torch.Tensor | None:
        """Per example [batch, n_up, n_down]: delta[u] . dM/d(input of v), summed over ``repeats`` runs
        stacked in one pass (``embed_override`` [repeats * batch, pos, d]: e.g. several IG points).

        ``delta`` is node-major, [batch, n_up, pos, d_model] (see :func:`node_major`): each
        destination's scores are then one batched matrix product over (pos, d_model) with no copy
        of the buffer, which dominated the time when it was position-major.

        ``masks`` [batch, R, pos] (position groups, mechshift_utils.attribution.regions): the scores are
        also split by the position of the activation difference; ``weight`` times their sum over the
        batch, [R, n_up, n_down], is added to ``into``.

        ``accumulate``: a list (empty before the first pass) to which this pass's gradients at the
        destinations' residual inputs are added instead of being dotted with ``delta`` (returns None);
        :meth:`accumulated_scores` then dots their sum once. The scores are linear in those
        gradients, so the sum over IG passes costs one set of products instead of one per pass."""
        if repeats > 1:
            ids, read, index = ids.repeat(repeats, 1), read.repeat(repeats), index.repeat(repeats)
        # Only activation gradients are wanted: the weights are frozen for the pass (no .grad piles up
        # on the model, no weight-gradient work), and the embedding output is what requires grad.
        frozen = [p for p in self.hf.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        # summing passes of a float32 model: the q/k/v products wait for the sum (see _QKVSum)
        defer = accumulate is not None and self.hf.dtype == torch.float32 and all(
            w is not None for w in self.w_qkv_normed)
        try:
            saved = self._trace_gradients(ids, read, index, metric, embed_override, keep_qkv=defer)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        try:
            with torch.no_grad():
                if accumulate is None:
                    return self._dot_gradients(delta, saved["x_attn"], saved["g_qkv"], saved["x_mlp"],
                                               saved["g_mlp"], saved["x_final"], saved["g_final"], repeats, masks,
                                               into, weight)
                grads = self._residual_gradients(delta.shape[0], saved["x_attn"], saved["g_qkv"], saved["x_mlp"],
                                                 saved["g_mlp"], saved["x_final"], saved["g_final"], repeats,
                                                 saved.get("qkv"))
                if accumulate:
                    for (_, _, total), (_, _, g_res) in zip(accumulate, grads):
                        if isinstance(total, _QKVSum):
                            total.add(g_res)
                        else:
                            total += g_res
                else:
                    accumulate.extend(grads)
                return None
        finally:
            saved.clear()

    def _trace_gradients(self, ids, read, index, metric, embed_override, keep_qkv: bool = False) -> dict:
        """One traced forward+backward: the norms' inputs and the gradients at every destination.

        nnsight keeps a snapshot of this frame's locals in a reference cycle, which would hold
        whatever they point to until the garbage collector runs; everything large therefore lives
        in one dict, which the caller empties when done (and ``delta`` never enters this frame).
        """
        a, nn = self.arch, self.nn
        saved = {"x_attn": [], "x_mlp": [], "g_mlp": [None] * a.n_layers, "g_qkv": [None] * a.n_layers}
        if keep_qkv:  # the q/k/v projections' outputs too (_QKVSum's correction term)
            saved["qkv"] = []
        qkv, mlp_out = [], []
        with nn.trace(ids.to(self.device)):
            if embed_override is not None:
                a.embed(nn).output = embed_override.to(self.device, self.hf.dtype).requires_grad_(True)
            else:
                a.embed(nn).output = a.embed(nn).output.detach().requires_grad_(True)
            for layer in range(a.n_layers):
                saved["x_attn"].append(a.attn_norm(nn, layer).input.save())
                qkv.append([m.output for m in a.qkv_modules(nn, layer)])
                if keep_qkv:
                    saved["qkv"].append([o.save() for o in qkv[-1]])
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

    def _residual_gradients(self, b: int, x_attn, g_qkv, x_mlp, g_mlp, x_final, g_final, repeats, qkv=None):
        """Destination by destination group (each layer's q/k/v inputs, its MLP, the logits), as a
        generator: (the destination index or slice, how many upstream nodes feed it, the metric's
        gradient at its residual input, through the pre-norm, summed over the stacked runs:
        [b, pos, n, d_model]). With ``qkv`` (the q/k/v projections' outputs of the pass), each layer's
        q/k/v group comes as a :class:`_QKVSum` instead, to be added to the other passes' first."""
        a, g = self.arch, self.graph

        def fold(t):  # sum the stacked runs: [repeats * b, ...] -> [b, ...]
            return t if repeats == 1 else t.reshape(repeats, b, *t.shape[1:]).sum(0)

        def fold_n_major(t):  # the same for [repeats * b, p, n, d] views of n-major tensors, kept n-major
            if repeats == 1:
                return t
            n_major = t.permute(2, 0, 1, 3)
            return n_major.reshape(n_major.shape[0], repeats, b, *n_major.shape[2:]).sum(1).permute(1, 2, 0, 3)

        for layer in range(a.n_layers):
            u = g.up_until(layer)
            g_k = a.split_qkv([t.float() for t in g_qkv[layer]])  # [repeats * b, pos, n, head_dim]
            if qkv is not None:
                g_res = _QKVSum.of_pass(self.attn_norms[layer], x_attn[layer], g_k, a.split_qkv(qkv[layer]),
                                        self.qkv_shift[layer], self.w_qkv_normed[layer], repeats)
            elif self.w_qkv_normed[layer] is not None:
                g_res = fold_n_major(qkv_norm_vjp(self.attn_norms[layer], x_attn[layer], g_k,
                                                  self.w_qkv_normed[layer]))
            else:
                g_res = fold(norm_vjp(self.attn_norms[layer], x_attn[layer],
                                      torch.einsum("bpnk,ndk->bpnd", g_k, self.w_qkv[layer][0])))
            del g_k
            yield g.attn_dest_slice(layer), u, g_res
            del g_res
            yield (g.mlp_dest(layer), u + a.n_heads,
                   fold(norm_vjp(self.mlp_norms[layer], x_mlp[layer], g_mlp[layer].float()[:, :, None])))
        yield len(g.downstream) - 1, len(g.upstream), fold(norm_vjp(self.final_norm, x_final,
                                                                    g_final.float()[:, :, None]))

    def _dot_gradients(self, delta, x_attn, g_qkv, x_mlp, g_mlp, x_final, g_final, repeats, masks=None, into=None,
                       weight=1.0):
        grads = self._residual_gradients(delta.shape[0], x_attn, g_qkv, x_mlp, g_mlp, x_final, g_final, repeats)
        return self.accumulated_scores(delta, grads, masks, into, weight)

    def accumulated_scores(self, delta, grads, masks=None, into=None, weight=1.0) -> torch.Tensor:
        """[b, n_up, n_down]: ``delta`` dotted with the gradients at every destination (as
        :meth:`_residual_gradients` gives them, or their sum over passes from ``accumulate``); with
        ``masks``, also split by position group into ``into`` (see :meth:`gradient_scores`)."""
        g = self.graph
        b, n_up = delta.shape[:2]
        flat = delta.reshape(b, n_up, -1)  # [b, n_up, pos * d]: a view, delta is node-major and contiguous

        def contract(upto: int, g_res: torch.Tensor, dest) -> torch.Tensor:
            """delta of the first ``upto`` nodes . g_res over (pos, d): [b, upto, n] (g_res [b, p, n, d]).
            With ``masks``, one product per position group, each group's batch sum (times ``weight``)
            added to ``into[:, :upto, dest]``."""
            n = g_res.shape[2]
            if masks is None:
                return torch.bmm(flat[:, :upto], g_res.permute(0, 1, 3, 2).reshape(b, -1, n))
            if n == 1:  # an MLP or the logits: one product with a column per group reads delta once
                split = g_res[:, :, 0, :, None] * masks.transpose(1, 2)[:, :, None, :]  # [b, p, d, R]
                parts = torch.bmm(flat[:, :upto], split.reshape(b, -1, masks.shape[1])).transpose(1, 2)[..., None]
            else:  # q/k/v of every head: already n columns a product, one product per group
                g_n = g_res.permute(2, 0, 1, 3).contiguous()  # [n, b, p, d]: a view when it comes n-major
                part = torch.empty_like(g_n)  # each group's masked copy, written in place
                parts = torch.stack([torch.bmm(flat[:, :upto], torch.mul(g_n, masks[None, :, r, :, None], out=part)
                                               .view(n, b, -1).permute(1, 2, 0))
                                     for r in range(masks.shape[1])], 1)  # [b, R, upto, n]
            summed = weight * parts.sum(0)
            into[:, :upto, dest] += summed if isinstance(dest, slice) else summed[:, :, 0]
            return parts.sum(1)

        out = torch.zeros(b, len(g.upstream), len(g.downstream), device=self.device)
        for dest, upto, g_res in grads:
            if isinstance(g_res, _QKVSum):
                g_res = g_res.finish()
            scores = contract(upto, g_res, dest)
            del g_res
            out[:, :upto, dest] = scores if isinstance(dest, slice) else scores[:, :, 0]
        return out

    # -- forward with some edges ablated ------------------------------------------------------------------
    @torch.no_grad()
    def patched_metric(self, ids, read, index, metric: Metric, ablated: torch.Tensor,
                       patch: torch.Tensor) -> torch.Tensor:
        """Metric per example when every edge in ``patch`` [n_up, n_down] carries the ablated value.

        The input of a destination becomes its current input plus, for each
        patched edge u -> v, a_u(ablated) - a_u(current run).

        ``patch`` may also be [G, n_up, n_down], G patterns at once: the batch then runs G times in one
        pass (pattern-major) and the result is [G, batch, ...]. :meth:`patched_metrics` splits many
        patterns into passes that fit a memory budget.
        """
        a, nn, g = self.arch, self.nn, self.graph
        single = patch.dim() == 2
        patches = (patch[None] if single else patch).to(self.device).float()  # [G, n_up, n_down]
        n_pat = patches.shape[0]
        b, p = ids.shape
        d = a.d_model
        ablated = ablated.to(self.device)[None]  # [1, b, p, n_up, d], shared by every pattern
        if n_pat > 1:
            ids, read, index = ids.repeat(n_pat, 1), read.repeat(n_pat), index.repeat(n_pat)
        # a_u(ablated) - a_u(current run) of every node so far, filled in as the pass reaches each node
        diff = torch.zeros(n_pat, b, p, len(g.upstream), d, device=self.device)

        def patched(mask: torch.Tensor):
            """The patterns that patch this destination (None: none does; all: a slice) and, per such
            pattern, the activation differences summed over its patched sources: [b, p, (n,) d]. One
            pattern at a time, over its patched sources only: small tensors that stay in the cache
            (one product over all patterns at once was up to 3x slower on the CPU)."""
            active = mask.flatten(1).any(1)
            if not active.any():
                return None, None
            sel = active.nonzero()[:, 0]
            deltas = []
            for k in sel.tolist():
                m = mask[k]  # [u, n_qkv] or [u]
                used = (m != 0) if m.dim() == 1 else (m != 0).any(1)
                src = slice(0, m.shape[0]) if bool(used.all()) else used.nonzero()[:, 0]
                dk = diff[k, :, :, src]  # [b, p, u', d]
                deltas.append(torch.matmul(m[src].T, dk) if m.dim() == 2 else (dk * m[src, None]).sum(2))
            return (slice(None) if len(sel) == n_pat else sel), deltas

        def replace(value: torch.Tensor, sel, new: list[torch.Tensor]) -> torch.Tensor:
            """``value`` [G * b, ...] with the selected patterns' rows replaced by ``new`` (one [b, ...] each)."""
            if isinstance(sel, slice):
                return torch.cat(new).reshape(value.shape).to(value.dtype)
            out = value.clone().view(n_pat, b, *value.shape[1:])
            out[sel] = torch.stack(new).to(value.dtype)
            return out.view(value.shape)

        with nn.trace(ids.to(self.device)):
            diff[:, :, :, 0] = ablated[:, :, :, 0] - a.embed(nn).output.float().view(n_pat, b, p, d)
            for layer in range(a.n_layers):
                u = g.up_until(layer)
                sel, deltas = patched(patches[:, :u, g.attn_dest_slice(layer)])  # masks [G, u, n_qkv]
                if deltas is not None:
                    x = a.attn_norm(nn, layer).input
                    xs = x.view(n_pat, b, p, d)[sel]
                    w, bias = self.w_qkv[layer]
                    news = []
                    for x_k, delta in zip(xs, deltas):  # each pattern's q/k/v from its patched inputs
                        normed = self.attn_norms[layer]((x_k.float()[:, :, None] + delta).to(x.dtype)).float()
                        new = torch.einsum("bpnd,ndk->bpnk", normed, w)
                        news.append(new if bias is None else new + bias)
                    merged = zip(*[a.merge_qkv(new) for new in news])  # per module: one tensor per pattern
                    for module, values in zip(a.qkv_modules(nn, layer), merged):
                        module.output = replace(module.output, sel, list(values))
                z = a.o_proj(nn, layer).input.float().reshape(n_pat, b, p, a.n_heads, a.head_dim)
                diff[:, :, :, u:u + a.n_heads] = (ablated[:, :, :, u:u + a.n_heads]
                                                  - torch.einsum("gbphk,hkd->gbphd", z, self.w_out[layer]))
                um = u + a.n_heads
                sel, deltas = patched(patches[:, :um, g.mlp_dest(layer)])  # masks [G, um]
                if deltas is not None:
                    x = a.mlp_norm(nn, layer).input
                    xs = x.view(n_pat, b, p, d)[sel]
                    a.mlp_norm(nn, layer).input = replace(x, sel, [x_k.float() + dk for x_k, dk in zip(xs, deltas)])
                diff[:, :, :, um] = ablated[:, :, :, um] - a.mlp(nn, layer).output.float().view(n_pat, b, p, d)
            sel, deltas = patched(patches[:, :, -1])
            if deltas is not None:
                x = a.final_norm(nn).input
                xs = x.view(n_pat, b, p, d)[sel]
                a.final_norm(nn).input = replace(x, sel, [x_k.float() + dk for x_k, dk in zip(xs, deltas)])
            result = metric(self.read_logits(nn.output.logits, read), index).float().save()
        result = result.cpu()
        return result if single else result.view(n_pat, b, *result.shape[1:])

    def patched_metrics(self, ids, read, index, metric: Metric, ablated: torch.Tensor, patches,
                        budget_bytes: int = PATTERN_BUDGET) -> torch.Tensor:
        """:meth:`patched_metric` for many patterns ([G, n_up, n_down] or a list of [n_up, n_down]):
        [G, batch, ...], as many patterns per pass as fit in ``budget_bytes`` of float32 node
        buffers (about three [batch, pos, n_up, d_model] buffers per pattern; at least one)."""
        patches = torch.stack(list(patches)) if not torch.is_tensor(patches) else patches
        chunk = self.patterns_per_pass(ids, len(patches), budget_bytes)
        return torch.cat([self.patched_metric(ids, read, index, metric, ablated, patches[i:i + chunk])
                          for i in range(0, len(patches), chunk)])

    def patterns_per_pass(self, ids, n_patterns: int, budget_bytes: int = PATTERN_BUDGET) -> int:
        """How many ablation patterns :meth:`patched_metrics` runs in one pass on this batch."""
        per_pattern = 3 * ids.numel() * len(self.graph.upstream) * self.arch.d_model * 4
        return max(1, min(n_patterns, budget_bytes // per_pattern))


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


def _normalised(norm, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂, r) of a LayerNorm or RMSNorm's input x [b, p, d], in float32: the normalised input before the
    weight (centred for LayerNorm) and the reciprocal standard deviation (root mean square) [b, p, 1]."""
    xf = x.detach().float()
    if norm.kind == "layer":
        xf = xf - xf.mean(-1, keepdim=True)
    r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm.eps)
    return xf * r, r


def normed_qkv_weights(norm, w: torch.Tensor) -> torch.Tensor | None:
    """[n, d, head_dim] q/k/v input weights with a LayerNorm's or RMSNorm's weight folded in along d, and
    for LayerNorm centred over d (so that a cotangent mapped through them has mean zero over d_model, as
    the LayerNorm's product wants); None for any other norm (see :func:`qkv_norm_vjp`)."""
    if getattr(norm, "kind", None) not in ("layer", "rms"):
        return None
    folded = w.float() * norm.weight.detach().float()[None, :, None]
    return folded - folded.mean(1, keepdim=True) if norm.kind == "layer" else folded


def qkv_shift(norm, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """[n, head_dim]: what each q/k/v output has beside (x̂ * norm weight) W: LayerNorm's bias through W
    and the projection's bias (so that output - shift = x̂ W'', W'' of :func:`normed_qkv_weights`, x̂
    summing to zero over d for LayerNorm); None for any other norm."""
    if getattr(norm, "kind", None) not in ("layer", "rms"):
        return None
    shift = torch.zeros(w.shape[0], w.shape[2], dtype=torch.float32, device=w.device)
    if norm.kind == "layer" and norm.bias is not None:
        shift += torch.einsum("d,ndk->nk", norm.bias.detach().float(), w.float())
    return shift if bias is None else shift + bias.float()


class _QKVSum:
    """One layer's q/k/v gradients at the residual input (:func:`qkv_norm_vjp`), summed over IG points,
    with the product through the weights done once for the sum.

    Per point, r (W''ᵀ g) - x̂ * mean(r (W''ᵀ g) * x̂) (see :func:`qkv_norm_vjp`); the first term is
    linear in r g, so the points' r g are summed at head_dim size and multiplied by W'' once. The
    second needs r g . (x̂ W'') / d per point, and x̂ W'' is the q/k/v output less :func:`qkv_shift`:
    a head_dim-sized dot. What is kept per point: x̂ [b, p, d] and that [b, p, n] factor; at the end
    their outer products are summed in one batched product."""

    def __init__(self, w_normed, g_r, x_hats, projs):
        self.w_normed, self.g_r, self.x_hats, self.projs = w_normed, g_r, x_hats, projs

    @classmethod
    def of_pass(cls, norm, x, g_k, out_k, shift, w_normed, repeats: int) -> "_QKVSum":
        """A pass's points (``repeats`` stacked along the batch): x [r * b, p, d] the norm's input, g_k and
        out_k [r * b, p, n, head_dim] the q/k/v outputs' gradients and the outputs."""
        x_hat, r = _normalised(norm, x)  # [rb, p, d], [rb, p, 1]
        g_r = g_k.float() * r[:, :, :, None]
        proj = (g_r * (out_k.float() - shift)).sum(-1).div_(x.shape[-1])  # [rb, p, n]
        rb = x.shape[0]
        b = rb // repeats
        g_r = g_r.reshape(repeats, b, *g_r.shape[1:]).sum(0) if repeats > 1 else g_r
        return cls(w_normed, g_r, list(x_hat.reshape(repeats, b, *x_hat.shape[1:]).unbind(0)),
                   list(proj.reshape(repeats, b, *proj.shape[1:]).unbind(0)))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.g_r, *self.x_hats, *self.projs))

    def add(self, other: "_QKVSum") -> None:
        self.g_r += other.g_r
        self.x_hats.extend(other.x_hats)
        self.projs.extend(other.projs)

    def finish(self) -> torch.Tensor:
        """The sum over the points, [b, p, n, d]: a view of an n-major tensor [n, b, p, d]."""
        b, p, n, k = self.g_r.shape
        out = torch.bmm(self.g_r.permute(2, 0, 1, 3).reshape(n, b * p, k), self.w_normed.transpose(1, 2))
        xs = torch.stack(self.x_hats, 2).view(b * p, len(self.x_hats), -1)  # [bp, P, d]
        projs = torch.stack(self.projs, 3).view(b * p, n, len(self.projs))  # [bp, n, P]
        out -= torch.bmm(projs, xs).transpose(0, 1)  # sum over the points of x̂ times their factor
        return out.view(n, b, p, -1).permute(1, 2, 0, 3)


def qkv_norm_vjp(norm, x: torch.Tensor, g_k: torch.Tensor, w_normed: torch.Tensor) -> torch.Tensor:
    """``norm_vjp(norm, x, einsum("bpnk,ndk->bpnd", g_k, w))`` for the q/k/v gradients ``g_k``
    [b, p, n, head_dim] and their input weights w, with ``w_normed`` = :func:`normed_qkv_weights` (norm, w).

    The norm's weight (and LayerNorm's mean over d) is already in the weights and 1/std is applied to
    the head_dim-sized gradients, so what is written at d_model size is one product and one
    correction: r * (gw - mean(gw)) = (r g) W'' and then minus x̂ * mean(that * x̂), as in
    :func:`norm_vjp` (x̂ has mean zero, so the centred gw gives the same mean). The result is a view
    [b, p, n, d] of an n-major tensor [n, b, p, d], the layout the score products read.
    """
    x_hat, r = _normalised(norm, x)  # [b, p, d], [b, p, 1]
    x_hat = x_hat.reshape(-1, x.shape[-1])  # [b * p, d]
    b, p, n, k = g_k.shape
    g_r = (g_k.float() * r[:, :, :, None]).permute(2, 0, 1, 3).reshape(n, b * p, k)
    out = torch.bmm(g_r, w_normed.transpose(1, 2))  # [n, b * p, d] = r * (gw - mean(gw))
    proj = torch.bmm(out.transpose(0, 1), x_hat[:, :, None]).div_(x.shape[-1])  # [b * p, n, 1]
    out.addcmul_(x_hat[None], proj.transpose(0, 1), value=-1.0)
    return out.view(n, b, p, -1).permute(1, 2, 0, 3)


def norm_vjp(norm, x: torch.Tensor, cotangents: torch.Tensor) -> torch.Tensor:
    """J_norm(x)^T applied to n cotangents at once: x [b, p, d], cotangents [b, p, n, d] -> [b, p, n, d].

    For a :class:`~mechshift_utils.models.arch.Norm` (LayerNorm, RMSNorm) the product is written in
    closed form, in float32, with one new tensor of the cotangents' shape: with x̂ the normalised
    input, r its reciprocal standard deviation (root mean square for RMSNorm) and gw = g * weight,

        LayerNorm: r * (gw - mean(gw) - x̂ * mean(gw * x̂))        RMSNorm: r * (gw - x̂ * mean(gw * x̂))

    (means over d_model). Any other norm, given as a function, goes through autograd: x copied n
    times along a new axis, one fused backward for all n products.
    """
    kind = getattr(norm, "kind", None)
    if kind not in ("layer", "rms"):
        stacked = x.detach().float()[:, :, None].expand(-1, -1, cotangents.shape[2], -1).contiguous()
        stacked.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(norm(stacked).float(), stacked, cotangents)
        return grad
    x_hat, r = _normalised(norm, x)  # [b, p, d], [b, p, 1]
    x_hat = x_hat[:, :, None]  # [b, p, 1, d]
    out = cotangents.float() * norm.weight.detach().float()  # gw, the one new [b, p, n, d] tensor
    proj = torch.matmul(out, x_hat.transpose(-1, -2)).div_(x.shape[-1])  # mean(gw * x̂): [b, p, n, 1]
    if kind == "layer":
        out -= out.mean(-1, keepdim=True)
    out.addcmul_(x_hat, proj, value=-1.0)
    return out.mul_(r[:, :, :, None])
