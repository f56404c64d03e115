"""MLP neurons: attribution, top-activating inputs, and automatic one-line explanations.

A neuron is one coordinate of an MLP's hidden activation, the input of its
output projection (GPT-2 ``mlp.c_proj``, Llama / Qwen2 ``mlp.down_proj``), over
all positions. Its score follows the edge attributions' "noising" direction:
the change of the metric when, in the clean run, the neuron takes its value
from the corrupted run.

* ``exact``: that change measured, one patched forward pass per neuron (many
  neurons share a pass, stacked along the batch).
* ``eap``: (a_corrupt - a_clean) . dM/da at the clean run.
* ``ig`` (default): the same gradient averaged over ``ig_steps`` points on the
  straight line from the layer's corrupted to its clean activations (all
  neurons of the layer move together; midpoint rule). Summed over a layer's
  neurons this approaches the exact effect of patching the whole layer as the
  steps grow (completeness), which :class:`NeuronAttribution` reports.

An explanation names the input feature a neuron's activation concentrates on.
Candidate features are read off the task data alone, so they exist for every
task and tokenizer: the token itself, its position, the read-out position, an
answer slot, the position where clean and corrupted differ, a repeat of an
earlier token, the correct or counterfactual answer appearing in the input.
Selectivity of a feature f for a neuron: with m the share of the neuron's
|activation| that falls on f's token instances and r the share of instances
that are f, ``(m - r) / (1 - r)``: 1 when it fires only on f, 0 when it fires
on f no more than on anything else. The explanation is the feature with the
highest selectivity.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from tqdm import tqdm

from ..attribution.engine import batch_indices, read_out_positions
from ..attribution.metrics import Metric, logit_diff
from ..attribution.runner import runner_for
from ..core.validation import ParameterError, check_choice, check_positive_int
from ..tasks import EncodedTask

NEURON_METHODS = ("exact", "eap", "ig")


@dataclass
class NeuronAttribution:
    layers: list[int]
    method: str
    scores: torch.Tensor  # [len(layers), n_neurons]: mean over examples
    layer_effect: torch.Tensor  # [len(layers)]: exact effect of patching the whole layer (mean over examples)
    metric_clean: torch.Tensor  # [n_examples]
    ig_steps: int | None = None

    def table(self) -> pd.DataFrame:
        rows = [{"layer": layer, "neuron": n, "name": neuron_name(layer, n), "score": float(s)}
                for i, layer in enumerate(self.layers) for n, s in enumerate(self.scores[i].tolist())]
        return pd.DataFrame(rows)

    def top(self, k: int) -> pd.DataFrame:
        """The k neurons with the largest |score|."""
        table = self.table()
        return table.reindex(table.score.abs().sort_values(ascending=False, kind="stable").index).head(k)

    def completeness(self) -> pd.DataFrame:
        """Per layer: sum of neuron scores vs the exact effect of patching the whole layer."""
        return pd.DataFrame({"layer": self.layers, "sum_of_scores": self.scores.sum(1).double().tolist(),
                             "layer_patched": self.layer_effect.double().tolist()})


def neuron_name(layer: int, neuron: int) -> str:
    return f"m{layer}.n{neuron}"


class _NeuronRunner:
    def __init__(self, model, shift: bool):
        self.base = runner_for(model, shift)
        self.arch, self.nn, self.hf, self.device = self.base.arch, self.base.nn, self.base.hf, self.base.device

    @torch.no_grad()
    def activations(self, ids: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """Each layer's neuron activations, [b, p, n_neurons] (float32)."""
        saved = []
        with self.nn.trace(ids.to(self.device)):
            for layer in layers:
                saved.append(self.arch.mlp_out_proj(self.nn, layer).input.save())
        return [s.float() for s in saved]

    @torch.no_grad()
    def metric_with(self, ids, read, index, metric: Metric, layer: int, acts: torch.Tensor) -> torch.Tensor:
        """Metric per example when the layer's neuron activations are replaced by ``acts``."""
        value = [None]
        with self.nn.trace(ids.to(self.device)):
            proj = self.arch.mlp_out_proj(self.nn, layer)
            proj.input = acts.to(self.device, self.hf.dtype)
            value[0] = metric(self.base.read_logits(self.nn.output.logits, read), index).float().save()
        return value[0].cpu()

    def gradient(self, ids, read, index, metric: Metric, layer: int, acts: torch.Tensor) -> torch.Tensor:
        """dM/d(activations) of the layer, evaluated with the activations set to ``acts`` [b, p, n]."""
        leaf = acts.detach().to(self.device, self.hf.dtype).requires_grad_(True)
        value = [None]
        with torch.enable_grad():
            with self.nn.trace(ids.to(self.device)):
                self.arch.mlp_out_proj(self.nn, layer).input = leaf
                value[0] = metric(self.base.read_logits(self.nn.output.logits, read), index).float().sum().save()
            (grad,) = torch.autograd.grad(value[0], leaf)
        return grad.float()


def _check_layers(layers, n_layers: int) -> list[int]:
    layers = list(layers)
    if not layers or any(not isinstance(l, int) or isinstance(l, bool) or not 0 <= l < n_layers for l in layers):
        raise ParameterError(f"layers: expected a non-empty list of layer indices in [0, {n_layers - 1}], "
                             f"got {layers!r}")
    return layers


def neuron_attribution(model, data: EncodedTask, layers, method: str = "ig", ig_steps: int = 8,
                       metric: Metric | None = None, batch_size: int = 32, shift: bool = True,
                       neuron_chunk: int = 64, progress: bool = True) -> NeuronAttribution:
    """Score every neuron of the MLPs in ``layers`` on the task data; see the module docstring.

    ``neuron_chunk`` (``exact`` only): how many neurons share one patched pass.
    """
    check_choice("method", method, NEURON_METHODS)
    check_positive_int("ig_steps", ig_steps)
    check_positive_int("batch_size", batch_size)
    check_positive_int("neuron_chunk", neuron_chunk)
    if data.clean_ids.shape != data.corrupted_ids.shape:
        raise ParameterError("data: clean and corrupted sequences must have equal shapes")
    runner = _NeuronRunner(model, shift)
    layers = _check_layers(layers, runner.arch.n_layers)
    metric = metric or logit_diff(data)
    read_all = read_out_positions(data, shift)
    batches = batch_indices(len(data), batch_size)
    sums, layer_sums, m_clean = None, torch.zeros(len(layers)), []
    bar = tqdm(total=len(batches) * len(layers), desc=f"neurons ({method})", disable=not progress,
               mininterval=2.0)
    for idx in batches:
        ids, read = data.clean_ids[idx], read_all[idx]
        clean = runner.activations(ids, layers)
        corrupt = runner.activations(data.corrupted_ids[idx], layers)
        base = runner.metric_with(ids, read, idx, metric, layers[0], clean[0])
        m_clean.append(base)
        per_layer = []
        for i, layer in enumerate(layers):
            layer_sums[i] += (runner.metric_with(ids, read, idx, metric, layer, corrupt[i]) - base).sum()
            if method == "exact":
                per_layer.append(_exact_scores(runner, ids, read, idx, metric, layer, clean[i], corrupt[i], base,
                                               neuron_chunk))
            else:
                per_layer.append(_gradient_scores(runner, ids, read, idx, metric, layer, clean[i], corrupt[i],
                                                  1 if method == "eap" else ig_steps, method == "eap"))
            bar.update(1)
        batch_scores = torch.stack(per_layer, 1)  # [b, L, n]
        sums = batch_scores.sum(0) if sums is None else sums + batch_scores.sum(0)
    bar.close()
    n = len(data)
    return NeuronAttribution(layers, method, sums / n, layer_sums / n, torch.cat(m_clean),
                             ig_steps if method == "ig" else None)


def _gradient_scores(runner, ids, read, idx, metric, layer, clean, corrupt, steps: int, at_clean: bool):
    """[b, n]: (corrupt - clean) . mean gradient over the path points, summed over positions."""
    b = ids.shape[0]
    alphas = torch.ones(1) if at_clean else (torch.arange(steps) + 0.5) / steps
    path = corrupt[None] + alphas[:, None, None, None].to(clean.device) * (clean - corrupt)[None]
    grad = runner.gradient(ids.repeat(len(alphas), 1), read.repeat(len(alphas)), idx.repeat(len(alphas)),
                           metric, layer, path.flatten(0, 1))
    mean_grad = grad.reshape(len(alphas), b, *grad.shape[1:]).mean(0)
    return torch.einsum("bpn,bpn->bn", (corrupt - clean).to(mean_grad.device), mean_grad).cpu()


def _exact_scores(runner, ids, read, idx, metric, layer, clean, corrupt, base, chunk: int):
    """[b, n]: metric change from patching each neuron alone; ``chunk`` neurons per stacked pass."""
    b, _, n_neurons = clean.shape
    out = torch.zeros(b, n_neurons)
    for start in range(0, n_neurons, chunk):
        neurons = torch.arange(start, min(n_neurons, start + chunk))
        c = len(neurons)
        acts = clean.repeat(c, 1, 1)  # copy j patches neuron neurons[j]
        rows = torch.arange(c * b)
        cols = neurons.repeat_interleave(b)
        acts[rows, :, cols] = corrupt.repeat(c, 1, 1)[rows, :, cols]
        value = runner.metric_with(ids.repeat(c, 1), read.repeat(c), idx.repeat(c), metric, layer, acts)
        out[:, neurons] = (value.reshape(c, b) - base[None]).T
    return out


# --- what a neuron fires on ---------------------------------------------------------------------------

def task_sequences(data: EncodedTask) -> torch.Tensor:
    """The sequences whose activations explain a neuron: clean rows, then corrupted rows, [2N, L]."""
    return torch.cat([data.clean_ids, data.corrupted_ids])


@torch.no_grad()
def selected_activations(model, data: EncodedTask, neurons: list[tuple[int, int]], batch_size: int = 32,
                         shift: bool = True) -> torch.Tensor:
    """Activations of the chosen (layer, neuron) pairs on :func:`task_sequences`, [2N, L, len(neurons)]."""
    check_positive_int("batch_size", batch_size)
    runner = _NeuronRunner(model, shift)
    layers = sorted({l for l, _ in neurons})
    _check_layers(layers, runner.arch.n_layers)
    seqs = task_sequences(data)
    out = []
    for idx in batch_indices(len(seqs), batch_size):
        acts = dict(zip(layers, runner.activations(seqs[idx], layers)))
        out.append(torch.stack([acts[l][:, :, n] for l, n in neurons], -1).cpu())
    return torch.cat(out)


def token_features(data: EncodedTask, tokenizer, min_support: int = 5) -> tuple[list[str], torch.Tensor]:
    """Candidate input features as boolean masks over :func:`task_sequences`: (names, [F, 2N, L]).

    Features that hold on fewer than ``min_support`` token instances, or on half of
    them or more (too unspecific to explain anything), are left out.
    """
    check_positive_int("min_support", min_support)
    seqs = task_sequences(data)
    n, length = data.clean_ids.shape
    pos = torch.arange(length)[None].expand(2 * n, -1)
    slots = data.answer_positions.repeat(2, 1)
    read = slots[:, :1] - 1
    correct = data.correct_ids[:, :1].repeat(2, 1)
    counter = data.counterfactual_ids[:, :1].repeat(2, 1)
    is_slot = (pos[:, :, None] == slots[:, None, :]).any(-1)
    differs = (data.clean_ids != data.corrupted_ids).repeat(2, 1)
    earlier = torch.zeros_like(seqs, dtype=torch.bool)
    for j in range(1, length):
        earlier[:, j] = (seqs[:, :j] == seqs[:, j:j + 1]).any(1)
    named = {
        "the read-out position (slot - 1)": pos == read,
        "an answer slot": is_slot,
        "the position where clean and corrupted differ": differs,
        "a repeat of an earlier token": earlier & ~is_slot,
        "the correct answer appearing in the input": (seqs == correct) & ~is_slot,
        "the counterfactual answer appearing in the input": (seqs == counter) & ~is_slot,
    }
    for p in range(length):
        named[f"position {p}"] = pos == p
    for tid in torch.unique(seqs).tolist():
        named[f"the token {tokenizer.decode([tid]).strip()!r}"] = seqs == tid
    total = seqs.numel()
    keep = {k: v for k, v in named.items() if min_support <= int(v.sum()) < total / 2}
    return list(keep), torch.stack(list(keep.values()))


def selectivity(activation: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """(m - r) / (1 - r) per feature, from one neuron's activations [...] and feature masks [F, ...]
    of the same shape; see the module docstring. |activation| is used (gated MLPs fire with either sign)."""
    a = activation.abs().flatten().double()
    f = features.flatten(1).double()
    if f.shape[1] != a.numel():
        raise ParameterError("features: expected masks over the same token instances as the activations")
    total = a.sum()
    mass = (f @ a) / total if total > 0 else torch.zeros(len(f), dtype=torch.double)
    rate = f.mean(1)
    return (mass - rate) / (1 - rate).clamp_min(1e-12)


def explain_neurons(acts: torch.Tensor, names: list[str], data: EncodedTask, tokenizer,
                    feature_names: list[str], features: torch.Tensor, top_k: int = 5,
                    window: int = 6) -> pd.DataFrame:
    """One row per neuron: its explanation (best feature and its selectivity), the top-activating
    tokens and contexts (``window`` tokens before, 2 after, the token itself in brackets)."""
    check_positive_int("top_k", top_k)
    seqs = task_sequences(data)
    n = len(data)
    rows = []
    for j, name in enumerate(names):
        a = acts[:, :, j]
        sel = selectivity(a, features)
        best = int(torch.argmax(sel))
        top = torch.topk(a.abs().flatten(), top_k).indices
        tokens, contexts = [], []
        for flat in top.tolist():
            r, p = divmod(flat, a.shape[1])
            ids = seqs[r].tolist()
            tok = tokenizer.decode([ids[p]]).strip()
            tokens.append(tok)
            before = tokenizer.decode(ids[max(0, p - window):p]).strip()
            after = tokenizer.decode(ids[p + 1:p + 3]).strip()
            contexts.append(f"{'clean' if r < n else 'corrupted'} #{r % n}: {before} [{tok}] {after} "
                            f"({float(a[r, p]):+.2f})")
        explanation = (f"fires on {feature_names[best]} (selectivity {float(sel[best]):.2f}); "
                       f"top tokens: {', '.join(dict.fromkeys(tokens))}")
        rows.append({"neuron": name, "feature": feature_names[best], "selectivity": float(sel[best]),
                     "explanation": explanation, "top_tokens": " | ".join(tokens),
                     "top_contexts": " || ".join(contexts), "max_abs_activation": float(a.abs().max())})
    return pd.DataFrame(rows)


def feature_kind(feature: str) -> str:
    """The kind of an explanation: "token" (a token's identity), "position", or "role" (read-out
    position, answer slot, corrupted position, repeat, an answer in the input)."""
    if feature.startswith("the token "):
        return "token"
    if feature.startswith("position "):
        return "position"
    return "role"
