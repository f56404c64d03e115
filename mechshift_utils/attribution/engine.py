"""Edge attribution with nnsight: exact activation patching, EAP and EAP-IG behind one entry point.

``attribute(model, data, method="eap-ig", ablation="patching", ig_steps=8)``
scores every edge u -> v of :class:`~mechshift_utils.attribution.graph.Graph` by the change
in the metric when u's contribution to v's input is replaced by its ablated
value ("noising", the direction the EAP-IG reference estimates):

* ``exact``: that change measured, each edge (and, for node scores, each node) patched
  alone; several of them share a forward pass, the batch repeated once per pattern
  (ModelRunner.patched_metrics). The ground truth on small models.
* ``eap``: (a_u(ablated) - a_u(clean)) . dM/d(input of v), the gradient taken on
  the clean run.
* ``eap-ig``: the same with the gradient averaged over ``ig_steps`` runs whose
  input embeddings lie on the straight line from the ablated (alpha = 0) to the
  clean (alpha = 1) input, at the points of ``ig_rule``: ``midpoint`` (default),
  alpha = (k + 0.5) / ig_steps, the midpoints of ``ig_steps`` equal intervals;
  ``left``, alpha = k / ig_steps (k = 0 .. ig_steps - 1), the points of the
  EAP-IG reference package (its ``get_scores_eap_ig``; some earlier versions of it
  took k = 1 .. ig_steps). Both converge to the same integral; at few steps the
  midpoint rule is the more accurate (its error falls as 1/steps^2, the left
  rule's as 1/steps).

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
example, 2.2 GB per example at 128 positions. mechshift_utils.attribution.memory estimates
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

from ..core.files import write_with
from ..core.validation import ParameterError, check_choice, check_positive_int
from ..tasks import EncodedTask
from .graph import Graph
from .regions import REGIONS, position_regions, read_out_positions, region_masks
from .metrics import Metric, logit_diff
from .runner import ModelRunner, node_major, runner_for

METHODS = ("exact", "eap", "eap-ig")
ABLATIONS = ("patching", "zero", "mean")
IG_RULES = ("midpoint", "left")  # where EAP-IG's points lie on [0, 1]; see the module docstring


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
    # by_region: [len(REGIONS), n_up, n_down], mean over examples, split by the source's position group
    # (mechshift_utils.attribution.regions); the groups add up to edge_scores
    region_edge_scores: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)
    ig_rule: str | None = None  # eap-ig only: the points' rule (IG_RULES)

    def edges(self) -> pd.DataFrame:
        return self.graph.edge_table(self.edge_scores)

    def nodes(self) -> pd.DataFrame:
        return pd.DataFrame({"node": self.graph.upstream, "score": self.node_scores.double().tolist()})

    def save(self, folder, data: EncodedTask | None = None) -> Path:
        """Write nodes.csv, edges.csv (and examples.jsonl: everything to recompute a score), each
        atomically with its checksum beside it (mechshift_utils.core.files)."""
        folder = Path(folder)
        nodes, edges = self.nodes(), self.edges()
        write_with(folder / "nodes.csv", lambda p: nodes.to_csv(p, index=False))
        write_with(folder / "edges.csv", lambda p: edges.to_csv(p, index=False))
        if data is not None:
            from ..tasks.pools import save_pool

            save_pool(data, list(range(len(data))), folder / "examples.jsonl")
        return folder


def activation_sum(runner: ModelRunner, data: EncodedTask, batches) -> torch.Tensor:
    """Sum over the task data of every node's clean output, per position: [pos, n_up, d_model]."""
    total = None
    for idx in batches:
        acts = runner.node_outputs(data.clean_ids[idx]).sum(0)
        total = acts if total is None else total + acts
    return total


def mean_activations(runner: ModelRunner, data: EncodedTask, batches) -> torch.Tensor:
    """Mean over the task data of every node's clean output, per position: [pos, n_up, d_model]."""
    return activation_sum(runner, data, batches) / len(data)


def ablated_batch(runner: ModelRunner, data: EncodedTask, idx, read, ablation: str, mean_acts, metric: Metric):
    """(clean activations, ablated activations, metric on clean, metric with every edge ablated)."""
    clean, m_clean = runner.node_outputs(data.clean_ids[idx], read, idx, metric)
    if ablation == "patching":  # every edge patched is exactly the corrupted run
        corrupt, m_ablated = runner.node_outputs(data.corrupted_ids[idx], read, idx, metric)
        return clean, corrupt, m_clean, m_ablated
    abl = torch.zeros_like(clean) if ablation == "zero" else mean_acts[None].expand_as(clean)
    return clean, abl, m_clean, runner.patched_metric(data.clean_ids[idx], read, idx, metric, abl,
                                                      runner.graph.valid)


def batch_indices(n: int, batch_size: int) -> list[torch.Tensor]:
    return [torch.arange(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]


def ig_points(ig_steps: int, ig_rule: str = "midpoint") -> torch.Tensor:
    """The ``ig_steps`` interpolation weights alpha of EAP-IG's runs (0: ablated input, 1: clean), float32."""
    check_positive_int("ig_steps", ig_steps)
    check_ig_rule(ig_rule)
    k = torch.arange(ig_steps)
    return (k + 0.5) / ig_steps if ig_rule == "midpoint" else k / ig_steps


def check_ig_rule(ig_rule) -> str:
    if not isinstance(ig_rule, str) or ig_rule not in IG_RULES:
        raise ParameterError(f"ig_rule: expected one of {list(IG_RULES)} (where the integrated-gradient points "
                             f"lie: 'midpoint' (k + 0.5) / ig_steps, 'left' k / ig_steps), got {ig_rule!r}")
    return ig_rule


def check_inputs(data: EncodedTask, method: str, ablation: str, ig_steps: int, batch_size: int,
                 ig_rule: str = "midpoint") -> None:
    check_choice("method", method, METHODS)
    check_choice("ablation", ablation, ABLATIONS)
    check_positive_int("ig_steps", ig_steps)
    check_ig_rule(ig_rule)
    check_positive_int("batch_size", batch_size)
    if data.clean_ids.shape != data.corrupted_ids.shape:
        raise ParameterError(f"data: clean and corrupted sequences must have equal shapes, got "
                             f"{tuple(data.clean_ids.shape)} and {tuple(data.corrupted_ids.shape)}")
    read_out_positions(data)


def check_arguments(data: EncodedTask, method: str, ablation: str, ig_steps: int, batch_size: int,
                    ig_rule: str, by_region: bool, ig_batch: int | None) -> None:
    """Every check of :func:`attribute`'s arguments that needs no model."""
    check_inputs(data, method, ablation, ig_steps, batch_size, ig_rule)
    if by_region and method == "exact":
        raise ParameterError("by_region: position groups are split for eap and eap-ig only; got method 'exact'")
    if ig_batch is not None:
        check_positive_int("ig_batch", ig_batch)


def attribute(model, data: EncodedTask, method: str = "eap-ig", ablation: str = "patching",
              ig_steps: int = 8, metric: Metric | None = None, batch_size: int = 32, shift: bool = True,
              per_example: bool = False, progress: bool = True, exact_edges: bool = True,
              ig_batch: int | None = 4, by_region: bool = False, ig_rule: str = "midpoint",
              mean_acts: torch.Tensor | None = None, sum_passes: bool | None = None) -> Attribution:
    """Score every edge (and node) of the model's graph on the task data; see the module docstring.

    ``ig_rule`` (eap-ig): where the ``ig_steps`` points lie on the line from the ablated to the
    clean input, ``"midpoint"`` ((k + 0.5) / ig_steps, the default) or ``"left"`` (k / ig_steps,
    as the EAP-IG reference package); see the module docstring.

    ``ig_batch``: how many IG points share one forward/backward pass (stacked
    along the batch; None = all ``ig_steps`` at once). Fewer passes cost less
    overhead, larger ones more memory traffic: 4 was the fastest on the embedded
    model on 2 CPU cores. Activation memory of a pass grows with
    batch_size x ig_batch; use 1 for a 7B model on one GPU.
    ``exact_edges=False`` makes ``exact`` score nodes only (one patched run per node
    instead of one per edge); its edge scores are then zero.
    ``by_region`` (eap and eap-ig): also split every edge's score by the position group of its
    source's activation difference (prefix, read, slot, suffix; see
    mechshift_utils.attribution.regions): one more matrix product per group and destination.
    ``mean_acts`` (``ablation="mean"`` only): the mean activations [pos, n_up, d_model] to ablate to,
    instead of the mean over ``data`` (mechshift_utils.attribution.distributed passes the mean over
    every process's shard).
    ``sum_passes`` (eap-ig with several passes per batch): add up the gradients at every destination
    over the passes and dot them with the activation differences once, instead of once per pass
    (the scores are linear in the gradients: the same numbers up to float rounding). It keeps one
    more float32 tensor per destination group, [batch, pos, n, d_model]
    (mechshift_utils.attribution.memory's ``ig_sum``), for fewer matrix products: None (default) does
    it on the CPU, where the products are a large share of the time, and not on a GPU, where memory
    bounds the batch.
    """
    check_arguments(data, method, ablation, ig_steps, batch_size, ig_rule, by_region, ig_batch)
    runner = runner_for(model, shift)
    g = runner.graph
    metric = metric or logit_diff(data)
    if sum_passes is None:
        sum_passes = runner.device.type == "cpu"
    n = len(data)
    read_all = read_out_positions(data, shift)
    batches = batch_indices(n, batch_size)

    if mean_acts is not None:
        want = (data.clean_ids.shape[1], len(g.upstream), runner.arch.d_model)
        if ablation != "mean" or tuple(mean_acts.shape) != want:
            raise ParameterError(f"mean_acts: expected a tensor of shape {list(want)} with ablation 'mean', got "
                                 f"shape {list(mean_acts.shape)} with ablation {ablation!r}")
        mean_acts = mean_acts.to(runner.device)
    elif ablation == "mean":
        mean_acts = mean_activations(runner, data, batches)

    valid = g.valid.to(runner.device)
    edge_sum = torch.zeros(len(g.upstream), len(g.downstream), device=runner.device)
    node_sum = torch.zeros(len(g.upstream))
    regions_all = position_regions(data, shift) if by_region else None
    region_sum = torch.zeros(len(REGIONS), len(g.upstream), len(g.downstream), device=runner.device) \
        if by_region else None
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
            edges = g.valid.nonzero() if exact_edges else torch.zeros(0, 2, dtype=torch.long)
            nodes = torch.arange(len(g.upstream))
            # one pattern per edge (that edge alone), then one per upstream node (all its edges), several
            # patterns per forward pass (runner.patched_metrics)
            n_pat = len(edges) + len(nodes)
            chunk = runner.patterns_per_pass(ids, n_pat)
            for first in range(0, n_pat, chunk):
                todo = range(first, min(first + chunk, n_pat))
                patterns = none[None].repeat(len(todo), 1, 1)
                for j, t in enumerate(todo):
                    if t < len(edges):
                        patterns[j, edges[t, 0], edges[t, 1]] = True
                    else:
                        patterns[j] = g.valid & (nodes[:, None] == t - len(edges))
                effect = runner.patched_metric(ids, read, idx, metric, abl, patterns) - base  # [chunk, b]
                for j, t in enumerate(todo):
                    if t < len(edges):
                        scores[:, edges[t, 0], edges[t, 1]] = effect[j]
                    else:
                        node_sum[t - len(edges)] += effect[j].sum()
                bar.update(len(todo))
            scores = scores.to(runner.device)
        else:
            emb_clean, emb_base = clean[:, :, 0].clone(), abl[:, :, 0].clone()
            clean = abl.sub_(clean) if ablation == "patching" else abl - clean  # in place: abl is ours
            del abl
            delta = node_major(clean).to(runner.device)
            del clean  # only the node-major difference is needed from here on
            scores = torch.zeros(len(idx), len(g.upstream), len(g.downstream), device=runner.device)
            masks = region_masks(regions_all[idx]).to(runner.device) if by_region else None
            if method == "eap":
                scores += runner.gradient_scores(ids, read, idx, metric, delta, None, masks=masks, into=region_sum)
                bar.update(1)
            else:
                per_pass = ig_batch or ig_steps
                points = ig_points(ig_steps, ig_rule)
                summed = [] if sum_passes and per_pass < ig_steps else None
                for first in range(0, ig_steps, per_pass):
                    alphas = points[first:first + per_pass]
                    emb = emb_base[None] + alphas[:, None, None, None] * (emb_clean - emb_base)[None]
                    part = runner.gradient_scores(ids, read, idx, metric, delta, emb.flatten(0, 1), len(alphas),
                                                  masks=masks, into=region_sum, weight=1 / ig_steps,
                                                  accumulate=summed)
                    if part is not None:
                        scores += part
                    bar.update(len(alphas))
                if summed is not None:  # the gradients of every pass summed: one set of products
                    scores += runner.accumulated_scores(delta, summed, masks, region_sum, 1 / ig_steps)
                    del summed
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
                       ig_steps if method == "eap-ig" else None,
                       (region_sum * valid / n).detach().cpu() if by_region else None,
                       ig_rule=ig_rule if method == "eap-ig" else None)
