"""Attribution data-parallel over processes: each process scores a contiguous shard of the examples,
and every process ends with the whole result, as one process computes it.

``attribute_distributed(model, data, ...)`` takes :func:`~mechshift_utils.attribution.engine.attribute`'s
arguments. When ``torch.distributed`` is initialised (e.g. under ``torchrun``), process r of W scores
examples [start_r, stop_r) (contiguous shards whose sizes differ by at most one, the first ranks the
larger: :func:`shard_bounds`), and the pieces are gathered on every process in the original order:
``metric_clean``, ``metric_ablated`` and ``per_example`` are the ranks' rows concatenated; ``edge_scores``,
``node_scores`` and ``region_edge_scores`` the ranks' means weighted by their shard sizes. The result
equals one process's up to float32 rounding (sums taken in another order; a batch of the same examples
can round differently from a batch of others). When ``torch.distributed`` is not initialised, it is
:func:`attribute` itself.

What each process must do the same: hold the same ``data`` (checked: a fingerprint of the examples is
compared across ranks first, and every rank stops with the same message when they differ), pass the
same arguments, and call this function the same number of times. ``metric`` is built on the whole
``data`` as for :func:`attribute`: each shard calls it with the examples' indices in the whole data.
``ablation="mean"`` ablates to the mean over all shards (each rank sums its shard's activations, the sums
are all-reduced), the mean :func:`attribute` takes (up to the order of the sums). A failure on one rank (e.g. out of memory)
stops every rank with a message naming it, instead of leaving the others waiting forever.

Running it: a script that builds the model and the task data on every process, e.g. ``trace_ddp.py``::

    import os
    import torch
    import torch.distributed as dist
    from mechshift_utils.attribution.distributed import attribute_distributed

    dist.init_process_group("nccl")  # "gloo" on the CPU
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)  # before anything is gathered: NCCL gathers through the current device
    model = ...  # the model, on f"cuda:{local}"
    data = ...  # the same EncodedTask on every process
    result = attribute_distributed(model, data, method="eap-ig", ig_steps=8, per_example=True)
    if dist.get_rank() == 0:
        result.save("attribution/arm/ioi", data)
    dist.destroy_process_group()

started with ``torchrun --nproc-per-node N trace_ddp.py`` (N = the GPUs of the machine; add ``--nnodes``
and ``--rdzv-endpoint`` for several machines). On the CPU: ``OMP_NUM_THREADS=1 torchrun --nproc-per-node N
trace_ddp.py`` with the gloo backend, N at most the cores.

Memory: every process holds its shard's working set (see the engine) and, at the end, the gathered
result; with ``per_example=True`` that is n_up x n_down floats per example of the whole data on every
process (13 MB per example for Llama-7B).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from ..core.distributed import check_same_data, gather_objects, guarded, is_distributed
from ..core.distributed import data_fingerprint, shard_bounds  # noqa: F401 - this module's public names too
from ..core.validation import ParameterError
from ..tasks import EncodedTask
from .engine import Attribution, activation_sum, attribute, batch_indices, check_arguments
from .metrics import Metric, logit_diff
from .runner import runner_for


def attribute_distributed(model, data: EncodedTask, method: str = "eap-ig", ablation: str = "patching",
                          ig_steps: int = 8, metric: Metric | None = None, batch_size: int = 32,
                          shift: bool = True, per_example: bool = False, progress: bool = True,
                          exact_edges: bool = True, ig_batch: int | None = 4, by_region: bool = False,
                          ig_rule: str = "midpoint", group=None) -> Attribution:
    """:func:`~mechshift_utils.attribution.engine.attribute` with the examples sharded over the processes of
    ``group`` (default: all); every process returns the whole result. See the module docstring (how to
    run it with ``torchrun --nproc-per-node N``). Without ``torch.distributed`` initialised, it is
    ``attribute``. ``progress``: a bar on rank 0 only."""
    options = dict(method=method, ablation=ablation, ig_steps=ig_steps, batch_size=batch_size, shift=shift,
                   per_example=per_example, exact_edges=exact_edges, ig_batch=ig_batch, by_region=by_region,
                   ig_rule=ig_rule)
    if not is_distributed():
        return attribute(model, data, metric=metric, progress=progress, **options)
    # every rank checks the same arguments the same way, before anything is exchanged
    check_arguments(data, method, ablation, ig_steps, batch_size, ig_rule, by_region, ig_batch)
    if not len(data):
        raise ParameterError("data: expected at least one example, got none")
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    check_same_data(data, group)
    start, stop = shard_bounds(len(data), world)[rank]
    shard = data.subset(range(start, stop))
    whole = metric or logit_diff(data)

    def shard_metric(logits, index):  # the shard's example i is example start + i of the whole data
        return whole(logits, index + start)

    runner = runner_for(model, shift)
    mean_acts = None
    if ablation == "mean":
        local = guarded(lambda: activation_sum(runner, shard, batch_indices(len(shard), batch_size))
                         if len(shard) else None, group, "summing the activations for the mean ablation")
        if local is None:
            shape = (data.clean_ids.shape[1], len(runner.graph.upstream), runner.arch.d_model)
            local = torch.zeros(shape, device=runner.device)
        dist.all_reduce(local, op=dist.ReduceOp.SUM, group=group)
        mean_acts = local / len(data)

    result = guarded(lambda: attribute(model, shard, metric=shard_metric, progress=progress and rank == 0,
                                        mean_acts=mean_acts, **options) if len(shard) else None,
                      group, "attribution")
    pieces = gather_objects(None if result is None else _piece(result), group)
    return _merged(runner.graph, pieces, len(data), method, ablation, ig_steps, ig_rule)


def _piece(result: Attribution) -> dict:
    """What a rank sends: its shard's size, means, and per-example rows (CPU tensors)."""
    return {"n": len(result.metric_clean), "edge_scores": result.edge_scores, "node_scores": result.node_scores,
            "region_edge_scores": result.region_edge_scores, "metric_clean": result.metric_clean,
            "metric_ablated": result.metric_ablated, "per_example": result.per_example}


def _merged(graph, pieces: list, n: int, method: str, ablation: str, ig_steps: int, ig_rule: str) -> Attribution:
    """One Attribution from the ranks' pieces (in rank order = the examples' order)."""
    pieces = [p for p in pieces if p is not None]  # ranks with no example send nothing

    def mean(key):
        if pieces[0][key] is None:
            return None
        total = sum(p[key].double() * p["n"] for p in pieces)
        return (total / n).to(pieces[0][key].dtype)

    def rows(key):
        return None if pieces[0][key] is None else torch.cat([p[key] for p in pieces])

    return Attribution(graph, method, ablation, mean("edge_scores"), mean("node_scores"), rows("metric_clean"),
                       rows("metric_ablated"), rows("per_example"), ig_steps if method == "eap-ig" else None,
                       mean("region_edge_scores"), ig_rule=ig_rule if method == "eap-ig" else None)
