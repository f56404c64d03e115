"""How much memory EAP-IG needs beside the model weights, and the largest batch that fits.

At 7B scale the engine's own buffers, not the weights, decide the batch size:
the activation differences alone are [batch, positions, upstream nodes,
d_model] float32 (2.2 GB per example at 128 positions for a Llama-7B shape).
This module estimates the peak memory of ``attribute(..., method="eap-ig")``
from :mod:`mechshift_utils.attribution.engine` *as written*, above what was
allocated before the call; when the engine changes, this file must change with
it (tests/test_memory.py pins the terms to the engine's real tensors). Every
term is a count of tensors the engine or the model's autograd graph holds; on
the CPU (float32, peak RSS above the start with ``MALLOC_MMAP_THRESHOLD_=65536``,
benchmarks/bench_real_shapes.py) the total was within 10% of the measured peak
for GPT-2 small and medium and a small Qwen2 shape (README).

Sizes for a batch of ``b`` examples at ``p`` positions, ``B = b * ig_batch``
sequences per forward+backward pass (``T = B * p`` tokens), ``n_up`` /
``n_down`` / ``n_qkv`` as in :class:`~mechshift_utils.attribution.graph.Graph`,
``I`` the MLP width (``d_mlp``), ``V`` the vocabulary, ``dtype`` the model's
bytes per value, float32 4 bytes. One "buffer" is ``b * p * n_up * d_model * 4``
bytes.

* ``delta``: the activation differences, one buffer, alive for the whole batch.
* ``build``: making it (the build phase is ``delta + build``). Each
  ``node_outputs`` call holds the run's saved embedding, o_proj inputs and MLP
  outputs (``b * p * (1 + 2 * layers) * d`` in dtype) and, while its
  ``torch.cat`` runs, the float32 parts (one buffer less, in float32, what
  aliases the saved outputs) and the result (a buffer); during the trace, the
  logits [b, p, V] instead. ``patching``: the second call runs while the
  clean buffer is held; the difference is taken in place and the clean buffer
  let go before the node-major copy (2 buffers), so the peak is 1 buffer plus
  one call. ``zero``: ``patched_metric`` holds the clean buffer, the zeros, its
  running buffer and, at the final norm, ``ablated - cur`` (4 buffers) plus
  the logits. ``mean``: the same with the expanded mean (3 buffers), plus the
  mean [p, n_up, d] float32 for the whole call.
* ``scores``: the batch's [b, n_up, n_down] float32 scores and one pass's
  result of that size (``scores += ...`` and ``scores * valid`` hold two), and
  the [n_up, n_down] sum and edge mask.
* ``inputs``: the IG inputs: the clean and ablated embeddings [b, p, d]
  float32 and one pass's interpolated inputs [B, p, d] (float32 and dtype).
* ``activations``: one forward+backward pass (``_trace_gradients``): what
  autograd saves, ``(activation_units(...) * layers + MODEL_UNITS) * T * d *
  dtype`` (counted from the saved tensors of a plain Hugging Face pass, see
  :func:`activation_units`), the gradients the engine keeps
  (``saved_for_scoring``'s q/k/v and MLP-norm output gradients), and the
  logits and their dense gradient, ``2 * T * V * dtype``.
* ``saved_for_scoring``, ``norm_vjp``, ``folded_copy``: after the backward,
  ``_dot_gradients`` has what the trace kept for every layer (both norms'
  inputs, the q/k/v and MLP-norm output gradients, the final norm's input and
  output gradient) and, one layer at a time, the q/k/v gradients taken back
  through the weights and the pre-norm (``runner.qkv_norm_vjp``): one
  [B, p, n_qkv, d_model] float32 tensor (NORM_VJP_COPIES), then one of
  [b, p, n_qkv, d_model]: its sum over the pass's IG points, or with position
  groups each group's masked copy.
* ``by_region`` (``by_region=True``): the [R, n_up, n_down] region sums and,
  per destination, the R products [b, R, n_up, n_qkv] and their sum.
* ``ig_sum`` (``sum_passes=True`` and more than one pass per batch): the sum over
  the passes of the gradient at every destination group's residual input, held
  from the first pass to the products: one [b, p, d_model] float32 tensor for
  each MLP and for the logits; for a layer's q/k/v, in a float32 model
  (``runner._QKVSum``), the summed head_dim-sized gradients [b, p, n_qkv,
  head_dim] and per IG point the normalised input [b, p, d_model] and a
  [b, p, n_qkv] factor, then at the products the finished sum and its
  correction ([b, p, n_qkv, d_model] each, beside a group's masked copy: the
  ``folded_copy`` term); in a bfloat16 one the [b, p, n_qkv, d_model] sum
  itself. A float32 model's trace then also keeps the q/k/v outputs
  (``saved_for_scoring``); the per-pass products are head_dim-sized
  (``norm_vjp``: two [B, p, n_qkv, head_dim] float32 tensors).
* ``gc_lag``: tensors of earlier batches that only Python's cyclic garbage
  collector frees (GC_LAG_BATCHES: none since the engine keeps its big
  tensors out of nnsight's traced frames).
* ``weight_copies``: the runner's float32 copies of W_O and W_QKV per layer
  (none when the model is float32): 3.3 GB for Qwen2.5-7B, 8.6 GB for
  Llama-7B, on the device for as long as the runner is cached (one per model
  object, :func:`mechshift_utils.attribution.runner.runner_for`).
* ``per_example_host`` (``per_example=True``): the batch's scores copied to
  the host, kept for the whole run: host memory, not in ``total``.

``total`` = ``weight_copies`` + ``gc_lag`` + the largest of the three phases
(``build_peak``, ``backward_peak``, ``scoring_peak``, each reported with those
two added), which never coexist. Not counted: the allocator's caching and
fragmentation (on the CPU, glibc keeps freed blocks under its mmap threshold:
peak RSS without ``MALLOC_MMAP_THRESHOLD_`` runs higher) and the CUDA context;
leave room for them with ``safety``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..core.validation import ParameterError, check_bool, check_choice, check_non_negative_int, check_positive_int
from ..models.arch import Arch

FLOAT32 = 4
BFLOAT16 = 2

# Tensors that autograd saves per layer in one forward pass with frozen weights, in units of
# T * d_model * dtype bytes, counted with torch.autograd.graph.saved_tensors_hooks on plain Hugging Face
# models (transformers 5, SDPA attention; storages of the weights left out):
#   GPT-2: the fused q/k/v output (n_qkv * head_dim / d = 3), 4 d-wide tensors (counted, among them
#     the block's input, the attention output and the residual after attention), and what the MLP's
#     activation keeps: transformers' "gelu_new" is written out op by op and keeps its input, tanh,
#     0.5 * x and 1 + tanh (4 x I/d: 23 for I = 4d, GPT-2's own); "gelu" (the embedded organism's)
#     and "gelu_pytorch_tanh" are one F.gelu that keeps its input (1 x I/d: 11).
#   Llama family: the block's input, q and k after the rotary embedding and v (n_qkv * head_dim / d),
#     the attention output and the residual after attention (3 d-wide), SwiGLU's gate output, SiLU's
#     output and the up projection (3 x I/d); a model that is not float32 also saves each RMSNorm's
#     float32 copy of its input (2 norms x 4 / dtype units). Qwen2 float32 with I/d = 3, 8 query and
#     2 key-value heads: 13.5 counted.
# Measured GPT-2 (1 and 2 layers): 25.0 and 24.5 units per layer; Qwen2: 14.6 and 14.1 (the model's
# own, MODEL_UNITS, shared over the layers).
D_WIDE_SAVED = {"gpt2": 4, "llama": 3}
MLP_SAVED = {"gpt2": 4, "llama": 3}  # I-wide tensors saved by the MLP's activation (GPT-2: gelu_new's)
# GPT-2 activations other than gelu_new that keep only their input (one F.gelu call)
ONE_SAVED_ACTIVATIONS = ("gelu", "gelu_pytorch_tanh")
# Saved once per model: the embedding sum (GPT-2: token + position), the final norm's input and output.
MODEL_UNITS = {"gpt2": 3, "llama": 1}

# Tensors of the [B, p, n_qkv, d_model] float32 shape a layer's q/k/v products write
# (runner.qkv_norm_vjp): the product through the weights with the norm folded in, corrected in place.
NORM_VJP_COPIES = {"llama": 1, "gpt2": 1}

# Buffers of [b, p, n_up, d_model] float32 alive at once while ``patched_metric`` computes the metric
# with every edge ablated (``zero`` and ``mean``; see the module docstring). ``patching`` never calls it.
PATCHED_BUFFERS = {"patching": 0, "zero": 4, "mean": 3}
ABLATIONS = tuple(PATCHED_BUFFERS)

# Earlier batches whose tensors are still held, waiting for Python's cyclic garbage collector.
# nnsight runs a traced block in a snapshot of the calling frame's locals that ends up in a reference
# cycle; the engine keeps its big tensors out of traced frames (delta never enters one; the saved
# tensors sit in a dict the caller empties), and peak RSS on the CPU over 2 batches (GPT-2 small and
# medium, 8 examples) showed the first batch's delta and saved tensors gone before the second was
# built. The earlier gap between estimate and peak (1.18 GB measured, 0.69 GB estimated for GPT-2
# medium) was the logits and the activations of the pass, now counted, and glibc's cache.
GC_LAG_BATCHES = 0

REGION_COUNT = 4  # len(mechshift_utils.attribution.regions.REGIONS), without importing the engine's modules

GB = 1e9


def _check(arch, positions, batch_size, ig_batch, dtype_bytes, per_example, vocab_size, ablation, ig_steps,
           gc_lag_batches, d_mlp, by_region, sum_passes=False) -> None:
    if not isinstance(arch, Arch):
        raise ParameterError(f"arch: expected a mechshift_utils.models.Arch (arch_of(model)), "
                             f"got {type(arch).__name__}")
    check_positive_int("positions", positions)
    check_positive_int("batch_size", batch_size)
    check_positive_int("ig_batch", ig_batch)
    check_positive_int("dtype_bytes", dtype_bytes)
    check_bool("per_example", per_example)
    check_non_negative_int("vocab_size", vocab_size)
    check_choice("ablation", ablation, ABLATIONS)
    check_positive_int("ig_steps", ig_steps)
    check_non_negative_int("gc_lag_batches", gc_lag_batches)
    if d_mlp is not None:
        check_positive_int("d_mlp", d_mlp)
    check_bool("by_region", by_region)
    check_bool("sum_passes", sum_passes)


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


def model_sizes(model) -> dict:
    """The options of :func:`attribution_bytes` that the Hugging Face model fixes: ``dtype_bytes``,
    ``vocab_size``, ``d_mlp`` (``intermediate_size``, or GPT-2's ``n_inner``, 4 x d when unset) and
    ``mlp_saved`` (what the MLP's activation keeps for the backward, see MLP_SAVED)."""
    hf = getattr(model, "_model", model)
    config = hf.config
    d_mlp = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
    if not d_mlp:
        d_mlp = 4 * (getattr(config, "hidden_size", None) or config.n_embd)
    sizes = {"dtype_bytes": next(hf.parameters()).element_size(), "vocab_size": int(config.vocab_size),
             "d_mlp": int(d_mlp)}
    if getattr(config, "activation_function", None) in ONE_SAVED_ACTIVATIONS:  # GPT-2 with one F.gelu
        sizes["mlp_saved"] = 1
    return sizes


def activation_units(arch: Arch, dtype_bytes: int, d_mlp: int | None = None, mlp_saved: int | None = None
                     ) -> float:
    """What autograd saves per layer in one forward pass with frozen weights, in tensors of
    [tokens, d_model] in the model's dtype (see D_WIDE_SAVED). ``d_mlp``: the MLP width (4 x d_model
    when None, GPT-2's). ``mlp_saved``: I-wide tensors the MLP's activation keeps (None: the family's
    usual, MLP_SAVED)."""
    d = arch.d_model
    mlp = (d_mlp or 4 * d) / d
    qkv = arch.n_qkv * arch.head_dim / d
    norm_copies = 2 * FLOAT32 / dtype_bytes if arch.family == "llama" and dtype_bytes < FLOAT32 else 0
    kept = MLP_SAVED[arch.family] if mlp_saved is None else mlp_saved
    return D_WIDE_SAVED[arch.family] + qkv + kept * mlp + norm_copies


def saved_for_scoring_bytes(arch: Arch, tokens: int, dtype_bytes: int, keep_qkv: bool = False) -> int:
    """What one gradient trace keeps for ``_dot_gradients``, every layer at once (model dtype): the
    attention- and MLP-norm inputs, the q/k/v output gradients and the MLP-norm output gradient, and
    the final norm's input and output gradient (``keep_qkv``: the q/k/v outputs too, as a float32
    model's trace keeps them when the passes are summed)."""
    per_layer = 3 * arch.d_model + arch.n_qkv * arch.head_dim * (2 if keep_qkv else 1)
    return (arch.n_layers * per_layer + 2 * arch.d_model) * tokens * dtype_bytes


def kept_gradient_bytes(arch: Arch, tokens: int, dtype_bytes: int) -> int:
    """The part of :func:`saved_for_scoring_bytes` that the backward makes (the norm inputs are the
    forward's own, already among the saved activations)."""
    per_layer = arch.d_model + arch.n_qkv * arch.head_dim
    return (arch.n_layers * per_layer + arch.d_model) * tokens * dtype_bytes


def attribution_bytes(arch: Arch, positions: int, batch_size: int, ig_batch: int = 1,
                      dtype_bytes: int = BFLOAT16, per_example: bool = True, *, vocab_size: int = 0,
                      ablation: str = "patching", ig_steps: int = 8,
                      gc_lag_batches: int = GC_LAG_BATCHES, d_mlp: int | None = None,
                      by_region: bool = False, mlp_saved: int | None = None,
                      sum_passes: bool = False) -> dict[str, int]:
    """Estimated bytes an ``attribute(..., method="eap-ig")`` batch needs beside the model weights.

    ``dtype_bytes``: the model's (2 for bfloat16, 4 for float32). ``vocab_size``: counts the
    logits and their gradient (0 leaves them out). ``ig_steps`` / ``ig_batch``: the number of
    gradient passes per batch and the IG points stacked in each. ``d_mlp``: the MLP width (None:
    4 x d_model); ``mlp_saved``: see :func:`activation_units`. ``by_region``: as
    :func:`~mechshift_utils.attribution.engine.attribute`'s. :func:`model_sizes` gives ``dtype_bytes``,
    ``vocab_size``, ``d_mlp`` (and ``mlp_saved``) of a model. ``sum_passes``: as the engine's (which
    does it on the CPU by default; :func:`choose_batch_size` assumes the same). Returns
    every term of the module docstring, the three phase peaks and ``total`` (device memory:
    ``per_example_host`` is host memory and not in it), all in bytes.
    """
    _check(arch, positions, batch_size, ig_batch, dtype_bytes, per_example, vocab_size, ablation, ig_steps,
           gc_lag_batches, d_mlp, by_region, sum_passes)
    if mlp_saved is not None:
        check_non_negative_int("mlp_saved", mlp_saved)
    n_up, n_down = graph_sizes(arch)
    b, p, d, layers = batch_size, positions, arch.d_model, arch.n_layers
    points = min(ig_batch, ig_steps)  # IG points per pass: the engine never stacks more than ig_steps
    seqs = b * points
    tokens = seqs * p
    buffer = b * p * n_up * d * FLOAT32
    score = b * n_up * n_down * FLOAT32
    stack = tokens * arch.n_qkv * d * FLOAT32  # one [B, p, n_qkv, d] float32 tensor
    folded = stack // points  # the same summed over the IG points of the pass
    summing = sum_passes and points < ig_steps
    deferred = summing and dtype_bytes >= FLOAT32  # runner._QKVSum: the q/k/v products after the sum
    saved = saved_for_scoring_bytes(arch, tokens, dtype_bytes, keep_qkv=deferred)
    head_sized = b * p * arch.n_qkv * arch.head_dim * FLOAT32  # [b, p, n_qkv, head_dim] float32
    if deferred:
        ig_sum = layers * (head_sized + ig_steps * b * p * (d + arch.n_qkv) * FLOAT32) + (layers + 1) * b * p * d * FLOAT32
    else:
        ig_sum = b * p * d * FLOAT32 * (layers * (arch.n_qkv + 1) + 1) if summing else 0

    # one node_outputs call: the run's saved outputs, then either the logits (during the trace) or the
    # float32 parts and their concatenation (after it); float32 embedding and MLP parts are the saved
    # outputs themselves
    run_saved = b * p * (1 + 2 * layers) * d * dtype_bytes
    parts = buffer - (b * p * (1 + layers) * d * FLOAT32 if dtype_bytes >= FLOAT32 else 0)
    run_logits = b * p * vocab_size * dtype_bytes
    one_call = run_saved + max(run_logits, parts + buffer)
    mean = p * n_up * d * FLOAT32 if ablation == "mean" else 0
    patched = PATCHED_BUFFERS[ablation] * buffer + run_logits if PATCHED_BUFFERS[ablation] else 0
    build_phase = max(buffer + one_call, patched, 2 * buffer) + mean  # 2 buffers: the node-major copy

    regions = (REGION_COUNT * n_up * n_down * FLOAT32 + 2 * b * REGION_COUNT * n_up * arch.n_qkv * FLOAT32
               if by_region else 0)
    parts_ = {
        "delta": buffer,
        "build": build_phase - buffer,
        "scores": 2 * score + n_up * n_down * (FLOAT32 + 1) + mean,
        "inputs": (2 * b + seqs) * p * d * FLOAT32 + (seqs * p * d * dtype_bytes if dtype_bytes < FLOAT32 else 0),
        "activations": (activation_units(arch, dtype_bytes, d_mlp, mlp_saved) * layers
                        + MODEL_UNITS[arch.family]) * tokens * d * dtype_bytes
        + kept_gradient_bytes(arch, tokens, dtype_bytes) + 2 * tokens * vocab_size * dtype_bytes,
        "saved_for_scoring": saved,
        "norm_vjp": 2 * head_sized * points if deferred else NORM_VJP_COPIES[arch.family] * stack,
        # beside it: its sum over the IG points of the pass, or (one point a pass) a group's masked copy;
        # deferred: at the products, the finished sum, its correction and a group's masked copy
        "folded_copy": 3 * folded if deferred else folded,
        "by_region": regions,
        # sum_passes with several passes: every destination group's summed gradient, [b, p, n, d] float32
        "ig_sum": ig_sum,
        "gc_lag": gc_lag_batches * (buffer + saved),
        "weight_copies": weight_copy_bytes(arch, dtype_bytes),
        "per_example_host": score if per_example else 0,
    }
    parts_["activations"] = int(parts_["activations"])
    always = parts_["weight_copies"] + parts_["gc_lag"]
    held = always + parts_["delta"] + parts_["scores"] + parts_["inputs"] + parts_["by_region"] + parts_["ig_sum"]
    phases = {
        "build_peak": always + parts_["delta"] + parts_["build"],
        "backward_peak": held + parts_["activations"],
        "scoring_peak": held + parts_["saved_for_scoring"] + parts_["norm_vjp"] + parts_["folded_copy"],
    }
    return {**parts_, **phases, "total": max(phases.values())}


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
    loaded). ``options`` go to :func:`attribution_bytes` (``dtype_bytes``, ``vocab_size``, ``d_mlp``
    (:func:`model_sizes` gives these three), ``ablation``, ``ig_steps``, ``by_region``,
    ``gc_lag_batches``, ``sum_passes``: default, as the engine's, True on the CPU). Raises
    ParameterError when even one example
    does not fit.
    """
    if isinstance(safety, bool) or not isinstance(safety, (int, float)) or not 0 < safety <= 1:
        raise ParameterError(f"safety: expected a number in (0, 1], got {safety!r}")
    check_positive_int("max_batch", max_batch)
    check_non_negative_int("reserve_bytes", reserve_bytes)
    free = free_memory_bytes(device)
    budget = safety * (free - reserve_bytes)

    # the engine sums the passes' gradients on the CPU unless told otherwise (attribute's sum_passes)
    options.setdefault("sum_passes", _as_device(device).type == "cpu")

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
        f"norm vjp {gb('norm_vjp')}, its IG sum {gb('folded_copy')}, IG inputs {gb('inputs')}"
        + (f", position groups {gb('by_region')}" if est["by_region"] else ""),
        f"  float32 weight copies {gb('weight_copies')}, awaiting the garbage collector {gb('gc_lag')}, "
        f"per-example scores on the host {gb('per_example_host')} per batch",
        f"  peak about {gb('total')} beside the model weights "
        f"(build {gb('build_peak')}, backward {gb('backward_peak')}, scoring {gb('scoring_peak')})",
    ])
