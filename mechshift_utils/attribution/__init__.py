"""Attribution: the computation graph, the EAP / EAP-IG / exact-patching engine (nnsight), its
memory plan, and cached attributions of a pair on its pools.

``attribute(model, data, method="eap-ig", ablation="patching", ig_steps=8)`` is the entry point.
"""
from __future__ import annotations

from .engine import ABLATIONS, METHODS, Attribution, attribute
from .regions import REGIONS, position_regions, read_out_positions, region_shares
from .graph import Graph, component_of, layer_of

__all__ = ["ABLATIONS", "METHODS", "Attribution", "attribute", "read_out_positions", "REGIONS", "position_regions",
           "region_shares", "Graph", "component_of",
           "layer_of"]
