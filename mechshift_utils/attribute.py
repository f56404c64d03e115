"""Edge attribution with nnsight: exact activation patching, EAP and EAP-IG behind one entry point.

``attribute(model, data, method="eap-ig", ablation="patching", ig_steps=8)``
scores every edge u -> v of :class:`~mechshift_utils.graph.Graph` by the change
in the metric when u's contribution to v's input is replaced by its ablated
value ("noising", the direction the EAP-IG reference estimates):

* ``exact``: that change measured, one patched forward pass per edge (and per
  node for node scores). The ground truth on small models.
* ``eap``: (a_u(ablated) - a_u(clean)) . dM/d(input of v), the gradient taken on
  the clean run.
* ``eap-ig``: the same with the gradient averaged over ``ig_steps`` runs whose
  input embeddings lie on the straight line from the ablated to the clean input
  (midpoints of ``ig_steps`` equal intervals).

Ablated values (``ablation``): ``patching`` (from the corrupted run), ``zero``,
``mean`` (mean over the task data of the clean activations, per position).
Scores are per-example means, as the reference. Node scores: exact = the effect
of patching the node's whole output; eap/eap-ig = the sum of its outgoing edges
(the same first-order estimate).

The input of a head's q/k/v is the residual stream as that head's projection
alone reads it: the gradient at the projection's output for that head, mapped
back through its weight slice and through the pre-norm (a vector-Jacobian
product of the norm at the run's residual). Logits are read at slot - 1.

Memory: per batch the engine keeps one buffer of activation differences
[batch, upstream nodes, positions, d_model] in float32 (node-major, so that
each destination's scores are one batched matrix product over a view of it),
built from the clean and ablated activations (three such buffers exist for a
moment while it is made), and one pass's saved activations and gradients,
never the [upstream x downstream x d_model] product. For a Llama-7B shape a
buffer is 1 + 32 x 33 = 1057 nodes x 4096 x 4 bytes = 17 MB per position and
example, 2.2 GB per example at 128 positions. mechshift_utils.memory estimates
the whole (build, backward and scoring phases, the runner's float32 copies of
W_O and W_QKV for a bf16 model) and chooses the batch size from free memory.
Per-example scores add n_up x n_down floats (13 MB for Llama-7B) per example,
on the host. ``exact`` also keeps the ablated activations (a second buffer).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from .arch import Arch, arch_of
from .graph import Graph
from .metrics import Metric, logit_diff
from .validation import ParameterError, check_choice, check_positive_int
from .vocab import EncodedTask

METHODS = ("exact", "eap", "eap-ig")
ABLATIONS = ("patching", "zero", "mean")


@dataclass
class Attribution:
    graph: Graph
    method: str
    ablation: str
    edge_scores: torch.Tensor  # [n_up, n_down], mean over examples; 0 where no edge
    node_scores: torch.Tensor  # [n_up]
    metric_clean: torch.Tensor  # [n_examples]
    metric_ablated: torch.Tensor  # [n_examples] (all edges ablated: the corrupted run for patching)
    per_example: torch.Tensor | None = None  # [n_examples, n_up, n_down] when asked for
    ig_steps: int | None = None
    meta: dict = field(default_factory=dict)

    def edges(self) -> pd.DataFrame:
        return self.graph.edge_table(self.edge_scores)

    def nodes(self) -> pd.DataFrame:
        return pd.DataFrame({"node": self.graph.upstream, "score": self.node_scores.double().tolist()})

    def save(self, folder, data: EncodedTask | None = None) -> Path:
        """Write nodes.csv, edges.csv (and examples.jsonl: everything to recompute a score)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.nodes().to_csv(folder / "nodes.csv", index=False)
        self.edges().to_csv(folder / "edges.csv", index=False)
        if data is not None:
            from .scoring import save_pool

            save_pool(data, list(range(len(data))), folder / "examples.jsonl")
        return folder


class _Runner:
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
                        embed_override: torch.Tensor | None, repeats: int = 1) -> torch.Tensor:
        """Per example [batch, n_up, n_down]: delta[u] . dM/d(input of v), summed over ``repeats`` runs
        stacked in one pass (``embed_override`` [repeats * batch, pos, d]: e.g. several IG points).

        ``delta`` is node-major, [batch, n_up, pos, d_model] (see :func:`node_major`): each
        destination's scores are then one batched matrix product over (pos, d_model) with no copy
        of the buffer, which dominated the time when it was position-major."""
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
                                           saved["x_final"], saved["g_final"], repeats)
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

    def _dot_gradients(self, delta, x_attn, g_qkv, x_mlp, g_mlp, x_final, g_final, repeats):
        a, g = self.arch, self.graph
        b, n_up = delta.shape[:2]
        flat = delta.reshape(b, n_up, -1)  # [b, n_up, pos * d]: a view, delta is node-major and contiguous

        def fold(t):  # sum the stacked runs: [repeats * b, ...] -> [b, ...]
            return t if repeats == 1 else t.reshape(repeats, b, *t.shape[1:]).sum(0)

        def contract(upto: int, g_res: torch.Tensor) -> torch.Tensor:
            """delta of the first ``upto`` nodes . g_res over (pos, d): [b, upto, n] (g_res [b, p, n, d])."""
            return torch.bmm(flat[:, :upto], g_res.permute(0, 1, 3, 2).reshape(b, -1, g_res.shape[2]))

        out = torch.zeros(b, len(g.upstream), len(g.downstream), device=self.device)
        for layer in range(a.n_layers):
            u = g.up_until(layer)
            w, _ = self.w_qkv[layer]
            g_heads = torch.einsum("bpnk,ndk->bpnd", a.split_qkv([t.float() for t in g_qkv[layer]]), w)
            g_res = fold(norm_vjp(self.attn_norms[layer], x_attn[layer], g_heads))
            out[:, :u, g.attn_dest_slice(layer)] = contract(u, g_res)
            um = u + a.n_heads
            g_res = fold(norm_vjp(self.mlp_norms[layer], x_mlp[layer], g_mlp[layer].float()[:, :, None]))
            out[:, :um, g.mlp_dest(layer)] = contract(um, g_res)[:, :, 0]
        g_res = fold(norm_vjp(self.final_norm, x_final, g_final.float()[:, :, None]))
        out[:, :, -1] = contract(n_up, g_res)[:, :, 0]
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


def mean_activations(runner: _Runner, data: EncodedTask, batches) -> torch.Tensor:
    """Mean over the task data of every node's clean output, per position: [pos, n_up, d_model]."""
    total = None
    for idx in batches:
        acts = runner.node_outputs(data.clean_ids[idx]).sum(0)
        total = acts if total is None else total + acts
    return total / len(data)


def ablated_batch(runner: _Runner, data: EncodedTask, idx, read, ablation: str, mean_acts, metric: Metric):
    """(clean activations, ablated activations, metric on clean, metric with every edge ablated)."""
    clean, m_clean = runner.node_outputs(data.clean_ids[idx], read, idx, metric)
    if ablation == "patching":  # every edge patched is exactly the corrupted run
        corrupt, m_ablated = runner.node_outputs(data.corrupted_ids[idx], read, idx, metric)
        return clean, corrupt, m_clean, m_ablated
    abl = torch.zeros_like(clean) if ablation == "zero" else mean_acts[None].expand_as(clean)
    return clean, abl, m_clean, runner.patched_metric(data.clean_ids[idx], read, idx, metric, abl,
                                                      runner.graph.valid)


def node_major(acts: torch.Tensor) -> torch.Tensor:
    """[batch, pos, n_up, d] -> [batch, n_up, pos, d], contiguous (the layout gradient_scores takes)."""
    return acts.transpose(1, 2).contiguous()


def batch_indices(n: int, batch_size: int) -> list[torch.Tensor]:
    return [torch.arange(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]


_RUNNERS: dict[int, _Runner] = {}


def runner_for(model, shift: bool = True) -> _Runner:
    """The nnsight wrapper of a model, made once per model object (wrapping is not free)."""
    key = id(getattr(model, "_model", model))
    runner = _RUNNERS.get(key)
    if runner is None or runner.hf is not getattr(model, "_model", model):
        runner = _RUNNERS[key] = _Runner(model, shift)
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


def check_inputs(data: EncodedTask, method: str, ablation: str, ig_steps: int, batch_size: int) -> None:
    check_choice("method", method, METHODS)
    check_choice("ablation", ablation, ABLATIONS)
    check_positive_int("ig_steps", ig_steps)
    check_positive_int("batch_size", batch_size)
    if data.clean_ids.shape != data.corrupted_ids.shape:
        raise ParameterError(f"data: clean and corrupted sequences must have equal shapes, got "
                             f"{tuple(data.clean_ids.shape)} and {tuple(data.corrupted_ids.shape)}")
    read_out_positions(data)


def read_out_positions(data: EncodedTask, shift: bool = True) -> torch.Tensor:
    """Where each example's metric is read: its first answer slot, minus 1 under the shift; stops with a
    clear message when a slot has no such position in the sequence."""
    slots = data.answer_positions[:, 0]
    lowest = 1 if shift else 0
    if slots.min() < lowest or slots.max() >= data.clean_ids.shape[1]:
        raise ParameterError(f"data.answer_positions: expected slots in [{lowest}, {data.clean_ids.shape[1] - 1}], "
                             f"got {slots.min().item()}..{slots.max().item()}")
    return slots - lowest


def attribute(model, data: EncodedTask, method: str = "eap-ig", ablation: str = "patching",
              ig_steps: int = 8, metric: Metric | None = None, batch_size: int = 32, shift: bool = True,
              per_example: bool = False, progress: bool = True, exact_edges: bool = True,
              ig_batch: int | None = 4) -> Attribution:
    """Score every edge (and node) of the model's graph on the task data; see the module docstring.

    ``ig_batch``: how many IG points share one forward/backward pass (stacked
    along the batch; None = all ``ig_steps`` at once). Fewer passes cost less
    overhead, larger ones more memory traffic: 4 was the fastest on the embedded
    model on 2 CPU cores. Activation memory of a pass grows with
    batch_size x ig_batch; use 1 for a 7B model on one GPU.
    ``exact_edges=False`` makes ``exact`` score nodes only (one pass per node
    instead of one per edge); its edge scores are then zero.
    """
    check_inputs(data, method, ablation, ig_steps, batch_size)
    if ig_batch is not None:
        check_positive_int("ig_batch", ig_batch)
    runner = runner_for(model, shift)
    g = runner.graph
    metric = metric or logit_diff(data)
    n = len(data)
    read_all = read_out_positions(data, shift)
    batches = batch_indices(n, batch_size)

    mean_acts = mean_activations(runner, data, batches) if ablation == "mean" else None

    valid = g.valid.to(runner.device)
    edge_sum = torch.zeros(len(g.upstream), len(g.downstream), device=runner.device)
    node_sum = torch.zeros(len(g.upstream))
    examples = [] if per_example else None
    m_clean, m_ablated = [], []
    steps = {"exact": g.n_edges * exact_edges + len(g.upstream), "eap": 1, "eap-ig": ig_steps}[method]
    bar = tqdm(total=len(batches) * steps, desc=f"{method} ({ablation})", disable=not progress, mininterval=2.0)
    for idx in batches:
        ids, read = data.clean_ids[idx], read_all[idx]
        clean, abl, base, all_ablated = ablated_batch(runner, data, idx, read, ablation, mean_acts, metric)
        none = torch.zeros_like(g.valid)
        m_clean.append(base)
        m_ablated.append(all_ablated)
        if method == "exact":
            scores = torch.zeros(len(idx), len(g.upstream), len(g.downstream))
            for u, v in (g.valid.nonzero().tolist() if exact_edges else []):
                one = none.clone()
                one[u, v] = True
                scores[:, u, v] = runner.patched_metric(ids, read, idx, metric, abl, one) - base
                bar.update(1)
            for u in range(len(g.upstream)):
                node_sum[u] += (runner.patched_metric(ids, read, idx, metric, abl, g.valid & (
                    torch.arange(len(g.upstream))[:, None] == u)) - base).sum()
                bar.update(1)
            scores = scores.to(runner.device)
        else:
            emb_clean, emb_base = clean[:, :, 0].clone(), abl[:, :, 0].clone()
            clean = abl.sub_(clean) if ablation == "patching" else abl - clean  # in place: abl is ours
            del abl
            delta = node_major(clean).to(runner.device)
            del clean  # only the node-major difference is needed from here on
            scores = torch.zeros(len(idx), len(g.upstream), len(g.downstream), device=runner.device)
            if method == "eap":
                scores += runner.gradient_scores(ids, read, idx, metric, delta, None)
                bar.update(1)
            else:
                per_pass = ig_batch or ig_steps
                for first in range(0, ig_steps, per_pass):
                    alphas = (torch.arange(first, min(ig_steps, first + per_pass)) + 0.5) / ig_steps
                    emb = emb_base[None] + alphas[:, None, None, None] * (emb_clean - emb_base)[None]
                    scores += runner.gradient_scores(ids, read, idx, metric, delta, emb.flatten(0, 1), len(alphas))
                    bar.update(len(alphas))
                scores /= ig_steps
            del delta  # before the next batch builds its own
            scores = scores * valid
        edge_sum += scores.sum(0)
        if method != "exact":
            node_sum += scores.sum(2).sum(0).cpu()
        if per_example:
            examples.append(scores.cpu())
    bar.close()
    return Attribution(g, method, ablation, (edge_sum / n).detach().cpu(), (node_sum / n).detach(),
                       torch.cat(m_clean).detach(), torch.cat(m_ablated).detach(),
                       torch.cat(examples).detach() if per_example else None,
                       ig_steps if method == "eap-ig" else None)
