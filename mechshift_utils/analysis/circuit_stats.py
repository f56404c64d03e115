"""The comparison measures of :mod:`.comparison`, vectorised over many score matrices at once.

A bootstrap over seeds and examples recomputes every measure thousands of times (a top-K circuit,
its component importance, depth profile, overlap and concentration per resample), so here they are
tensor operations on a stack of score matrices [B, n_up, n_down] instead of loops over node names.
They agree with :mod:`.comparison` exactly (tests/test_circuit_stats.py).

Measures of a circuit (the top-k edges by |score|):

* ``importance`` [B, C]: s(v), the sum of |score| over the circuit edges incident to each component
  (in the order of :attr:`CircuitStats.components`);
* ``profile`` [B, L]: the share of the heads' and MLPs' importance in each layer;
* ``early_share``: the share in the first ``n_early`` layers; ``center_of_mass``: the importance-
  weighted mean layer; both also without a component (e.g. the layer-0 MLP, ``exclude=("m0",)``);
* ``entropy_norm``: the normalised entropy of the heads' and MLPs' importance (1: spread evenly);
* ``jaccard`` [B]: the overlap of two stacks of circuits.
"""
from __future__ import annotations

import torch

from ..attribution.graph import Graph, component_of, layer_of


class CircuitStats:
    def __init__(self, graph: Graph):
        self.graph = graph
        comps: list[str] = []
        for name in graph.upstream + [component_of(d) for d in graph.downstream]:
            if name not in comps:
                comps.append(name)
        self.components = comps
        index = {c: i for i, c in enumerate(comps)}
        self.up_map = torch.zeros(len(comps), len(graph.upstream), dtype=torch.float64)
        for i, name in enumerate(graph.upstream):
            self.up_map[index[name], i] = 1.0
        self.down_map = torch.zeros(len(comps), len(graph.downstream), dtype=torch.float64)
        for j, name in enumerate(graph.downstream):
            self.down_map[index[component_of(name)], j] = 1.0
        layers = [layer_of(c) for c in comps]
        n_layers = graph.arch.n_layers
        self.layer_map = torch.zeros(n_layers, len(comps), dtype=torch.float64)
        for i, layer in enumerate(layers):
            if layer is not None and layer >= 0:
                self.layer_map[layer, i] = 1.0
        # heads and MLPs: the components whose concentration is measured (not the embeddings or logits)
        self.model_components = [i for i, c in enumerate(comps) if c not in ("input", "logits")]
        self.valid_flat = graph.valid.flatten()
        self.n_edges = int(self.valid_flat.sum())

    # --- circuits ------------------------------------------------------------------------------------
    def top_edges(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        """Boolean [B, n_up, n_down]: the k edges of largest |score| of each matrix (ties: lowest index,
        as :meth:`Graph.top_edges`)."""
        scores = _stack(scores)
        b = scores.shape[0]
        flat = scores.abs().double().reshape(b, -1).masked_fill(~self.valid_flat, -1.0)
        order = torch.argsort(-flat, dim=1, stable=True)[:, :k]
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen.scatter_(1, order, True)
        return chosen.reshape(scores.shape)

    def importance(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        scores = _stack(scores)
        weights = scores.abs().double() * self.top_edges(scores, k)
        return weights.sum(2) @ self.up_map.T + weights.sum(1) @ self.down_map.T

    def profile(self, importance: torch.Tensor, exclude: tuple[str, ...] = ()) -> torch.Tensor:
        imp = self._without(importance, exclude)
        by_layer = imp @ self.layer_map.T
        total = by_layer.sum(1, keepdim=True)
        return torch.where(total > 0, by_layer / total.clamp(min=1e-300), by_layer)

    def early_share(self, importance: torch.Tensor, n_early: int, exclude: tuple[str, ...] = ()) -> torch.Tensor:
        return self.profile(importance, exclude)[:, :n_early].sum(1)

    def center_of_mass(self, importance: torch.Tensor, exclude: tuple[str, ...] = ()) -> torch.Tensor:
        prof = self.profile(importance, exclude)
        return prof @ torch.arange(prof.shape[1], dtype=prof.dtype)

    def entropy_norm(self, importance: torch.Tensor) -> torch.Tensor:
        w = importance[:, self.model_components]
        p = w / w.sum(1, keepdim=True).clamp(min=1e-300)
        h = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1)
        return h / torch.log(torch.tensor(float(len(self.model_components)), dtype=h.dtype))

    @staticmethod
    def jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        inter = (a & b).flatten(1).sum(1).double()
        union = (a | b).flatten(1).sum(1).double()
        return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))

    def chance_jaccard(self, k: int) -> float:
        """Expected Jaccard of two independent random k-edge circuits: k / (2N - k)."""
        return k / (2 * self.n_edges - k)

    def _without(self, importance: torch.Tensor, exclude: tuple[str, ...]) -> torch.Tensor:
        if not exclude:
            return importance
        imp = importance.clone()
        for name in exclude:
            imp[:, self.components.index(name)] = 0.0
        return imp


def _stack(scores: torch.Tensor) -> torch.Tensor:
    return scores[None] if scores.ndim == 2 else scores


def seed_statistics(stats: CircuitStats, per_example: dict[str, torch.Tensor], k: int, n_early: int,
                    index: torch.Tensor | None = None, reference: str = "arm", split_seed: int | None = None,
                    exclude_for_depth: tuple[str, ...] = ("m0",)) -> dict[str, float]:
    """Every structural statistic of one seed's models on the examples ``index`` (None: all), for the
    bootstrap of :mod:`.seeds`. ``per_example``: model name -> [n, n_up, n_down] per-example scores on
    the same examples. Returns, per model X: ``jaccard/X`` (overlap of its top-k circuit with the
    reference's), ``change/X`` (1 - that), ``profile_distance/X`` (total variation between depth
    profiles), ``early/X``, ``early_wo/X`` (without ``exclude_for_depth``), ``com/X`` and ``com_wo/X``
    (centre of mass in layers), ``entropy/X`` (normalised entropy of head and MLP importance); and
    ``split_half`` (the reference's circuits from two random halves of the examples) when
    ``split_seed`` is given."""
    names = list(per_example)
    scores = torch.stack([(x if index is None else x[index]).mean(0) for x in per_example.values()])
    imp = stats.importance(scores, k)
    top = stats.top_edges(scores, k)
    ref = names.index(reference)
    jac = stats.jaccard(top, top[ref].expand_as(top))
    prof = stats.profile(imp)
    tv = 0.5 * (prof - prof[ref]).abs().sum(1)
    early, early_wo = stats.early_share(imp, n_early), stats.early_share(imp, n_early, exclude_for_depth)
    com, com_wo = stats.center_of_mass(imp), stats.center_of_mass(imp, exclude_for_depth)
    ent = stats.entropy_norm(imp)
    out = {}
    for i, name in enumerate(names):
        out.update({f"jaccard/{name}": float(jac[i]), f"change/{name}": 1 - float(jac[i]),
                    f"profile_distance/{name}": float(tv[i]), f"early/{name}": float(early[i]),
                    f"early_wo/{name}": float(early_wo[i]), f"com/{name}": float(com[i]),
                    f"com_wo/{name}": float(com_wo[i]), f"entropy/{name}": float(ent[i])})
    if split_seed is not None:
        x = per_example[reference] if index is None else per_example[reference][index]
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed))
        half = len(x) // 2
        halves = torch.stack([x[order[:half]].mean(0), x[order[half:2 * half]].mean(0)])
        t = stats.top_edges(halves, k)
        out["split_half"] = float(stats.jaccard(t[:1], t[1:])[0])
    return out
