"""How much memory EAP-IG needs beside the model weights, and the largest batch that fits.

At 7B scale the engine's own buffers, not the weights, decide the batch size:
the activation differences alone are [batch, positions, upstream nodes,
d_model] float32 (2.2 GB per example at 128 positions for a Llama-7B shape).
This module estimates the memory of ``attribute(..., method="eap-ig")`` from
:mod:`mechshift_utils.attribution.engine` *as written*; when the engine changes, this
file must change with it (tests/test_memory.py pins the main term to the
engine's real tensor). The constants were checked against peak RSS on the
CPU (float32, Qwen2 and GPT-2 shapes of 6-28 layers): with the garbage
collector forced between batches, whole ``attribute`` calls dominated by
building delta peaked within 1% of the estimate without ``gc_lag``, and the
phases of one gradient pass within 5% (the activation term overestimates a
float32 Llama-family model, which needs no norm copies, by about a third).

Sizes for a batch of ``b`` examples at ``p`` positions, ``B = b * ig_batch``
sequences per forward+backward pass, ``n_up`` / ``n_down`` / ``n_qkv`` as in
:class:`~mechshift_utils.attribution.graph.Graph`, ``dtype`` the model's bytes per value,
float32 4 bytes. One "buffer" is ``b * p * n_up * d_model * 4`` bytes.

* ``delta``: the activation differences, one buffer, alive for the whole batch
  (node-major; the previous batch's is deleted first).
* ``build``: making it. ``node_outputs`` returns the clean and the corrupted
  activations (a buffer each; its ``torch.cat`` holds the parts and the result
  for a moment), the difference is taken in place, and its node-major copy is
  made while both exist: 3 buffers at once (``zero`` ablation 4: the zeros
  and ``patched_metric``'s running buffer; ``mean`` 3 plus the mean
  [p, n_up, d] float32). Plus the no-grad run's saved head/MLP outputs and its
  logits.
* ``scores``: the batch's [b, n_up, n_down] float32 scores and one pass's
  result of that size (``scores += ...`` and ``scores * valid`` hold two), and
  the [n_up, n_down] sum and edge mask.
* ``activations``: one forward+backward pass of B sequences:
  ``ACTIVATION_UNITS * layers * B * p * d_model * dtype``, plus the logits and
  their (dense) gradient, ``2 * B * p * vocab * dtype``.
* ``saved_for_scoring``, ``norm_vjp``, ``einsum_copy``: after the backward,
  ``_dot_gradients`` has what the trace kept for every layer and, one layer
  at a time, ``norm_vjp``'s stack: the cotangents [B, p, n_qkv, d_model]
  float32, x expanded to that shape and the norm's intermediates
  (NORM_VJP_COPIES tensors of that shape); each product of delta with the
  gradients reads delta as a view and copies only the (small) gradient
  operand into matrix layout.
* ``gc_lag``: tensors of earlier batches and passes that only Python's cyclic
  garbage collector frees (see GC_LAG_BATCHES).
* ``weight_copies``: the runner's float32 copies of W_O and W_QKV per layer
  (none when the model is float32): 3.3 GB for Qwen2.5-7B, 8.6 GB for
  Llama-7B, on the device for as long as the runner is cached (one per model
  object, :func:`mechshift_utils.attribution.runner.runner_for`).
* ``per_example_host`` (``per_example=True``): the batch's scores copied to
  the host, kept for the whole run: host memory, not in ``total``.

``total`` = ``weight_copies`` + ``gc_lag`` + the largest of the three phases
(``build_peak``, ``backward_peak``, ``scoring_peak``, each reported with those
two added), which never coexist. Not counted: the allocator's fragmentation
and the CUDA context; leave room for them with ``safety``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..core.validation import ParameterError, check_bool, check_choice, check_non_negative_int, check_positive_int
from ..models.arch import Arch

FLOAT32 = 4
BFLOAT16 = 2

# Bytes per token per layer held by one forward+backward pass, in units of d_model * dtype
# bytes. The weights are frozen during the pass, so the linear layers save no inputs. Counted
# for the Llama family in bfloat16 (Qwen2.5-7B: I/d = 5.3, 4 of 28 heads key/value; Llama-7B:
# I/d = 2.7, no grouping):
#   2 RMSNorms, each saving a float32 copy of its input ......................... 4
#   SDPA (flash) saving q, k, v and its output (k, v at key/value width) ........ 2.3 - 4
#   SwiGLU MLP: SiLU's input, its output and the up projection (3 x I/d) ......... 15.9 - 8.1
#   the engine's saves: both norm inputs (2), the q/k/v and MLP-norm output
#   gradients (1.3 - 3, and 1), and the outputs whose .grad it reads (1.3 - 3, 1) . 6.6 - 10
#   sum ........................................................................ 28.8 - 26.1
# Measured on the CPU (float32, peak RSS): 28 for a GPT-2 shape (its tanh-GELU keeps ~4 x I/d),
# 19 for a Qwen2 shape with I/d = 3 (float32 needs no norm copies: 4 units less). Rounded up to
# 30 for the gradients of the layer being differentiated, which exist once, not per layer.
ACTIVATION_UNITS = 30

# Tensors of the [B, p, n_qkv, d_model] float32 shape alive at once inside one layer's
# _dot_gradients, measured on the CPU: the cotangents, x expanded, the norm's output, and the
# gradients and temporaries of its backward. RMSNorm is written out op by op (pow's backward
# makes temporaries): 8; the fused F.layer_norm: 5.
NORM_VJP_COPIES = {"llama": 8, "gpt2": 5}

# Buffers of [b, p, n_up, d_model] float32 alive at once while one batch's delta is built (see above).
BUILD_BUFFERS = {"patching": 3, "zero": 4, "mean": 3}

# Earlier batches whose tensors are still held, waiting for Python's cyclic garbage collector.
# nnsight runs a traced block in a snapshot of the calling frame's locals (a ``Scope`` dict) that
# ends up in a reference cycle: ``_gradient_scores``' snapshot holds ``delta``, the lists of saved
# tensors and the logits, so each batch's delta and each pass's saved tensors outlive their call
# until a generation-1 or -2 collection. Counted per batch as delta plus every pass's
# ``saved_for_scoring``. Measured on the CPU (24 and 28 layers, 4 and 8 IG steps, 10 batches):
# up to 2.5 batches' worth waiting, before attribute.py kept its big tensors out of the traced
# frames (delta never enters one; the saved tensors sit in a dict the caller empties). After that
# change peak RSS on the CPU still sat above the lag-free estimate (gpt2-medium shape, 2 batches:
# 1.18 GB measured, 0.69 GB estimated; gpt2-small 0.33 vs 0.26), so one batch's worth is kept
# as an allowance until the gap is understood.
GC_LAG_BATCHES = 1

GB = 1e9


def _check(arch, positions, batch_size, ig_batch, dtype_bytes, per_example, vocab_size, ablation, ig_steps,
           gc_lag_batches) -> None:
    if not isinstance(arch, Arch):
        raise ParameterError(f"arch: expected a mechshift_utils.models.Arch (arch_of(model)), "
                             f"got {type(arch).__name__}")
    check_positive_int("positions", positions)
    check_positive_int("batch_size", batch_size)
    check_positive_int("ig_batch", ig_batch)
    check_positive_int("dtype_bytes", dtype_bytes)
    check_bool("per_example", per_example)
    check_non_negative_int("vocab_size", vocab_size)
    check_choice("ablation", ablation, tuple(BUILD_BUFFERS))
    check_positive_int("ig_steps", ig_steps)
    check_non_negative_int("gc_lag_batches", gc_lag_batches)


def graph_sizes(arch: Arch) -> tuple[int, int]:
    """(n_up, n_down) of the model's graph, without building it (as Graph.from_arch counts them)."""
    n_up = 1 + arch.n_layers * (arch.n_heads + 1)
    n_down = arch.n_layers * (arch.n_qkv + 1) + 1
    return n_up, n_down


def weight_copy_bytes(arch: Arch, dtype_bytes: int) -> int:
    """The runner's float32 W_O [n_heads, head_dim, d] and W_QKV [n_qkv, d, head_dim] per layer;
    ``.float()`` returns the weight itself for a float32 model, so then nothing."""
    if dtype_bytes >= FLOAT32:
        return 0
    per_layer = (arch.n_heads + arch.n_qkv) * arch.head_dim * arch.d_model
    return arch.n_layers * per_layer * FLOAT32


def saved_for_scoring_bytes(arch: Arch, tokens: int, dtype_bytes: int, vocab_size: int = 0) -> int:
    """What one gradient trace keeps for ``_dot_gradients``, every layer at once (model dtype): the
    attention- and MLP-norm inputs, the q/k/v output gradients and the MLP-norm output gradient, the
    q/k/v and MLP-norm outputs themselves, the final norm's input and output gradient, and the
    logits: the trace's frame snapshot holds every tensor the traced block named."""
    per_layer = 4 * arch.d_model + 2 * arch.n_qkv * arch.head_dim
    return (arch.n_layers * per_layer + 2 * arch.d_model + vocab_size) * tokens * dtype_bytes


def attribution_bytes(arch: Arch, positions: int, batch_size: int, ig_batch: int = 1,
                      dtype_bytes: int = BFLOAT16, per_example: bool = True, *, vocab_size: int = 0,
                      ablation: str = "patching", ig_steps: int = 8,
                      gc_lag_batches: int = GC_LAG_BATCHES) -> dict[str, int]:
    """Estimated bytes an ``attribute(..., method="eap-ig")`` batch needs beside the model weights.

    ``dtype_bytes``: the model's (2 for bfloat16, 4 for float32). ``vocab_size``: counts the
    logits and their gradient (0 leaves them out). ``ig_steps`` / ``ig_batch``: the number of
    gradient passes per batch and the IG points stacked in each. Returns every term of the module
    docstring, the three phase peaks and ``total`` (device memory: ``per_example_host`` is host
    memory and not in it), all in bytes.
    """
    _check(arch, positions, batch_size, ig_batch, dtype_bytes, per_example, vocab_size, ablation, ig_steps,
           gc_lag_batches)
    n_up, n_down = graph_sizes(arch)
    b, p, d = batch_size, positions, arch.d_model
    points = min(ig_batch, ig_steps)  # IG points per pass: the engine never stacks more than ig_steps
    passes = -(-ig_steps // points)
    seqs = b * points
    buffer = b * p * n_up * d * FLOAT32
    score = b * n_up * n_down * FLOAT32
    stack = seqs * p * arch.n_qkv * d * FLOAT32  # one [B, p, n_qkv, d] float32 tensor
    folded = stack // points  # the same summed over the IG points of the pass
    saved = saved_for_scoring_bytes(arch, seqs * p, dtype_bytes, vocab_size)

    parts = {
        "delta": buffer,
        "build": (BUILD_BUFFERS[ablation] - 1) * buffer
        + b * p * (2 * arch.n_layers * d + vocab_size) * dtype_bytes
        + (p * n_up * d * FLOAT32 if ablation == "mean" else 0),
        "scores": 2 * score + n_up * n_down * (FLOAT32 + 1),
        "activations": ACTIVATION_UNITS * arch.n_layers * seqs * p * d * dtype_bytes
        + 2 * seqs * p * vocab_size * dtype_bytes,
        "saved_for_scoring": saved,
        "norm_vjp": NORM_VJP_COPIES[arch.family] * stack,
        # at the product: the cotangents, the folded gradient and its matrix-layout copy
        "einsum_copy": stack + 2 * folded,
        "gc_lag": gc_lag_batches * (buffer + passes * saved),
        "weight_copies": weight_copy_bytes(arch, dtype_bytes),
        "per_example_host": score if per_example else 0,
    }
    always = parts["weight_copies"] + parts["gc_lag"]
    phases = {
        "build_peak": always + parts["delta"] + parts["build"],
        "backward_peak": always + parts["delta"] + parts["scores"] + parts["activations"],
        "scoring_peak": always + parts["delta"] + parts["scores"] + parts["saved_for_scoring"]
        + max(parts["norm_vjp"], parts["einsum_copy"]),
    }
    return {**parts, **phases, "total": max(phases.values())}


def free_memory_bytes(device) -> int:
    """Bytes free for new tensors on ``device``.

    CUDA: the driver's free memory plus what PyTorch's caching allocator holds unused (it reuses
    that before asking the driver). CPU: the kernel's MemAvailable (what can be allocated without
    swapping), from /proc/meminfo, or psutil where there is no /proc.
    """
    device = _as_device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        return _host_available_bytes()
    raise ParameterError(f"device: expected a 'cpu' or 'cuda' device, got {str(device)!r}")


def _as_device(device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ParameterError(f"device: expected a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None


def _host_available_bytes() -> int:
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    try:
        import psutil
    except ImportError:
        raise RuntimeError("free memory on the CPU: no /proc/meminfo and psutil is not installed") from None
    return int(psutil.virtual_memory().available)


def choose_batch_size(arch: Arch, positions: int, device, ig_batch: int = 1, safety: float = 0.8,
                      max_batch: int = 64, reserve_bytes: int = 0, **options) -> int:
    """The largest ``batch_size`` (1..``max_batch``) whose estimated ``total`` fits in
    ``safety * (free memory on device - reserve_bytes)``.

    ``reserve_bytes``: memory something else will take (e.g. the other model of a pair, still to be
    loaded). ``options`` go to :func:`attribution_bytes` (``dtype_bytes``, ``vocab_size``,
    ``ablation``, ``ig_steps``, ``gc_lag_batches``). Raises ParameterError when even one example
    does not fit.
    """
    if isinstance(safety, bool) or not isinstance(safety, (int, float)) or not 0 < safety <= 1:
        raise ParameterError(f"safety: expected a number in (0, 1], got {safety!r}")
    check_positive_int("max_batch", max_batch)
    check_non_negative_int("reserve_bytes", reserve_bytes)
    free = free_memory_bytes(device)
    budget = safety * (free - reserve_bytes)

    def need(b: int) -> int:
        return attribution_bytes(arch, positions, b, ig_batch, **options)["total"]

    if need(1) > budget:
        raise ParameterError(
            f"batch_size: not even 1 example fits: EAP-IG at {positions} positions (ig_batch {ig_batch}) needs "
            f"about {need(1) / GB:.1f} GB beside the weights, but {device} has {free / GB:.1f} GB free"
            f"{f' less {reserve_bytes / GB:.1f} GB reserved' if reserve_bytes else ''}, of which {safety:.0%} "
            f"is {budget / GB:.1f} GB. Use fewer positions, a GPU with more memory, or device_map over several GPUs.")
    lo, hi = 1, max_batch  # the estimate grows with the batch: bisect for the last batch that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if need(mid) <= budget else (lo, mid - 1)
    return lo


def describe_plan(arch: Arch, positions: int, batch_size: int, ig_batch: int = 1, **options) -> str:
    """A few lines for a notebook to print: GB per component and the peak, beside the model weights.
    ``options`` as :func:`attribution_bytes`."""
    est = attribution_bytes(arch, positions, batch_size, ig_batch, **options)
    n_up, n_down = graph_sizes(arch)

    def gb(key):
        return f"{est[key] / GB:.2f} GB"

    return "\n".join([
        f"EAP-IG memory plan: batch {batch_size} x ig_batch {ig_batch} at {positions} positions "
        f"({arch.n_layers} layers, {n_up} upstream x {n_down} downstream nodes)",
        f"  activation differences {gb('delta')}, building them +{gb('build')}, scores {gb('scores')}",
        f"  one forward+backward pass {gb('activations')}, kept for scoring {gb('saved_for_scoring')}, "
        f"norm vjp {gb('norm_vjp')}, einsum copies {gb('einsum_copy')}",
        f"  float32 weight copies {gb('weight_copies')}, awaiting the garbage collector {gb('gc_lag')}, "
        f"per-example scores on the host {gb('per_example_host')} per batch",
        f"  peak about {gb('total')} beside the model weights "
        f"(build {gb('build_peak')}, backward {gb('backward_peak')}, scoring {gb('scoring_peak')})",
    ])
