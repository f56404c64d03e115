"""EAP-IG at the shapes of the real models: throughput, overhead over a bare floor, peak memory.

The embedded model (benchmarks/bench_attribution.py) is small enough that
nothing but overhead shows. This benchmark builds random-weight models in the
real shapes from their configurations (no download) and times the MDM side, the
one that matters (``config.is_causal = False``: bidirectional attention):

* ``qwen2-tiny`` (Qwen2: 8 layers, d 512, 8 query / 2 key-value heads, MLP
  1536, the Qwen vocabulary 151936; not a real model: the Llama-family memory
  terms, cheaply), ``gpt2-small`` (12 layers, 12 heads, d 768, vocab 50257), ``gpt2-medium``
  (24, 16, 1024), ``qwen2.5-7b`` (Qwen2: 28 layers, d 3584, 28 query / 4
  key-value heads, MLP 18944, vocab 152064). bfloat16 on CUDA, float32 on the
  CPU (CPU bfloat16 matmuls are slow and not what anyone runs).
* Data: random tokens at ``--positions`` positions; the corrupted sequence
  differs at 3 positions in the middle; the answer slot is the last position
  (a mask token), read at slot - 1 as the engine does.
* EAP-IG: ``attribute(model, data, method="eap-ig", ablation="patching",
  ig_steps, batch_size, ig_batch)``, the whole call. Examples per minute.
* Floor: bare PyTorch, no hooks, no nnsight, weights frozen: per batch 2
  forward passes (clean, corrupted) and ``ig_steps`` forward+backward passes
  with gradients w.r.t. the interpolated input embeddings only, stacked
  ``ig_batch`` points per pass as the engine stacks them. Ratio = EAP-IG /
  floor: the price of hooks, nnsight and the score contractions. With
  ``--repeats``, EAP-IG and the floor are timed in alternating rounds; the ratio
  of the medians and the median of each round's ratio are both reported.
* Peak memory during the EAP-IG call. CUDA: ``torch.cuda.max_memory_allocated``
  (peak, and peak above what was allocated before the call). CPU: the
  process's peak RSS from ``resource.getrusage`` (a lifetime peak: it includes
  building the model and earlier shapes), and, on Linux, the peak RSS of the
  call alone above the RSS before it (VmHWM, reset through
  /proc/self/clear_refs). RSS also counts what malloc caches: for tighter CPU
  numbers run with ``MALLOC_MMAP_THRESHOLD_=65536``.
* The estimate of :func:`mechshift_utils.attribution.memory.attribution_bytes` for the same
  call, with and without its garbage-collector lag term, to compare with the
  peak above the start.

``--batch-size 0`` picks the batch with :func:`mechshift_utils.attribution.memory.choose_batch_size`
(capped at ``--examples``). Everything is warmed up once (on 2 other examples)
before it is timed. One line per shape is printed and a CSV written. Timings on
a shared machine are noisy: the load average before and after is in the CSV.

Run (from the repository root)::

    .venv/bin/python benchmarks/bench_real_shapes.py --shapes gpt2-small --device cpu --examples 4 --positions 32
    .venv/bin/python benchmarks/bench_real_shapes.py --device cuda   # all three shapes, one H100: a few minutes
"""
from __future__ import annotations

import argparse
import csv
import gc
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mechshift_utils.attribution import engine, runner  # noqa: E402
from mechshift_utils.models.arch import arch_of  # noqa: E402
from mechshift_utils.attribution.memory import (GB, attribution_bytes, choose_batch_size, free_memory_bytes,  # noqa: E402
                                                model_sizes)
from mechshift_utils.core.cpus import usable_cores  # noqa: E402
from mechshift_utils.core.devices import resolve_device  # noqa: E402
from mechshift_utils.core.validation import ParameterError  # noqa: E402
from mechshift_utils.tasks.encoding import EncodedTask  # noqa: E402

CORRUPTED_POSITIONS = 3


def gpt2_config(n_layer: int, n_head: int, n_embd: int):
    from transformers import GPT2Config

    return GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=50257, n_positions=1024)


def qwen25_7b_config():
    from transformers import Qwen2Config

    return Qwen2Config(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768,
                       rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False)


def qwen2_tiny_config():
    """A small Qwen2 (8 layers, d 512, 8 query / 2 key-value heads, MLP 1536) with the real Qwen vocabulary:
    the Llama-family terms of the memory estimate (RMSNorm, grouped-query attention, SwiGLU) and large
    logits, cheaply on a CPU."""
    from transformers import Qwen2Config

    return Qwen2Config(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                       num_key_value_heads=2, vocab_size=151936, max_position_embeddings=4096,
                       rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False)


SHAPES = {
    "qwen2-tiny": qwen2_tiny_config,
    "gpt2-small": lambda: gpt2_config(12, 12, 768),
    "gpt2-medium": lambda: gpt2_config(24, 16, 1024),
    "qwen2.5-7b": qwen25_7b_config,
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=[s for s in SHAPES if s != "qwen2-tiny"], choices=list(SHAPES))
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--positions", type=int, default=64)
    p.add_argument("--examples", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=0, help="0: the largest that fits (memory.choose_batch_size)")
    p.add_argument("--ig-steps", type=int, default=8)
    p.add_argument("--ig-batch", type=int, default=1, help="IG points per forward+backward pass (1 for 7B)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each; the median is reported")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: every CPU available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results.csv"))
    args = p.parse_args(argv)
    for name in ("positions", "examples", "ig_steps", "ig_batch", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}")
    if args.positions < CORRUPTED_POSITIONS + 3:
        p.error(f"--positions: expected at least {CORRUPTED_POSITIONS + 3}, got {args.positions}")
    if args.batch_size < 0:
        p.error(f"--batch-size: expected 0 (choose) or a positive integer, got {args.batch_size}")
    return args


# --- models and data -----------------------------------------------------------------------------------

def model_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def weight_bytes(shape: str, device: torch.device) -> int:
    """The weights' size, counted on the meta device (nothing allocated): to skip a shape that cannot fit."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(SHAPES[shape](), dtype=model_dtype(device))
    return sum(p.numel() * p.element_size() for p in model.parameters())


def build_model(shape: str, device: torch.device):
    """Random weights in the real shape, made directly on the device in the device's dtype (a 7B model
    never passes through the CPU); the MDM side: bidirectional attention."""
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(SHAPES[shape](), dtype=model_dtype(device))
    model.config.is_causal = False  # as models.set_bidirectional: transformers builds no causal mask
    return model.eval()


def random_task(vocab_size: int, n: int, positions: int, seed: int) -> EncodedTask:
    """Random clean sequences; the corrupted ones differ at a few middle positions; one answer slot at the
    end, masked, with a random correct and a different counterfactual token."""
    g = torch.Generator().manual_seed(seed)
    mask_id = vocab_size - 1
    clean = torch.randint(0, vocab_size - 1, (n, positions), generator=g)
    clean[:, -1] = mask_id
    corrupted = clean.clone()
    middle = slice(positions // 2, positions // 2 + CORRUPTED_POSITIONS)
    shift = torch.randint(1, vocab_size - 1, (n, CORRUPTED_POSITIONS), generator=g)
    corrupted[:, middle] = (clean[:, middle] + shift) % (vocab_size - 1)  # never the same token
    correct = torch.randint(0, vocab_size - 1, (n, 1), generator=g)
    counter = (correct + torch.randint(1, vocab_size - 1, (n, 1), generator=g)) % (vocab_size - 1)
    full = clean.clone()
    full[:, -1] = correct[:, 0]
    return EncodedTask(task="random", regime="benchmark", full_ids=full, clean_ids=clean, corrupted_ids=corrupted,
                       answer_positions=torch.full((n, 1), positions - 1), correct_ids=correct,
                       counterfactual_ids=counter, valid_ids=[{(int(c),)} for c in correct[:, 0]],
                       examples=[])  # no TaskExample behind random tokens; attribute() does not read them


# --- what is timed -------------------------------------------------------------------------------------

def eap_ig_run(model, data, args, batch_size):
    return engine.attribute(model, data, method="eap-ig", ablation="patching", ig_steps=args.ig_steps,
                            batch_size=batch_size, ig_batch=args.ig_batch, progress=False)


def floor_run(model, data, args, batch_size, device) -> None:
    """The least work any EAP-IG must do, in bare PyTorch (see the module docstring)."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        for s in range(0, len(data), batch_size):
            idx = torch.arange(s, min(len(data), s + batch_size))
            _floor_batch(model, data, idx, args.ig_steps, args.ig_batch, device)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _floor_batch(model, data, idx, ig_steps, ig_batch, device):
    clean, corrupted = data.clean_ids[idx].to(device), data.corrupted_ids[idx].to(device)
    read = (data.answer_positions[idx, 0] - 1).to(device)
    correct, counter = data.correct_ids[idx, 0].to(device), data.counterfactual_ids[idx, 0].to(device)
    embed = model.get_input_embeddings()
    with torch.no_grad():
        model(clean)
        model(corrupted)
        emb_clean, emb_base = embed(clean).float(), embed(corrupted).float()
    for first in range(0, ig_steps, ig_batch):
        alphas = ((torch.arange(first, min(ig_steps, first + ig_batch)) + 0.5) / ig_steps).to(device)
        emb = (emb_base[None] + alphas[:, None, None, None] * (emb_clean - emb_base)[None]).flatten(0, 1)
        emb = emb.to(model.dtype).requires_grad_(True)
        logits = model(inputs_embeds=emb).logits
        rows = torch.arange(emb.shape[0], device=device)
        at = logits[rows, read.repeat(len(alphas))]
        (at[rows, correct.repeat(len(alphas))] - at[rows, counter.repeat(len(alphas))]).sum().backward()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


# --- memory ----------------------------------------------------------------------------------------------

class PeakMemory:
    """Peak memory of one call: CUDA allocator statistics, or the process's RSS on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.start = _rss_bytes("VmRSS:") if _reset_rss_peak() else None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.kind = "cuda max_memory_allocated"
            self.peak = torch.cuda.max_memory_allocated(self.device)
            self.above_start = self.peak - self.start
        else:  # ru_maxrss is in kB on Linux: the process's lifetime peak
            self.kind = "process peak RSS (getrusage)"
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            hwm = _rss_bytes("VmHWM:") if self.start is not None else None
            self.above_start = None if hwm is None else hwm - self.start
        return False


def _reset_rss_peak() -> bool:
    """Linux resets VmHWM (the peak RSS) to the current RSS when 5 is written to clear_refs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --- one shape -------------------------------------------------------------------------------------------

def bench_shape(shape: str, args, device: torch.device) -> dict:
    model = build_model(shape, device)
    arch = arch_of(model)
    vocab = model.config.vocab_size
    dtype_bytes = model_dtype(device).itemsize
    n_params = sum(p.numel() for p in model.parameters())
    data = random_task(vocab, args.examples, args.positions, args.seed)
    chosen = args.batch_size == 0
    options = dict(model_sizes(model), ig_steps=args.ig_steps, sum_passes=device.type == "cpu")  # as the engine
    batch = (choose_batch_size(arch, args.positions, device, args.ig_batch, max_batch=args.examples, **options)
             if chosen else args.batch_size)

    warm = random_task(vocab, 2, args.positions, args.seed + 1)  # warm up: wrapping, kernels, allocator
    eap_ig_run(model, warm, args, min(batch, 2))
    floor_run(model, warm, args, min(batch, 2), device)

    load_before = os.getloadavg()[0]
    with PeakMemory(device) as mem:
        eap_times = [seconds(lambda: eap_ig_run(model, data, args, batch), device)]
    floor_times = [seconds(lambda: floor_run(model, data, args, batch, device), device)]
    for _ in range(args.repeats - 1):  # interleaved rounds: a change of machine load hits both alike
        eap_times.append(seconds(lambda: eap_ig_run(model, data, args, batch), device))
        floor_times.append(seconds(lambda: floor_run(model, data, args, batch, device), device))
    load_after = os.getloadavg()[0]
    t_eap, t_floor = statistics.median(eap_times), statistics.median(floor_times)
    est = attribution_bytes(arch, args.positions, batch, args.ig_batch, **options)
    est_no_lag = attribution_bytes(arch, args.positions, batch, args.ig_batch, **{**options, "gc_lag_batches": 0})

    runner._RUNNERS.pop(id(model), None)  # the engine caches a runner per model: let this one go
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "shape": shape, "device": str(device), "dtype": "bfloat16" if dtype_bytes == 2 else "float32",
        "n_params": n_params, "layers": arch.n_layers, "heads": arch.n_heads, "kv_heads": arch.n_kv_heads,
        "d_model": arch.d_model, "vocab": vocab, "positions": args.positions, "examples": args.examples,
        "batch_size": batch, "batch_chosen": chosen, "ig_batch": args.ig_batch, "ig_steps": args.ig_steps,
        "eap_ig_s": t_eap, "examples_per_min": 60 * args.examples / t_eap,
        "floor_s": t_floor, "floor_examples_per_min": 60 * args.examples / t_floor, "ratio": t_eap / t_floor,
        # each round's EAP-IG over the floor timed right after it: steadier on a machine whose speed drifts
        "ratio_paired_median": statistics.median(e / f for e, f in zip(eap_times, floor_times)),
        "peak_kind": mem.kind, "peak_gb": mem.peak / GB,
        "peak_above_start_gb": None if mem.above_start is None else mem.above_start / GB,
        "estimate_gb": est["total"] / GB, "estimate_no_gc_lag_gb": est_no_lag["total"] / GB,
        "load_before": load_before, "load_after": load_after,
        "eap_ig_rounds_s": " ".join(f"{t:.2f}" for t in eap_times),
        "floor_rounds_s": " ".join(f"{t:.2f}" for t in floor_times),
    }


def describe(r: dict) -> str:
    above = "n/a" if r["peak_above_start_gb"] is None else f"{r['peak_above_start_gb']:.2f}"
    return (f"{r['shape']}: {r['n_params'] / 1e9:.2f}B params {r['dtype']} on {r['device']}; "
            f"{r['positions']} positions, {r['examples']} examples, batch {r['batch_size']}{' (chosen)' if r['batch_chosen'] else ''}, "
            f"ig_batch {r['ig_batch']}, ig_steps {r['ig_steps']} | EAP-IG {r['eap_ig_s']:.2f} s = "
            f"{r['examples_per_min']:.1f} examples/min | floor {r['floor_s']:.2f} s | ratio {r['ratio']:.2f} "
            f"(median of the rounds' ratios {r['ratio_paired_median']:.2f}) | "
            f"{r['peak_kind']} {r['peak_gb']:.2f} GB, above start {above} GB | estimate {r['estimate_gb']:.2f} GB "
            f"({r['estimate_no_gc_lag_gb']:.2f} GB without the gc lag) | load {r['load_before']:.1f} -> "
            f"{r['load_after']:.1f} | rounds: EAP-IG {r['eap_ig_rounds_s']} s, floor {r['floor_rounds_s']} s")


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    threads = args.threads or usable_cores()
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"bench_real_shapes: torch {torch.__version__} on {device} ({name}), {torch.get_num_threads()} CPU threads, "
          f"{os.cpu_count()} CPUs; random weights; one timed run after a warm-up unless --repeats")
    rows = []
    for shape in args.shapes:
        weights, free = weight_bytes(shape, device), free_memory_bytes(device)
        if weights > 0.8 * free:  # the weights alone would take (nearly) everything: no point, and no crash
            print(f"{shape}: skipped: its weights need {weights / GB:.1f} GB, {device} has {free / GB:.1f} GB free",
                  flush=True)
            continue
        try:
            rows.append(bench_shape(shape, args, device))
        except ParameterError as err:  # e.g. not even one example fits beside the weights
            print(f"{shape}: skipped: {err}", flush=True)
            gc.collect()
            continue
        print(describe(rows[-1]), flush=True)
    if not rows:
        print("nothing measured: no CSV written")
        return rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
