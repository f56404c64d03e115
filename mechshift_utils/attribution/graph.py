"""The computation graph that circuits live in (node names as the EAP-IG reference).

Upstream nodes (they write to the residual stream): ``input`` (the token
embeddings), every attention head ``a{layer}.h{head}``, every MLP ``m{layer}``.
Downstream nodes (they read it): each head's query, key and value inputs
``a{l}.h{h}<q>``, ``<k>``, ``<v>`` (as the reference, so a head's three inputs
are separate destinations), every MLP ``m{l}`` and the ``logits``. Under
grouped-query attention keys and values belong to key/value heads, named
``a{l}.kv{g}<k>`` / ``<v>``. An edge runs from every upstream node to every
downstream node after it: a head of layer l reads nodes of layers < l, an MLP of
layer l also reads the heads of its own layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..core.validation import ParameterError
from ..models.arch import Arch


@dataclass
class Graph:
    arch: Arch
    upstream: list[str]
    downstream: list[str]
    upstream_layer: torch.Tensor  # layer of each upstream node (-1 for input)
    downstream_layer: torch.Tensor  # layer of each downstream node (n_layers for logits)
    valid: torch.Tensor  # [n_up, n_down] bool: the edges

    @classmethod
    def from_arch(cls, arch: Arch) -> "Graph":
        up, up_layer = ["input"], [-1]
        down, down_layer = [], []
        kv_name = "h" if arch.n_kv_heads == arch.n_heads else "kv"
        for layer in range(arch.n_layers):
            up += [f"a{layer}.h{h}" for h in range(arch.n_heads)] + [f"m{layer}"]
            up_layer += [layer] * (arch.n_heads + 1)
            down += [f"a{layer}.h{h}<q>" for h in range(arch.n_heads)]
            down += [f"a{layer}.{kv_name}{g}<k>" for g in range(arch.n_kv_heads)]
            down += [f"a{layer}.{kv_name}{g}<v>" for g in range(arch.n_kv_heads)]
            down += [f"m{layer}"]
            down_layer += [layer] * (arch.n_qkv + 1)
        down.append("logits")
        down_layer.append(arch.n_layers)
        valid = torch.zeros(len(up), len(down), dtype=torch.bool)
        for j, name in enumerate(down):
            valid[:, j] = torch.tensor([u < cls._reads_up_to(arch, name, down_layer[j]) for u in range(len(up))])
        return cls(arch, up, down, torch.tensor(up_layer), torch.tensor(down_layer), valid)

    @staticmethod
    def _reads_up_to(arch: Arch, name: str, layer: int) -> int:
        """Upstream nodes with index below this are read by the downstream node."""
        per_layer = arch.n_heads + 1
        if name == "logits":
            return 1 + arch.n_layers * per_layer
        if name.startswith("m"):
            return 1 + layer * per_layer + arch.n_heads  # this layer's heads, not its MLP
        return 1 + layer * per_layer

    # --- indices -------------------------------------------------------------------------------------
    def up_until(self, layer: int) -> int:
        """Number of upstream nodes a layer's attention reads (all before the layer)."""
        return 1 + layer * (self.arch.n_heads + 1)

    def attn_dest_slice(self, layer: int) -> slice:
        start = layer * (self.arch.n_qkv + 1)
        return slice(start, start + self.arch.n_qkv)

    def mlp_dest(self, layer: int) -> int:
        return layer * (self.arch.n_qkv + 1) + self.arch.n_qkv

    def head_index(self, layer: int, head: int) -> int:
        return 1 + layer * (self.arch.n_heads + 1) + head

    def mlp_index(self, layer: int) -> int:
        return 1 + layer * (self.arch.n_heads + 1) + self.arch.n_heads

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    # --- tables and circuits -------------------------------------------------------------------------
    def edge_table(self, scores: torch.Tensor) -> pd.DataFrame:
        """Tidy (src, dst, score) table of every edge."""
        src, dst = self.valid.nonzero(as_tuple=True)
        return pd.DataFrame({"src": [self.upstream[i] for i in src.tolist()],
                             "dst": [self.downstream[j] for j in dst.tolist()],
                             "score": scores[src, dst].double().tolist()})

    def top_edges(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        """Boolean [n_up, n_down] mask of the k edges with the largest |score| (ties: lowest index)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 0 or k > self.n_edges:
            raise ParameterError(f"k: expected an integer in [0, {self.n_edges}] (the number of edges), got {k!r}")
        flat = scores.abs().masked_fill(~self.valid, -1.0).flatten().double()
        order = torch.argsort(-flat, stable=True)[:k]
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen[order] = True
        return chosen.reshape(self.valid.shape)


def component_of(name: str) -> str:
    """The component a graph node belongs to: strips a head input's <q>/<k>/<v>."""
    return name.split("<")[0]


def layer_of(name: str) -> int:
    """Layer of a component name; input is -1, logits is None."""
    if name == "input":
        return -1
    if name == "logits":
        return None
    return int(name[1:].split(".")[0])
