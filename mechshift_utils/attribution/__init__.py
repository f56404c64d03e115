"""Attribution: the computation graph, the EAP / EAP-IG / exact-patching engine (nnsight), its
memory plan, and cached attributions of a pair on its pools.

``attribute(model, data, method="eap-ig", ablation="patching", ig_steps=8)`` is the entry point;
``attribute_distributed`` (same arguments) shards the examples over ``torch.distributed`` processes.
"""
from __future__ import annotations

from .distributed import attribute_distributed
from .engine import ABLATIONS, IG_RULES, METHODS, Attribution, attribute
from .regions import REGIONS, position_regions, read_out_positions, region_shares
from .graph import Graph, component_of, layer_of

__all__ = ["ABLATIONS", "IG_RULES", "METHODS", "Attribution", "attribute", "attribute_distributed",
           "read_out_positions", "REGIONS", "position_regions", "region_shares", "Graph", "component_of",
           "layer_of"]
