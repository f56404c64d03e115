"""Logit lens on components: what each head and MLP writes toward the output tokens.

At the read-out position (slot - 1 under the shift) the final residual is the
sum of every upstream node's output (embeddings, heads ``z_h W_O[h]``, MLPs)
plus terms no node owns (position embeddings, attention output biases). Each
component's output is sent through the final norm *with the scale of the whole
residual frozen* (the standard direct-logit-attribution convention: the norm is
linear once its scale is fixed; LayerNorm still centres, RMSNorm only scales)
and through the unembedding. The component logits then add up exactly: the sum
over all nodes, plus the remainder (unowned terms and the final norm's bias),
is the model's logits (``tests/test_semantics.py`` checks this).

* :func:`logit_lens` gives, per example and component, the direct logit
  attribution (DLA) to the correct answer, to the counterfactual, and their
  difference (the component's share of the logit-difference metric).
* :func:`promoted_tokens` gives the tokens a component pushes up most (its
  projected logits averaged over examples) and the rank of the correct answer
  among them. Full-vocabulary projections are made only for the components
  asked for, a batch at a time, so a 7B vocabulary fits.

Architecture-neutral (every :class:`~mechshift_utils.models.arch.Arch`), through nnsight.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from tqdm import tqdm

from ..attribution.engine import batch_indices, read_out_positions
from ..attribution.graph import Graph, layer_of
from ..attribution.runner import runner_for
from ..core.validation import ParameterError, check_positive_int
from ..models.arch import Arch
from ..tasks import EncodedTask


def frozen_final_norm(arch: Arch, module, residual: torch.Tensor):
    """The final norm as a linear map with the residual's scale frozen: ``x [b, n, d] -> [b, n, d]``
    (``residual`` [b, d]). The norm's bias (LayerNorm) is left out: it belongs to no component."""
    weight = module.weight.detach().float()
    eps = getattr(module, "eps", None) or getattr(module, "variance_epsilon", 1e-6)
    r = residual.float()
    if arch.family == "gpt2":
        scale = torch.rsqrt(r.var(-1, unbiased=False) + eps)[:, None, None]
        return lambda x: weight * (x - x.mean(-1, keepdim=True)) * scale
    scale = torch.rsqrt(r.pow(2).mean(-1) + eps)[:, None, None]
    return lambda x: weight * x * scale


def final_norm_bias(arch: Arch, module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return None if bias is None else bias.detach().float()


@torch.no_grad()
def component_outputs(model, ids: torch.Tensor, read: torch.Tensor):
    """Every upstream node's output at the read position, [b, n_up, d] (float32), and the final
    residual there, [b, d]: one nnsight trace."""
    runner = runner_for(model)
    a, nn = runner.arch, runner.nn
    b = ids.shape[0]
    rows = torch.arange(b)
    zs, mlps = [], []
    with nn.trace(ids.to(runner.device)):
        emb = a.embed(nn).output.save()
        for layer in range(a.n_layers):
            zs.append(a.o_proj(nn, layer).input.save())
            mlps.append(a.mlp(nn, layer).output.save())
        resid = a.final_norm(nn).input.save()
    read = read.to(runner.device)
    parts = [emb[rows, read].float()[:, None]]
    for layer in range(a.n_layers):
        z = zs[layer][rows, read].float().reshape(b, a.n_heads, a.head_dim)
        parts.append(torch.einsum("bhk,hkd->bhd", z, runner.w_out[layer]))
        parts.append(mlps[layer][rows, read].float()[:, None])
    return torch.cat(parts, dim=1), resid[rows, read].float()


@dataclass
class LogitLens:
    """Direct logit attribution of every upstream node, per example (first answer slot)."""

    graph: Graph
    dla_correct: torch.Tensor  # [n, n_up]: the node's direct contribution to logit(correct)
    dla_counterfactual: torch.Tensor  # [n, n_up]
    remainder: torch.Tensor  # [n]: logit difference carried by no node (biases, position embeddings)
    logit_diff: torch.Tensor  # [n]: the model's logit difference, read from its output logits

    @property
    def dla(self) -> torch.Tensor:
        """[n, n_up]: each node's direct contribution to logit(correct) - logit(counterfactual)."""
        return self.dla_correct - self.dla_counterfactual

    def table(self) -> pd.DataFrame:
        """Mean DLA per node over examples, with layer and kind (input / head / mlp)."""
        names = self.graph.upstream
        return pd.DataFrame({
            "component": names,
            "layer": [layer_of(n) for n in names],
            "kind": ["input" if n == "input" else "mlp" if n.startswith("m") else "head" for n in names],
            "dla": self.dla.mean(0).double().tolist(),
            "dla_correct": self.dla_correct.mean(0).double().tolist(),
            "dla_counterfactual": self.dla_counterfactual.mean(0).double().tolist(),
        })

    def max_closure_error(self) -> float:
        """max |sum of node DLAs + remainder - logit difference|: zero up to float error by construction
        of the decomposition, a check that the pieces were read from the right places."""
        return float((self.dla.sum(1) + self.remainder - self.logit_diff).abs().max())


def logit_lens(model, data: EncodedTask, shift: bool = True, batch_size: int = 32,
               progress: bool = True) -> LogitLens:
    """Direct logit attribution of every node to the correct and counterfactual first answer tokens,
    on the clean sequences; see the module docstring."""
    check_positive_int("batch_size", batch_size)
    read = read_out_positions(data, shift)
    runner = runner_for(model, shift)
    a, hf = runner.arch, runner.hf
    w_u = a.unembed(hf).weight.detach().float()
    u_bias = getattr(a.unembed(hf), "bias", None)
    norm = a.final_norm(hf)
    bias = final_norm_bias(a, norm)
    correct, counter = data.correct_ids[:, 0], data.counterfactual_ids[:, 0]
    out = {"c": [], "f": [], "rem": [], "ld": []}
    for idx in tqdm(batch_indices(len(data), batch_size), desc="logit lens", disable=not progress):
        comps, resid = component_outputs(model, data.clean_ids[idx], read[idx])
        lin = frozen_final_norm(a, norm, resid)
        normed = lin(comps)  # [b, n_up, d]
        rest = lin((resid - comps.sum(1))[:, None])[:, 0] + (0 if bias is None else bias)
        dirs = torch.stack([w_u[correct[idx].to(w_u.device)], w_u[counter[idx].to(w_u.device)]], 1)  # [b, 2, d]
        per = torch.einsum("bnd,bkd->bkn", normed, dirs)
        rest_logits = torch.einsum("bd,bkd->bk", rest, dirs)
        if u_bias is not None:
            rest_logits = rest_logits + u_bias.float()[torch.stack([correct[idx], counter[idx]], 1).to(w_u.device)]
        out["c"].append(per[:, 0].cpu())
        out["f"].append(per[:, 1].cpu())
        out["rem"].append((rest_logits[:, 0] - rest_logits[:, 1]).cpu())
        out["ld"].append(_model_logit_diff(model, data, idx, read, shift))
    return LogitLens(runner.graph, torch.cat(out["c"]), torch.cat(out["f"]), torch.cat(out["rem"]),
                     torch.cat(out["ld"]))


@torch.no_grad()
def _model_logit_diff(model, data: EncodedTask, idx, read, shift) -> torch.Tensor:
    """The logit difference from the model's own forward pass (independent of the decomposition)."""
    hf = getattr(model, "_model", model)
    device = next(hf.parameters()).device
    logits = hf(input_ids=data.clean_ids[idx].to(device)).logits.float()
    rows = torch.arange(len(idx), device=device)
    at = logits[rows, read[idx].to(device)]
    return (at[rows, data.correct_ids[idx, 0].to(device)] - at[rows, data.counterfactual_ids[idx, 0].to(device)]).cpu()


def promoted_tokens(model, data: EncodedTask, components: list[str], tokenizer, k: int = 5, shift: bool = True,
                    batch_size: int = 32, progress: bool = True) -> pd.DataFrame:
    """The k tokens each component promotes most at the read position (its frozen-norm logits averaged
    over examples), with, per example, where the correct answer ranks among the component's logits:
    the median rank (1 = its top token) and the share of examples where it is the top token. The mean
    logits of a task whose answers differ between examples can put an unrelated token on top while
    the component promotes each example's own answer: the per-example columns say which.

    One row per (component, rank): component, rank, token_id, token, mean_logit, answer_rank,
    answer_top1_share.
    """
    check_positive_int("k", k)
    check_positive_int("batch_size", batch_size)
    read = read_out_positions(data, shift)
    runner = runner_for(model, shift)
    a, hf = runner.arch, runner.hf
    unknown = [c for c in components if c not in runner.graph.upstream]
    if unknown:
        raise ParameterError(f"components: expected node names of this model's graph, got {unknown}")
    pick = torch.tensor([runner.graph.upstream.index(c) for c in components], dtype=torch.long)
    w_u = a.unembed(hf).weight.detach().float()
    norm = a.final_norm(hf)
    total = torch.zeros(len(components), w_u.shape[0])
    ranks = []
    for idx in tqdm(batch_indices(len(data), batch_size), desc="promoted tokens", disable=not progress):
        comps, resid = component_outputs(model, data.clean_ids[idx], read[idx])
        normed = frozen_final_norm(a, norm, resid)(comps[:, pick.to(comps.device)])
        logits = normed @ w_u.T  # [b, c, vocab]
        total += logits.sum(0).cpu()
        answer = logits.gather(2, data.correct_ids[idx, 0].to(logits.device)[:, None, None]
                               .expand(-1, len(components), 1))
        ranks.append((logits > answer).sum(2).cpu() + 1)
    mean = total / len(data)
    all_ranks = torch.cat(ranks).float()
    median_rank = all_ranks.median(0).values
    top1 = (all_ranks == 1).float().mean(0)
    rows = []
    for i, comp in enumerate(components):
        top = torch.topk(mean[i], k)
        for r, (tid, val) in enumerate(zip(top.indices.tolist(), top.values.tolist()), start=1):
            rows.append({"component": comp, "rank": r, "token_id": tid, "token": tokenizer.decode([tid]),
                         "mean_logit": val, "answer_rank": float(median_rank[i]),
                         "answer_top1_share": float(top1[i])})
    return pd.DataFrame(rows)


def dla_grid(table: pd.DataFrame, arch: Arch):
    """[layer, head 0..n-1 then the MLP] matrix of the mean DLA in ``LogitLens.table()`` rows."""
    import numpy as np

    out = np.zeros((arch.n_layers, arch.n_heads + 1))
    for row in table.itertuples():
        if row.kind == "head":
            out[row.layer, int(row.component.split(".h")[1])] = row.dla
        elif row.kind == "mlp":
            out[row.layer, arch.n_heads] = row.dla
    return out
