"""Wall time of the EAP-IG engine (mechshift_utils.attribution.engine) against its floor.

What is measured, on the same model, examples, batch size and ig_steps:

* ``eap-ig``: ``attribute(model, data, method="eap-ig", ablation="patching")``,
  the whole call (nnsight wrapping, clean + corrupted runs, ig_steps traced
  forward+backward passes, score contractions).
* floor: bare PyTorch, no hooks, no nnsight. Per batch: 2 forward passes
  (clean and corrupted, under ``torch.no_grad``) plus ``ig_steps``
  forward+backward passes on ``model(inputs_embeds=...)`` where the token
  embeddings (``wte``) are interpolated between corrupted and clean (the same
  midpoints as the engine); the metric is the logit difference at slot - 1,
  summed over the batch, then ``.backward()``. This is the least work any
  EAP-IG implementation must do; the ratio eap-ig / floor is the overhead of
  hooks, nnsight and the score computation (target: <= 1.3 on the embedded
  model on the CPU).
* floor-frozen: the same floor with the weights frozen during the backward
  passes: activation gradients only, which is all the engine computes (it
  freezes the weights too), so the tighter comparison.
* for context: ``eap`` and ``exact`` (node level, ``exact_edges=False``, on the
  same examples; edge level on a smaller ``--exact-edges-n``), relative to
  eap-ig per example, and examples per second for each.

Each measurement has a warm-up run first, then ``--repeats`` timed runs; the
median is reported. EAP-IG and the floor are timed in interleaved rounds, so
that load from other processes hits both alike (the ratio of each round is
printed too, and the load average before and after). Torch threads are pinned
to the CPUs this process may use unless ``--threads`` says otherwise. Random weights (timing does not depend on
training). No timed asserts: the script only prints (and, with ``--json``,
writes the numbers).

Run (from the repository root)::

    .venv/bin/python benchmarks/bench_attribution.py
    .venv/bin/python benchmarks/bench_attribution.py --ig-steps 16
    .venv/bin/python benchmarks/bench_attribution.py --layers 12 --width 768 --heads 12 --n 32 --batch-size 8
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mechshift_utils import tasks  # noqa: E402
from mechshift_utils.attribution.engine import attribute  # noqa: E402
from mechshift_utils.core.cpus import usable_cores  # noqa: E402
from mechshift_utils.models.embedded import DEFAULT_ARM, new_arm  # noqa: E402
from mechshift_utils.tasks import build_word_tokenizer, encode_examples  # noqa: E402

TARGET = 1.3


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=128, help="examples (default 128)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--ig-steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the median is reported")
    p.add_argument("--device", default="cpu")
    p.add_argument("--task", default="ioi")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=None, help=f"n_layer (default {DEFAULT_ARM.n_layer})")
    p.add_argument("--width", type=int, default=None, help=f"n_embd (default {DEFAULT_ARM.n_embd})")
    p.add_argument("--heads", type=int, default=None, help=f"n_head (default {DEFAULT_ARM.n_head})")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: every CPU available)")
    p.add_argument("--exact-edges-n", type=int, default=16,
                   help="examples for edge-level exact (one patched pass per edge; 0 skips it)")
    p.add_argument("--skip-exact", action="store_true", help="skip both exact measurements")
    p.add_argument("--json", type=Path, default=None, help="write the numbers as JSON to this path")
    return p.parse_args(argv)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fns: dict, device, repeats: int) -> dict[str, list[float]]:
    """Warm up each function once, then time ``repeats`` rounds, the functions interleaved within a
    round (so that load from other processes hits them alike). Seconds per call, per function."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def floor_run(model, data, batch_size: int, ig_steps: int, device, weight_grads: bool = True) -> torch.Tensor:
    """The bare-PyTorch floor of EAP-IG; returns the clean metric per example (a sanity check).

    ``weight_grads=False`` freezes the weights during the backward passes, as the engine does
    (it needs activation gradients only): the tighter floor."""
    if not weight_grads:
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            return floor_run(model, data, batch_size, ig_steps, device, True)
        finally:
            for p in model.parameters():
                p.requires_grad_(True)
    wte = model.transformer.wte
    read_all = data.answer_positions[:, 0] - 1
    correct_all, counter_all = data.correct_ids[:, 0], data.counterfactual_ids[:, 0]
    n = len(data)
    clean_metric = []
    model.zero_grad(set_to_none=True)
    for s in range(0, n, batch_size):
        idx = torch.arange(s, min(n, s + batch_size))
        clean_ids = data.clean_ids[idx].to(device)
        corrupt_ids = data.corrupted_ids[idx].to(device)
        rows = torch.arange(len(idx), device=device)
        read, correct, counter = read_all[idx].to(device), correct_all[idx].to(device), counter_all[idx].to(device)

        def metric(logits):
            at = logits[rows, read]
            return at[rows, correct] - at[rows, counter]

        with torch.no_grad():
            clean_metric.append(metric(model(clean_ids).logits).float().cpu())
            model(corrupt_ids)
            emb_clean, emb_base = wte(clean_ids), wte(corrupt_ids)
        for k in range(ig_steps):
            alpha = (k + 0.5) / ig_steps
            emb = (emb_base + alpha * (emb_clean - emb_base)).requires_grad_(True)
            metric(model(inputs_embeds=emb).logits).sum().backward()
    model.zero_grad(set_to_none=True)
    return torch.cat(clean_metric)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    threads = args.threads or usable_cores()
    torch.set_num_threads(threads)

    tok = build_word_tokenizer()
    data = encode_examples(tasks.generate(args.task, args.n, args.seed), tok)
    seq_len = data.clean_ids.shape[1]
    cfg = replace(DEFAULT_ARM,
                  n_layer=args.layers or DEFAULT_ARM.n_layer,
                  n_embd=args.width or DEFAULT_ARM.n_embd,
                  n_head=args.heads or DEFAULT_ARM.n_head,
                  n_positions=max(DEFAULT_ARM.n_positions, seq_len)).validate()
    model = new_arm(tok, cfg, seed=0).eval().to(device)
    n_params = sum(p.numel() for p in model.parameters())

    print(f"bench_attribution: torch {torch.__version__} on {device} ({platform.processor() or platform.machine()}), "
          f"torch threads = {torch.get_num_threads()} (pinned to the {threads} CPUs available"
          f"{'' if args.threads is None else ', from --threads'})")
    print(f"model: GPT-2 n_layer={cfg.n_layer} n_head={cfg.n_head} n_embd={cfg.n_embd} ({n_params / 1e6:.2f}M params, "
          f"random weights); task {args.task}: n={args.n}, seq_len={seq_len}, batch_size={args.batch_size}, "
          f"ig_steps={args.ig_steps}; median of {args.repeats} after 1 warm-up")

    def run(method, d, **kw):
        return lambda: attribute(model, d, method=method, ablation="patching", ig_steps=args.ig_steps,
                                 batch_size=args.batch_size, progress=False, **kw)

    results = {}

    def record(group: dict):
        """group: name -> (examples, fn); timed together, interleaved."""
        times = timed({k: fn for k, (_, fn) in group.items()}, device, args.repeats)
        for name, (n_examples, _) in group.items():
            med = statistics.median(times[name])
            results[name] = {"seconds": med, "runs": times[name], "n": n_examples,
                             "examples_per_s": n_examples / med}
        return times

    load_before = os.getloadavg()
    # sanity: the floor reads the same metric as the engine
    attr = run("eap-ig", data)()
    floor_clean = floor_run(model, data, args.batch_size, args.ig_steps, device)
    metric_gap = (attr.metric_clean.float() - floor_clean).abs().max().item()

    times = record({"eap-ig": (args.n, run("eap-ig", data)),
                    "floor": (args.n, lambda: floor_run(model, data, args.batch_size, args.ig_steps, device)),
                    "floor-frozen": (args.n, lambda: floor_run(model, data, args.batch_size, args.ig_steps, device,
                                                               weight_grads=False))})
    pair_ratios = [a / b for a, b in zip(times["eap-ig"], times["floor"])]
    t_ig, t_floor = results["eap-ig"]["seconds"], results["floor"]["seconds"]
    t_frozen = results["floor-frozen"]["seconds"]
    record({"eap": (args.n, run("eap", data))})
    t_eap = results["eap"]["seconds"]
    if not args.skip_exact:
        record({"exact-nodes": (args.n, run("exact", data, exact_edges=False))})
        if args.exact_edges_n > 0:
            small = encode_examples(tasks.generate(args.task, args.exact_edges_n, args.seed), tok)
            record({"exact-edges": (args.exact_edges_n, run("exact", small, exact_edges=True))})
    load_after = os.getloadavg()

    ratio = t_ig / t_floor
    ig_per_ex = t_ig / args.n
    print()
    print(f"{'measurement':<14}{'seconds':>10}{'n':>6}{'examples/s':>12}{'per example vs eap-ig':>24}")
    for name, r in results.items():
        rel = (r["seconds"] / r["n"]) / ig_per_ex
        r["per_example_vs_eap_ig"] = rel
        print(f"{name:<14}{r['seconds']:>10.3f}{r['n']:>6}{r['examples_per_s']:>12.1f}{rel:>23.3f}x")
    print()
    print(f"EAP-IG time : {t_ig:.3f} s   (runs: {', '.join(f'{t:.3f}' for t in results['eap-ig']['runs'])})")
    print(f"floor time  : {t_floor:.3f} s   (runs: {', '.join(f'{t:.3f}' for t in results['floor']['runs'])})")
    print(f"ratio EAP-IG / floor = {ratio:.2f}  (per interleaved round: "
          f"{', '.join(f'{r:.2f}' for r in pair_ratios)}; target <= {TARGET} on the embedded model on the CPU: "
          f"{'met' if ratio <= TARGET else 'NOT met'})")
    print(f"ratio EAP-IG / floor with frozen weights (activation gradients only, as the engine) = "
          f"{t_ig / t_frozen:.2f}")
    print(f"eap / eap-ig = {t_eap / t_ig:.3f}" + "".join(
        f"; {k} / eap-ig per example = {results[k]['per_example_vs_eap_ig']:.2f}"
        for k in ("exact-nodes", "exact-edges") if k in results))
    print(f"sanity: max |clean metric, engine - floor| = {metric_gap:.2e}")
    print(f"load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} CPUs"
          f"{'  -- the machine was busy: timings are noisy' if max(load_before[0], load_after[0]) > threads else ''}")

    out = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
           "model": {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd, "n_params": n_params},
           "task": args.task, "n": args.n, "seq_len": seq_len, "batch_size": args.batch_size,
           "ig_steps": args.ig_steps, "repeats": args.repeats, "results": results,
           "ratio_eap_ig_over_floor": ratio, "ratio_eap_ig_over_frozen_floor": t_ig / t_frozen,
           "ratio_per_round": pair_ratios, "load_average_before_after": [load_before[0], load_after[0]],
           "target": TARGET, "eap_over_eap_ig": t_eap / t_ig,
           "clean_metric_max_gap": metric_gap}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
