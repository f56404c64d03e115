# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Circuit tracing with EAP-IG (nnsight)
#
# The paper finds circuits with EAP-IG (Hanna et al. 2024): every edge u → v of the
# computation graph gets the score (a_u(corrupted) − a_u(clean)) · ∂m/∂(input of v),
# the gradient averaged along the straight line from the corrupted to the clean input
# embeddings. It estimates the *noising* effect: how much the metric m (logit
# difference of correct vs counterfactual answer at the slot) moves when u's
# contribution to v comes from the corrupted run.
#
# Graph (as the EAP-IG reference): upstream nodes `input`, every head `a{l}.h{h}`,
# every MLP `m{l}`; downstream nodes each head's separate **q, k, v inputs**, every MLP
# and the `logits`. Everything runs through `mechshift_utils.attribution` on the plain
# transformers models wrapped by nnsight, the same code for every model (and for
# Llama/Qwen2 modules). This notebook traces every model of every seed on every pool,
# and measures the estimator against the ground truth before the comparison trusts it:
# exact edge patching (cheap on the organism: every edge patched, every seed), exact node
# patching, the completeness of the integrated gradients, and the faithfulness of the
# top-K circuits.

# %% tags=["parameters"]
# mechshift: after 01  (the notebooks this one needs; run_all.sh --jobs runs others beside it)
model_pair = "embedded"
seed = 0
seeds = 0  # trained models per recipe; 0: 3 for the embedded pair, 1 for a real pair
device = "auto"
dtype = "auto"  # real pairs: "auto" (bfloat16 on a GPU, float32 on the CPU), "float32", "bfloat16"
device_map = ""  # real pairs: "pair" puts the ARM and the MDM on two GPUs
workers = 0  # training processes, should a model be missing (notebook 01 trains them)
smoke = False
artifacts_dir = "../artifacts"
figures_dir = "../figures"
ig_steps = 8  # integrated-gradient steps of EAP-IG
ig_rule = "midpoint"  # EAP-IG's points: "midpoint" (k + 0.5) / ig_steps, or "left" k / ig_steps (the reference's)
pool_limit = 300  # examples per task from each seed's pool
n_exact = 64  # examples per task and seed for exact edge patching (the ground truth; 0 skips it)
n_completeness = 32  # examples per task for the completeness sweep over ig_steps (first seed)
k_fraction = 0.1  # circuit size for the embedded graph, as a fraction of all edges
k_edges = 0  # a fixed K when positive; 0: k_fraction of all edges (embedded), 1000 (real pairs)
batch_size = 0  # 0: 64 for the embedded pair; for a real pair the largest that fits in free memory

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from tqdm import tqdm

from mechshift_utils.analysis.circuit_stats import CircuitStats
from mechshift_utils.analysis.circuits import curve_area, faithfulness_curve, k_sweep
from mechshift_utils.analysis.stats import spearman
from mechshift_utils.attribution import attribute
from mechshift_utils.attribution.tracing import (circuit_size, exact_edges_traced, pool_data, resolve_batch_size,
                                                 trace_models)
from mechshift_utils.core.validation import check_non_negative_int, check_positive_int
from mechshift_utils.notebook import plotting
from mechshift_utils.notebook.params import NotebookParams, figures_dir_for
from mechshift_utils.notebook.pipeline import prepare_experiment
from mechshift_utils.tasks import CORE_TASKS, task_names_for

params = NotebookParams(model_pair, seed, device, smoke, dtype, device_map, seeds, workers).validated()
figures_dir = figures_dir_for(figures_dir, smoke)  # smoke runs leave the committed figures alone
if smoke:
    pool_limit, n_exact, n_completeness, ig_steps = min(pool_limit, 8), min(n_exact, 4), 4, min(ig_steps, 2)
for name, value in (("ig_steps", ig_steps), ("pool_limit", pool_limit), ("n_completeness", n_completeness)):
    check_positive_int(name, value)
check_non_negative_int("n_exact", n_exact)
plotting.use_style()
exp = prepare_experiment(params, artifacts_dir)
task_names = list(task_names_for(exp.tokenizer))
core = [t for t in CORE_TASKS if t in task_names]
pools = {s: {t: pool_data(exp.run_dir(s), t, exp.tokenizer, pool_limit, s if smoke else None, exp.pair.mask_token_id)
             for t in task_names} for s in exp.seeds}
batch_size = resolve_batch_size(exp.pair, batch_size, pools[exp.seeds[0]], ig_steps)
print(pd.DataFrame({s: {t: len(d) for t, d in p.items()} for s, p in pools.items()}).rename_axis("task"),
      f"\nexamples per task and seed; batch size {batch_size}")

# %% [markdown]
# ## EAP-IG for every model of every seed
#
# Each seed's ARM, MDM and controls (notebook 01) are traced on that seed's pools, the
# per-example scores kept (the intervals of notebooks 03-07 resample examples); the
# results are cached in the seed's run folder with `nodes.csv`, `edges.csv` and
# `examples.jsonl`, enough to recompute any score without this package.

# %%
start = time.perf_counter()
att = {}
for s in tqdm(exp.seeds, desc="seeds"):
    traced = trace_models(exp.models(s), exp.run_dir(s), pools[s], shift=exp.pair.shift, ig_steps=ig_steps,
                          batch_size=batch_size, embedded=exp.embedded, progress=False, ig_rule=ig_rule)
    att.update({(s, name, task): a for (name, task), a in traced.items()})
graph = next(iter(att.values())).graph
K = circuit_size(graph, k_edges, k_fraction, params.model_pair)
stats = CircuitStats(graph)
print(f"{len(att)} attributions in {time.perf_counter() - start:.0f} s; graph: {graph.n_edges} edges, K = {K}")

# %% [markdown]
# ## Validation 1: EAP-IG against exact edge patching, every seed
#
# The ground truth of a circuit: every edge patched on its own (its contribution to one
# destination from the corrupted run), on `n_exact` examples per task, for the ARM and the
# MDM of every seed (`mechshift_utils.attribution.exact_edges`, plain tensor operations
# checked against the nnsight engine's `exact` method in the tests). Beside the rank
# correlation of edge scores, what a reader of circuits needs: how many of EAP-IG's top-K
# edges are exact patching's top-K (Jaccard), and whether a depth statistic moves.

# %%
rows, exact = [], {}
if n_exact and exp.embedded:
    for s in tqdm(exp.seeds, desc="exact edges"):
        for name in ("arm", "mdm"):
            model = exp.models(s, [name])[name]
            for t in core:
                sub = pools[s][t].subset(range(min(n_exact, len(pools[s][t]))))
                ex = exact_edges_traced(model, name, exp.run_dir(s), t, sub, shift=exp.pair.shift)
                exact[(s, name, t)] = ex
                est = att[(s, name, t)].per_example[:len(sub)].mean(0)
                truth = ex.mean(0)
                top = stats.top_edges(torch.stack([est, truth]), K)
                imp = stats.importance(torch.stack([est, truth]), K)
                early = stats.early_share(imp, max(1, graph.arch.n_layers // 2))
                rows.append({"seed": s, "model": name, "task": t, "n_examples": len(sub),
                             "spearman_edges": spearman(est[graph.valid], truth[graph.valid]),
                             "jaccard_topk_eapig_vs_exact": float(stats.jaccard(top[:1], top[1:])[0]),
                             "early_share_eapig": float(early[0]), "early_share_exact": float(early[1])})
    agreement = pd.DataFrame(rows)
    plotting.save_table(agreement, "02_eapig_vs_exact_edges", figures_dir)
    display(agreement.groupby(["task", "model"])[["spearman_edges", "jaccard_topk_eapig_vs_exact"]]
            .agg(["mean", "min", "max"]).round(3))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for k, name in enumerate(("arm", "mdm")):
        sub = agreement[agreement.model == name]
        for i, t in enumerate(core):
            v = sub[sub.task == t]
            x = i + (k - 0.5) * 0.3
            axes[0].scatter(np.full(len(v), x), v.jaccard_topk_eapig_vs_exact, s=14, color=plotting.MODEL_COLORS[name],
                            label=plotting.MODEL_LABELS[name] if i == 0 else None)
            axes[1].scatter(np.full(len(v), x), v.spearman_edges, s=14, color=plotting.MODEL_COLORS[name])
    for ax, label in zip(axes, (f"Jaccard of the top-{K} circuits", "Spearman of edge scores")):
        ax.set_xticks(range(len(core)), [t.replace("_", " ") for t in core], fontsize=8)
        ax.set(ylabel=label, ylim=(0, 1.02))
    axes[0].set_title("EAP-IG vs exact edge patching (points: seeds)", fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    plotting.save_figure(fig, agreement, "02_eapig_vs_exact", figures_dir)
    plt.show()

# %% [markdown]
# ## Validation 2: node scores against exact node patching (first seed)
#
# Each node's whole output patched from the corrupted run, on the whole pool, against the
# sum of its EAP-IG edge scores. The `input` node carries the largest score of every task
# (everything flows from the embeddings), so the correlation is also given without it.

# %%
s0 = exp.seeds[0]
rows, points = [], []
for t in tqdm(core, desc="node patching"):
    for name in ("arm", "mdm"):
        model = exp.models(s0, [name])[name]
        truth = attribute(model, pools[s0][t], method="exact", exact_edges=False, batch_size=batch_size,
                          shift=exp.pair.shift, progress=False)
        est = att[(s0, name, t)]
        rows.append({"task": t, "model": name, "spearman_nodes": spearman(est.node_scores, truth.node_scores),
                     "spearman_nodes_without_input": spearman(est.node_scores[1:], truth.node_scores[1:]),
                     "n_examples": len(pools[s0][t])})
        points.extend({"task": t, "model": name, "node": node, "exact": float(truth.node_scores[i]),
                       "eapig": float(est.node_scores[i])} for i, node in enumerate(graph.upstream))
nodes_table = pd.DataFrame(rows)
points = pd.DataFrame(points)
display(nodes_table.round(3))
fig, axes = plt.subplots(2, len(core), figsize=(3.2 * len(core), 6.2), squeeze=False)
for c, t in enumerate(core):
    for r, name in enumerate(("arm", "mdm")):
        ax = axes[r, c]
        sub = points[(points.task == t) & (points.model == name)]
        ax.scatter(sub.exact, sub.eapig, s=14, color=plotting.MODEL_COLORS[name])
        lim = max(sub.exact.abs().max(), sub.eapig.abs().max()) * 1.1 or 1.0
        ax.plot([-lim, lim], [-lim, lim], color="0.6", lw=0.8, ls="--")
        row = nodes_table[(nodes_table.task == t) & (nodes_table.model == name)].iloc[0]
        ax.set_title(f"{t} · {plotting.MODEL_LABELS[name]}\nρ={row.spearman_nodes:.2f} "
                     f"(without input {row.spearman_nodes_without_input:.2f})", fontsize=8)
        ax.set(xlabel="exact node patching" if r else "", ylabel="EAP-IG" if c == 0 else "")
fig.tight_layout()
plotting.save_figure(fig, points.merge(nodes_table, on=["task", "model"]), "02_eapig_vs_exact_nodes", figures_dir)
plt.show()

# %% [markdown]
# ## Validation 3: completeness of the integrated gradients (first seed)
#
# Integrated gradients are complete: the attributions to the input add up to the change
# of the metric along the path. Here that is the `input` node's score, which must equal
# m(corrupted) − m(clean). The error shrinks with `ig_steps`; the default must be within 5%.

# %%
steps_grid = [1, 2, 4, 8, 16, 32] if not smoke else [1, 2]
rows = []
for t in tqdm(core, desc="completeness"):
    subset = pools[s0][t].subset(range(min(n_completeness, len(pools[s0][t]))))
    for name in ("arm", "mdm"):
        model = exp.models(s0, [name])[name]
        for steps in steps_grid:
            res = attribute(model, subset, method="eap-ig", ig_steps=steps, batch_size=batch_size,
                            shift=exp.pair.shift, progress=False, ig_rule=ig_rule)
            target = float((res.metric_ablated - res.metric_clean).mean())
            rows.append({"task": t, "model": name, "ig_steps": steps, "input_attribution": float(res.node_scores[0]),
                         "target": target, "relative_error": abs(float(res.node_scores[0]) - target) / abs(target)})
completeness = pd.DataFrame(rows)
display(completeness[completeness.ig_steps == ig_steps].round(4))
fig, axes = plt.subplots(1, len(core), figsize=(3.2 * len(core), 3.2), sharey=True, squeeze=False)
for ax, t in zip(axes[0], core):
    for name in ("arm", "mdm"):
        sub = completeness[(completeness.task == t) & (completeness.model == name)]
        ax.plot(sub.ig_steps, sub.relative_error, marker="o", color=plotting.MODEL_COLORS[name],
                label=plotting.MODEL_LABELS[name])
    ax.axhline(0.05, color="k", lw=0.8, ls=":")
    ax.axvline(ig_steps, color="0.5", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="ig_steps", title=t.replace("_", " "))
axes[0, 0].set_ylabel("|Σ attribution − Δm| / |Δm|")
axes[0, 0].legend(fontsize=8)
fig.suptitle("EAP-IG completeness (dotted: 5%; grey: the default ig_steps)", fontsize=10)
fig.tight_layout()
plotting.save_figure(fig, completeness, "02_completeness_vs_ig_steps", figures_dir)
plt.show()

# %% [markdown]
# ## Faithfulness over K, every seed
#
# The circuit of size K is the K edges with the largest |score|; its faithfulness patches
# every other edge from the corrupted run and asks how much of the clean-vs-corrupted
# metric gap is left: (m(C) − m(corrupt)) / (m(full) − m(corrupt)). K is swept as a fraction
# of all edges. The area under the curve is taken over that same axis (linear fraction of
# edges kept, from 0 to 1), which the figure draws. Lines: mean over seeds; bands: range.

# %%
curves = []
for s in tqdm(exp.seeds, desc="faithfulness"):
    for t in core:
        for name in ("arm", "mdm"):
            model = exp.models(s, [name])[name]
            res = att[(s, name, t)]
            curve = faithfulness_curve(model, pools[s][t], res, k_sweep(graph.n_edges), batch_size=batch_size,
                                       shift=exp.pair.shift, progress=False)
            curves.append(curve.assign(seed=s, task=t, model=name, area_under_curve=curve_area(curve)))
curves = pd.concat(curves, ignore_index=True)
area = curves.groupby(["task", "model", "seed"]).area_under_curve.first().groupby(["task", "model"]).agg(
    ["mean", "min", "max"])
display(area.round(3))
fig, axes = plt.subplots(1, len(core), figsize=(3.2 * len(core), 3.4), sharey=True, squeeze=False)
for ax, t in zip(axes[0], core):
    for name in ("arm", "mdm"):
        sub = curves[(curves.task == t) & (curves.model == name)].groupby("fraction").faithfulness.agg(
            ["mean", "min", "max"])
        auc = area.loc[(t, name), "mean"]
        ax.plot(sub.index, sub["mean"], marker="o", ms=3, color=plotting.MODEL_COLORS[name],
                label=f"{plotting.MODEL_LABELS[name]} (area {auc:.2f})")
        ax.fill_between(sub.index, sub["min"], sub["max"], color=plotting.MODEL_COLORS[name], alpha=0.15, lw=0)
    ax.axhline(1, color="0.6", lw=0.8, ls="--")
    ax.axvline(K / graph.n_edges, color="0.5", lw=0.8, ls=":")
    ax.set(title=t.replace("_", " "), xlabel="fraction of edges kept", xlim=(0, 1))
    ax.legend(fontsize=7, loc="lower right")
axes[0, 0].set_ylabel("faithfulness")
fig.suptitle(f"Faithfulness of top-K circuits ({graph.n_edges} edges; dotted: K = {K})", fontsize=10)
fig.tight_layout()
plotting.save_figure(fig, curves, "02_faithfulness_curves", figures_dir)
plt.show()

# %% [markdown]
# ## Greater-Than with the probability difference (first seed)
#
# For Greater-Than the reference also scores circuits by probability mass: P(years after
# the start year) − P(years from 02 to the start year) at the slot. Same engine, the
# metric a parameter: how much do the node rankings depend on the metric?

# %%
from mechshift_utils.attribution.metrics import prob_diff

gt = pools[s0]["greater_than"]
rows = []
for name in ("arm", "mdm"):
    model = exp.models(s0, [name])[name]
    by_prob = attribute(model, gt, method="eap-ig", ig_steps=ig_steps, metric=prob_diff(gt), batch_size=batch_size,
                        shift=exp.pair.shift, progress=False, ig_rule=ig_rule)
    curve = faithfulness_curve(model, gt, by_prob, k_sweep(graph.n_edges), metric=prob_diff(gt),
                               batch_size=batch_size, shift=exp.pair.shift, progress=False)
    rows.append({"model": name, "prob_diff_clean": float(by_prob.metric_clean.mean()),
                 "prob_diff_corrupted": float(by_prob.metric_ablated.mean()),
                 "spearman_nodes_vs_logit_diff": spearman(by_prob.node_scores, att[(s0, name, "greater_than")].node_scores),
                 "faithfulness_area": curve_area(curve)})
prob_summary = pd.DataFrame(rows)
display(prob_summary.round(3))
plotting.save_table(prob_summary, "02_greater_than_prob_diff", figures_dir)

# %% [markdown]
# ## Numbers
#
# Computed from the tables above.

# %%
if exact:
    print("EAP-IG vs exact edge patching (every seed): top-K Jaccard "
          + "; ".join(f"{t} {agreement[agreement.task == t].jaccard_topk_eapig_vs_exact.min():.2f}-"
                      f"{agreement[agreement.task == t].jaccard_topk_eapig_vs_exact.max():.2f}" for t in core))
print(f"node Spearman against exact node patching (first seed): {nodes_table.spearman_nodes.min():.3f} to "
      f"{nodes_table.spearman_nodes.max():.3f}; without the input node {nodes_table.spearman_nodes_without_input.min():.3f}"
      f" to {nodes_table.spearman_nodes_without_input.max():.3f}")
at_default = completeness[completeness.ig_steps == (ig_steps if ig_steps in steps_grid else steps_grid[-1])]
print(f"completeness error at ig_steps={ig_steps}: max {at_default.relative_error.max():.2%} "
      f"(target <= 5%: {'met' if (at_default.relative_error <= 0.05).all() else 'NOT met'})")
