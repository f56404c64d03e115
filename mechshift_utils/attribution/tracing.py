"""Attributions of both models of a pair on the common-correct pools, cached next to the pair's run.

``<run_dir>/attribution/<method>-<ablation>[-ig<steps>[-<ig_rule>]]/<role>/<task>/`` holds
``nodes.csv`` (node, score), ``edges.csv`` (src, dst, score), ``examples.jsonl``
(clean and corrupted ids, answer slots, correct and counterfactual ids: all a
reader needs to recompute a score without this package) and ``scores.pt``
(the tensors, per example included), each written atomically with its checksum beside it
(mechshift_utils.core.files). A damaged ``scores.pt`` is recomputed; damaged tables beside a good
``scores.pt`` are written again from it. The EAP-IG rule (mechshift_utils.attribution.engine.IG_RULES)
is in the folder's name unless it is the default ``midpoint`` (``eap-ig-patching-ig8-left``), so the
scores of one rule are never read for the other and caches made before the rule existed stay valid.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..core.files import file_problem, write_with
from ..core.validation import ParameterError, check_non_negative_int
from ..models import ModelPair, arch_of
from ..tasks import EVAL_STREAM, EncodedTask, encode_for, task_examples
from ..tasks.pools import load_pool, pool_examples
from .engine import Attribution, attribute, check_ig_rule
from .graph import Graph
from .memory import choose_batch_size, describe_plan, model_sizes


def pool_data(run_dir, task: str, tokenizer, limit: int | None = None, fallback_seed: int | None = None,
              mask_token_id: int | None = None) -> EncodedTask:
    """The common-correct pool of a task (written by notebook 01) as encoded task data.

    ``fallback_seed`` (smoke runs only, where barely trained models may solve
    nothing): an empty pool is replaced by ``limit`` generated examples, with a
    printed warning, so the pipeline still runs end to end. ``mask_token_id``:
    the pair's, for a subword tokenizer (see mechshift_utils.tasks.encode_for).
    """
    path = Path(run_dir) / "pools" / f"{task}.jsonl"
    if not path.is_file():
        raise ParameterError(f"run_dir: no common-correct pool at {path}; run notebook 01 first")
    records = load_pool(path)[:limit]
    if not records and fallback_seed is not None:
        print(f"warning: the {task} pool is empty; using {limit} generated examples instead (smoke run)")
        return encode_for(task_examples(task, limit or 8, fallback_seed + EVAL_STREAM, tokenizer), tokenizer,
                          mask_token_id)
    if not records:
        raise ParameterError(f"run_dir: the {task} pool at {path} is empty (no example both models solve)")
    return encode_for(pool_examples(records), tokenizer, mask_token_id)


def attribution_dir(run_dir, role: str, task: str, method: str, ablation: str, ig_steps: int,
                    ig_rule: str = "midpoint") -> Path:
    """The cache folder of one attribution; an eap-ig rule other than the default is in its name."""
    check_ig_rule(ig_rule)
    tag = f"{method}-{ablation}"
    if method == "eap-ig":
        tag += f"-ig{ig_steps}" + ("" if ig_rule == "midpoint" else f"-{ig_rule}")
    return Path(run_dir) / "attribution" / tag / role / task


EMBEDDED_BATCH = 64


def resolve_batch_size(pair: ModelPair, batch_size: int, pools: dict[str, EncodedTask], ig_steps: int = 8) -> int:
    """``batch_size`` when positive. 0: 64 for the embedded pair (fixed, so the numbers never depend
    on the machine); for a real pair the largest batch whose EAP-IG memory estimate
    (mechshift_utils.attribution.memory) fits the free memory of the MDM's device at the longest pool's
    length, printed with its plan."""
    check_non_negative_int("batch_size", batch_size)
    if batch_size:
        return batch_size
    if pair.name == "embedded":
        return EMBEDDED_BATCH
    arch = arch_of(pair.mdm)
    positions = max(d.clean_ids.shape[1] for d in pools.values())
    options = dict(model_sizes(pair.mdm), ig_steps=ig_steps, by_region=True)  # traced() splits by region
    batch_size = choose_batch_size(arch, positions, pair.device, ig_batch=1, **options)
    print(f"batch size {batch_size} from free memory on {pair.device}:",
          describe_plan(arch, positions, batch_size, 1, **options))
    return batch_size


def traced(pair: ModelPair, run_dir, role: str, task: str, data: EncodedTask, method: str = "eap-ig",
           ablation: str = "patching", ig_steps: int = 8, batch_size: int = EMBEDDED_BATCH,
           ig_rule: str = "midpoint") -> Attribution:
    """Attribution of one model of a pair on one task's data: computed once, then read from the cache."""
    return traced_model(pair.model(role), role, run_dir, task, data, pair.shift, method, ablation, ig_steps,
                        batch_size, embedded=pair.name == "embedded", ig_rule=ig_rule)


def traced_model(model, name: str, run_dir, task: str, data: EncodedTask, shift: bool = True,
                 method: str = "eap-ig", ablation: str = "patching", ig_steps: int = 8,
                 batch_size: int = EMBEDDED_BATCH, embedded: bool = True, by_region: bool = True,
                 ig_rule: str = "midpoint") -> Attribution:
    """Attribution of one named model (e.g. "arm", "mdm", "arm_continued", "mdm@600") on one task's data,
    cached under ``<run_dir>/attribution/<method>.../<name>/<task>/``: computed once, then read back (a
    cache made on other examples, or without the position groups when they are wanted, is recomputed).
    ``by_region``: also split the scores by position group (mechshift_utils.attribution.regions; eap and
    eap-ig only). ``ig_rule`` (eap-ig): the points' rule (mechshift_utils.attribution.engine); a rule
    other than the default ``midpoint`` has a folder of its own (``...-ig8-left``)."""
    by_region = by_region and method != "exact"
    folder = attribution_dir(run_dir, name, task, method, ablation, ig_steps, ig_rule)
    rule = ig_rule if method == "eap-ig" else None
    cache = folder / "scores.pt"
    cached = _read_cache(cache)
    # a cache written before the rule was recorded is a midpoint one (the only rule there was)
    if cached is not None and torch.equal(cached["clean_ids"], data.clean_ids) and (
            not by_region or cached.get("region_edge_scores") is not None) and (
            cached.get("ig_rule", "midpoint" if method == "eap-ig" else None) == rule):
        result = Attribution(Graph.from_arch(arch_of(model)), method, ablation, cached["edge_scores"],
                             cached["node_scores"], cached["metric_clean"], cached["metric_ablated"],
                             cached["per_example"], cached["ig_steps"], cached.get("region_edge_scores"),
                             ig_rule=rule)
        damaged = {n: problem for n in TABLES if (problem := file_problem(folder / n)) is not None}
        if damaged:
            print(f"{folder}: " + "; ".join(f"{n} {p}" for n, p in damaged.items()) + "; writing them again from "
                  "scores.pt")
            result.save(folder, data)
        return result
    # real pairs: one IG point per pass, as the memory plan assumes; stacking 4 was fastest on the CPU
    result = attribute(model, data, method=method, ablation=ablation, ig_steps=ig_steps, batch_size=batch_size,
                       shift=shift, per_example=True, ig_batch=4 if embedded else 1, progress=False,
                       by_region=by_region, ig_rule=ig_rule)
    result.save(folder, data)  # the tables first: a scores.pt on disk means they are complete
    state = {"clean_ids": data.clean_ids, "edge_scores": result.edge_scores, "node_scores": result.node_scores,
             "metric_clean": result.metric_clean, "metric_ablated": result.metric_ablated,
             "per_example": result.per_example, "ig_steps": result.ig_steps,
             "region_edge_scores": result.region_edge_scores, "ig_rule": result.ig_rule}
    write_with(cache, lambda p: torch.save(state, p))
    return result


def trace_models(models: dict, run_dir, pools: dict[str, EncodedTask], shift: bool = True, ig_steps: int = 8,
                 batch_size: int = EMBEDDED_BATCH, embedded: bool = True, method: str = "eap-ig",
                 progress: bool = True, by_region: bool = True,
                 ig_rule: str = "midpoint") -> dict[tuple[str, str], Attribution]:
    """EAP-IG (or ``method``) attributions of named models on every pool: {(name, task): Attribution}, each
    cached as :func:`traced_model` (``ig_rule``: EAP-IG's points, see mechshift_utils.attribution.engine)."""
    from tqdm import tqdm

    out = {}
    jobs = [(name, task) for name in models for task in pools]
    for name, task in tqdm(jobs, desc="tracing", disable=not progress):
        out[(name, task)] = traced_model(models[name], name, run_dir, task, pools[task], shift, method, "patching",
                                         ig_steps, batch_size, embedded, by_region, ig_rule)
    return out


def exact_edges_traced(model, name: str, run_dir, task: str, data: EncodedTask, shift: bool = True,
                       batch_size: int = 32) -> torch.Tensor:
    """Per-example exact edge scores [n, n_up, n_down] of a GPT-2 (``exact_edges.exact_edge_scores``),
    cached under ``<run_dir>/attribution/exact-edges/<name>/<task>/scores.pt``."""
    from .exact_edges import exact_edge_scores

    cache = Path(run_dir) / "attribution" / "exact-edges" / name / task / "scores.pt"
    cached = _read_cache(cache)
    if cached is not None and torch.equal(cached["clean_ids"], data.clean_ids):
        return cached["per_example"]
    scores = exact_edge_scores(model, data, shift=shift, batch_size=batch_size, progress=False)
    state = {"clean_ids": data.clean_ids, "per_example": scores}
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_with(cache, lambda p: torch.save(state, p))
    return scores


TABLES = ("nodes.csv", "edges.csv", "examples.jsonl")


def _read_cache(cache: Path) -> dict | None:
    """The cached tensors, or None when there are none; a damaged cache is reported and recomputed."""
    if not cache.exists():
        return None
    problem = file_problem(cache)
    if problem is None:
        try:
            return torch.load(cache, weights_only=False)
        except Exception as err:  # noqa: BLE001 - whatever torch cannot read is recomputed
            problem = f"cannot be read ({type(err).__name__}: {str(err)[:200]})"
    print(f"{cache}: {problem}; recomputing it")
    return None


def trace_pair(pair: ModelPair, run_dir, task_names, pool_limit: int | None = None, ig_steps: int = 8,
               batch_size: int = 0, fallback_seed: int | None = None, ig_rule: str = "midpoint"):
    """Pools and EAP-IG attributions of both models on every task (cached: notebook 02 computes them,
    notebooks 03-05 read them). ``batch_size`` 0: see :func:`resolve_batch_size`. ``ig_rule``: EAP-IG's
    points (mechshift_utils.attribution.engine).
    Returns ({task: data}, {(role, task): Attribution}, graph)."""
    check_ig_rule(ig_rule)  # before the pools are read
    pools = {task: pool_data(run_dir, task, pair.tokenizer, pool_limit, fallback_seed, pair.mask_token_id)
             for task in task_names}
    batch_size = resolve_batch_size(pair, batch_size, pools, ig_steps)
    att = {}
    for task in task_names:
        for role in ("arm", "mdm"):
            att[(role, task)] = traced(pair, run_dir, role, task, pools[task], ig_steps=ig_steps,
                                       batch_size=batch_size, ig_rule=ig_rule)
    return pools, att, next(iter(att.values())).graph


REAL_PAIR_K = 1000  # the paper's circuit budget on 7B graphs


def circuit_size(graph: Graph, k_edges: int = 0, k_fraction: float = 0.1, model_pair: str = "embedded") -> int:
    """K for a circuit: ``k_edges`` when positive; else the paper's K = 1000 for a real pair whose graph
    has at least ten times that many edges (every real model does: GPT-2 small has 32k), and a fraction
    of all edges (at least 1) for the small embedded graph and for tiny test checkpoints."""
    if not k_edges and model_pair != "embedded" and graph.n_edges >= 10 * REAL_PAIR_K:
        k_edges = REAL_PAIR_K
    k = k_edges or max(1, round(k_fraction * graph.n_edges))
    graph.top_edges(torch.zeros(graph.valid.shape), k)  # stops with a clear message if K is too large
    return k
